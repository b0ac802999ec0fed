// Package harness is what the benchmark programs under bench/ share: a Run that owns the
// temporary directories and processes it started and removes and stops them on exit or on a
// signal, a redis-server of their own on a free port, keygate built and started as gateway
// processes, the machine's description for a results header, and percentiles.
package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
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

	"github.com/keygate/keygate/store"
)

// Run holds what a benchmark started: temporary directories, processes and cleanup
// functions. Cleanup undoes them all, once.
type Run struct {
	mu       sync.Mutex
	dirs     []string
	procs    []*Proc
	cleanups []func()
	done     bool
}

// Main runs body with a new Run, named name in its error message. The Run is cleaned up when
// body returns, and on SIGINT or SIGTERM (exit status 130); an error is printed as
// "name: error" and exits with status 1.
func Main(name string, body func(*Run) error) {
	r := &Run{}
	defer r.Cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; r.Cleanup(); os.Exit(130) }()
	if err := body(r); err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		r.Cleanup()
		os.Exit(1)
	}
}

// Cleanup runs the functions given to OnCleanup (the last first), stops the processes (the
// last started first) and removes the temporary directories. Calls after the first do nothing.
func (r *Run) Cleanup() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	for i := len(r.procs) - 1; i >= 0; i-- {
		r.procs[i].Stop()
	}
	for _, d := range r.dirs {
		os.RemoveAll(d)
	}
}

// OnCleanup makes Cleanup call f before it stops the processes.
func (r *Run) OnCleanup(f func()) {
	r.mu.Lock()
	r.cleanups = append(r.cleanups, f)
	r.mu.Unlock()
}

// TempDir makes a temporary directory (os.MkdirTemp) that Cleanup removes.
func (r *Run) TempDir(pattern string) (string, error) {
	d, err := os.MkdirTemp("", pattern)
	if err == nil {
		r.mu.Lock()
		r.dirs = append(r.dirs, d)
		r.mu.Unlock()
	}
	return d, err
}

// Proc is a process started by Run.Start.
type Proc struct {
	Cmd    *exec.Cmd
	Exited chan struct{} // closed once the process has exited
}

// Stop sends the process SIGTERM, and SIGKILL if it has not exited 5 seconds later, and waits
// for it to exit. Stopping a process that has exited does nothing.
func (p *Proc) Stop() {
	select {
	case <-p.Exited:
		return
	default:
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
	case <-time.After(5 * time.Second):
		p.Cmd.Process.Kill()
		<-p.Exited
	}
}

// Start starts cmd with its standard output and error in logFile, and remembers it for
// Cleanup.
func (r *Run) Start(cmd *exec.Cmd, logFile string) (*Proc, error) {
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p := &Proc{Cmd: cmd, Exited: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.Exited) }()
	r.mu.Lock()
	r.procs = append(r.procs, p)
	r.mu.Unlock()
	return p, nil
}

// ModuleRoot is the directory of the main module's go.mod, or the working directory.
func ModuleRoot() string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if gomod := strings.TrimSpace(string(out)); err == nil && gomod != "" && gomod != os.DevNull {
		return filepath.Dir(gomod)
	}
	wd, _ := os.Getwd()
	return wd
}

// FreePort is a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitPort waits up to 30 seconds for something to listen on 127.0.0.1:port. If exited is
// closed first, the error carries the end of log; what names the process in errors.
func WaitPort(port int, exited <-chan struct{}, what, log string) error {
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
			s := string(b)
			if len(s) > 3000 {
				s = s[len(s)-3000:]
			}
			return fmt.Errorf("%s exited:\n%s", what, s)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on port %d", what, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckRedisServer says how to install redis-server when bin is not found.
func CheckRedisServer(bin string) error {
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("%s not found: install the Debian package redis-server (apt-get install -y redis-server)", bin)
	}
	return nil
}

// Keygate is bin when it is not empty; otherwise it builds ./cmd/keygate of the module at
// root into dir and returns the binary's path.
func Keygate(root, bin, dir string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	bin = filepath.Join(dir, "keygate")
	fmt.Println("building ./cmd/keygate …")
	build := exec.Command("go", "build", "-o", bin, "./cmd/keygate")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/keygate: %v", err)
	}
	return bin, nil
}

// Redis is a redis-server started by Run.StartRedis, answering PING.
type Redis struct {
	Addr    string // 127.0.0.1:port
	Client  *redis.Client
	Version string // redis_version from INFO server, or "?"
	Proc    *Proc
}

