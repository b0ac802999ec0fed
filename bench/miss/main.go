// Command miss measures a cache miss: a gateway request whose valid key is in no cache yet, so
// that the gateway looks it up in the store, one round trip to Redis (target: p99 ≤ 2 ms on
// loopback Redis).
//
// It starts its own redis-server on a free port (in a temporary directory, never the
// machine's own Redis) and one keygate gateway on it (nora_auth, then `respond`: no upstream),
// creates -keys distinct keys per level through a redisstore client, and presents each key
// exactly once, from as many client goroutines as the level says (one keep-alive connection
// each): every request is a miss. The levels: each of -concurrency, every client sending its
// next request as soon as it has its answer; then the highest concurrency paced at -paced
// requests/s in all (below what the machine can do, so that the figure is a miss and not a
// queue). With -compare-usage the levels run again on a second gateway with usage counting
// off, to tell its background flushes apart from the lookup.
//
// For each level it reports the client's latency, the store lookups counted by Redis (INFO
// commandstats: HMGET) and by the gateway (keygate_store_lookups_total), the gateway's own
// keygate_store_lookup_seconds histogram from Caddy's metrics endpoint, the other Redis
// commands meanwhile and Redis' slow log (commands of 1 ms or more); beside them, for scale,
// a warm-cache request and redisstore.LookupHash from this process.
//
//	go run ./bench/miss [-keygate path] [-keys 20000] [-concurrency 1,8] [-paced 2000] [-compare-usage=true] [-profile dir] [-out file]
//
// Without -keygate it builds ./cmd/keygate into a temporary directory with `go build`. With
// -profile the gateway's CPU profile is fetched from Caddy's admin endpoint
// (/debug/pprof/profile) while each level runs, into dir, for `go tool pprof`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
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

const warmKeys = 500 // keys presented again and again: the warm-cache figure

func main() {
	root := harness.ModuleRoot()
	var (
		bin      = flag.String("keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
		redisBin = flag.String("redis-server", "redis-server", "redis-server binary")
		nkeys    = flag.Int("keys", 20000, "distinct keys presented at each concurrency level")
		levels   = flag.String("concurrency", "1,8", "concurrency levels, comma-separated")
		paced    = flag.Int("paced", 2000, "a further level: the highest concurrency, paced at this many requests/s in all (0: none)")
		compare  = flag.Bool("compare-usage", true, "run the levels again on a gateway with usage counting off")
		profile  = flag.String("profile", "", "directory for the gateway's CPU profiles (\"\": none)")
		out      = flag.String("out", filepath.Join(root, "bench", "results", "miss.txt"), "results file (\"\": none)")
	)
	flag.Parse()
	var conc []int
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "miss: -concurrency: comma-separated whole numbers of at least 1")
			os.Exit(2)
		}
		conc = append(conc, n)
	}
	harness.Main("miss", func(r *harness.Run) error {
		return run(r, root, *bin, *redisBin, *nkeys, conc, *paced, *compare, *profile, *out)
	})
}

// level is one measured run: c client goroutines, each sending its next request as soon as
// it has its answer (rate 0), or all of them together at rate requests/s.
type level struct{ c, rate int }

