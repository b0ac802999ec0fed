package e2e

// Fault tests: config reloads under load.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Reloading the config 5 times (`keygate reload`) while valid-key requests run fails none of
// them, keeps the cache warm (no HMGET for the warm key), and leaks no goroutine and no Redis
// connection.
func TestFaultReloadUnderLoad(t *testing.T) {
	c := startFaultCluster(t, faultConfig{gateways: 1, withAdmin: true})
	g := c.gateways[0]
	key, _ := c.mint(t)
	c.warm(t, key)
	mport := strings.TrimSuffix(strings.TrimPrefix(g.metricsURL, "http://127.0.0.1:"), "/metrics")
	mp, _ := strconv.Atoi(mport)

	reload := func(gen int) {
		t.Helper()
		if err := os.WriteFile(g.caddyfile, []byte(c.caddyfile(g, mp, fmt.Sprintf("gen-%d", gen))), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(binary, "reload", "--config", g.caddyfile, "--address", g.adminAddr).CombinedOutput()
		if err != nil {
			t.Fatalf("keygate reload: %v\n%s", err, out)
		}
	}
	// One reload before measuring: the first one may set things up once (metrics, pools).
	reload(1)
	if a := get(t, g.url+"/", key); a.status != 200 || a.header.Get("X-Config") != "gen-1" {
		t.Fatalf("after the first reload: %d, X-Config %q", a.status, a.header.Get("X-Config"))
	}
	client.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond)
	goroutines := g.goroutines(t)
	conns := namedConns(t, c.rdb)[g.name]
	hmget := c.srv.CommandCalls("hmget")

	var (
		ok, failed atomic.Int64
		errMu      sync.Mutex
		errs       []string
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	hc := faultClient(8)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := try(hc, g.url+"/", key)
				if err == nil && a.status == 200 {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				errMu.Lock()
				if err != nil {
					errs = append(errs, err.Error())
				} else {
					errs = append(errs, fmt.Sprintf("%d %s", a.status, a.body))
				}
				errMu.Unlock()
			}
		}()
	}
	start := time.Now()
	for gen := 2; gen <= 6; gen++ {
		time.Sleep(500 * time.Millisecond)
		reload(gen)
	}
	time.Sleep(time.Until(start.Add(3 * time.Second)))
	close(stop)
	wg.Wait()
	loadTime := time.Since(start)
	hc.CloseIdleConnections()
	client.CloseIdleConnections()

	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed across 5 reloads: %v", n, n+ok.Load(), errs[:min(5, len(errs))])
	}
	if a := get(t, g.url+"/", key); a.status != 200 || a.header.Get("X-Config") != "gen-6" {
		t.Errorf("after the reloads: %d, X-Config %q (the last reload did not take)", a.status, a.header.Get("X-Config"))
	}
	if got := c.srv.CommandCalls("hmget") - hmget; got != 0 {
		t.Errorf("the warm key cost %d HMGET across the reloads: the cache went cold", got)
	}
	client.CloseIdleConnections()
	after := g.settleGoroutines(t, goroutines, 5)
	if after > goroutines+5 {
		// Caddy's admin endpoint has pprof: say which goroutines stayed.
		if resp, err := http.Get("http://" + g.adminAddr + "/debug/pprof/goroutine?debug=1"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("gateway goroutines:\n%s", tail(string(b), 12000))
		}
	}
	connsAfter := namedConns(t, c.rdb)[g.name]
	if connsAfter > conns+2 {
		t.Errorf("the gateway's Redis connections went from %d to %d across 5 reloads", conns, connsAfter)
	}
	t.Logf("%d requests, 0 failed, across 5 reloads in %v; goroutines %d → %d; gateway Redis connections %d → %d",
		ok.Load(), loadTime.Round(time.Millisecond), goroutines, after, conns, connsAfter)
}