// Stop closes the client and stops the server.
func (rd *Redis) Stop() {
	rd.Client.Close()
	rd.Proc.Stop()
}

// StartRedis starts bin (redis-server) on a free port of 127.0.0.1, in dir (made if missing),
// without persistence, its log in dir/redis.log, and waits until it answers PING.
func (r *Run) StartRedis(bin, dir string) (*Redis, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	log := filepath.Join(dir, "redis.log")
	p, err := r.Start(exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no"), log)
	if err != nil {
		return nil, err
	}
	if err := WaitPort(port, p.Exited, "redis-server", log); err != nil {
		return nil, err
	}
	rd := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Version: "?", Proc: p}
	rd.Client = redis.NewClient(&redis.Options{Addr: rd.Addr})
	ctx := context.Background()
	for i := 0; rd.Client.Ping(ctx).Err() != nil; i++ {
		if i == 200 {
			rd.Client.Close()
			return nil, errors.New("redis-server does not answer PING")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info, err := rd.Client.Info(ctx, "server").Result(); err == nil {
		for _, l := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
				rd.Version = v
			}
		}
	}
	return rd, nil
}

// StartGateway writes caddyfile to dir/Caddyfile (dir made if missing) and starts bin run on
// it, with its data, configuration and home in dir, env added to its environment and its
// log in dir/keygate.log; it waits until the gateway listens on port. what names it in errors.
func (r *Run) StartGateway(bin, dir, caddyfile string, port int, what string, env ...string) (*Proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfPath, []byte(caddyfile), 0o600); err != nil {
		return nil, err
	}
	log := filepath.Join(dir, "keygate.log")
	cmd := exec.Command(bin, "run", "--config", cfPath)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	cmd.Env = append(cmd.Env, env...)
	p, err := r.Start(cmd, log)
	if err != nil {
		return nil, err
	}
	if err := WaitPort(port, p.Exited, what, log); err != nil {
		return nil, err
	}
	return p, nil
}

// WaitInstances waits up to 10 seconds until st lists n instances (the gateways create
// theirs at start).
func WaitInstances(ctx context.Context, st store.Store, n int) error {
	for i := 0; ; i++ {
		if ins, _ := st.Instances(ctx); len(ins) == n {
			return nil
		}
		if i == 500 {
			return fmt.Errorf("the gateways did not create their %d instances", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CommandCalls reads every command's call count from INFO commandstats (lower-case names,
// subcommands as "xread|…" when Redis writes them so).
func CommandCalls(ctx context.Context, rdb *redis.Client) (map[string]int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		out[name] = n
	}
	return out, nil
}

// NProc is the number of CPUs nproc says this process may use, or runtime.NumCPU.
func NProc() int {
	if out, err := exec.Command("nproc").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil {
			return n
		}
	}
	return runtime.NumCPU()
}

// CPUModel is the first "model name" of /proc/cpuinfo, or "CPU model unknown".
func CPUModel() string {
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

// CommandLine is how this program was started, its arguments quoted where needed; a binary
// built by `go run` is shown as `go run pkg` (e.g. "./bench/confirm").
func CommandLine(pkg string) string {
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
		prog = "go run " + pkg
	}
	return strings.TrimSpace(prog + " " + strings.Join(quoted, " "))
}

// Percentile is the nearest-rank p-th quantile (0 < p ≤ 1) of d, which it does not reorder;
// 0 when d is empty.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ProcCPU reads the CPU time (user + system) a process has used, in seconds, from
// /proc/<pid>/stat (0 when it cannot).
func ProcCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100 // clock ticks of 1/100 s
}

// LoadAvg is the machine's load average over 1, 5 and 15 minutes ("?" when unknown).
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// FetchProfile starts fetching a CPU profile of d from Caddy's admin endpoint at addr into
// file; the function returned waits for it.
func FetchProfile(addr string, d time.Duration, file string) func() error {
	done := make(chan error, 1)
	go func() {
		hc := &http.Client{Timeout: d + 30*time.Second}
		resp, err := hc.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(1, int(d.Seconds()))))
		if err != nil {
			done <- fmt.Errorf("fetching the CPU profile: %v", err)
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("answer %d: %s", resp.StatusCode, b)
		}
		if err == nil {
			err = os.WriteFile(file, b, 0o644)
		}
		done <- err
	}()
	return func() error { return <-done }
}