func run(r *harness.Run, root, bin, redisBin string, nkeys int, conc []int, paced int, compareUsage bool, profile, outFile string) error {
	if nkeys < 100 || paced < 0 {
		return errors.New("-keys must be at least 100, -paced at least 0")
	}
	if err := harness.CheckRedisServer(redisBin); err != nil {
		return err
	}
	if profile != "" {
		if err := os.MkdirAll(profile, 0o755); err != nil {
			return err
		}
	}
	work, err := r.TempDir("keygate-miss")
	if err != nil {
		return err
	}
	if bin, err = harness.Keygate(root, bin, work); err != nil {
		return err
	}
	rd, err := r.StartRedis(redisBin, filepath.Join(work, "redis"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	// Redis' slow log keeps every command of 1 ms or more (its own time, not the wait).
	if err := rd.Client.ConfigSet(ctx, "slowlog-log-slower-than", "1000").Err(); err != nil {
		return err
	}
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: rd.Addr, PoolSize: 64}), redisstore.Options{})
	r.OnCleanup(func() { st.Close() })

	maxConc := 1
	var levels []level
	for _, c := range conc {
		maxConc = max(maxConc, c)
		levels = append(levels, level{c: c})
	}
	if paced > 0 {
		levels = append(levels, level{c: maxConc, rate: paced})
	}
	type gwConfig struct{ name, block string }
	configs := []gwConfig{{"gateway with the defaults (usage counting on)", ""}}
	if compareUsage {
		configs = append(configs, gwConfig{"gateway with usage counting off (usage off)", "\n\t\tusage off"})
	}
	clients := make([]*http.Client, maxConc)
	for i := range clients {
		clients[i] = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "keygate cache miss: a valid key in no cache, one store round trip (target: p99 <= 2 ms on loopback Redis)\n\n")
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %d CPUs (nproc), %s, %s/%s, %s, redis-server %s; load average at start %s\n",
		harness.NProc(), harness.CPUModel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), rd.Version, harness.LoadAvg())
	fmt.Fprintf(&b, "command:  %s\n", harness.CommandLine("./bench/miss"))
	fmt.Fprintf(&b, "setup:    1 redis-server (loopback, no persistence), 1 keygate gateway process at a time (nora_auth, respond:\n")
	fmt.Fprintf(&b, "          no upstream; default cache and failed-attempt limit), this client process: all on the same CPUs;\n")
	fmt.Fprintf(&b, "          %d distinct keys per level, each presented once, one keep-alive connection per client goroutine;\n", nkeys)
	fmt.Fprintf(&b, "          the paced level sends on a fixed schedule, its latency counted from each actual send and from\n")
	fmt.Fprintf(&b, "          its scheduled time (open loop: a send held up by the previous answer counts its wait; includes\n")
	fmt.Fprintf(&b, "          Go's timer lateness, up to about 1 ms on an idle machine)\n\n")

	var secrets []string
	var keys []store.Key
	var allP99 []string
	for gi, g := range configs {
		port, err := harness.FreePort()
		if err != nil {
			return err
		}
		cport, err := harness.FreePort()
		if err != nil {
			return err
		}
		cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	nora {
		store redis redis://%s/0
		instance acme-sandbox sandbox "Acme (sandbox)"%s
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
`, cport, rd.Addr, g.block, port)
		gw, err := r.StartGateway(bin, filepath.Join(work, fmt.Sprintf("gw%d", gi)), cf, port, "gateway")
		if err != nil {
			return err
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/", port)
		metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", cport)
		if gi == 0 {
			if err := harness.WaitInstances(ctx, st, 1); err != nil {
				return err
			}
			total := warmKeys + nkeys*len(levels)*len(configs)
			fmt.Printf("redis-server %s on %s; creating %d keys …\n", rd.Version, rd.Addr, total)
			if secrets, keys, err = fill(ctx, st, total); err != nil {
				return err
			}
		}
		// Warm-up: every client's connection open, the warm keys cached.
		warm := secrets[:warmKeys]
		for i := 0; i < 4*warmKeys; i++ {
			if status, err := ask(clients[i%maxConc], url, warm[i%warmKeys]); err != nil || status != 200 {
				return fmt.Errorf("warm-up: %d %v", status, err)
			}
		}
		fmt.Fprintf(&b, "== %s\n\n", g.name)
		for li, lv := range levels {
			c := lv.c
			from := warmKeys + (gi*len(levels)+li)*nkeys
			fresh := secrets[from : from+nkeys]
			name := fmt.Sprintf("concurrency %d", c)
			if lv.rate > 0 {
				name += fmt.Sprintf(", paced at %d req/s", lv.rate)
			}
			fmt.Printf("%s: presenting %d new keys once each, %s …\n", g.name, nkeys, name)
			m0, err := scrape(metricsURL)
			if err != nil {
				return err
			}
			cmd0, err := harness.CommandCalls(ctx, rd.Client)
			if err != nil {
				return err
			}
			usec0, err := commandUsec(ctx, rd.Client)
			if err != nil {
				return err
			}
			if err := rd.Client.Do(ctx, "SLOWLOG", "RESET").Err(); err != nil {
				return err
			}
			var wait func() error
			pfile := ""
			if profile != "" {
				// The level's length is not known beforehand: guess from a miss of about 1 ms.
				d := time.Duration(nkeys/c) * time.Millisecond
				pfile = filepath.Join(profile, fmt.Sprintf("miss-gw%d-c%d.pprof", gi, c))
				if lv.rate > 0 {
					d = time.Duration(nkeys) * time.Second / time.Duration(lv.rate)
					pfile = filepath.Join(profile, fmt.Sprintf("miss-gw%d-c%d-paced.pprof", gi, c))
				}
				wait = harness.FetchProfile(fmt.Sprintf("127.0.0.1:%d", cport), d, pfile)
			}
			cpu0 := []float64{harness.ProcCPU(gw.Cmd.Process.Pid), harness.ProcCPU(rd.Proc.Cmd.Process.Pid), harness.ProcCPU(os.Getpid())}
			res := present(clients[:c], url, fresh, lv.rate)
			lat, failed, elapsed := res.lat, res.failed, res.elapsed
			cpu1 := []float64{harness.ProcCPU(gw.Cmd.Process.Pid), harness.ProcCPU(rd.Proc.Cmd.Process.Pid), harness.ProcCPU(os.Getpid())}
			cmd1, err := harness.CommandCalls(ctx, rd.Client)
			if err != nil {
				return err
			}
			usec1, err := commandUsec(ctx, rd.Client)
			if err != nil {
				return err
			}
			m1, err := scrape(metricsURL)
			if err != nil {
				return err
			}
			slow, err := rd.Client.SlowLogGet(ctx, 1000).Result()
			if err != nil {
				return err
			}
			if wait != nil {
				if err := wait(); err != nil {
					return err
				}
			}
			p99 := harness.Percentile(lat, .99)
			verdict := "met"
			if p99 > 2*time.Millisecond || failed > 0 {
				verdict = "NOT met"
			}
			allP99 = append(allP99, fmt.Sprintf("%s, %s: %s (%s)", strings.TrimPrefix(g.name, "gateway with "), name, ms(p99), verdict))
			fmt.Fprintf(&b, "%s: %d requests in %.2f s (%.0f req/s), every one a miss; failed %d%s\n",
				name, len(lat)+failed, elapsed.Seconds(), float64(len(lat))/elapsed.Seconds(), failed, res.firstErr)
			fmt.Fprintf(&b, "  gateway request (send to answer):        %s\n", dist(lat))
			if lv.rate > 0 {
				fmt.Fprintf(&b, "  from the scheduled send (open loop):     %s\n", dist(res.fromPlan))
			}
			h := m1.sub(m0)
			fmt.Fprintf(&b, "  keygate_store_lookup_seconds:            %s\n", h.summary())
			fmt.Fprintf(&b, "  store lookups: HMGET at Redis %d, keygate_store_lookups_total %+.0f, keygate_cache_misses_total %+.0f\n",
				cmd1["hmget"]-cmd0["hmget"], m1.value("keygate_store_lookups_total")-m0.value("keygate_store_lookups_total"),
				m1.value("keygate_cache_misses_total")-m0.value("keygate_cache_misses_total"))
			fmt.Fprintf(&b, "  other Redis commands meanwhile (the gateway's background work): %s\n", others(cmd0, cmd1))
			if tx := cmd1["exec"] - cmd0["exec"]; tx > 0 {
				var us int64
				for _, name := range []string{"multi", "exec", "hincrby", "expireat"} {
					us += usec1[name] - usec0[name]
				}
				fmt.Fprintf(&b, "  usage flushes (MULTI/EXEC of HINCRBY and EXPIREAT): %d, %d commands, Redis busy %.1f ms in them (%.1f ms each)\n",
					tx, cmd1["hincrby"]-cmd0["hincrby"]+cmd1["expireat"]-cmd0["expireat"], float64(us)/1000, float64(us)/1000/float64(tx))
			}
			fmt.Fprintf(&b, "  Redis slow log (commands that took Redis >= 1 ms): %s\n", slowSummary(slow))
			fmt.Fprintf(&b, "  CPU time: gateway %.1f s, redis-server %.1f s, this client %.1f s (of %.1f s × %d CPUs)\n",
				cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2], elapsed.Seconds(), harness.NProc())
			if pfile != "" {
				fmt.Fprintf(&b, "  gateway CPU profile: %s\n", pfile)
			}
			fmt.Fprintf(&b, "  p99 <= 2 ms: %s\n\n", verdict)
		}
		// For scale: a warm-cache request.
		var hit []time.Duration
		for i := 0; i < 5000; i++ {
			s := time.Now()
			if status, err := ask(clients[0], url, warm[i%warmKeys]); err != nil || status != 200 {
				return fmt.Errorf("warm request: %d %v", status, err)
			}
			hit = append(hit, time.Since(s))
		}
		fmt.Fprintf(&b, "for scale, a warm-cache request, one at a time (5000 of %d keys): %s\n\n", warmKeys, dist(hit))
		gw.Stop()
	}
	// For scale: the store's lookup alone, from this process.
	var lookup []time.Duration
	for i := 0; i < 5000; i++ {
		s := time.Now()
		if _, err := st.LookupHash(ctx, keys[i%warmKeys].Hash); err != nil {
			return err
		}
		lookup = append(lookup, time.Since(s))
	}
	fmt.Fprintf(&b, "for scale, redisstore.LookupHash (one HMGET) from this process, one at a time: %s\n\n", dist(lookup))
	fmt.Fprintf(&b, "target:   p99 <= 2 ms, no request failed:\n          %s\n", strings.Join(allP99, "\n          "))
	fmt.Print("\n" + b.String())
	if outFile != "" {
		if err := os.WriteFile(outFile, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", outFile)
	}
	return nil
}

// fill creates n keys through st, 32 at a time, and returns their secrets and records.
func fill(ctx context.Context, st store.Store, n int) ([]string, []store.Key, error) {
	in := store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}
	secrets, keys := make([]string, n), make([]store.Key, n)
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
				s, k, err := store.Mint(apikey.Hasher{}, in, fmt.Sprintf("bench-%d", i), time.Time{}, time.Now())
				if err == nil {
					err = st.CreateKey(ctx, k)
				}
				if err != nil {
					errs <- fmt.Errorf("creating key %d: %v", i, err)
					return
				}
				secrets[i], keys[i] = s, k
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, nil, err
	}
	return secrets, keys, nil
}

// presented is what present measured.
type presented struct {
	lat      []time.Duration // of the 200s, from the actual send
	fromPlan []time.Duration // paced: of the 200s, from the scheduled send
	failed   int             // other answers
	firstErr string          // the first of them
	elapsed  time.Duration
}

// present sends each secret once, len(clients) at a time (client i sends every len(clients)-th
// secret, one after another). With rate > 0 the requests are sent on a schedule of rate per
// second in all (client i's j-th at (i + j·len(clients))/rate). A latency counts from the
// actual send; for a paced level also from the scheduled one (the open-loop view: a request
// whose send was held up by the previous answer counts its wait, as a request of an
// independent client arriving then would; Go's timers also wake up to about a millisecond
// late on an idle machine, which this view includes).
func present(clients []*http.Client, url string, secrets []string, rate int) presented {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		out presented
	)
	start := time.Now()
	for ci, hc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine, plan []time.Duration
			bad, first := 0, ""
			for i := ci; i < len(secrets); i += len(clients) {
				at := time.Now()
				if rate > 0 {
					at = start.Add(time.Duration(i) * time.Second / time.Duration(rate))
					time.Sleep(time.Until(at))
				}
				s := time.Now()
				status, err := ask(hc, url, secrets[i])
				end := time.Now()
				if err != nil || status != 200 {
					bad++
					if first == "" {
						first = fmt.Sprintf(" (first: %d %v)", status, err)
					}
					continue
				}
				mine = append(mine, end.Sub(s))
				if rate > 0 {
					plan = append(plan, end.Sub(at))
				}
			}
			mu.Lock()
			out.lat = append(out.lat, mine...)
			out.fromPlan = append(out.fromPlan, plan...)
			out.failed += bad
			if out.firstErr == "" {
				out.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out
}

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

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Microseconds())/1000) }

func dist(d []time.Duration) string {
	p := harness.Percentile
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", ms(p(d, .5)), ms(p(d, .9)), ms(p(d, .99)), ms(p(d, 1)))
}

// metrics are the samples of a Prometheus text exposition, by their full name with labels
// (`keygate_store_lookup_seconds_bucket{le="0.001"}`).
type metrics map[string]float64

func scrape(url string) (metrics, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("scraping %s: answer %d", url, resp.StatusCode)
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "keygate_") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m, sc.Err()
}

func (m metrics) value(name string) float64 { return m[name] }

// sub is m minus before, sample by sample.
func (m metrics) sub(before metrics) metrics {
	out := metrics{}
	for k, v := range m {
		out[k] = v - before[k]
	}
	return out
}

// summary describes the keygate_store_lookup_seconds histogram of m: its count and mean,
// and its p50 and p99 estimated as Prometheus' histogram_quantile does (linear within a
// bucket), with the bucket that holds each.
func (m metrics) summary() string {
	const name = "keygate_store_lookup_seconds"
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range m {
		if s, ok := strings.CutPrefix(k, name+`_bucket{le="`); ok {
			le, err := strconv.ParseFloat(strings.TrimSuffix(s, `"}`), 64)
			if err == nil {
				bs = append(bs, bucket{le, v})
			}
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	count := m[name+"_count"]
	if count <= 0 || len(bs) == 0 {
		return "no observations"
	}
	q := func(p float64) string {
		rank := p * count
		lo, below := 0.0, 0.0
		for _, bk := range bs {
			if bk.n >= rank {
				if math.IsInf(bk.le, 1) {
					return fmt.Sprintf("> %.3f ms", lo*1000)
				}
				est := lo + (bk.le-lo)*(rank-below)/math.Max(1, bk.n-below)
				return fmt.Sprintf("%.3f ms (bucket %.3f–%.3f ms)", est*1000, lo*1000, bk.le*1000)
			}
			lo, below = bk.le, bk.n
		}
		return "?"
	}
	return fmt.Sprintf("%.0f lookups, mean %.3f ms, p50 ≈ %s, p99 ≈ %s", count, m[name+"_sum"]/count*1000, q(.5), q(.99))
}

// commandUsec reads each command's total time in microseconds from INFO commandstats.
func commandUsec(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(l), "cmdstat_"), ":")
		if !ok {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				out[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out, nil
}

// slowSummary describes Redis' slow log entries: how many, and per command their count and
// longest time.
func slowSummary(slow []redis.SlowLog) string {
	if len(slow) == 0 {
		return "none"
	}
	type agg struct {
		n   int
		max time.Duration
	}
	by := map[string]*agg{}
	for _, e := range slow {
		name := "?"
		if len(e.Args) > 0 {
			name = strings.ToLower(e.Args[0])
		}
		a := by[name]
		if a == nil {
			a = &agg{}
			by[name] = a
		}
		a.n++
		a.max = max(a.max, e.Duration)
	}
	var out []string
	for name, a := range by {
		out = append(out, fmt.Sprintf("%s × %d, longest %s", name, a.n, ms(a.max)))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// others lists the Redis commands other than HMGET and INFO counted between before and after.
func others(before, after map[string]int64) string {
	var out []string
	for name, v := range after {
		if d := v - before[name]; d > 0 && name != "hmget" && name != "info" {
			out = append(out, fmt.Sprintf("%s %d", name, d))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
