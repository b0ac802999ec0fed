package e2e

// Fault tests: the store unreachable (frozen, crashed), max_stale, recovery, durability.

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

// outage checks one gateway-wide outage of the store: uncached keys get a fast 503, a burst
// of 200 uncached keys all answer and pile nothing up, cached keys serve for at most
// max_stale (counted from when the gateway could notice the outage), then 503.
// detect is how long the gateways may take to notice the outage.
func outage(t *testing.T, c *faultCluster, warmKey, uncached string, start func(), detect time.Duration) {
	t.Helper()
	t0 := time.Now()
	start()

	// The cached key, polled from the start: served while the outage is younger than max_stale (well,
	// at least early on), refused with 503 once max_stale has passed since it was noticed.
	type obs struct {
		at     time.Duration
		status int
		code   string
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		warmSeen = make([][]obs, len(c.gateways))
	)
	staleEnd := detect + faultMaxStale
	for i, g := range c.gateways {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := faultClient(1)
			defer hc.CloseIdleConnections()
			for time.Since(t0) < staleEnd+time.Second {
				o := obs{at: time.Since(t0)} // when the request was sent: max_stale is judged on arrival
				a, err := try(hc, g.url+"/", warmKey)
				if err != nil {
					o.code = err.Error()
				} else {
					o.status, o.code = a.status, a.Error.Code
				}
				mu.Lock()
				warmSeen[i] = append(warmSeen[i], o)
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}

	// One uncached (real) key: 503 auth_unavailable, Retry-After 1, fast.
	for _, g := range c.gateways {
		s := time.Now()
		a := get(t, g.url+"/", uncached)
		d := time.Since(s)
		if a.status != 503 || a.Error.Code != "auth_unavailable" || a.Error.Type != "api_error" || a.header.Get("Retry-After") != "1" {
			t.Errorf("%s: uncached key with the store down: %d %q %s", g.name, a.status, a.header.Get("Retry-After"), a.body)
		}
		if d > 3*time.Second {
			t.Errorf("%s: uncached key answered after %v (store timeout %v)", g.name, d, faultTimeout)
		}
		t.Logf("%s: uncached key answered %d in %v", g.name, a.status, d.Round(time.Millisecond))
	}

	// A burst of 200 concurrent requests with uncached keys, on each gateway.
	for _, g := range c.gateways {
		const burst = 200
		hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}}
		durs := make([]time.Duration, burst)
		errs := make([]string, burst)
		var bwg sync.WaitGroup
		for i := 0; i < burst; i++ {
			bwg.Add(1)
			go func() {
				defer bwg.Done()
				k, _ := apikey.Generate(apikey.Sandbox)
				s := time.Now()
				a, err := try(hc, g.url+"/", k)
				durs[i] = time.Since(s)
				switch {
				case err != nil:
					errs[i] = err.Error()
				case a.status != 503 || a.Error.Code != "auth_unavailable":
					errs[i] = fmt.Sprintf("%d %s", a.status, a.Error.Code)
				}
			}()
		}
		bwg.Wait()
		nbad := 0
		for _, e := range errs {
			if e != "" {
				if nbad < 5 {
					t.Errorf("%s: burst request: %s", g.name, e)
				}
				nbad++
			}
		}
		mx := percentile(durs, 1)
		if mx > 3*time.Second {
			t.Errorf("%s: a burst request took %v to answer", g.name, mx)
		}
		t.Logf("%s: %d concurrent uncached keys during the outage: %d not 503 auth_unavailable, p50 %v, max %v",
			g.name, burst, nbad, percentile(durs, 0.5).Round(time.Millisecond), mx.Round(time.Millisecond))
	}
	wg.Wait()

	for i, g := range c.gateways {
		served, lastOK, late := 0, time.Duration(-1), false
		for _, o := range warmSeen[i] {
			switch {
			case o.status == 200:
				served++
				lastOK = o.at
				if o.at > staleEnd+500*time.Millisecond && !late {
					late = true
					t.Errorf("%s: the cached key was served (at least) %v into the outage (max_stale %v, noticed within %v)", g.name, o.at.Round(time.Millisecond), faultMaxStale, detect)
				}
			case o.status == 503 && o.code == "auth_unavailable":
			default:
				t.Errorf("%s: cached key during the outage: %d %s", g.name, o.status, o.code)
			}
		}
		if served == 0 {
			t.Errorf("%s: the cached key was never served during the outage (max_stale %v)", g.name, faultMaxStale)
		}
		if last := warmSeen[i][len(warmSeen[i])-1]; last.status != 503 {
			t.Errorf("%s: the cached key still answers %d %v into the outage", g.name, last.status, last.at)
		}
		t.Logf("%s: cached key served %d times, last %v into the outage; 503 after", g.name, served, lastOK.Round(time.Millisecond))
	}
}

// recovered waits for every gateway to serve key again (up to 5 s) and returns how long it took.
func recovered(t *testing.T, c *faultCluster, key string) time.Duration {
	t.Helper()
	s := time.Now()
	for _, g := range c.gateways {
		testutil.WaitEvery(t, 5*time.Second-time.Since(s), 20*time.Millisecond, g.name+" to recover (5 s after the store's return at most)", func() bool {
			a := get(t, g.url+"/", key)
			if a.status != 200 && a.status != 503 {
				t.Fatalf("%s: while recovering: %d %s", g.name, a.status, a.body)
			}
			return a.status == 200
		})
	}
	return time.Since(s)
}

