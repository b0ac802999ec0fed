package e2e

// Per-key rate limits and quotas across real gateway processes sharing one real Redis (and,
// for the accuracy test, a Redis Cluster): how much a window lets through however the load
// is spread, what the store is asked meanwhile, that a quota is never exceeded through a
// SIGKILL and a restart, that a graceful stop gives unspent quota back, and that a lowered
// limit reaches every gateway within a second.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/limit"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

// limitCluster is gateway processes on one store, in front of an upstream that records when
// each request let through reached it (by key id): the gateway's decision is just before.
type limitCluster struct {
	store    *redisstore.Store
	srv      *redistest.Server // nil on Redis Cluster
	gateways []*gateway
	ports    []int
	configs  []string

	mu   sync.Mutex
	seen map[string][]time.Time // upstream arrival times by key id
}

// startLimitCluster starts n gateways whose nora block uses storeLine, with s as the test's
// own store client.
func startLimitCluster(t *testing.T, n int, storeLine string, s *redisstore.Store) *limitCluster {
	t.Helper()
	c := &limitCluster{store: s, seen: map[string][]time.Time{}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		id := r.Header.Get("Nora-Key-Id")
		c.mu.Lock()
		c.seen[id] = append(c.seen[id], now)
		c.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	for i := 0; i < n; i++ {
		port := freePort(t)
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		%s
		instance acme-sandbox sandbox "Acme (sandbox)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy %s
}
`, storeLine, port, up.URL)
		c.ports = append(c.ports, port)
		c.configs = append(c.configs, cf)
		c.gateways = append(c.gateways, startGateway(t, cf, port))
	}
	testutil.WaitFor(t, 10*time.Second, "the gateways to create their instance", func() bool {
		_, err := s.Instance(context.Background(), "acme-sandbox")
		return err == nil
	})
	return c
}

// startLimitRedis is startLimitCluster on a redis-server of its own.
func startLimitRedis(t *testing.T, n int) *limitCluster {
	t.Helper()
	srv := redistest.Start(t)
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	c := startLimitCluster(t, n, "store redis "+srv.URL(0), s)
	c.srv = srv
	return c
}

// mint creates a key with these limits.
func (c *limitCluster) mint(t *testing.T, rl *store.RateLimit, q *store.Quota) (string, store.Key) {
	t.Helper()
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "limits", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k.RateLimit, k.Quota = rl, q
	if err := c.store.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

// arrivals returns the upstream arrival times of the key's requests.
func (c *limitCluster) arrivals(id string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.seen[id]...)
}

// stop sends sig to gateway i and waits until its process is gone (reaped).
func (c *limitCluster) stop(t *testing.T, i int, sig syscall.Signal) {
	t.Helper()
	p := c.gateways[i].cmd.Process
	p.Signal(sig)
	testutil.WaitEvery(t, 15*time.Second, 5*time.Millisecond, fmt.Sprintf("gateway %d to exit after %v", i, sig), func() bool {
		return errors.Is(syscall.Kill(p.Pid, 0), syscall.ESRCH)
	})
}

// restart starts gateway i again, same config and port.
func (c *limitCluster) restart(t *testing.T, i int) {
	t.Helper()
	c.gateways[i] = startGateway(t, c.configs[i], c.ports[i])
}

var limitClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
	MaxIdleConns: 512, MaxIdleConnsPerHost: 128, IdleConnTimeout: 30 * time.Second}}

// windowStart returns the start of rl's window holding t.
func windowStart(rl store.RateLimit, t time.Time) time.Time {
	s, _, _ := store.RateWindow(rl, t)
	return s
}

// spreadResult is what one spread of load did, per whole window.
type spreadResult struct {
	name       string
	allowed    []int // 200s per whole window (by upstream arrival)
	offered    []int // requests sent per whole window
	ambiguous  int   // 200s arriving within 2 ms after a window boundary
	requests   int64 // requests sent between the two commandstats snapshots
	commands   map[string]int64
	hmget      int64
	byGateway  [3]int
	statusSeen map[string]int
}

// offerLoad sends rate requests per second for the key, request k to gateway pick(k), from
// workers goroutines, over windows whole windows of rl (starting at the next boundary after
// a warm-up), and counts what each whole window let through.
func (c *limitCluster) offerLoad(t *testing.T, name, secret, id string, rl store.RateLimit, rate float64, weights [3]int, windows int) spreadResult {
	t.Helper()
	res := spreadResult{name: name, statusSeen: map[string]int{}}
	table := []int{}
	for g, w := range weights {
		for range w {
			table = append(table, g)
		}
	}
	// Warm every gateway's cache with the key (each its lookup and first lease).
	for _, g := range c.gateways {
		get(t, g.url+"/", secret)
	}
	// Start a quarter into the window before the first whole one, so that it is spent by its
	// end too: a request let through just before a boundary may reach the upstream just after,
	// and would be counted in the wrong window.
	now := time.Now()
	first := windowStart(rl, now).Add(2 * rl.Window)
	last := first.Add(time.Duration(windows) * rl.Window)
	begin := first.Add(-rl.Window * 3 / 4)
	end := last.Add(200 * time.Millisecond)
	time.Sleep(time.Until(begin))

	jobs := make(chan int, 4096)
	var mu sync.Mutex
	var sends []time.Time
	var wg sync.WaitGroup
	var sentInRange atomic.Int64
	const workers = 64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			var localSends []time.Time
			var byGw [3]int
			for k := range jobs {
				g := table[k%len(table)]
				at := time.Now()
				if !at.Before(first) && at.Before(last) {
					sentInRange.Add(1)
				}
				a, err := try(limitClient, c.gateways[g].url+"/", secret)
				localSends = append(localSends, at)
				if err != nil {
					local["error"]++
					continue
				}
				local[fmt.Sprintf("%d %s", a.status, a.Error.Code)]++
				if a.status == 200 {
					byGw[g]++
				}
			}
			mu.Lock()
			for s, n := range local {
				res.statusSeen[s] += n
			}
			for i := range byGw {
				res.byGateway[i] += byGw[i]
			}
			sends = append(sends, localSends...)
			mu.Unlock()
		}()
	}
	// The pacer, and the commandstats snapshots at the first and last boundaries.
	var before, after map[string]int64
	snapDone := make(chan struct{})
	if c.srv != nil {
		go func() {
			defer close(snapDone)
			time.Sleep(time.Until(first))
			before = c.srv.AllCommandCalls()
			time.Sleep(time.Until(last))
			after = c.srv.AllCommandCalls()
		}()
	} else {
		close(snapDone)
	}
	interval := time.Duration(float64(time.Second) / rate)
	for k := 0; ; k++ {
		at := begin.Add(time.Duration(k) * interval)
		if at.After(end) {
			break
		}
		time.Sleep(time.Until(at))
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	<-snapDone
	res.requests = sentInRange.Load()
	if c.srv != nil {
		res.commands = dataCommands(before, after)
		res.hmget = res.commands["hmget"]
	}

	res.allowed = make([]int, windows)
	res.offered = make([]int, windows)
	for _, at := range c.arrivals(id) {
		if at.Before(first) || !at.Before(last) {
			continue
		}
		w := int(at.Sub(first) / rl.Window)
		res.allowed[w]++
		if at.Sub(windowStart(rl, at)) < 2*time.Millisecond {
			res.ambiguous++
		}
	}
	for _, at := range sends {
		if at.Before(first) || !at.Before(last) {
			continue
		}
		res.offered[int(at.Sub(first)/rl.Window)]++
	}
	return res
}

// checkAccuracy asserts each whole window let through between 0.9 × and 1.0 × the limit,
// under an offered load of at least 2 × the limit.
func checkAccuracy(t *testing.T, r spreadResult, limit int64) {
	t.Helper()
	ratios := make([]string, len(r.allowed))
	for w, n := range r.allowed {
		ratios[w] = fmt.Sprintf("%d/%d=%.3f (offered %d)", n, limit, float64(n)/float64(limit), r.offered[w])
		if int64(r.offered[w]) < 2*limit {
			t.Errorf("%s window %d: offered only %d requests, want at least 2 × %d", r.name, w, r.offered[w], limit)
		}
		if int64(n) > limit {
			t.Errorf("%s window %d: %d requests let through, more than the limit %d", r.name, w, n, limit)
		}
		if float64(n) < 0.9*float64(limit) {
			t.Errorf("%s window %d: %d requests let through, under 0.9 × the limit %d", r.name, w, n, limit)
		}
	}
	t.Logf("%s: allowed per window %s; 200s by gateway %v; answers %v; 200s within 2 ms after a boundary: %d",
		r.name, strings.Join(ratios, ", "), r.byGateway, r.statusSeen, r.ambiguous)
}

// inScripts are the commands the stores' lease and release scripts run inside Redis.
var inScripts = map[string]bool{"get": true, "incrby": true, "decrby": true, "exists": true, "pexpireat": true}

// inUsageFlush are the commands of the usage counts' background flush inside its
// transactions: each transaction is one round trip, counted by its MULTI.
var inUsageFlush = map[string]bool{"exec": true, "hincrby": true, "expireat": true}

var spreads = []struct {
	name    string
	weights [3]int // out of 20
}{
	{"even", [3]int{7, 7, 6}},
	{"90/5/5", [3]int{18, 1, 1}},
	{"all on one", [3]int{20, 0, 0}},
}

// A key limited to 300 requests per 2 s, offered 3 × that over 3 gateways, spread evenly,
// 90/5/5 and all on one: every whole window lets through between 0.9 × and 1.0 × the limit.
// Meanwhile the store is asked only for leases (and by the invalidation listener): far fewer
// commands than requests, and no key lookup.
func TestLimitRateAccuracyThreeGateways(t *testing.T) {
	c := startLimitRedis(t, 3)
	rl := store.RateLimit{Limit: 300, Window: 2 * time.Second}
	rate := 3 * float64(rl.Limit) / rl.Window.Seconds()
	for _, sp := range spreads {
		secret, k := c.mint(t, &rl, nil)
		r := c.offerLoad(t, sp.name, secret, k.ID, rl, rate, sp.weights, 4)
		checkAccuracy(t, r, rl.Limit)
		// Commands the lease and release scripts run inside Redis are counted by commandstats
		// too; a round trip is a script call (evalsha, eval), a transaction of the usage
		// flush (its MULTI) or any other command.
		var trips, all, scripts int64
		names := make([]string, 0, len(r.commands))
		for n, d := range r.commands {
			all += d
			names = append(names, fmt.Sprintf("%s=%d", n, d))
			switch n {
			case "evalsha", "eval":
				scripts += d
			}
			if !inScripts[n] && !inUsageFlush[n] {
				trips += d
			}
		}
		sort.Strings(names)
		for n := range inScripts {
			if r.commands[n] > scripts {
				t.Errorf("%s: %d %s, more than the %d script calls that run it: called directly on the request path?", sp.name, r.commands[n], n, scripts)
			}
		}
		ratio := float64(trips) / float64(r.requests)
		t.Logf("%s: %d Redis round trips (%d lease/release script calls) for %d requests over the whole windows: %.4f per request; %d commands counting those inside scripts (%s)",
			sp.name, trips, scripts, r.requests, ratio, all, strings.Join(names, " "))
		if r.hmget != 0 {
			t.Errorf("%s: %d key lookups (hmget) during steady traffic on a cached key", sp.name, r.hmget)
		}
		if ratio >= 0.10 {
			t.Errorf("%s: %.3f Redis round trips per request, want under 0.10", sp.name, ratio)
		}
	}
}

// The same on a Redis Cluster of three masters (the gateways seeded with every master).
func TestLimitRateAccuracyOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	rc := redistest.StartCluster(t)
	s := redisstore.New(redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	line := fmt.Sprintf("store redis {\n\t\t\taddrs %s\n\t\t\tcluster\n\t\t}", strings.Join(rc.Addrs(), " "))
	c := startLimitCluster(t, 3, line, s)
	rl := store.RateLimit{Limit: 300, Window: 2 * time.Second}
	rate := 3 * float64(rl.Limit) / rl.Window.Seconds()
	for _, sp := range spreads[:2] {
		secret, k := c.mint(t, &rl, nil)
		checkAccuracy(t, c.offerLoad(t, sp.name+" (cluster)", secret, k.ID, rl, rate, sp.weights, 3), rl.Limit)
	}
}

// quotaCounter reads the key's total-quota counter.
func (c *limitCluster) quotaCounter(t *testing.T, k store.Key) int64 {
	t.Helper()
	_, _, name := store.QuotaPeriod(*k.Quota, time.Now())
	n, err := c.store.Used(context.Background(), k.Instance, k.ID, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A total quota of 600 with 3 gateways hammered concurrently, one SIGKILLed in the middle and
// restarted: no more than 600 requests are ever let through, and no fewer than 600 less one
// lease of the killed gateway (1/32 of the quota) and the requests it was answering when
// killed.
func TestQuotaNeverExceededThroughSIGKILL(t *testing.T) {
	c := startLimitRedis(t, 3)
	const total = 600
	q := store.Quota{Limit: total, Period: store.QuotaTotal}
	secret, k := c.mint(t, nil, &q)

	var ok, exceeded [3]atomic.Int64
	var errs [3]atomic.Int64
	var killAt atomic.Int64   // when gateway 1 was SIGKILLed (Unix nanoseconds; 0: not yet)
	var inFlight atomic.Int64 // requests to gateway 1 sent before the kill that got no answer
	var okTotal atomic.Int64
	other := map[string]int{}
	var omu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var gwMu sync.RWMutex // c.gateways[1] is replaced on restart
	for g := range 3 {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					gwMu.RLock()
					url := c.gateways[g].url
					gwMu.RUnlock()
					sentAt := time.Now().UnixNano()
					a, err := try(limitClient, url+"/", secret)
					switch {
					case err != nil:
						errs[g].Add(1)
						if k := killAt.Load(); g == 1 && k != 0 && sentAt < k {
							inFlight.Add(1)
						}
						time.Sleep(10 * time.Millisecond)
					case a.status == 200:
						ok[g].Add(1)
						okTotal.Add(1)
					case a.status == 429 && a.Error.Code == "quota_exceeded":
						exceeded[g].Add(1)
						time.Sleep(5 * time.Millisecond)
					default:
						omu.Lock()
						other[fmt.Sprintf("%d %s", a.status, a.Error.Code)]++
						omu.Unlock()
						time.Sleep(5 * time.Millisecond)
					}
				}
			}()
		}
	}
	// Kill gateway 1 once about a third of the quota is spent, while it is busy.
	testutil.WaitEvery(t, 30*time.Second, time.Millisecond, "a third of the quota to be spent", func() bool {
		return okTotal.Load() >= total/3
	})
	okBeforeKill := okTotal.Load()
	killedOK := ok[1].Load()
	killAt.Store(time.Now().UnixNano())
	c.stop(t, 1, syscall.SIGKILL)
	killedAt := time.Now()
	time.Sleep(300 * time.Millisecond)
	gwMu.Lock()
	c.restart(t, 1)
	gwMu.Unlock()
	t.Logf("gateway 1 SIGKILLed after %d 200s in all (%d of them its own), restarted after %v",
		okBeforeKill, killedOK, time.Since(killedAt).Round(time.Millisecond))
	testutil.WaitEvery(t, 60*time.Second, 5*time.Millisecond, "every gateway to answer quota_exceeded", func() bool {
		return exceeded[0].Load() > 0 && exceeded[1].Load() > 0 && exceeded[2].Load() > 0
	})
	// A little longer: the gateways look again once a second, in case units came back.
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	for g, gw := range c.gateways {
		if a := get(t, gw.url+"/", secret); a.status != 429 || a.Error.Code != "quota_exceeded" {
			t.Errorf("gateway %d after the quota is spent: %d %s", g, a.status, a.body)
		}
	}
	served := okTotal.Load()
	killedInFlight := inFlight.Load()
	counter := c.quotaCounter(t, k)
	upstream := int64(len(c.arrivals(k.ID)))
	t.Logf("quota %d: %d 200s in all (by gateway %d %d %d; upstream saw %d), counter %d, unused %d; "+
		"transport errors on gateway 1 %d (%d of them sent before the kill); other answers %v",
		total, served, ok[0].Load(), ok[1].Load(), ok[2].Load(), upstream, counter, total-served,
		errs[1].Load(), killedInFlight, other)
	if served > total || upstream > total {
		t.Errorf("the quota was exceeded: %d 200s (upstream saw %d), quota %d", served, upstream, total)
	}
	if counter > total {
		t.Errorf("the counter is %d, past the quota %d", counter, total)
	}
	// What the killed gateway could hold: one lease, at most 1/32 of the quota, and the
	// requests it had let through when killed, whose answers were lost.
	if lo := int64(total-total/32) - killedInFlight; served < lo {
		t.Errorf("only %d 200s, want at least %d (the quota less one lease and %d requests in flight at the kill)", served, lo, killedInFlight)
	}
}

// Unspent quota goes back to the counter when a gateway stops gracefully (SIGTERM): after
// every gateway has stopped, the counter equals the requests let through, exactly.
func TestQuotaGivenBackOnGracefulStop(t *testing.T) {
	c := startLimitRedis(t, 3)
	q := store.Quota{Limit: 100000, Period: store.QuotaTotal}
	secret, k := c.mint(t, nil, &q)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := range 3 {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 60 {
					a, err := try(limitClient, c.gateways[g].url+"/", secret)
					if err != nil {
						t.Error(err)
						return
					}
					if a.status != 200 {
						t.Errorf("gateway %d: %d %s", g, a.status, a.body)
						return
					}
					ok.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	served := ok.Load()
	counts := []int64{c.quotaCounter(t, k)}
	for g := range c.gateways {
		c.stop(t, g, syscall.SIGTERM)
		counts = append(counts, c.quotaCounter(t, k))
	}
	t.Logf("%d 200s; the counter with 3, 2, 1, 0 gateways running: %v", served, counts)
	for i := 1; i < len(counts); i++ {
		if counts[i] > counts[i-1] {
			t.Errorf("the counter went up after a graceful stop: %v", counts)
		}
	}
	if counts[0] < served {
		t.Errorf("the counter (%d) is below the requests let through (%d) while the gateways run", counts[0], served)
	}
	if got := counts[len(counts)-1]; got != served {
		t.Errorf("after every gateway stopped gracefully the counter is %d, want the %d requests let through", got, served)
	}
}

// A lowered rate limit (UpdateKey, as a PATCH does) is enforced on every gateway within 1 s:
// the RateLimit-Limit header says the new limit, and requests over it get 429.
func TestLimitLoweredReachesEveryGateway(t *testing.T) {
	c := startLimitRedis(t, 3)
	old := store.RateLimit{Limit: 1000, Window: 10 * time.Second}
	secret, k := c.mint(t, &old, nil)
	// Start early in a window, so that the test ends in it.
	if ws := windowStart(old, time.Now()); time.Since(ws) > 2*time.Second {
		time.Sleep(time.Until(ws.Add(old.Window)) + 50*time.Millisecond)
	}
	for g, gw := range c.gateways {
		for range 3 {
			a := get(t, gw.url+"/", secret)
			if a.status != 200 || a.header.Get("RateLimit-Limit") != "1000" {
				t.Fatalf("gateway %d before the change: %d, RateLimit-Limit %q", g, a.status, a.header.Get("RateLimit-Limit"))
			}
		}
	}
	// 20 per 5 s: a new window length, so a counter of its own (the old window's counter
	// already holds more than 20 leased units, which would refuse every request at once).
	lowered := &store.RateLimit{Limit: 20, Window: 5 * time.Second}
	if _, err := c.store.UpdateKey(context.Background(), k.Instance, k.ID, store.KeyUpdate{RateLimit: &lowered}, nil); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	okN := 0 // requests let through under the new limit
	for g, gw := range c.gateways {
		for {
			a := get(t, gw.url+"/", secret)
			if a.header.Get("RateLimit-Limit") == "20" {
				if a.status == 200 {
					okN++
				}
				break
			}
			if a.status != 200 || a.header.Get("RateLimit-Limit") != "1000" {
				t.Fatalf("gateway %d while the change propagates: %d %q", g, a.status, a.header.Get("RateLimit-Limit"))
			}
			if time.Since(changed) > time.Second {
				t.Fatalf("gateway %d still says RateLimit-Limit 1000 a second after the change", g)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	t.Logf("every gateway said RateLimit-Limit 20 %v after the change", time.Since(changed).Round(time.Millisecond))
	// Now 40 requests on each gateway: together no more than 20 let through in this window,
	// and every gateway refuses with 429 rate_limit_exceeded.
	for g, gw := range c.gateways {
		refused := 0
		for range 40 {
			a := get(t, gw.url+"/", secret)
			if a.header.Get("RateLimit-Limit") != "20" {
				t.Errorf("gateway %d: RateLimit-Limit %q after the change", g, a.header.Get("RateLimit-Limit"))
			}
			switch {
			case a.status == 200:
				okN++
			case a.status == 429 && a.Error.Code == "rate_limit_exceeded":
				refused++
				if a.header.Get("Retry-After") == "" {
					t.Errorf("gateway %d: a 429 without Retry-After", g)
				}
			default:
				t.Fatalf("gateway %d: %d %s", g, a.status, a.body)
			}
		}
		if refused == 0 {
			t.Errorf("gateway %d let every one of 40 requests through under a limit of 20", g)
		}
	}
	if windowStart(*lowered, time.Now()).After(changed) {
		t.Fatalf("the 5 s window rolled over during the test: too slow to count")
	}
	if okN > 20 || okN < 18 {
		t.Errorf("%d requests let through after lowering the limit to 20 per 5 s, want 18 to 20", okN)
	}
	t.Logf("after the change: %d of 123 requests let through (limit 20 per 5 s)", okN)
}

// recordingLeaser is a store.Leaser that counts the units it granted.
type recordingLeaser struct {
	store.Leaser
	granted atomic.Int64
}

func (l *recordingLeaser) Lease(ctx context.Context, instance, keyID, counter string, limit, n int64, expireAt time.Time) (int64, int64, error) {
	g, used, err := l.Leaser.Lease(ctx, instance, keyID, counter, limit, n, expireAt)
	l.granted.Add(g)
	return g, used, err
}

// What one gateway holds of a quota (leased, not spent: what a SIGKILL loses) is at most one
// lease, 1/32 of the quota, as docs/limits.md says. One gateway's meter on the real Redis
// store, one key spending as fast as it can: after every request, the units granted less the
// requests let through.
func TestQuotaHeldByOneGatewayAtMostOneLease(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	rec := &recordingLeaser{Leaser: s}
	m := limit.NewMeter(rec, limit.MeterConfig{})
	defer m.Close()
	q := &store.Quota{Limit: 32000, Period: store.QuotaTotal} // leases of at most 1000
	km := m.Key("acme-sandbox", "key_held")
	var allowed, maxHeld int64
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if km.Take(nil, q).Outcome != limit.Allowed {
			break
		}
		allowed++
		if h := rec.granted.Load() - allowed; h > maxHeld {
			maxHeld = h
		}
	}
	t.Logf("%d requests let through; at most %d units held at once (one lease is at most %d)", allowed, maxHeld, q.Limit/32)
	if maxHeld > q.Limit/32 {
		t.Errorf("one gateway held %d leased, unspent units at once, more than one lease (%d = 1/32 of the quota): "+
			"a SIGKILL then loses more than docs/limits.md promises", maxHeld, q.Limit/32)
	}
}

// countingLeaser is a store.Leaser that counts its Lease calls.
type countingLeaser struct {
	store.Leaser
	calls atomic.Int64
}

func (l *countingLeaser) Lease(ctx context.Context, instance, keyID, counter string, limit, n int64, expireAt time.Time) (int64, int64, error) {
	l.calls.Add(1)
	return l.Leaser.Lease(ctx, instance, keyID, counter, limit, n, expireAt)
}

// A quota key that was idle for an hour and then gets a burst (100,000 requests per second by
// the meter's clock) still costs few store calls: leases are sized by what the gateway spends
// in a tenth of a second, not by its average since the key's first request.
func TestQuotaLeaseSizeAfterIdle(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	cl := &countingLeaser{Leaser: s}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	m := limit.NewMeter(cl, limit.MeterConfig{Now: clock})
	defer m.Close()
	q := &store.Quota{Limit: 1_000_000_000_000, Period: store.QuotaTotal}
	km := m.Key("acme-sandbox", "key_idle")
	if km.Take(nil, q).Outcome != limit.Allowed {
		t.Fatal("refused")
	}
	advance(time.Hour)
	before := cl.calls.Load()
	const burst = 5000
	for range burst {
		if km.Take(nil, q).Outcome != limit.Allowed {
			t.Fatal("refused")
		}
		advance(10 * time.Microsecond)
	}
	leases := cl.calls.Load() - before
	t.Logf("%d requests in 50 ms (by the meter's clock) after an hour idle: %d leases", burst, leases)
	// A tenth of a second at this rate is 10,000 units: a handful of leases would do.
	if leases > burst/10 {
		t.Errorf("%d leases for %d requests after an idle hour: the lease size follows the key's "+
			"average rate since its first request, so nearly every request waits for the store", leases, burst)
	}
}
