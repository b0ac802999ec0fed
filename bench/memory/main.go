// Command memory measures what cached keys cost a real gateway process: its heap and its
// resident memory with N keys in its cache (target: 1,000,000 cached keys in ≤ 200 MiB of heap
// and ≤ 450 MiB of RSS).
//
// It starts its own redis-server on a free port (in a temporary directory, never the
// machine's own Redis), writes N keys straight into it through a redisstore client (32 at a
// time; the secrets stay in this process), and starts one keygate gateway on it: a cache of
// size N with a one-hour TTL, failed_attempts off, usage counting on (the default), Caddy's
// admin endpoint on a local port, and a site with nora_auth and `respond 200`. It reads the
// gateway's memory once its connections are open but before any key was presented (the
// baseline), then presents every key once (32 keep-alive connections), checks that a sample
// of 1,000 keys is answered from the cache (keygate_cache_hits_total and
// keygate_store_lookups_total on the admin endpoint's /metrics), waits for the usage counts
// to be flushed, and reads the memory again (full), and once more after -settle idle (the
// runtime returns freed pages to the system in the background). A key answered other than
// 200 (a 503 when a lookup timed out) is presented once more, so that every key is cached;
// the gateway's warnings are counted from its log.
//
// Memory is read from outside the gateway: its heap from /debug/pprof/heap?gc=1&debug=1 on
// the admin endpoint (a forced GC, then runtime.MemStats), its RSS from /proc/<pid>/status
// (VmRSS now, VmHWM the peak). A reference gateway with a cache of 1,000 keys, measured the
// same way, shows what the process costs without a large cache. This program's own memory
// (the secrets, the HTTP clients) is in another process and counts nowhere.
//
//	go run ./bench/memory [-keygate path | -rev commit] [-keys 1000000] [-restricted 0,0.1] [-settle 1m] [-profile dir] [-out file]
//
// Without -keygate it builds ./cmd/keygate with `go build`: from the working tree, or with
// -rev from that commit (`git archive` into a temporary directory, so that others'
// uncommitted changes stay out). -restricted runs one measurement per fraction: that share
// of the keys has 3 scopes, 3 allowed address ranges and a rate limit.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
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

const (
	conns      = 32   // client connections, and key-writing goroutines
	sampleKeys = 1000 // keys presented again to check they are cached
	refSize    = 1000 // the reference gateway's cache size
	mib        = 1 << 20
	targetHeap = 200 * mib
	targetRSS  = 450 * mib
)

var instance = store.Instance{ID: "acme-sandbox", Name: "Acme (sandbox)", Environment: apikey.Sandbox}

