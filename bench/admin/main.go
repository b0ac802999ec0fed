// Command admin measures the admin API under load against a real keygate gateway process on
// a real redis-server (targets: at least 1,000 creates/s on Redis; a page of 100 from an
// instance holding 100,000 keys in at most 20 ms), and the file store's creates for scale.
//
// It starts its own redis-server on a free port (in a temporary directory, never the
// machine's own Redis) and one gateway on it with a nora_admin site, then:
//
//	creates   -clients goroutines POST /v1/instances/{instance}/keys for -seconds, each body
//	          one of four shapes in turn (name only; scopes + metadata; scopes + allowed_ips
//	          + rate_limit; everything: scopes, allowed_ips, metadata, rate_limit, quota,
//	          expires_at); creates/s, latency, Redis commands per create
//	fill      -keys keys into each of two instances through a redisstore client (CreateKey,
//	          in parallel): list-plain (restrictions, no quotas) and list-quota (every key
//	          with a quota, so every key of a page costs the admin API one read of its count)
//	list      GET /v1/instances/{instance}/keys?limit=100, one at a time on a keep-alive
//	          connection: the first page and pages at random depths (starting_after a
//	          random key), -pages of each per instance; beside it the store's ListKeys alone,
//	          in this process, for the same pages
//
// then a second gateway on the file store (its own file) for the same creates.
//
//	go run ./bench/admin [-keygate path] [-clients 16] [-seconds 10] [-keys 100000] [-pages 300] [-profile dir] [-out file]
//
// Without -keygate it builds ./cmd/keygate into a temporary directory with `go build`. With
// -profile the gateways' CPU profiles of the creates and of the list-quota pages are fetched
// from Caddy's admin endpoint (/debug/pprof/profile) into dir, for `go tool pprof`.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/bench/internal/harness"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

const token = "bench-admin-admin-token"

type config struct {
	root, bin, redisBin, profile, out string
	clients, keys, pages              int
	seconds                           time.Duration
}

