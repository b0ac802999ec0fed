// Package redistest starts throwaway redis-server processes for tests: each on a free port,
// in its own temporary directory, stopped when the test ends. Tests never touch a shared
// Redis. Without redis-server on the PATH the test is skipped, naming the package to
// install, unless KEYGATE_REQUIRE_REDIS=1 is set: then it fails.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server.
type Server struct {
	Addr string
	Port int
	Dir  string
	pre  []string // arguments before the others (a sentinel's config file and --sentinel)
	args []string
	cmd  *exec.Cmd
	t    testing.TB
}

// Require skips or fails t when redis-server is missing.
func Require(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found: install the Debian package redis-server (apt-get install -y redis-server)"
		if os.Getenv("KEYGATE_REQUIRE_REDIS") == "1" {
			t.Fatal(msg + "; KEYGATE_REQUIRE_REDIS=1 forbids skipping")
		}
		t.Skip(msg)
	}
	return path
}

// FreePort returns a TCP port that was free a moment ago, and never one it has returned
// before in this process: the kernel may hand the same port to two listens in a row once the
// first is closed, and two sites of one config on the same port do not load.
func FreePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		givenMu.Lock()
		seen := given[port]
		given[port] = true
		givenMu.Unlock()
		if !seen {
			return port
		}
	}
}

var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

// Start runs a redis-server with the given extra arguments (e.g. "--appendonly", "yes") and
// stops it at the end of the test.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	return startServer(t, t.TempDir(), nil, extra)
}

// startServer starts a redis-server in dir with the arguments pre, the usual ones, then extra.
func startServer(t testing.TB, dir string, pre, extra []string) *Server {
	t.Helper()
	bin := Require(t)
	s := &Server{Dir: dir, t: t, pre: pre}
	s.args = extra
	for attempt := 0; ; attempt++ {
		s.Port = FreePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		err := s.start(bin)
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("starting redis-server: %v", err)
		}
	}
	t.Cleanup(s.Kill)
	return s
}

func (s *Server) start(bin string) error {
	args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", filepath.Join(s.Dir, "redis.log")}
	args = append(args, s.args...)
	args = append(append([]string(nil), s.pre...), args...)
	s.cmd = exec.Command(bin, args...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.cmd = nil
			return fmt.Errorf("redis-server exited: %v\n%s", err, lastLines(string(log)))
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond)
		if err == nil {
			fmt.Fprintf(c, "PING\r\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			// A server with requirepass answers NOAUTH: it is up all the same.
			if line == "+PONG\r\n" || strings.HasPrefix(line, "-NOAUTH") {
				go func(cmd *exec.Cmd) { <-exited }(s.cmd)
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd.Process.Kill()
	return fmt.Errorf("redis-server did not answer on %s", s.Addr)
}

func lastLines(s string) string {
	if len(s) > 2000 {
		return s[len(s)-2000:]
	}
	return s
}

// URL is the server's redis:// URL for database db.
func (s *Server) URL(db int) string { return fmt.Sprintf("redis://%s/%d", s.Addr, db) }

// Client returns a client for database 0, closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Kill stops the server with SIGKILL (a crash).
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Kill()
	for i := 0; i < 200; i++ { // wait for the port to close
		c, err := net.DialTimeout("tcp", s.Addr, 50*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	s.cmd = nil
}

// Restart starts the server again on the same port and directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(Require(s.t)); err != nil {
		s.t.Fatalf("restarting redis-server: %v", err)
	}
}

// CommandCalls returns how many times Redis ran the command (from INFO commandstats),
// e.g. CommandCalls("hmget").
func (s *Server) CommandCalls(cmd string) int64 {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		s.t.Fatalf("INFO commandstats: %v", err)
	}
	return parseCalls(info, cmd)
}

func parseCalls(info, cmd string) int64 {
	sc := bufio.NewScanner(strings.NewReader(info))
	prefix := "cmdstat_" + cmd + ":calls="
	for sc.Scan() {
		line := sc.Text()
		if len(line) > len(prefix) && line[:len(prefix)] == prefix {
			rest := line[len(prefix):]
			end := 0
			for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
				end++
			}
			n, _ := strconv.ParseInt(rest[:end], 10, 64)
			return n
		}
	}
	return 0
}

// AllCommandCalls returns INFO commandstats' call count of every command the server has run
// (lower-case names, "hmget", "xread|…" subcommands as Redis writes them).
func (s *Server) AllCommandCalls() map[string]int64 {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		s.t.Fatalf("INFO commandstats: %v", err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		end := 0
		for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
			end++
		}
		n, _ := strconv.ParseInt(rest[:end], 10, 64)
		out[name] = n
	}
	return out
}
