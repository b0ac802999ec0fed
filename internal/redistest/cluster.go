package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequireCLI skips or fails t when redis-cli (which creates clusters) is missing, like
// Require does for redis-server.
func RequireCLI(t testing.TB) string {
	t.Helper()
	Require(t)
	path, err := exec.LookPath("redis-cli")
	if err != nil {
		msg := "redis-cli not found: install the Debian package redis-tools (apt-get install -y redis-tools)"
		if os.Getenv("KEYGATE_REQUIRE_REDIS") == "1" {
			t.Fatal(msg + "; KEYGATE_REQUIRE_REDIS=1 forbids skipping")
		}
		t.Skip(msg)
	}
	return path
}

// Cluster is a running Redis Cluster on this machine: three masters that share the 16384
// slots, and optionally replicas. Every node is a Server (free port, own temporary
// directory, its cluster bus on another free port), stopped at the end of the test.
type Cluster struct {
	Masters  []*Server
	Replicas []*Server // in no particular order; ReplicasOf tells whose they are
	t        testing.TB
}

// StartCluster starts a Redis Cluster of three masters and no replicas, created with
// `redis-cli --cluster create`, and returns once every node says cluster_state:ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	return StartClusterReplicas(t, 0)
}

// StartClusterReplicas is StartCluster with n replicas for each of the three masters; it
// returns once every replica's link to its master is up.
func StartClusterReplicas(t testing.TB, n int) *Cluster {
	t.Helper()
	cli := RequireCLI(t)
	c := &Cluster{t: t}
	var nodes []*Server
	for i := 0; i < 3*(1+n); i++ {
		nodes = append(nodes, Start(t,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
			"--repl-diskless-sync-delay", "0", // replicas in sync at once, not after 5 s
			// The bus port is chosen too: the default (port+10000) may be taken, or above 65535.
			"--cluster-port", strconv.Itoa(FreePort(t)),
		))
	}
	args := []string{"--cluster", "create"}
	for _, s := range nodes {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(n), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, lastLines(string(out)))
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range nodes {
		for {
			info, err := s.do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok within 20 s: %v %s", s.Addr, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, s := range nodes {
		for {
			info, err := s.do("INFO", "replication")
			switch {
			case err == nil && strings.Contains(info, "role:master"):
				c.Masters = append(c.Masters, s)
			case err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up"):
				c.Replicas = append(c.Replicas, s)
			default:
				if time.Now().After(deadline) {
					t.Fatalf("cluster node %s: replication not ready within 20 s: %v %s", s.Addr, err, info)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			break
		}
	}
	if len(c.Masters) != 3 || len(c.Replicas) != 3*n {
		t.Fatalf("cluster has %d masters and %d replicas, want 3 and %d", len(c.Masters), len(c.Replicas), 3*n)
	}
	if n > 0 {
		for _, m := range c.Masters {
			waitAcks(t, m, "", "", n, deadline)
		}
	}
	// Every master must see the others' slots, or a client could be sent round in MOVED.
	for _, s := range c.Masters {
		for {
			info, err := s.do("CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_slots_ok:16384") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(nodes))) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s does not know every slot and node: %v %s", s.Addr, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// Addrs returns the masters' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Masters))
	for i, s := range c.Masters {
		out[i] = s.Addr
	}
	return out
}

// Client returns a cluster client seeded with every master, closed at the end of the test.
func (c *Cluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

// MasterFor returns the master that holds key's slot.
func (c *Cluster) MasterFor(key string) *Server {
	c.t.Helper()
	slot, err := c.Masters[0].do("CLUSTER", "KEYSLOT", key)
	if err != nil {
		c.t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	nodes, err := c.Masters[0].do("CLUSTER", "NODES")
	if err != nil {
		c.t.Fatalf("CLUSTER NODES: %v", err)
	}
	n, _ := strconv.Atoi(slot)
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		for _, r := range f[8:] {
			lo, hi, found := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if found {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 == nil && err2 == nil && a <= n && n <= b {
				for _, s := range c.Masters {
					if s.Addr == addr {
						return s
					}
				}
			}
		}
	}
	c.t.Fatalf("no master holds slot %d of %q", n, key)
	return nil
}

// ReplicasOf returns the replicas of master m.
func (c *Cluster) ReplicasOf(m *Server) []*Server {
	c.t.Helper()
	var out []*Server
	for _, r := range c.Replicas {
		info, err := r.do("INFO", "replication")
		if err != nil {
			c.t.Fatalf("INFO replication on %s: %v", r.Addr, err)
		}
		if strings.Contains(info, "master_port:"+strconv.Itoa(m.Port)+"\r\n") {
			out = append(out, r)
		}
	}
	return out
}

// do runs one command on the server with a fresh connection and returns its reply as text.
func (s *Server) do(args ...any) (string, error) { return s.doAuth("", args...) }

// doAuth is do with a password for the default user.
func (s *Server) doAuth(password string, args ...any) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: password, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := c.Do(ctx, args...).Result()
	if err != nil {
		return "", err
	}
	return fmt.Sprint(v), nil
}
