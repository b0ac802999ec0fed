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
	"bufio"
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
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

func main() {
	root := moduleRoot()
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
	r := &run{change: *change}
	defer r.cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; r.cleanup(); os.Exit(130) }()
	if err := r.main(root, *bin, *redisBin, *nkeys, *ngw, *limit, *out); err != nil {
		fmt.Fprintln(os.Stderr, "propagation:", err)
		r.cleanup()
		os.Exit(1)
	}
}

type run struct {
	change string // revoke | narrow
	mu     sync.Mutex
	dirs   []string
	procs  []*exec.Cmd
	store  *redisstore.Store
	done   bool
}

func (r *run) cleanup() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	if r.store != nil {
		r.store.Close()
	}
	for i := len(r.procs) - 1; i >= 0; i-- {
		p := r.procs[i]
		p.Process.Signal(syscall.SIGTERM)
		exited := make(chan struct{})
		go func() { p.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			p.Process.Kill()
			<-exited
		}
	}
	for _, d := range r.dirs {
		os.RemoveAll(d)
	}
}

func (r *run) tempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp("", pattern)
	if err == nil {
		r.mu.Lock()
		r.dirs = append(r.dirs, d)
		r.mu.Unlock()
	}
	return d, err
}

func (r *run) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	r.mu.Lock()
	r.procs = append(r.procs, cmd)
	r.mu.Unlock()
	return nil
}

func moduleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod)
	}
	wd, _ := os.Getwd()
	return wd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitPort(port int, exited <-chan struct{}, what, log string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(log)
			return fmt.Errorf("%s exited:\n%s", what, tailOf(string(b), 3000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on port %d", what, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (r *run) main(root, bin, redisBin string, nkeys, ngw int, limit time.Duration, outFile string) error {
	if nkeys < 1 || ngw < 1 {
		return errors.New("-keys and -gateways must be at least 1")
	}
	if _, err := exec.LookPath(redisBin); err != nil {
		return fmt.Errorf("%s not found: install the Debian package redis-server (apt-get install -y redis-server)", redisBin)
	}
	work, err := r.tempDir("keygate-propagation")
	if err != nil {
		return err
	}
	if bin == "" {
		bin = filepath.Join(work, "keygate")
		fmt.Println("building ./cmd/keygate …")
		build := exec.Command("go", "build", "-o", bin, "./cmd/keygate")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/keygate: %v", err)
		}
	}

	// redis-server on a free port, in its own directory, no persistence.
	rport, err := freePort()
	if err != nil {
		return err
	}
	rdir := filepath.Join(work, "redis")
	os.MkdirAll(rdir, 0o700)
	rlog := filepath.Join(rdir, "redis.log")
	rcmd := exec.Command(redisBin, "--port", strconv.Itoa(rport), "--bind", "127.0.0.1", "--dir", rdir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", rlog)
	if err := r.start(rcmd); err != nil {
		return err
	}
	rexited := make(chan struct{})
	go func() { rcmd.Wait(); close(rexited) }()
	if err := waitPort(rport, rexited, "redis-server", rlog); err != nil {
		return err
	}
	raddr := fmt.Sprintf("127.0.0.1:%d", rport)
	rdb := redis.NewClient(&redis.Options{Addr: raddr})
	defer rdb.Close()
	ctx := context.Background()
	for i := 0; rdb.Ping(ctx).Err() != nil; i++ {
		if i == 200 {
			return errors.New("redis-server does not answer PING")
		}
		time.Sleep(20 * time.Millisecond)
	}
	redisVersion := "?"
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
				redisVersion = v
			}
		}
	}

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
		port, err := freePort()
		if err != nil {
			return err
		}
		dir := filepath.Join(work, fmt.Sprintf("gw%d", i))
		os.MkdirAll(dir, 0o700)
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
		cfPath := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(cfPath, []byte(cf), 0o600); err != nil {
			return err
		}
		glog := filepath.Join(dir, "keygate.log")
		lf, err := os.Create(glog)
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, "run", "--config", cfPath)
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"),
			"XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := r.start(cmd); err != nil {
			return err
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); lf.Close(); close(exited) }()
		if err := waitPort(port, exited, fmt.Sprintf("gateway %d", i), glog); err != nil {
			return err
		}
		urls = append(urls, fmt.Sprintf("http://127.0.0.1:%d/", port))
	}

	// The admin side: a redisstore client on the same Redis and prefix.
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: raddr}), redisstore.Options{})
	r.mu.Lock()
	r.store = st
	r.mu.Unlock()
	for i := 0; ; i++ {
		ins, _ := st.Instances(ctx)
		if len(ins) == 2 {
			break
		}
		if i == 500 {
			return errors.New("the gateways did not create their instances")
		}
		time.Sleep(20 * time.Millisecond)
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
	hmget := func() (int64, error) { return commandCalls(ctx, rdb, "hmget") }
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

	sorted := func(d []time.Duration) []time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s
	}
	pct := func(s []time.Duration, p float64) time.Duration {
		if len(s) == 0 {
			return 0
		}
		i := int(float64(len(s))*p+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(s) {
			i = len(s) - 1
		}
		return s[i]
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }
	line := func(name string, d []time.Duration) string {
		s := sorted(d)
		return fmt.Sprintf("%-44s p50 %s   p90 %s   p99 %s   max %s", name, ms(pct(s, .5)), ms(pct(s, .9)), ms(pct(s, .99)), ms(pct(s, 1)))
	}

	var b strings.Builder
	what := "revocation"
	if r.change == "narrow" {
		what = "narrowing update (allowed_ips set to 10.0.0.0/8: the pollers' 127.0.0.1 is refused, 403)"
	}
	fmt.Fprintf(&b, "keygate %s propagation (target: p99 <= 10 ms)\n\n", what)
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %d CPUs (nproc), %s, %s/%s, %s, redis-server %s\n", nproc(), cpuModel(), runtime.GOOS, runtime.GOARCH, runtime.Version(), redisVersion)
	fmt.Fprintf(&b, "command:  %s\n", commandLine())
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

// commandCalls reads how many times Redis ran cmd, from INFO commandstats.
func commandCalls(ctx context.Context, rdb *redis.Client, cmd string) (int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	prefix := "cmdstat_" + cmd + ":calls="
	for _, l := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			return n, nil
		}
	}
	return 0, nil
}

func nproc() int {
	if out, err := exec.Command("nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			return n
		}
	}
	return runtime.NumCPU()
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "CPU model unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "CPU model unknown"
}

// commandLine is how this run was started: `go run ./bench/propagation …` when run that way.
func commandLine() string {
	args := os.Args[1:]
	quoted := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		quoted[i] = a
	}
	prog := os.Args[0]
	if strings.Contains(prog, "go-build") || strings.HasPrefix(prog, os.TempDir()) {
		prog = "go run ./bench/propagation"
	}
	return strings.TrimSpace(prog + " " + strings.Join(quoted, " "))
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
