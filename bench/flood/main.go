// Command flood measures the failed-attempt limit and signed keys under floods, against real
// keygate gateway processes on a real redis-server, with the store's cost read from Redis' own
// INFO commandstats. Targets: a bad-checksum flood makes 0 store calls; with key_signing
// require, random valid-checksum keys from many addresses make 0; without signing, one
// address's random valid-checksum keys make at most the failed-attempt limit of lookups per
// window; valid keys' p99 latency stays within 2 × its value without the flood.
//
// Three scenarios, one after the other, each with its own gateway process and its own fresh
// redis-server (a free port, a temporary directory, never the machine's own Redis). Each
// gateway trusts X-Forwarded-For from loopback, so one client process speaks for many
// addresses. In each scenario a steady valid-key load (a few hundred distinct keys, warm in
// the gateway's cache, over a few connections at a fixed rate, each connection from its own
// address) is measured first alone (the baseline of that configuration) and then for as long
// again with a flood running beside it:
//
//	bad-checksum   default limits; keys with a wrong checksum, X-Forwarded-For rotating over
//	               65,536 addresses
//	one-address    failed_attempts { window 5s }, no signing; random valid-checksum keys, all
//	               from one address (lookups counted against the limit per window)
//	signed         key_signing { secret …; require }; random valid-checksum (unsigned) keys
//	               from 4,096 rotating addresses; the valid keys are signed
//
//	go run ./bench/flood [-keygate path] [-seconds 15] [-out file]
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
	"math"
	"net/http"
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

// signingSecret is the benchmark's own key-signing secret (passed to the gateway through its
// environment, never written in a file).
const signingSecret = "bench-flood-signing-secret-0123456789"

const failedLimit = 20 // the failed-attempt limit (the default; no scenario changes it)

type options struct {
	bin, redisBin string
	secs          int
	validKeys     int
	validConns    int
	validRate     int
	floodConns    int
	floodRates    []int
	floodNice     int
	rounds        int
}

func main() {
	root := harness.ModuleRoot()
	var o options
	flag.StringVar(&o.bin, "keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
	flag.IntVar(&o.secs, "seconds", 8, "seconds of each slice (no flood, then each flood rate) of each round")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of slices per scenario, interleaved")
	flag.IntVar(&o.validKeys, "keys", 300, "distinct valid keys")
	flag.IntVar(&o.validConns, "valid-conns", 8, "connections of the valid-key load")
	flag.IntVar(&o.validRate, "valid-rate", 800, "valid-key requests per second, over all its connections")
	flag.IntVar(&o.floodConns, "flood-conns", 8, "connections of the flood")
	rates := flag.String("flood-rates", "4000,0", "the floods' rates, requests per second (0: as fast as its connections go)")
	flag.IntVar(&o.floodNice, "flood-nice", 10, "the flood generator process's nice level (0: the same priority as the gateway)")
	workerName := flag.String("flood-worker", "", "(internal) run as the flood generator of this scenario")
	workerURL := flag.String("worker-url", "", "(internal) the flood generator's gateway")
	workerRate := flag.Int("worker-rate", 0, "(internal) the flood generator's rate")
	flag.StringVar(&o.redisBin, "redis-server", "redis-server", "redis-server binary")
	out := flag.String("out", filepath.Join(root, "bench", "results", "flood.txt"), "results file (\"\": none)")
	flag.Parse()
	for _, f := range strings.Split(*rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "flood: -flood-rates: %q is not a rate\n", f)
			os.Exit(2)
		}
		o.floodRates = append(o.floodRates, n)
	}
	if *workerName != "" {
		if err := runWorker(o, *workerName, *workerURL, *workerRate); err != nil {
			fmt.Fprintln(os.Stderr, "flood worker:", err)
			os.Exit(1)
		}
		return
	}
	harness.Main("flood", func(h *harness.Run) error { return (&run{h}).main(root, o, *out) })
}

type run struct{ *harness.Run }