func main() {
	root := harness.ModuleRoot()
	var (
		bin        = flag.String("keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
		rev        = flag.String("rev", "", "build ./cmd/keygate from this commit (git archive) instead of the working tree")
		redisBin   = flag.String("redis-server", "redis-server", "redis-server binary")
		nkeys      = flag.Int("keys", 1_000_000, "keys to cache")
		restricted = flag.String("restricted", "0", "comma-separated fractions of the keys with scopes, allowed_ips and a rate limit; one measurement each")
		profile    = flag.String("profile", "", "directory for the full gateway's heap profile (\"\": none)")
		settle     = flag.Duration("settle", time.Minute, "how long the full gateway then stays idle before its RSS is read again (the runtime returns freed pages in the background)")
		out        = flag.String("out", filepath.Join(root, "bench", "results", "memory.txt"), "results file (\"\": none)")
	)
	flag.Parse()
	var fracs []float64
	for _, f := range strings.Split(*restricted, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 || v > 1 {
			fmt.Fprintln(os.Stderr, "memory: -restricted: comma-separated fractions from 0 to 1")
			os.Exit(2)
		}
		fracs = append(fracs, v)
	}
	if *bin != "" && *rev != "" {
		fmt.Fprintln(os.Stderr, "memory: -keygate and -rev exclude each other")
		os.Exit(2)
	}
	harness.Main("memory", func(r *harness.Run) error {
		return run(r, root, *bin, *rev, *redisBin, *nkeys, fracs, *profile, *settle, *out)
	})
}

func run(r *harness.Run, root, bin, rev, redisBin string, nkeys int, fracs []float64, profile string, settle time.Duration, outFile string) error {
	if nkeys < sampleKeys {
		return fmt.Errorf("-keys must be at least %d", sampleKeys)
	}
	if err := harness.CheckRedisServer(redisBin); err != nil {
		return err
	}
	if profile != "" {
		if err := os.MkdirAll(profile, 0o755); err != nil {
			return err
		}
	}
	work, err := r.TempDir("keygate-memory")
	if err != nil {
		return err
	}
	built := "binary " + bin
	switch {
	case bin != "":
	case rev != "":
		if bin, built, err = buildRev(root, rev, work); err != nil {
			return err
		}
	default:
		if bin, err = harness.Keygate(root, "", work); err != nil {
			return err
		}
		built = workingTree(root)
	}
	goVersion := "?"
	if v, err := exec.Command("go", "version", bin).Output(); err == nil {
		goVersion = strings.TrimSpace(string(v[strings.LastIndexByte(string(v), ':')+1:]))
	}
	env := func(name string) string {
		if v, ok := os.LookupEnv(name); ok {
			return name + "=" + v
		}
		return name + " unset (default)"
	}

	var b strings.Builder
	fmt.Fprintf(&b, "keygate memory: N keys cached in one gateway process (target: 1,000,000 cached keys in <= 200 MiB of heap and <= 450 MiB of RSS)\n\n")
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %d CPUs (nproc), %s, %s/%s; load average at start %s\n",
		harness.NProc(), harness.CPUModel(), runtime.GOOS, runtime.GOARCH, harness.LoadAvg())
	fmt.Fprintf(&b, "command:  %s\n", harness.CommandLine("./bench/memory"))
	fmt.Fprintf(&b, "gateway:  %s, built with %s; %s, %s\n", built, goVersion, env("GOGC"), env("GOMEMLIMIT"))
	fmt.Fprintf(&b, "setup:    1 redis-server (loopback, no persistence), 1 keygate gateway (cache { size N ttl 1h },\n")
	fmt.Fprintf(&b, "          failed_attempts off, usage on, nora_auth + respond 200), this client process: same CPUs.\n")
	fmt.Fprintf(&b, "          Heap: runtime.MemStats after a forced GC (/debug/pprof/heap?gc=1&debug=1 on the admin\n")
	fmt.Fprintf(&b, "          endpoint); RSS: /proc/<pid>/status. Baseline: the same gateway, its %d connections open\n", conns)
	fmt.Fprintf(&b, "          (a malformed key on each: no lookup), before any key was presented.\n")

	for i, frac := range fracs {
		fmt.Printf("measurement %d of %d: %d keys, %.0f%% restricted\n", i+1, len(fracs), nkeys, frac*100)
		section, err := measure(r, filepath.Join(work, fmt.Sprintf("m%d", i)), bin, redisBin, nkeys, frac, i == 0, profile, settle)
		if err != nil {
			return err
		}
		b.WriteString("\n" + section)
	}
	fmt.Print("\n" + b.String())
	if outFile != "" {
		if err := os.WriteFile(outFile, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", outFile)
	}
	return nil
}

// measure runs one measurement in dir with its own redis-server and gateway, stopped at its
// end, and returns its part of the report. With reference, a gateway with a small cache is
// measured first.
func measure(r *harness.Run, dir, bin, redisBin string, nkeys int, frac float64, reference bool, profile string, settle time.Duration) (string, error) {
	ctx := context.Background()
	rd, err := r.StartRedis(redisBin, filepath.Join(dir, "redis"))
	if err != nil {
		return "", err
	}
	defer rd.Stop()
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: rd.Addr, PoolSize: 2 * conns}), redisstore.Options{})
	defer st.Close()
	if err := st.CreateInstance(ctx, instance); err != nil {
		return "", fmt.Errorf("creating the instance: %v", err)
	}

	var b strings.Builder
	fmt.Printf("redis-server %s on %s; writing %d keys …\n", rd.Version, rd.Addr, nkeys)
	start := time.Now()
	secrets, nrestricted, err := fill(ctx, st, nkeys, frac)
	if err != nil {
		return "", err
	}
	took := time.Since(start)
	fmt.Fprintf(&b, "== %d keys, %d of them restricted (3 scopes, 3 allowed_ips ranges, a rate limit of 1000 per minute)\n", nkeys, nrestricted)
	fmt.Fprintf(&b, "redis-server %s: %d keys written in %.1f s (%.0f keys/s), used_memory %s\n",
		rd.Version, nkeys, took.Seconds(), float64(nkeys)/took.Seconds(), redisMemory(ctx, rd.Client))

	var ref memory
	if reference {
		fmt.Println("reference gateway (cache size 1000) …")
		g, err := startGateway(r, filepath.Join(dir, "ref"), bin, rd.Addr, refSize)
		if err != nil {
			return "", err
		}
		if ref, err = g.warmMemory(); err != nil {
			return "", err
		}
		g.proc.Stop()
	}

	fmt.Println("gateway …")
	g, err := startGateway(r, filepath.Join(dir, "gw"), bin, rd.Addr, nkeys)
	if err != nil {
		return "", err
	}
	defer g.proc.Stop()
	base, err := g.warmMemory()
	if err != nil {
		return "", err
	}

	m0, err := scrape(g.metricsURL)
	if err != nil {
		return "", err
	}
	fmt.Printf("presenting %d keys once each over %d connections …\n", nkeys, conns)
	start = time.Now()
	failed, codes := g.present(secrets, func(i int) int { return i }, len(secrets), true)
	took = time.Since(start)
	fmt.Fprintf(&b, "presented every key once: %d requests in %.1f s (%.0f req/s), not 200: %d",
		nkeys, took.Seconds(), float64(nkeys)/took.Seconds(), len(failed))
	if len(failed) > 0 {
		// Not cached: presented once more, so that the full reading holds every key.
		again, codes2 := g.present(secrets, func(j int) int { return failed[j] }, len(failed), false)
		fmt.Fprintf(&b, " (%s), presented again: not 200: %d", codes, len(again))
		if len(again) > 0 {
			fmt.Fprintf(&b, " (%s)", codes2)
		}
		failed = again
	}
	b.WriteString("\n")
	m1, err := scrape(g.metricsURL)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "  store lookups %+.0f, cache misses %+.0f, cache hits %+.0f\n",
		m1["keygate_store_lookups_total"]-m0["keygate_store_lookups_total"],
		m1["keygate_cache_misses_total"]-m0["keygate_cache_misses_total"],
		m1["keygate_cache_hits_total"]-m0["keygate_cache_hits_total"])

	// A sample spread over the whole fill order, the first keys cached included.
	sample := func(j int) int { return j * (nkeys / sampleKeys) }
	sfailed, scodes := g.present(secrets, sample, sampleKeys, false)
	m2, err := scrape(g.metricsURL)
	if err != nil {
		return "", err
	}
	hits := m2["keygate_cache_hits_total"] - m1["keygate_cache_hits_total"]
	lookups := m2["keygate_store_lookups_total"] - m1["keygate_store_lookups_total"]
	fmt.Fprintf(&b, "sample of %d keys presented again: cache hits %.0f, store lookups %.0f, not 200: %d",
		sampleKeys, hits, lookups, len(sfailed))
	if len(sfailed) > 0 {
		fmt.Fprintf(&b, " (%s)", scodes)
	}
	b.WriteString("\n")

	pending := g.waitUsageFlushed(m2)
	full, err := g.memory()
	if err != nil {
		return "", err
	}
	m3, err := scrape(g.metricsURL)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "usage counts pending at the full reading: %.0f (keygate_usage_pending_counts); flushes ok %+.0f, error %+.0f\n",
		pending, m3[`keygate_usage_flushes_total{result="ok"}`]-m0[`keygate_usage_flushes_total{result="ok"}`],
		m3[`keygate_usage_flushes_total{result="error"}`]-m0[`keygate_usage_flushes_total{result="error"}`])
	fmt.Fprintf(&b, "gateway log, warnings and errors: %s\n", logProblems(filepath.Join(dir, "gw", "keygate.log")))
	var settled memory
	if settle > 0 {
		fmt.Printf("idle for %s …\n", settle)
		time.Sleep(settle)
		if settled, err = g.memory(); err != nil {
			return "", err
		}
	}
	b.WriteString("\n")
	if profile != "" {
		f := filepath.Join(profile, fmt.Sprintf("heap-%dkeys-%.0fpct.pprof", nkeys, frac*100))
		if err := g.saveProfile(f); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "heap profile of the full gateway: %s\n\n", f)
	}

	b.WriteString(table(ref, reference, base, full, nkeys))
	if settle > 0 {
		fmt.Fprintf(&b, "%-38s %12s %12s %12s %12s %12s %12s\n", fmt.Sprintf("full, after %s idle", settle),
			mb(settled.HeapAlloc), mb(settled.HeapInuse), mb(settled.HeapSys), mb(settled.Sys), mb(settled.RSS), mb(settled.HWM))
	}
	perM := func(base, full uint64) uint64 { return base + uint64(float64(full-base)*1e6/float64(nkeys)) }
	heap, inuse, rss := full.HeapAlloc, full.HeapInuse, full.RSS
	at := "with these keys"
	if nkeys != 1_000_000 {
		heap, inuse, rss = perM(base.HeapAlloc, full.HeapAlloc), perM(base.HeapInuse, full.HeapInuse), perM(base.RSS, full.RSS)
		at = "projected to 1,000,000 keys (baseline + the per-1,000,000 growth)"
		if nkeys < 100_000 {
			at += ";\n  few keys: the cache's tables grow in steps and dominate the growth, the projection overstates"
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	cached := hits == sampleKeys && lookups == 0 && len(sfailed) == 0 && len(failed) == 0
	fmt.Fprintf(&b, "\ntarget, %s:\n", at)
	fmt.Fprintf(&b, "  heap <= 200 MiB: HeapAlloc %s, HeapInuse %s: %s\n", mb(heap), mb(inuse), verdict(inuse <= targetHeap))
	fmt.Fprintf(&b, "  RSS  <= 450 MiB: VmRSS %s (peak VmHWM with %d keys: %s): %s\n", mb(rss), nkeys, mb(full.HWM), verdict(rss <= targetRSS))
	if settle > 0 && nkeys == 1_000_000 {
		fmt.Fprintf(&b, "  RSS  <= 450 MiB after %s idle: VmRSS %s: %s\n", settle, mb(settled.RSS), verdict(settled.RSS <= targetRSS))
	}
	fmt.Fprintf(&b, "  every key answered 200 (after at most one retry) and the sample all cache hits: %s\n", verdict(cached))
	return b.String(), nil
}

// fill writes n keys into st, conns at a time, and returns their secrets; the key i is
// restricted when i mod 1000 < frac·1000.
func fill(ctx context.Context, st *redisstore.Store, n int, frac float64) ([]string, int, error) {
	secrets := make([]string, n)
	per := int(frac*1000 + .5)
	var next, restricted atomic.Int64
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	now := time.Now()
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s, k, err := store.Mint(apikey.Hasher{}, instance, "bench-"+strconv.Itoa(i), time.Time{}, now)
				if err == nil && i%1000 < per {
					k.Scopes = []string{"charges:read", "charges:write", "customers:*"}
					k.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"),
						netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")}
					k.RateLimit = &store.RateLimit{Limit: 1000, Window: time.Minute}
					restricted.Add(1)
				}
				if err == nil {
					err = st.CreateKey(ctx, k)
				}
				if err != nil {
					errs <- fmt.Errorf("creating key %d: %v", i, err)
					return
				}
				secrets[i] = s
				if (i+1)%250_000 == 0 {
					fmt.Printf("  %d written\n", i+1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, err
	}
	return secrets, int(restricted.Load()), nil
}

// gateway is a started keygate process and the clients that talk to it.
type gateway struct {
	proc       *harness.Proc
	url        string // the nora_auth site
	admin      string // Caddy's admin endpoint, http://127.0.0.1:port
	metricsURL string
	clients    []*http.Client // one keep-alive connection each
}

func startGateway(r *harness.Run, dir, bin, redisAddr string, size int) (*gateway, error) {
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	aport, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	nora {
		store redis redis://%s/0
		failed_attempts off
		cache {
			size %d
			ttl 1h
		}
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond 200
}
`, aport, redisAddr, size, port)
	p, err := r.StartGateway(bin, dir, cf, port, "gateway")
	if err != nil {
		return nil, err
	}
	if err := harness.WaitPort(aport, p.Exited, "gateway's admin endpoint", filepath.Join(dir, "keygate.log")); err != nil {
		return nil, err
	}
	g := &gateway{proc: p, url: fmt.Sprintf("http://127.0.0.1:%d/", port),
		admin: fmt.Sprintf("http://127.0.0.1:%d", aport), metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", aport)}
	for i := 0; i < conns; i++ {
		g.clients = append(g.clients, &http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}})
	}
	return g, nil
}

// warmMemory opens every client's connection with requests that carry a malformed key
// (refused before any lookup, nothing cached), then reads the memory.
func (g *gateway) warmMemory() (memory, error) {
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, hc := range g.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if status, err := ask(hc, g.url, "not-a-key"); err != nil || status != 401 {
					errs <- fmt.Errorf("warm-up with a malformed key: %d %v", status, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return memory{}, err
	}
	return g.memory()
}

// present sends secrets[pick(j)] for j < n, one client per connection taking every
// len(clients)-th j, and returns the indexes (into secrets) whose answer was not 200 and a
// count of those answers by status ("503 ×12"; 0 is a transport error).
func (g *gateway) present(secrets []string, pick func(int) int, n int, progress bool) ([]int, string) {
	var (
		wg     sync.WaitGroup
		done   atomic.Int64
		mu     sync.Mutex
		failed []int
		byCode = map[int]int{}
		finish = make(chan struct{})
	)
	if progress {
		go func() {
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					fmt.Printf("  %d presented\n", done.Load())
				case <-finish:
					return
				}
			}
		}()
	}
	for ci, hc := range g.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := ci; j < n; j += len(g.clients) {
				status, err := ask(hc, g.url, secrets[pick(j)])
				done.Add(1)
				if err != nil || status != 200 {
					mu.Lock()
					failed = append(failed, pick(j))
					byCode[status]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(finish)
	var codes []string
	for c, k := range byCode {
		codes = append(codes, fmt.Sprintf("%d ×%d", c, k))
	}
	sort.Strings(codes)
	return failed, strings.Join(codes, ", ")
}

// waitUsageFlushed waits up to 30 seconds for a flush of the usage counts to the store
// counted after the reading before (the default flush interval is 5 s) that left nothing
// pending, and one interval more, so that the full reading is the cache's; it returns the
// counts still pending.
func (g *gateway) waitUsageFlushed(before map[string]float64) float64 {
	flushes := func(m map[string]float64) float64 {
		return m[`keygate_usage_flushes_total{result="ok"}`] + m[`keygate_usage_flushes_total{result="error"}`]
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := scrape(g.metricsURL)
		if err == nil && flushes(m) > flushes(before) && m["keygate_usage_pending_counts"] == 0 {
			// That flush may have drained the counter just before the last requests: one
			// interval more writes (or finds nothing, and counts no flush) what they left.
			time.Sleep(6 * time.Second)
			m, _ = scrape(g.metricsURL)
			return m["keygate_usage_pending_counts"]
		}
		if time.Now().After(deadline) {
			return m["keygate_usage_pending_counts"]
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// memory is one reading of a gateway's memory, in bytes.
type memory struct {
	HeapAlloc, HeapInuse, HeapSys, Sys uint64 // runtime.MemStats after a GC
	RSS, HWM                           uint64 // VmRSS, VmHWM
}

// memory forces two GCs in the gateway (the first may leave work for the second: finalizers,
// sync.Pool's victim cache), reads runtime.MemStats from the second, then the RSS.
func (g *gateway) memory() (memory, error) {
	var m memory
	for i := 0; i < 2; i++ {
		body, err := get(g.admin + "/debug/pprof/heap?gc=1&debug=1")
		if err != nil {
			return m, err
		}
		stats := map[string]uint64{}
		sc := bufio.NewScanner(strings.NewReader(body))
		sc.Buffer(make([]byte, 1<<16), 1<<24)
		for sc.Scan() {
			if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = "); ok {
				if n, err := strconv.ParseUint(v, 10, 64); err == nil {
					stats[k] = n
				}
			}
		}
		if _, ok := stats["HeapAlloc"]; !ok {
			return m, errors.New("no runtime.MemStats in /debug/pprof/heap?debug=1")
		}
		m.HeapAlloc, m.HeapInuse, m.HeapSys, m.Sys = stats["HeapAlloc"], stats["HeapInuse"], stats["HeapSys"], stats["Sys"]
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.proc.Cmd.Process.Pid))
	if err != nil {
		return m, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			switch f[0] {
			case "VmRSS:":
				m.RSS = n << 10
			case "VmHWM:":
				m.HWM = n << 10
			}
		}
	}
	return m, nil
}

func (g *gateway) saveProfile(file string) error {
	body, err := get(g.admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(file, []byte(body), 0o644)
}

// table lays out the readings: reference (if any), baseline, full, the growth and the growth
// per 1,000,000 keys.
func table(ref memory, withRef bool, base, full memory, nkeys int) string {
	var b strings.Builder
	row := func(name string, m memory) {
		fmt.Fprintf(&b, "%-38s %12s %12s %12s %12s %12s %12s\n", name,
			mb(m.HeapAlloc), mb(m.HeapInuse), mb(m.HeapSys), mb(m.Sys), mb(m.RSS), mb(m.HWM))
	}
	fmt.Fprintf(&b, "%-38s %12s %12s %12s %12s %12s %12s\n", "gateway memory (MiB)", "HeapAlloc", "HeapInuse", "HeapSys", "Sys", "VmRSS", "VmHWM")
	if withRef {
		row(fmt.Sprintf("reference (cache size %d, no keys)", refSize), ref)
	}
	row(fmt.Sprintf("baseline (cache size %d, no keys)", nkeys), base)
	row(fmt.Sprintf("full (%d keys presented)", nkeys), full)
	d := func(a, b uint64) int64 { return int64(a) - int64(b) }
	grow := [6]int64{d(full.HeapAlloc, base.HeapAlloc), d(full.HeapInuse, base.HeapInuse), d(full.HeapSys, base.HeapSys),
		d(full.Sys, base.Sys), d(full.RSS, base.RSS), d(full.HWM, base.HWM)}
	line := func(name string, scale float64, unit func(float64) string) {
		fmt.Fprintf(&b, "%-38s", name)
		for _, v := range grow {
			fmt.Fprintf(&b, " %12s", unit(float64(v)*scale))
		}
		b.WriteString("\n")
	}
	mib := func(v float64) string { return fmt.Sprintf("%.1f", v/mib) }
	line("full - baseline", 1, mib)
	line("  per 1,000,000 keys", 1e6/float64(nkeys), mib)
	line("  per key (bytes)", 1/float64(nkeys), func(v float64) string { return fmt.Sprintf("%.0f", v) })
	return b.String()
}

func mb(v uint64) string { return fmt.Sprintf("%.1f", float64(v)/mib) }

// ask sends one request with key and returns the status.
func ask(c *http.Client, url, key string) (int, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func get(url string) (string, error) {
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return "", fmt.Errorf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("answer %d: %.200s", resp.StatusCode, body)
	}
	if err != nil {
		return "", fmt.Errorf("GET %s: %v", url, err)
	}
	return string(body), nil
}

// scrape reads the keygate_ samples of a Prometheus text exposition, by name (with labels).
func scrape(url string) (map[string]float64, error) {
	body, err := get(url)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, "keygate_") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m, nil
}

// buildRev builds ./cmd/keygate of commit rev, exported with git archive into dir/src, and
// returns the binary and a description.
func buildRev(root, rev, dir string) (string, string, error) {
	hash, err := exec.Command("git", "-C", root, "rev-parse", "--short", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("git rev-parse %s: %v", rev, err)
	}
	h := strings.TrimSpace(string(hash))
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	tar := filepath.Join(dir, "src.tar")
	if out, err := exec.Command("git", "-C", root, "archive", "-o", tar, h).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("git archive %s: %v: %s", h, err, out)
	}
	if out, err := exec.Command("tar", "-xf", tar, "-C", src).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("tar: %v: %s", err, out)
	}
	bin, err := harness.Keygate(src, "", dir)
	if err != nil {
		return "", "", err
	}
	subject, _ := exec.Command("git", "-C", root, "log", "-1", "--format=%s", h).Output()
	return bin, fmt.Sprintf("commit %s (git archive; %q)", h, clip(strings.TrimSpace(string(subject)), 60)), nil
}

// workingTree describes the working tree the binary was built from: HEAD and how many files
// differ from it.
func workingTree(root string) string {
	hash, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "working tree (not a git checkout)"
	}
	st, _ := exec.Command("git", "-C", root, "status", "--porcelain").Output()
	n := 0
	for _, l := range strings.Split(string(st), "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return fmt.Sprintf("working tree at %s with %d files changed or untracked", strings.TrimSpace(string(hash)), n)
}

// logProblems counts the warn and error lines of a gateway's JSON log by message, as
// "message ×n; …", or "none".
func logProblems(file string) string {
	f, err := os.Open(file)
	if err != nil {
		return "? (" + err.Error() + ")"
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	for sc.Scan() {
		var l struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && (l.Level == "warn" || l.Level == "error") {
			counts[l.Level+": "+l.Msg]++
		}
	}
	if len(counts) == 0 {
		return "none"
	}
	var out []string
	for m, n := range counts {
		out = append(out, fmt.Sprintf("%q ×%d", m, n))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func redisMemory(ctx context.Context, rdb *redis.Client) string {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory_human:"); ok {
			return v
		}
	}
	return "?"
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