func main() {
	root := harness.ModuleRoot()
	c := config{root: root}
	flag.StringVar(&c.bin, "keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
	flag.StringVar(&c.redisBin, "redis-server", "redis-server", "redis-server binary")
	flag.IntVar(&c.clients, "clients", 16, "concurrent clients creating keys")
	seconds := flag.Float64("seconds", 10, "how long each store's creates run")
	flag.IntVar(&c.keys, "keys", 100000, "keys in each listed instance")
	flag.IntVar(&c.pages, "pages", 300, "pages timed of each kind (first, random depth) per instance")
	flag.StringVar(&c.profile, "profile", "", "directory for the gateways' CPU profiles (\"\": none)")
	flag.StringVar(&c.out, "out", filepath.Join(root, "bench", "results", "admin.txt"), "results file (\"\": none)")
	flag.Parse()
	c.seconds = time.Duration(*seconds * float64(time.Second))
	harness.Main("admin", func(r *harness.Run) error { return run(r, c) })
}

// gateway is a started keygate process with a nora_admin site and a Caddy admin endpoint.
type gateway struct {
	proc  *harness.Proc
	admin string // the nora_admin site, http://127.0.0.1:port
	caddy string // Caddy's admin endpoint, 127.0.0.1:port
}

func startGateway(r *harness.Run, bin, dir, storeLine string) (*gateway, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	cport, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	nora {
		%s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance list-plain sandbox "List, no quotas"
		instance list-quota sandbox "List, every key with a quota"
	}
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete
	}
}
`, cport, storeLine, port, token)
	p, err := r.StartGateway(bin, dir, cf, port, "gateway ("+filepath.Base(dir)+")")
	if err != nil {
		return nil, err
	}
	g := &gateway{proc: p, admin: fmt.Sprintf("http://127.0.0.1:%d", port), caddy: fmt.Sprintf("127.0.0.1:%d", cport)}
	// The instances exist once the API lists them.
	hc := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		var l struct {
			Data []json.RawMessage `json:"data"`
		}
		if st, _, err := call(hc, "GET", g.admin+"/v1/instances", nil, &l); err == nil && st == 200 && len(l.Data) == 3 {
			return g, nil
		}
		if i == 500 {
			return nil, errors.New("the gateway did not create its 3 instances")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call sends one admin API request with the benchmark's token; body is JSON (or nil), and the
// answer is decoded into out when it is not nil. It returns the status and the answer's size.
func call(hc *http.Client, method, url string, body []byte, out any) (int, int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && out != nil && resp.StatusCode < 300 {
		err = json.Unmarshal(b, out)
	}
	return resp.StatusCode, len(b), err
}

func run(r *harness.Run, c config) error {
	if c.clients < 1 || c.keys < 1000 || c.pages < 1 || c.seconds <= 0 {
		return errors.New("-clients and -pages must be at least 1, -keys at least 1000, -seconds positive")
	}
	if err := harness.CheckRedisServer(c.redisBin); err != nil {
		return err
	}
	if c.profile != "" {
		if err := os.MkdirAll(c.profile, 0o755); err != nil {
			return err
		}
	}
	work, err := r.TempDir("keygate-admin")
	if err != nil {
		return err
	}
	bin, err := harness.Keygate(c.root, c.bin, work)
	if err != nil {
		return err
	}
	rd, err := r.StartRedis(c.redisBin, filepath.Join(work, "redis"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	gw, err := startGateway(r, bin, filepath.Join(work, "gw-redis"), "store redis redis://"+rd.Addr+"/0")
	if err != nil {
		return err
	}
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: rd.Addr, PoolSize: 64}), redisstore.Options{})
	r.OnCleanup(func() { st.Close() })

	var b strings.Builder
	fmt.Fprintf(&b, "keygate admin API under load (targets: >= 1,000 creates/s on Redis; a page of 100 from an instance of %d keys in <= 20 ms)\n\n", c.keys)
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %d CPUs (nproc), %s, %s/%s, %s, redis-server %s; load average at start %s\n",
		harness.NProc(), harness.CPUModel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), rd.Version, harness.LoadAvg())
	fmt.Fprintf(&b, "command:  %s\n", harness.CommandLine("./bench/admin"))
	fmt.Fprintf(&b, "setup:    1 redis-server (loopback, no persistence), 1 keygate gateway process (nora_admin site),\n")
	fmt.Fprintf(&b, "          this client process: all on the same CPUs\n\n")

	// Creates on Redis.
	fmt.Printf("redis-server %s on %s; creates through the admin API, %d clients, %v …\n", rd.Version, rd.Addr, c.clients, c.seconds)
	before, err := harness.CommandCalls(ctx, rd.Client)
	if err != nil {
		return err
	}
	cr, err := creates(c, gw, "redis", []int{gw.proc.Cmd.Process.Pid, rd.Proc.Cmd.Process.Pid})
	if err != nil {
		return err
	}
	after, err := harness.CommandCalls(ctx, rd.Client)
	if err != nil {
		return err
	}
	b.WriteString(cr.report("Redis", []string{"gateway", "redis-server"}))
	fmt.Fprintf(&b, "  Redis commands per create (INFO commandstats, the commands scripts run counted too; the gateway's\n")
	fmt.Fprintf(&b, "  background work included): %s\n\n", perCreate(before, after, cr.ok))

	// Fill the listed instances.
	fmt.Printf("filling list-plain and list-quota with %d keys each …\n", c.keys)
	ids := map[string][]string{}
	for _, inst := range []string{"list-plain", "list-quota"} {
		start := time.Now()
		got, err := fill(ctx, st, inst, c.keys)
		if err != nil {
			return err
		}
		ids[inst] = got
		d := time.Since(start)
		fmt.Fprintf(&b, "fill:     %d keys into %s through redisstore.CreateKey, 32 goroutines: %.1f s (%.0f keys/s)\n",
			c.keys, inst, d.Seconds(), float64(c.keys)/d.Seconds())
	}
	if info, err := rd.Client.Info(ctx, "memory").Result(); err == nil {
		fmt.Fprintf(&b, "          redis used_memory after the fill: %s\n", infoField(info, "used_memory_human"))
	}
	b.WriteString("\n")

	// List pages.
	var worstP99 time.Duration // the highest p99 of the pages through the API
	fmt.Fprintf(&b, "list:     GET /v1/instances/{instance}/keys?limit=100, one at a time on one keep-alive connection,\n")
	fmt.Fprintf(&b, "          %d pages of each kind, interleaved; \"store\" is redisstore.ListKeys alone for the same pages,\n", c.pages)
	fmt.Fprintf(&b, "          in this process (2 round trips + 1 pipeline of 101 HMGETs; with a cursor 1 more)\n")
	for _, inst := range []string{"list-plain", "list-quota"} {
		fmt.Printf("listing %s …\n", inst)
		lr, p99, err := list(ctx, c, gw, st, rd.Client, inst, ids[inst])
		if err != nil {
			return err
		}
		b.WriteString(lr)
		worstP99 = max(worstP99, p99)
	}
	if c.profile != "" {
		f := filepath.Join(c.profile, "list-quota.pprof")
		fmt.Printf("profiling the gateway while it lists list-quota pages (%v) …\n", c.seconds)
		if err := profileWhile(gw.caddy, c.seconds, f, func(stop <-chan struct{}) error {
			return listLoop(gw, ids["list-quota"], stop)
		}); err != nil {
			return err
		}
		fmt.Fprintf(&b, "  profile of the gateway listing list-quota: %s\n", f)
	}
	b.WriteString("\n")

	// Creates on the file store, on a gateway of its own.
	gw.proc.Stop()
	fdir := filepath.Join(work, "gw-file")
	fgw, err := startGateway(r, bin, fdir, "store file "+filepath.Join(fdir, "keys.db"))
	if err != nil {
		return err
	}
	fmt.Printf("file store; creates through the admin API, %d clients, %v …\n", c.clients, c.seconds)
	fr, err := creates(c, fgw, "file", []int{fgw.proc.Cmd.Process.Pid})
	if err != nil {
		return err
	}
	b.WriteString(fr.report("the file store (bbolt: one transaction, so one fsync, per write)", []string{"gateway"}))

	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(&b, "\ntarget:   >= 1,000 creates/s on Redis: %s (%.0f/s)\n", verdict(cr.rate() >= 1000), cr.rate())
	fmt.Fprintf(&b, "target:   a page of 100 (p99, every kind above) <= 20 ms: %s (worst p99 %s)\n", verdict(worstP99 <= 20*time.Millisecond), ms(worstP99))
	fmt.Print("\n" + b.String())
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", c.out)
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func dist(d []time.Duration) string {
	p := harness.Percentile
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", ms(p(d, .5)), ms(p(d, .9)), ms(p(d, .99)), ms(p(d, 1)))
}

// createBody is the i-th create's body: four shapes in turn.
func createBody(i int) []byte {
	m := map[string]any{"name": fmt.Sprintf("bench-%d", i)}
	switch i % 4 {
	case 1:
		m["scopes"] = []string{"charges:read", "customers:*"}
		m["metadata"] = map[string]string{"customer": fmt.Sprintf("cus_%06d", i), "plan": "pro"}
	case 2:
		m["scopes"] = []string{"charges:*"}
		m["allowed_ips"] = []string{"10.0.0.0/8", "192.168.1.7"}
		m["rate_limit"] = map[string]int{"limit": 100, "window_seconds": 60}
	case 3:
		m["scopes"] = []string{"charges:read", "charges:write", "customers:read"}
		m["allowed_ips"] = []string{"203.0.113.0/24", "2001:db8::/32"}
		m["metadata"] = map[string]string{"customer": fmt.Sprintf("cus_%06d", i), "plan": "enterprise", "team": "payments"}
		m["rate_limit"] = map[string]int{"limit": 1000, "window_seconds": 1}
		m["quota"] = map[string]any{"limit": 1000000, "period": "month"}
		m["expires_at"] = time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(m)
	return b
}

type createResult struct {
	ok, failed int
	firstErr   string
	elapsed    time.Duration
	lat        []time.Duration
	cpu        []float64 // CPU seconds of the processes named in report, then this process
	profile    string
	clients    int
}

func (cr createResult) rate() float64 { return float64(cr.ok) / cr.elapsed.Seconds() }

func (cr createResult) report(what string, procs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "creates on %s: POST /v1/instances/acme-sandbox/keys, %d clients (keep-alive), %.1f s\n", what, cr.clients, cr.elapsed.Seconds())
	fmt.Fprintf(&b, "  bodies in turn: name only | scopes + metadata | scopes + allowed_ips + rate_limit |\n")
	fmt.Fprintf(&b, "  scopes + allowed_ips + metadata + rate_limit + quota + expires_at\n")
	fmt.Fprintf(&b, "  created: %d (%.0f creates/s), failed: %d%s\n", cr.ok, cr.rate(), cr.failed, cr.firstErr)
	fmt.Fprintf(&b, "  latency (send to answer): %s\n", dist(cr.lat))
	var cpu []string
	for i, name := range append(procs, "this client") {
		cpu = append(cpu, fmt.Sprintf("%s %.1f s", name, cr.cpu[i]))
	}
	fmt.Fprintf(&b, "  CPU time over the run: %s (of %.1f s × %d CPUs); %.0f µs of CPU per create in all\n",
		strings.Join(cpu, ", "), cr.elapsed.Seconds(), harness.NProc(), sum(cr.cpu)/float64(max(1, cr.ok))*1e6)
	if cr.profile != "" {
		fmt.Fprintf(&b, "  gateway CPU profile: %s\n", cr.profile)
	}
	return b.String()
}

func sum(f []float64) float64 {
	var s float64
	for _, x := range f {
		s += x
	}
	return s
}

// creates runs c.clients goroutines creating keys through gw's admin API for c.seconds
// (after a short warm-up, not counted). pids are the processes whose CPU time is reported.
func creates(c config, gw *gateway, name string, pids []int) (createResult, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: c.clients}}
	url := gw.admin + "/v1/instances/acme-sandbox/keys"
	for i := 0; i < 4*c.clients; i++ { // warm-up: connections, scripts loaded, pools
		if st, _, err := call(hc, "POST", url, createBody(i), nil); err != nil || st != 201 {
			return createResult{}, fmt.Errorf("warm-up create: %d %v", st, err)
		}
	}
	cr := createResult{clients: c.clients}
	var wait func() error
	if c.profile != "" {
		cr.profile = filepath.Join(c.profile, "create-"+name+".pprof")
		wait = harness.FetchProfile(gw.caddy, c.seconds, cr.profile)
	}
	cpu0 := cpuTimes(pids)
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		counter atomic.Int64
	)
	start := time.Now()
	deadline := start.Add(c.seconds)
	for w := 0; w < c.clients; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			ok, failed, first := 0, 0, ""
			for time.Now().Before(deadline) {
				body := createBody(int(counter.Add(1)))
				s := time.Now()
				st, _, err := call(hc, "POST", url, body, nil)
				d := time.Since(s)
				if err != nil || st != 201 {
					failed++
					if first == "" {
						first = fmt.Sprintf(" (first: %d %v)", st, err)
					}
					continue
				}
				ok++
				lat = append(lat, d)
			}
			mu.Lock()
			cr.ok += ok
			cr.failed += failed
			cr.lat = append(cr.lat, lat...)
			if cr.firstErr == "" {
				cr.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	cr.elapsed = time.Since(start)
	cpu1 := cpuTimes(pids)
	for i := range cpu0 {
		cr.cpu = append(cr.cpu, cpu1[i]-cpu0[i])
	}
	if wait != nil {
		if err := wait(); err != nil {
			return cr, err
		}
	}
	return cr, nil
}

// perCreate lists the Redis commands counted between before and after, per create.
func perCreate(before, after map[string]int64, n int) string {
	type cmd struct {
		name string
		per  float64
	}
	var cmds []cmd
	for name, v := range after {
		if d := v - before[name]; d > 0 && name != "info" {
			cmds = append(cmds, cmd{name, float64(d) / float64(max(1, n))})
		}
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].per > cmds[j].per })
	var out []string
	for _, c := range cmds {
		if c.per >= 0.005 {
			out = append(out, fmt.Sprintf("%s %.2f", c.name, c.per))
		}
	}
	return strings.Join(out, ", ")
}

// fill creates n keys in instance through st, 32 at a time, and returns their ids in the
// order they were made. list-quota's keys all have a monthly quota; list-plain's have the
// restrictions of the create bodies' first three shapes.
func fill(ctx context.Context, st store.Store, instance string, n int) ([]string, error) {
	in := store.Instance{ID: instance, Environment: apikey.Sandbox}
	ids := make([]string, n)
	var next atomic.Int64
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				_, k, err := store.Mint(apikey.Hasher{}, in, fmt.Sprintf("bench-%d", i), time.Time{}, time.Now())
				if err != nil {
					errs <- err
					return
				}
				switch {
				case instance == "list-quota":
					k.Scopes = []string{"charges:read", "customers:read"}
					k.Metadata = map[string]string{"customer": fmt.Sprintf("cus_%06d", i)}
					k.RateLimit = &store.RateLimit{Limit: 1000, Window: time.Second}
					k.Quota = &store.Quota{Limit: 1000000, Period: store.QuotaMonth}
				case i%3 == 1:
					k.Scopes = []string{"charges:read", "customers:*"}
					k.Metadata = map[string]string{"customer": fmt.Sprintf("cus_%06d", i), "plan": "pro"}
				case i%3 == 2:
					k.Scopes = []string{"charges:*"}
					k.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
					k.RateLimit = &store.RateLimit{Limit: 100, Window: time.Minute}
				}
				if err := st.CreateKey(ctx, k); err != nil {
					errs <- fmt.Errorf("creating key %d of %s: %v", i, instance, err)
					return
				}
				ids[i] = k.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return ids, nil
}

// list times first pages and pages at random depths of instance through gw's admin API, and
// the store's ListKeys for the same pages; it returns its report and the highest p99 of the
// pages through the API.
func list(ctx context.Context, c config, gw *gateway, st store.Store, rdb *redis.Client, instance string, ids []string) (string, time.Duration, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	rng := rand.New(rand.NewPCG(1, uint64(len(instance))))
	// A cursor among all but the oldest 1,000 keys: at least 100 keys follow it (the fill
	// made them in about the order of ids, 32 at a time).
	cursors := make([]string, c.pages)
	for i := range cursors {
		cursors[i] = ids[1000+rng.IntN(len(ids)-1000)]
	}
	type page struct {
		Data []struct {
			ID        string `json:"id"`
			QuotaUsed *int64 `json:"quota_used"`
		} `json:"data"`
		HasMore bool `json:"has_more"`
	}
	get := func(cursor string) (time.Duration, int, page, error) {
		url := gw.admin + "/v1/instances/" + instance + "/keys?limit=100"
		if cursor != "" {
			url += "&starting_after=" + cursor
		}
		var p page
		s := time.Now()
		status, size, err := call(hc, "GET", url, nil, &p)
		d := time.Since(s)
		if err == nil && status != 200 {
			err = fmt.Errorf("answer %d", status)
		}
		if err == nil && len(p.Data) != 100 {
			err = fmt.Errorf("a page of %d keys, not 100", len(p.Data))
		}
		return d, size, p, err
	}
	for i := 0; i < 20; i++ { // warm-up
		if _, _, _, err := get(cursors[i%len(cursors)]); err != nil {
			return "", 0, fmt.Errorf("listing %s: %v", instance, err)
		}
	}
	var first, deep, sFirst, sDeep []time.Duration
	var size, withUse int
	for i := 0; i < c.pages; i++ {
		d, n, p, err := get("")
		if err != nil {
			return "", 0, fmt.Errorf("first page of %s: %v", instance, err)
		}
		first, size = append(first, d), n
		withUse = 0
		for _, k := range p.Data {
			if k.QuotaUsed != nil {
				withUse++
			}
		}
		if d, _, _, err = get(cursors[i]); err != nil {
			return "", 0, fmt.Errorf("page of %s after %s: %v", instance, cursors[i], err)
		}
		deep = append(deep, d)
		for _, cur := range []string{"", cursors[i]} {
			s := time.Now()
			keys, _, err := st.ListKeys(ctx, instance, store.ListOptions{Limit: 100, StartingAfter: cur, Now: time.Now()})
			d := time.Since(s)
			if err != nil || len(keys) != 100 {
				return "", 0, fmt.Errorf("ListKeys of %s: %d keys, %v", instance, len(keys), err)
			}
			if cur == "" {
				sFirst = append(sFirst, d)
			} else {
				sDeep = append(sDeep, d)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  %s (%d keys; %d of the first page's 100 with a quota, %d-byte answer):\n", instance, len(ids), withUse, size)
	fmt.Fprintf(&b, "    first page             %s\n", dist(first))
	fmt.Fprintf(&b, "    random depth           %s\n", dist(deep))
	fmt.Fprintf(&b, "    store, first page      %s\n", dist(sFirst))
	fmt.Fprintf(&b, "    store, random depth    %s\n", dist(sDeep))
	if withUse > 0 {
		// The admin API's per-key read of the quota count, one GET after another, as
		// keyWithUse does for each key of a page.
		var uses []time.Duration
		_, _, counter := store.QuotaPeriod(store.Quota{Limit: 1, Period: store.QuotaMonth}, time.Now())
		for i := 0; i < c.pages; i++ {
			s := time.Now()
			for _, id := range ids[len(ids)-100:] {
				if _, err := st.Used(ctx, instance, id, counter); err != nil {
					return "", 0, err
				}
			}
			uses = append(uses, time.Since(s))
		}
		fmt.Fprintf(&b, "    store, 100 Used reads one after another (quota_used of a page): %s\n", dist(uses))
		// What one read for the whole page would cost: the same 100 counters in one MGET
		// (docs/redis-layout.md: P{i:<instance>}:c:<key id>:<counter>, one slot per instance).
		names := make([]string, 0, 100)
		for _, id := range ids[len(ids)-100:] {
			names = append(names, "nora:{i:"+instance+"}:c:"+id+":"+counter)
		}
		var mget []time.Duration
		for i := 0; i < c.pages; i++ {
			s := time.Now()
			if err := rdb.MGet(ctx, names...).Err(); err != nil {
				return "", 0, err
			}
			mget = append(mget, time.Since(s))
		}
		fmt.Fprintf(&b, "    the same 100 counters in one MGET (for scale):                 %s\n", dist(mget))
	}
	return b.String(), max(harness.Percentile(first, .99), harness.Percentile(deep, .99)), nil
}

// listLoop lists random-depth pages of list-quota until stop is closed.
func listLoop(gw *gateway, ids []string, stop <-chan struct{}) error {
	hc := &http.Client{Timeout: 10 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		cur := ids[1000+(i*7919)%(len(ids)-1000)]
		if st, _, err := call(hc, "GET", gw.admin+"/v1/instances/list-quota/keys?limit=100&starting_after="+cur, nil, nil); err != nil || st != 200 {
			return fmt.Errorf("listing while profiling: %d %v", st, err)
		}
	}
}

// profileWhile runs load until a CPU profile of d from addr has been written to file.
func profileWhile(addr string, d time.Duration, file string, load func(stop <-chan struct{}) error) error {
	wait := harness.FetchProfile(addr, d, file)
	stop := make(chan struct{})
	loadErr := make(chan error, 1)
	go func() { loadErr <- load(stop) }()
	err := wait()
	close(stop)
	if lerr := <-loadErr; err == nil {
		err = lerr
	}
	return err
}

// cpuTimes is the user + system CPU seconds of each process of pids, then of this process,
// from /proc (0 where unreadable).
func cpuTimes(pids []int) []float64 {
	out := make([]float64, 0, len(pids)+1)
	for _, p := range append(append([]int(nil), pids...), os.Getpid()) {
		out = append(out, harness.ProcCPU(p))
	}
	return out
}

func infoField(info, name string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return v
		}
	}
	return "?"
}