// scenario is one gateway configuration and the flood run against it.
type scenario struct {
	name      string
	title     string // the table's description
	noraExtra string // lines of the nora block
	signed    bool   // the valid keys are signed (and the gateway requires it)
	window    time.Duration
	floodKey  func() string
	floodFrom func(i int) string
}

// scenarios are the three floods, each with its gateway configuration.
func scenarios() []*scenario {
	randomKey := func() string {
		k, err := apikey.Generate(apikey.Sandbox)
		if err != nil {
			panic(err)
		}
		return k
	}
	badKey := func() string {
		k := randomKey()
		if apikey.Checksum(k[:40]) == "zzzzzz" {
			return k[:40] + "zzzzzy"
		}
		return k[:40] + "zzzzzz"
	}
	return []*scenario{
		{
			name: "bad-checksum", title: "bad checksums, 65,536 rotating addresses",
			floodKey: badKey, floodFrom: func(i int) string { return addr4(i & 0xffff) },
		},
		{
			name: "one-address", title: "random valid-checksum keys, one address, window 5s",
			noraExtra: "failed_attempts {\n\t\t\twindow 5s\n\t\t}", window: 5 * time.Second,
			floodKey: randomKey, floodFrom: func(int) string { return "192.0.2.7" },
		},
		{
			name: "signed", title: "key_signing require: random keys, 4,096 rotating addresses",
			noraExtra: "key_signing {\n\t\t\tsecret {env.KG_BENCH_SIGNING}\n\t\t\trequire\n\t\t}", signed: true,
			floodKey: randomKey, floodFrom: func(i int) string { return addr4(0x10000 + (i & 0xfff)) },
		},
	}
}

// result is what one scenario measured.
type result struct {
	sc           *scenario
	phases       []*phase // the first without a flood
	sinceWarm    time.Duration
	redisVersion string
}

