// Command confirm measures a confirmed revocation: how long a revoke through the admin API
// takes to answer when it waits for every live gateway to acknowledge it (target: p99 ≤ 20 ms
// with 3 gateway processes on one Redis, on one machine).
//
// It starts its own redis-server on a free port (in a temporary directory, never the
// machine's own Redis) and 3 keygate gateway processes on it, each with a nora_admin site;
// creates K keys through a redisstore client; then revokes them one by one with
// DELETE /v1/instances/{instance}/keys/{id} on the first gateway's admin endpoint (a keep-alive
// connection), timing each call from its send to its answer, and checks that the answer's
// propagation says every gateway confirmed.
//
//	go run ./bench/confirm [-keygate path] [-keys 500] [-gateways 3] [-out file]
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

const token = "bench-confirm-admin-token"

func main() {
	root := moduleRoot()
	var (
		bin      = flag.String("keygate", "", "keygate binary (default: go build ./cmd/keygate into a temporary directory)")
		nkeys    = flag.Int("keys", 500, "keys to create and revoke")
		ngw      = flag.Int("gateways", 3, "gateway processes")
		out      = flag.String("out", filepath.Join(root, "bench", "results", "confirm.txt"), "results file (\"\": none)")
		redisBin = flag.String("redis-server", "redis-server", "redis-server binary")
	)
	flag.Parse()
	r := &run{}
	defer r.cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; r.cleanup(); os.Exit(130) }()
	if err := r.main(root, *bin, *redisBin, *nkeys, *ngw, *out); err != nil {
		fmt.Fprintln(os.Stderr, "confirm:", err)
		r.cleanup()
		os.Exit(1)
	}
}