// noPileUp checks that each gateway's goroutines came back near baseline and that Redis has
// few connections once recovered.
func noPileUp(t *testing.T, c *faultCluster, baseline []int) {
	t.Helper()
	for i, g := range c.gateways {
		n := g.settleGoroutines(t, baseline[i], 15)
		t.Logf("%s: %d goroutines after recovery (baseline %d)", g.name, n, baseline[i])
	}
	const maxClients = 20
	n := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		n = connectedClients(t, c.rdb)
		if n <= maxClients || time.Now().After(deadline) {
			break
		}
	}
	if n > maxClients {
		t.Errorf("Redis has %d connected clients after recovery (%v)", n, namedConns(t, c.rdb))
	}
	t.Logf("Redis connected_clients after recovery: %d (%v)", n, namedConns(t, c.rdb))
}

// The store unreachable, frozen (SIGSTOP) then crashed (SIGKILL): uncached keys get 503
// auth_unavailable fast, 200 concurrent ones too, with no pile-up of goroutines or Redis
// connections; cached keys serve for at most max_stale; the gateways recover by themselves.
// With appendonly yes and appendfsync always, no acknowledged create or revoke is lost across
// the crash, and the gateways answer accordingly.
func TestFaultStoreUnreachable(t *testing.T) {
	c := startFaultCluster(t, faultConfig{gateways: 2, redisArgs: []string{"--appendonly", "yes", "--appendfsync", "always"}})

	baseline := func(keys ...string) []int {
		for _, k := range keys {
			c.warm(t, k)
		}
		var b []int
		for _, g := range c.gateways {
			b = append(b, g.goroutines(t))
		}
		return b
	}

	t.Run("frozen (SIGSTOP)", func(t *testing.T) {
		warmKey, _ := c.mint(t)
		uncached, _ := c.mint(t)
		base := baseline(warmKey)
		// Frozen, Redis still accepts connections (the kernel does) but answers nothing: the
		// gateways notice through their timeouts — the listener's blocking read (1 s) plus
		// the store timeout at the latest.
		outage(t, c, warmKey, uncached, c.srv.Stop, time.Second+faultTimeout+200*time.Millisecond)
		c.srv.Cont()
		d := recovered(t, c, warmKey)
		recovered(t, c, uncached)
		t.Logf("recovered %v after SIGCONT", d.Round(time.Millisecond))
		noPileUp(t, c, base)
	})

	t.Run("crashed (SIGKILL) and restarted with appendfsync always", func(t *testing.T) {
		ctx := context.Background()
		warmKey, _ := c.mint(t)
		uncached, _ := c.mint(t)
		// N keys created and half revoked, each acknowledged; the gateways have seen them all.
		const n = 40
		secrets := make([]string, n)
		keys := make([]store.Key, n)
		for i := range keys {
			secrets[i], keys[i] = c.mint(t)
		}
		for _, g := range c.gateways {
			for _, s := range secrets {
				if a := get(t, g.url+"/", s); a.status != 200 {
					t.Fatalf("%s: %d %s", g.name, a.status, a.body)
				}
			}
		}
		for i := 0; i < n; i += 2 {
			if _, _, err := c.store.RevokeKey(ctx, keys[i].Instance, keys[i].ID, time.Now(), nil); err != nil {
				t.Fatal(err)
			}
		}
		base := baseline(warmKey)
		outage(t, c, warmKey, uncached, c.srv.Kill, 200*time.Millisecond)
		c.srv.Restart()
		d := recovered(t, c, warmKey)
		recovered(t, c, uncached)
		t.Logf("recovered %v after the restart", d.Round(time.Millisecond))

		for i, k := range keys {
			got, err := c.store.Key(ctx, k.Instance, k.ID)
			if err != nil {
				t.Fatalf("key %d (%s) lost across the crash: %v", i, k.ID, err)
			}
			l, err := c.store.LookupHash(ctx, k.Hash)
			if err != nil {
				t.Fatalf("key %d (%s): lookup entry lost across the crash: %v", i, k.ID, err)
			}
			if wantRevoked := i%2 == 0; got.RevokedAt.IsZero() == wantRevoked || l.RevokedAt.IsZero() == wantRevoked {
				t.Errorf("key %d: revoked %v (lookup entry %v) after the crash, want %v", i, !got.RevokedAt.IsZero(), !l.RevokedAt.IsZero(), wantRevoked)
			}
		}
		for _, g := range c.gateways {
			for i, s := range secrets {
				a := get(t, g.url+"/", s)
				if i%2 == 0 && (a.status != 401 || a.Error.Code != "api_key_revoked") {
					t.Errorf("%s: revoked key %d after the crash: %d %s", g.name, i, a.status, a.body)
				}
				if i%2 == 1 && a.status != 200 {
					t.Errorf("%s: active key %d after the crash: %d %s", g.name, i, a.status, a.body)
				}
			}
		}
		noPileUp(t, c, base)
	})
}