func (r *run) main(root string, o options, outFile string) error {
	if o.secs < 1 || o.rounds < 1 || o.validKeys < 1 || o.validConns < 1 || o.validRate < 1 || o.floodConns < 1 || len(o.floodRates) == 0 {
		return errors.New("-seconds, -rounds, -keys, -valid-conns, -valid-rate and -flood-conns must be at least 1, -flood-rates not empty")
	}
	if err := harness.CheckRedisServer(o.redisBin); err != nil {
		return err
	}
	work, err := r.TempDir("keygate-flood")
	if err != nil {
		return err
	}
	if o.bin, err = harness.Keygate(root, o.bin, work); err != nil {
		return err
	}

	var results []*result
	scenarios := scenarios()
	for i, sc := range scenarios {
		fmt.Printf("\n[%d/%d] %s: %s\n", i+1, len(scenarios), sc.name, sc.title)
		res, err := r.scenario(work, o, sc)
		if err != nil {
			return fmt.Errorf("%s: %v", sc.name, err)
		}
		results = append(results, res)
	}

	report := format(o, results)
	fmt.Print("\n" + report)
	if outFile != "" {
		if err := os.MkdirAll(filepath.Dir(outFile), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(outFile, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", outFile)
	}
	return nil
}

// scenario starts a redis-server and a gateway for sc, measures, and stops both.
func (r *run) scenario(work string, o options, sc *scenario) (*result, error) {
	dir := filepath.Join(work, sc.name)
	// redis-server on a free port, in its own directory, no persistence.
	rd, err := r.StartRedis(o.redisBin, filepath.Join(dir, "redis"))
	if err != nil {
		return nil, err
	}
	defer rd.Stop()
	raddr, rdb := rd.Addr, rd.Client
	ctx := context.Background()
	res := &result{sc: sc, redisVersion: rd.Version}

	// The gateway: trusts X-Forwarded-For from loopback; answers a plain "ok" behind nora_auth.
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	cf := fmt.Sprintf(`{
	admin off
	auto_https off
	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}
	nora {
		store redis redis://%s/0
		instance acme-sandbox sandbox "Acme (sandbox)"
		%s
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
`, raddr, sc.noraExtra, port)
	gw, err := r.StartGateway(o.bin, dir, cf, port, "gateway", "KG_BENCH_SIGNING="+signingSecret)
	if err != nil {
		return nil, err
	}
	defer gw.Stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	// The valid keys, created through a redisstore client on the same Redis.
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: raddr}), redisstore.Options{})
	defer st.Close()
	if err := harness.WaitInstances(ctx, st, 1); err != nil {
		return nil, err
	}
	var signer *apikey.Signer
	if sc.signed {
		if signer, err = apikey.NewSigner([]byte(signingSecret)); err != nil {
			return nil, err
		}
	}
	in := store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}
	valid := make([]string, o.validKeys)
	for i := range valid {
		secret, k, err := store.Minter{Signer: signer}.Mint(in, fmt.Sprintf("bench-%d", i), time.Time{}, time.Now())
		if err != nil {
			return nil, err
		}
		if err := st.CreateKey(ctx, k); err != nil {
			return nil, fmt.Errorf("creating key %d: %v", i, err)
		}
		valid[i] = secret
	}

	// Warm every key (twice: the second answer must come from the cache).
	c := newClient()
	for pass := 0; pass < 2; pass++ {
		before, err := harness.CommandCalls(ctx, rdb)
		if err != nil {
			return nil, err
		}
		for i, s := range valid {
			if status, err := ask(c, url, validFrom(i%o.validConns), s); err != nil || status != 200 {
				return nil, fmt.Errorf("warming key %d: %d %v", i, status, err)
			}
		}
		after, err := harness.CommandCalls(ctx, rdb)
		if err != nil {
			return nil, err
		}
		if n := after["hmget"] - before["hmget"]; pass == 1 && n != 0 {
			return nil, fmt.Errorf("%d lookups on the second pass over warm keys", n)
		}
	}
	// The phases, interleaved round by round so that the machine's background load weighs on
	// them alike: the valid-key load alone, then beside each flood rate.
	res.phases = []*phase{{rate: -1}}
	for _, rate := range o.floodRates {
		res.phases = append(res.phases, &phase{rate: rate})
	}
	warmed := time.Now()
	d := time.Duration(o.secs) * time.Second
	for round := 1; round <= o.rounds; round++ {
		for _, p := range res.phases {
			fmt.Printf("  round %d/%d: %s, %v …\n", round, o.rounds, p.label(), d)
			if err := p.measure(ctx, rdb, o, url, valid, sc, d); err != nil {
				return nil, err
			}
		}
	}
	res.sinceWarm = time.Since(warmed)
	return res, nil
}

// phase is one kind of slice of a scenario (no flood, or a flood at one rate) and what its
// slices measured together.
type phase struct {
	rate    int // -1: no flood; 0: a flood as fast as it goes; else at most rate req/s
	lat     []time.Duration
	bad     int // valid-key requests not answered 200
	data    map[string]int64
	sent    int64
	secs    float64 // the slices' durations (from the first to the last snapshot of each)
	answers map[string]int64
	lookups int64 // HMGET
	bound   int64 // the limit × the windows each slice spans, summed
}

func (p *phase) label() string {
	switch {
	case p.rate < 0:
		return "no flood"
	case p.rate == 0:
		return "flood, full speed"
	default:
		return fmt.Sprintf("flood, %d req/s", p.rate)
	}
}