type run struct {
	mu    sync.Mutex
	dirs  []string
	procs []*exec.Cmd
	store *redisstore.Store
	done  bool
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

func (r *run) main(root, bin, redisBin string, nkeys, ngw int, outFile string) error {
	if nkeys < 1 || ngw < 1 {
		return errors.New("-keys and -gateways must be at least 1")
	}
	if _, err := exec.LookPath(redisBin); err != nil {
		return fmt.Errorf("%s not found: install the Debian package redis-server (apt-get install -y redis-server)", redisBin)
	}
	work, err := r.tempDir("keygate-confirm")
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

	var admins []string
	var gwCmds []*exec.Cmd
	for i := 0; i < ngw; i++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		aport, err := freePort()
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
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete
	}
}
`, raddr, port, aport, token)
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
		if err := waitPort(aport, exited, fmt.Sprintf("gateway %d", i), glog); err != nil {
			return err
		}
		admins = append(admins, fmt.Sprintf("http://127.0.0.1:%d", aport))
		gwCmds = append(gwCmds, cmd)
	}

	st := redisstore.New(redis.NewClient(&redis.Options{Addr: raddr}), redisstore.Options{})
	r.mu.Lock()
	r.store = st
	r.mu.Unlock()
	hc := &http.Client{Timeout: 10 * time.Second}
	call := func(method, url string, out any) (int, error) {
		req, _ := http.NewRequest(method, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && out != nil {
			err = json.Unmarshal(b, out)
		}
		return resp.StatusCode, err
	}
	// Every gateway listed (heartbeats) and its instance created.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var l struct {
			Data []json.RawMessage `json:"data"`
		}
		_, err := call("GET", admins[0]+"/v1/gateways", &l)
		ins, _ := st.Instances(ctx)
		if err == nil && len(l.Data) == ngw && len(ins) == 1 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %d gateways did not all register (%d listed)", ngw, len(l.Data))
		}
		time.Sleep(50 * time.Millisecond)
	}
	const frozenRevokes = 5
	keys := make([]store.Key, nkeys+frozenRevokes)
	in := store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}
	for i := range keys {
		_, k, err := store.Mint(apikey.Hasher{}, in, "bench", time.Time{}, time.Now())
		if err != nil {
			return err
		}
		if err := st.CreateKey(ctx, k); err != nil {
			return err
		}
		keys[i] = k
	}
	fmt.Printf("revoking %d keys through the admin API of gateway 0 …\n", nkeys)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	type propagation struct {
		Gateways  int     `json:"gateways"`
		Confirmed int     `json:"confirmed"`
		ElapsedMS float64 `json:"elapsed_ms"`
	}
	revoke := func(k store.Key) (propagation, time.Duration, error) {
		var out struct {
			Propagation *propagation `json:"propagation"`
		}
		start := time.Now()
		status, err := call("DELETE", admins[0]+"/v1/instances/acme-sandbox/keys/"+k.ID, &out)
		d := time.Since(start)
		if err != nil || status != 200 || out.Propagation == nil {
			return propagation{}, d, fmt.Errorf("revoke %s: %d %v", k.ID, status, err)
		}
		return *out.Propagation, d, nil
	}
	var took, confirm []time.Duration
	short := 0
	for _, k := range keys[:nkeys] {
		p, d, err := revoke(k)
		if err != nil {
			return err
		}
		if p.Confirmed != p.Gateways || p.Gateways != ngw {
			short++
		}
		took = append(took, d)
		confirm = append(confirm, time.Duration(p.ElapsedMS*float64(time.Millisecond)))
	}
	// The last gateway frozen (SIGSTOP, its heartbeat still fresh): each revoke waits out the
	// one-second bound and reports it missing.
	var frozen []string
	if ngw > 1 {
		last := gwCmds[len(gwCmds)-1]
		last.Process.Signal(syscall.SIGSTOP)
		for _, k := range keys[nkeys:] {
			p, d, err := revoke(k)
			if err != nil {
				last.Process.Signal(syscall.SIGCONT)
				return err
			}
			frozen = append(frozen, fmt.Sprintf("%s (%d of %d)", ms(d), p.Confirmed, p.Gateways))
		}
		last.Process.Signal(syscall.SIGCONT)
	}
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	sort.Slice(confirm, func(i, j int) bool { return confirm[i] < confirm[j] })
	pct := func(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }
	var b strings.Builder
	fmt.Fprintf(&b, "confirmed revocation: DELETE …/keys/{id} through the admin API, %d gateway processes on one Redis\n", ngw)
	fmt.Fprintf(&b, "date:     %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine:  %s, %d CPUs (%s), %s/%s, redis %s\n", cpuModel(), nproc(), runtime.Version(), runtime.GOOS, runtime.GOARCH, redisVersion)
	fmt.Fprintf(&b, "command:  %s\n", commandLine())
	fmt.Fprintf(&b, "revokes:  %d, one at a time; not confirmed by every gateway: %d\n", nkeys, short)
	fmt.Fprintf(&b, "answer time (send to answer, the client's view):   p50 %s  p90 %s  p99 %s  max %s\n",
		ms(pct(took, .5)), ms(pct(took, .9)), ms(pct(took, .99)), ms(took[len(took)-1]))
	fmt.Fprintf(&b, "confirmation wait (propagation.elapsed_ms):        p50 %s  p90 %s  p99 %s  max %s\n",
		ms(pct(confirm, .5)), ms(pct(confirm, .9)), ms(pct(confirm, .99)), ms(confirm[len(confirm)-1]))
	if len(frozen) > 0 {
		fmt.Fprintf(&b, "one gateway frozen (SIGSTOP), %d revokes: %s\n", len(frozen), strings.Join(frozen, ", "))
	}
	verdict := "met"
	if pct(took, .99) > 20*time.Millisecond || short > 0 {
		verdict = "NOT met"
	}
	fmt.Fprintf(&b, "target:   p99 answer ≤ 20 ms, every revoke confirmed by all %d: %s\n", ngw, verdict)
	fmt.Print(b.String())
	if outFile != "" {
		return os.WriteFile(outFile, []byte(b.String()), 0o644)
	}
	return nil
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

// commandLine is how this run was started: `go run ./bench/confirm …` when run that way.
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
		prog = "go run ./bench/confirm"
	}
	return strings.TrimSpace(prog + " " + strings.Join(quoted, " "))
}
