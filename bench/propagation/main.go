// Command propagation measures how fast a revocation reaches every gateway (target: p99 ≤ 10 ms
// with 3 gateway processes on one Redis, on one machine).
//
// It starts its own redis-server on a free port (in a temporary directory, never the
// machine's own Redis), 3 keygate gateway processes on it (the e2e tests' Caddyfile), creates
// K keys through a redisstore client, warms every key on every gateway (checking with
// INFO commandstats that a second request costs no lookup), then, key by key, revokes through
// the store and measures for each gateway the time from the revoke call's return until that
// gateway answers 401 api_key_revoked — one polling goroutine per gateway, in a tight loop.
// The revoke goes through the store, so none of the gateways served it: all three are "other"
// gateways (docs/design.md, "Guarantees"). A figure includes one HTTP round trip of polling (the request that saw
// the 401); the round trip of a warm-cache request is measured and printed beside it.
//
//	go run ./bench/propagation [-keygate path] [-keys 200] [-gateways 3] [-change revoke|narrow] [-out file]
//
// Without -keygate it builds ./cmd/keygate into a temporary directory with `go build`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/bench/internal/harness"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

func main() {
	root := harness.ModuleRoot()
	var (
		bin      = flag.String("keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
		nkeys    = flag.Int("keys", 200, "keys to create, warm and revoke")
		ngw      = flag.Int("gateways", 3, "gateway processes")
		out      = flag.String("out", filepath.Join(root, "bench", "results", "propagation.txt"), "results file (\"\": none)")
		redisBin = flag.String("redis-server", "redis-server", "redis-server binary")
		limit    = flag.Duration("limit", 2*time.Second, "give up on a (key, gateway) pair after this long")
		change   = flag.String("change", "revoke", "what to propagate: revoke, or narrow (an update of allowed_ips that refuses the pollers' address, 403)")
	)
	flag.Parse()
	if *change != "revoke" && *change != "narrow" {
		fmt.Fprintln(os.Stderr, "propagation: -change must be revoke or narrow")
		os.Exit(2)
	}
	if *change == "narrow" && *out == filepath.Join(root, "bench", "results", "propagation.txt") {
		*out = filepath.Join(root, "bench", "results", "propagation-narrow.txt")
	}
	harness.Main("propagation", func(h *harness.Run) error {
		r := &run{Run: h, change: *change}
		return r.main(root, *bin, *redisBin, *nkeys, *ngw, *limit, *out)
	})
}

type run struct {
	*harness.Run
	change string // revoke | narrow
}

func (r *run) main(root, bin, redisBin string, nkeys, ngw int, limit time.Duration, outFile string) error {
	if nkeys < 1 || ngw < 1 {
		return errors.New("-keys and -gateways must be at least 1")
	}
	if err := harness.CheckRedisServer(redisBin); err != nil {
		return err
	}
	work, err := r.TempDir("keygate-propagation")
	if err != nil {
		return err
	}
	if bin, err = harness.Keygate(root, bin, work); err != nil {
		return err
	}

	// redis-server on a free port, in its own directory, no persistence.
	rd, err := r.StartRedis(redisBin, filepath.Join(work, "redis"))
	if err != nil {
		return err
	}
	rdb := rd.Client
	defer rdb.Close()
	raddr, redisVersion := rd.Addr, rd.Version
	ctx := context.Background()

	// The upstream: a plain 200.
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	upSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	})}
	go upSrv.Serve(ul)
	defer upSrv.Close()

	// The gateways: the e2e tests' Caddyfile (startCluster), without debug logging.
	var urls []string
	for i := 0; i < ngw; i++ {
		port, err := harness.FreePort()
		if err != nil {
			return err
		}
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store redis redis://%s/0
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy %s
}
`, raddr, port, ul.Addr())
		if _, err := r.StartGateway(bin, filepath.Join(work, fmt.Sprintf("gw%d", i)), cf, port, fmt.Sprintf("gateway %d", i)); err != nil {
			return err
		}
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/", port))
	}

	// The admin side: a redisstore client on the same Redis and prefix.
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: raddr}), redisstore.Options{})
	r.OnCleanup(func() { st.Close() })
	if err := harness.WaitInstances(ctx, st, 2); err != nil {
		return err
	}
	fmt.Printf("redis-server %s on %s, %d gateways; creating and warming %d keys …\n", redisVersion, raddr, ngw, nkeys)

	secrets := make([]string, nkeys)
	keys := make([]store.Key, nkeys)
	in := store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}
	for i := range keys {
		secrets[i], keys[i], err = store.Mint(apikey.Hasher{}, in, fmt.Sprintf("bench-%d", i), time.Time{}, time.Now())
		if err != nil {
			return err
		}
		if err := st.CreateKey(ctx, keys[i]); err != nil {
			return fmt.Errorf("creating key %d: %v", i, err)
		}
	}

	// One keep-alive client per gateway, used by that gateway's poller only.
	clients := make([]*http.Client, ngw)
	for g := range clients {
		clients[g] = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	}
	hmget := func() (int64, error) {
		calls, err := harness.CommandCalls(ctx, rdb)
		return calls["hmget"], err
	}
	for i, s := range secrets {
		for g, u := range urls {
			for attempt := 0; ; attempt++ {
				before, err := hmget()
				if err != nil {
					return err
				}
				if st, code, err := ask(clients[g], u, s); err != nil || st != 200 {
					return fmt.Errorf("warming key %d on gateway %d: %d %s %v", i, g, st, code, err)
				}
				after, err := hmget()
				if err != nil {
					return err
				}
				if after == before {
					break // answered from the cache
				}
				if attempt == 100 {
					return fmt.Errorf("key %d does not stay cached on gateway %d", i, g)
				}
			}
		}
	}
	// The round trip of a warm-cache request, for scale.
	var rtts []time.Duration
	for i := 0; i < 1000; i++ {
		g := i % ngw
		s := time.Now()
		if st, _, err := ask(clients[g], urls[g], secrets[i%nkeys]); err != nil || st != 200 {
			return fmt.Errorf("round-trip probe: %d %v", st, err)
		}
		rtts = append(rtts, time.Since(s))
	}
	before, err := hmget()
	if err != nil {
		return err
	}
	if before2, _ := hmget(); before2 != before {
		return errors.New("something else is asking Redis")
	}

	fmt.Printf("revoking %d keys, polling %d gateways each …\n", nkeys, ngw)
	var (
		lat    []time.Duration // time from the revoke's return to the 401, per (key, gateway)
		sent   []time.Duration // time from the revoke's return to the sending of the request answered 401
		failed []string
	)
	for i := range keys {
		type res struct {
			got, sent time.Duration
			err       error
		}
		results := make([]res, ngw)
		var wg sync.WaitGroup
		ready := make(chan struct{})
		var t0 time.Time
		for g := range urls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready
				for {
					s := time.Now()
					st, code, err := ask(clients[g], urls[g], secrets[i])
					now := time.Now()
					switch {
					case err != nil:
						results[g] = res{err: err}
						return
					case r.change == "revoke" && st == 401 && code == "api_key_revoked",
						r.change == "narrow" && st == 403 && code == "api_key_ip_not_allowed":
						results[g] = res{got: now.Sub(t0), sent: s.Sub(t0)}
						return
					case st != 200:
						results[g] = res{err: fmt.Errorf("answer %d %s", st, code)}
						return
					}
					if now.Sub(t0) > limit {
						results[g] = res{got: now.Sub(t0), err: fmt.Errorf("still served %v after the revoke", limit)}
						return
					}
				}
			}()
		}
		if err := r.apply(ctx, st, keys[i]); err != nil {
			return fmt.Errorf("key %d: %v", i, err)
		}
		t0 = time.Now()
		close(ready)
		wg.Wait()
		for g, x := range results {
			if x.err != nil {
				failed = append(failed, fmt.Sprintf("key %d, gateway %d: %v", i, g, x.err))
				continue
			}
			lat = append(lat, x.got)
			sent = append(sent, x.sent)
		}
	}
	after, err := hmget()
	if err != nil {
		return err
	}

	pct := harness.Percentile
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
	line := func(name string, d []time.Duration) string {
		return fmt.Sprintf("%-44s p50 %s   p90 %s   p99 %s   max %s", name, ms(pct(d, .5)), ms(pct(d, .9)), ms(pct(d, .99)), ms(pct(d, 1)))
	}

	var b strings.Builder
	what := "revocation"
	if r.change == "narrow" {
		what = "narrowing update (allowed_ips set to 10.0.0.0/8: the pollers' 127.0.0.1 is refused, 403)"
	}
	fmt.Fprintf(&b, "keygate %s propagation (target: p99 <= 10 ms)\n\n", what)
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %d CPUs (nproc), %s, %s/%s, %s, redis-server %s\n", harness.NProc(), harness.CPUModel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), redisVersion)
	fmt.Fprintf(&b, "command:  %s\n", harness.CommandLine("./bench/propagation"))
	fmt.Fprintf(&b, "setup:    1 redis-server (loopback, no persistence), %d keygate gateway processes, %d keys warmed on every gateway;\n", ngw, nkeys)
	fmt.Fprintf(&b, "          each key changed through a redisstore client (no gateway served the change), one tight polling\n")
	fmt.Fprintf(&b, "          goroutine per gateway; %d (key, gateway) pairs measured, %d failed\n\n", len(lat), len(failed))
	fmt.Fprintf(&b, "%s\n", line("change returned -> gateway refused the key:", lat))
	fmt.Fprintf(&b, "%s\n", line("change returned -> that request was sent:", sent))
	fmt.Fprintf(&b, "%s\n\n", line("warm-cache request round trip (for scale):", rtts))
	fmt.Fprintf(&b, "Measured this way a figure includes one HTTP round trip of polling: the first line, to the\n")
	fmt.Fprintf(&b, "receipt of the refusal, is an upper bound. The invalidation landed after the previous (200)\n")
	fmt.Fprintf(&b, "request was processed and before the refused one was, so the second line (when the refused\n")
	fmt.Fprintf(&b, "request was sent) is within one polling round trip of the true figure. All %d processes and\n", ngw+1)
	fmt.Fprintf(&b, "the pollers share the machine's CPUs.\n")
	if r.change == "revoke" {
		fmt.Fprintf(&b, "Store lookups (HMGET) during the revocations: %d (each revoke reads its key once; each gateway\n", after-before)
		fmt.Fprintf(&b, "looks a revoked key up once after its entry was dropped: %d + %d expected).\n", nkeys, len(lat))
	} else {
		fmt.Fprintf(&b, "HMGETs during the updates: %d (each update reads its record and its lookup entry; each gateway\n", after-before)
		fmt.Fprintf(&b, "looks the key up once after its entry was dropped: %d + %d expected).\n", 2*nkeys, len(lat))
	}
	if len(failed) > 0 {
		fmt.Fprintf(&b, "\nFAILED pairs:\n")
		for _, f := range failed[:min(20, len(failed))] {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	fmt.Print("\n" + b.String())
	if outFile != "" {
		if err := os.MkdirAll(filepath.Dir(outFile), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(outFile, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", outFile)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d (key, gateway) pairs failed", len(failed))
	}
	return nil
}

// ask sends one request with key and returns the status and, for a refusal, the error code.
func ask(c *http.Client, url, key string) (int, string, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode == 200 {
		return 200, "", nil
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &e)
	return resp.StatusCode, e.Error.Code, nil
}

// apply makes the change whose propagation is measured, through the store (no gateway serves
// it): a revocation, or an update narrowing the key's allowed addresses.
func (r *run) apply(ctx context.Context, st store.Store, k store.Key) error {
	if r.change == "narrow" {
		ips := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		_, err := st.UpdateKey(ctx, k.Instance, k.ID, store.KeyUpdate{AllowedIPs: &ips}, nil)
		return err
	}
	_, _, err := st.RevokeKey(ctx, k.Instance, k.ID, time.Now(), nil)
	return err
}