// measure runs one slice of p: the valid-key load for d, with p's flood beside it.
func (p *phase) measure(ctx context.Context, rdb *redis.Client, o options, url string, valid []string, sc *scenario, d time.Duration) error {
	before, err := harness.CommandCalls(ctx, rdb)
	if err != nil {
		return err
	}
	t0 := time.Now()
	var w *worker
	if p.rate >= 0 {
		if w, err = startWorker(o, p.rate, url, sc); err != nil {
			return err
		}
	}
	lat, bad := validLoad(o, url, valid, d)
	var sent int64
	var answers map[string]int64
	if w != nil {
		if sent, answers, err = w.finish(); err != nil {
			return err
		}
	}
	after, err := harness.CommandCalls(ctx, rdb)
	if err != nil {
		return err
	}
	secs := time.Since(t0).Seconds()
	p.lat = append(p.lat, lat...)
	p.bad += bad
	p.secs += secs
	p.sent += sent
	if p.data == nil {
		p.data, p.answers = map[string]int64{}, map[string]int64{}
	}
	for k, v := range dataCommands(before, after) {
		p.data[k] += v
	}
	for k, v := range answers {
		p.answers[k] += v
	}
	p.lookups += after["hmget"] - before["hmget"]
	if sc.window > 0 {
		p.bound += failedLimit * int64(math.Ceil(secs/sc.window.Seconds()))
	}
	return nil
}

func newClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
}

// validFrom is the address of the valid-key load's connection c (never a flood's address).
func validFrom(c int) string { return fmt.Sprintf("198.51.100.%d", 1+c%250) }

func addr4(i int) string { return fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255) }

// validLoad sends the valid keys at o.validRate for d over o.validConns connections, each at
// a fixed interval (a late request is sent at once, not skipped), and returns the latencies
// (from sending to the end of the body) and how many answers were not 200.
func validLoad(o options, url string, valid []string, d time.Duration) ([]time.Duration, int) {
	interval := time.Duration(float64(time.Second) * float64(o.validConns) / float64(o.validRate))
	var (
		mu   sync.Mutex
		all  []time.Duration
		bad  int
		wg   sync.WaitGroup
		next atomic.Int64
	)
	start := time.Now()
	for c := 0; c < o.validConns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient()
			from := validFrom(c)
			// Spread the connections' ticks over one interval.
			at := start.Add(interval * time.Duration(c) / time.Duration(o.validConns))
			var lat []time.Duration
			nbad := 0
			for {
				if w := time.Until(at); w > 0 {
					time.Sleep(w)
				}
				if time.Since(start) >= d {
					break
				}
				k := valid[int(next.Add(1))%len(valid)]
				s := time.Now()
				status, err := ask(cl, url, from, k)
				lat = append(lat, time.Since(s))
				if err != nil || status != 200 {
					nbad++
				}
				at = at.Add(interval)
			}
			mu.Lock()
			all = append(all, lat...)
			bad += nbad
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, bad
}

// A worker is a flood generator: this program run again as its own process (niced, by
// default), so that the flood's client does not share a Go runtime with the valid-key load
// whose latency is measured, and yields the CPUs to the gateway as a client on another machine
// would. It floods until its standard input closes, then prints what it sent as JSON.
type worker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   strings.Builder
}

type workerReport struct {
	Sent    int64            `json:"sent"`
	Secs    float64          `json:"secs"`
	Answers map[string]int64 `json:"answers"`
}

func startWorker(o options, rate int, url string, sc *scenario) (*worker, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{exe, "-flood-worker", sc.name, "-worker-url", url, "-worker-rate", strconv.Itoa(rate),
		"-flood-conns", strconv.Itoa(o.floodConns)}
	if o.floodNice != 0 {
		args = append([]string{"nice", "-n", strconv.Itoa(o.floodNice)}, args...)
	}
	w := &worker{cmd: exec.Command(args[0], args[1:]...)}
	w.cmd.Stdout, w.cmd.Stderr = &w.out, os.Stderr
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *worker) finish() (int64, map[string]int64, error) {
	w.stdin.Close()
	if err := w.cmd.Wait(); err != nil {
		return 0, nil, fmt.Errorf("flood generator: %v", err)
	}
	var rep workerReport
	if err := json.Unmarshal([]byte(w.out.String()), &rep); err != nil {
		return 0, nil, fmt.Errorf("flood generator's report %q: %v", w.out.String(), err)
	}
	return rep.Sent, rep.Answers, nil
}

func runWorker(o options, name, url string, rate int) error {
	var sc *scenario
	for _, s := range scenarios() {
		if s.name == name {
			sc = s
		}
	}
	if sc == nil || url == "" {
		return fmt.Errorf("no scenario %q or no -worker-url", name)
	}
	stop := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stop) }()
	t0 := time.Now()
	sent, answers := flood(o, rate, url, sc, stop)
	return json.NewEncoder(os.Stdout).Encode(workerReport{Sent: sent, Secs: time.Since(t0).Seconds(), Answers: answers})
}

// flood sends sc's flood until stop is closed, over o.floodConns connections, at most
// rate requests per second when rate > 0; it returns how many it sent and the answers by
// status and code.
func flood(o options, rate int, url string, sc *scenario, stop <-chan struct{}) (int64, map[string]int64) {
	var (
		mu      sync.Mutex
		answers = map[string]int64{}
		sent    atomic.Int64
		wg      sync.WaitGroup
	)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.floodConns) / float64(rate))
	}
	start := time.Now()
	for c := 0; c < o.floodConns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := newClient()
			local := map[string]int64{}
			at := start.Add(interval * time.Duration(c) / time.Duration(o.floodConns))
			for {
				select {
				case <-stop:
					mu.Lock()
					for k, v := range local {
						answers[k] += v
					}
					mu.Unlock()
					return
				default:
				}
				if interval > 0 {
					if w := time.Until(at); w > 0 {
						time.Sleep(w)
					}
					at = at.Add(interval)
				}
				i := int(sent.Add(1)) - 1
				status, code, err := askCode(cl, url, sc.floodFrom(i), sc.floodKey())
				if err != nil {
					local["error"]++
				} else {
					local[fmt.Sprintf("%d %s", status, code)]++
				}
			}
		}()
	}
	wg.Wait()
	return sent.Load(), answers
}

func ask(c *http.Client, url, from, key string) (int, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Forwarded-For", from)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// askCode is ask that also reads a refusal's error code.
func askCode(c *http.Client, url, from, key string) (int, string, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-Forwarded-For", from)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	code := ""
	if _, rest, ok := strings.Cut(string(b), `"code":"`); ok {
		code, _, _ = strings.Cut(rest, `"`)
	}
	return resp.StatusCode, code, nil
}

// dataCommands is the difference of two INFO commandstats snapshots, without the commands
// that are not caused by requests: the invalidation listener's blocking XREAD, connection
// set-up, INFO, and the fleet's background work — each gateway's heartbeat once a second (a
// script stamping Redis' TIME into a hash: evalsha, time, hset) and its acknowledgements
// (hset). A key lookup is an HMGET, never excluded.
func dataCommands(before, after map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for name, n := range after {
		base, _, _ := strings.Cut(name, "|")
		switch base {
		case "xread", "ping", "info", "client", "hello", "select", "auth", "command",
			"evalsha", "eval", "script", "time", "hset":
			continue
		}
		if d := n - before[name]; d > 0 {
			out[name] = d
		}
	}
	return out
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func describe(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

var pct = harness.Percentile

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func metOrNot(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func format(o options, results []*result) string {
	var b strings.Builder
	redisVersion := "?"
	if len(results) > 0 {
		redisVersion = results[0].redisVersion
	}
	fmt.Fprintf(&b, "keygate floods: the failed-attempt limit and signed keys (targets: bad checksum -> 0 store\n")
	fmt.Fprintf(&b, "calls; key_signing require, random keys from many addresses -> 0; without signing, one address\n")
	fmt.Fprintf(&b, "-> at most the limit of lookups per window; valid keys' p99 <= 2 x its value without the flood)\n\n")
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %d CPUs (nproc), %s, %s/%s, %s, redis-server %s; load average at the end %s\n", harness.NProc(), harness.CPUModel(),
		runtime.GOOS, runtime.GOARCH, runtime.Version(), redisVersion, harness.LoadAvg())
	fmt.Fprintf(&b, "command:  %s\n", harness.CommandLine("./bench/flood"))
	fmt.Fprintf(&b, "setup:    per scenario one keygate gateway process and its own fresh redis-server (loopback, no\n")
	fmt.Fprintf(&b, "          persistence), trusting X-Forwarded-For from loopback. Valid keys: %d distinct, warm, %d req/s\n", o.validKeys, o.validRate)
	fmt.Fprintf(&b, "          over %d connections (an address each, never a flood's). %d rounds of %d s slices: no flood,\n", o.validConns, o.rounds, o.secs)
	fmt.Fprintf(&b, "          then the same valid load beside a flood over %d connections at each rate; the slices of a\n", o.floodConns)
	fmt.Fprintf(&b, "          kind are pooled. The flood comes from a process of its own (nice %d). Latency from sending\n", o.floodNice)
	fmt.Fprintf(&b, "          to the end of the answer, in ms. Both load generators, the gateway and Redis share the\n")
	fmt.Fprintf(&b, "          machine's CPUs: a flood at full speed saturates them.\n\n")

	fmt.Fprintf(&b, "%-13s %-18s %9s %9s %9s %7s %10s  %s\n", "scenario", "load", "p50 ms", "p99 ms", "max ms", "p99 x", "flood r/s", "store cost of the slices (Redis data commands)")
	for _, r := range results {
		bp99 := pct(r.phases[0].lat, .99)
		for _, p := range r.phases {
			ratio, rate := "", ""
			if p.rate >= 0 {
				ratio = fmt.Sprintf("%.2f", float64(pct(p.lat, .99))/float64(bp99))
				rate = fmt.Sprintf("%.0f", float64(p.sent)/p.secs)
			}
			fmt.Fprintf(&b, "%-13s %-18s %9s %9s %9s %7s %10s  %d (%s)\n", r.sc.name, p.label(), ms(pct(p.lat, .5)), ms(pct(p.lat, .99)),
				ms(pct(p.lat, 1)), ratio, rate, sum(p.data), describe(p.data))
		}
	}
	fmt.Fprintf(&b, "\nper scenario (p99 x: the valid keys' p99 beside the flood / without it; target <= 2):\n")
	allMet := true
	check := func(ok bool) string {
		allMet = allMet && ok
		return metOrNot(ok)
	}
	for _, r := range results {
		base := r.phases[0]
		bp99 := pct(base.lat, .99)
		fmt.Fprintf(&b, "\n%s: %s\n", r.sc.name, r.sc.title)
		fmt.Fprintf(&b, "  no flood: %d valid-key requests (%d not 200), p99 %s ms\n", len(base.lat), base.bad, ms(bp99))
		for _, p := range r.phases[1:] {
			fp99 := pct(p.lat, .99)
			ratio := float64(fp99) / float64(bp99)
			fmt.Fprintf(&b, "  %s: %d flood requests in %.1f s (%.0f req/s): %s\n", p.label(), p.sent, p.secs, float64(p.sent)/p.secs, describe(p.answers))
			fmt.Fprintf(&b, "    valid keys: %d requests (%d not 200), p99 %s ms = %.2f x without the flood: %s\n",
				len(p.lat), p.bad, ms(fp99), ratio, check(ratio <= 2 && p.bad == 0 && base.bad == 0))
			if r.sc.window > 0 {
				fmt.Fprintf(&b, "    store lookups (HMGET): %d (target: at most the limit per window, %d for %.1f s of %v windows): %s\n",
					p.lookups, p.bound, p.secs, r.sc.window, check(p.lookups <= p.bound))
			} else {
				fmt.Fprintf(&b, "    Redis data commands: %d (target 0): %s\n", sum(p.data), check(sum(p.data) == 0))
			}
		}
		if r.sinceWarm > 55*time.Second {
			fmt.Fprintf(&b, "  (this scenario ran %.0f s after its keys were warmed: the valid keys' last_used_at writes, once a\n", r.sinceWarm.Seconds())
			fmt.Fprintf(&b, "  minute per key, may be among its data commands)\n")
		}
	}
	fmt.Fprintf(&b, "\nall targets: %s\n", metOrNot(allMet))
	return b.String()
}
