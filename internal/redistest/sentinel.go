package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinel of StartSentinel monitors its master under.
const MasterName = "mymaster"

// SentinelOptions tune StartSentinelWith.
type SentinelOptions struct {
	// Password is the data nodes' requirepass (the replica and the sentinel use it too).
	Password string
	// SentinelPassword is the sentinel's own requirepass.
	SentinelPassword string
}

// Sentinel is a running Sentinel setup: a master, one replica and one sentinel monitoring
// them as MasterName (quorum 1, down-after-milliseconds 1000, failover-timeout 5000). Each
// process is a Server on a free port in its own temporary directory, stopped at the end of
// the test.
type Sentinel struct {
	// Master and Replica are the data nodes in their current roles (Failover swaps them).
	Master, Replica *Server
	// Sentinel is the sentinel process; Addr is its address.
	Sentinel *Server
	Addr     string
	opts     SentinelOptions
	t        testing.TB
}

// StartSentinel starts a master, a replica of it and a sentinel, and returns once the
// sentinel knows both and the replica's link is up (so that a failover can pick it).
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	return StartSentinelWith(t, SentinelOptions{})
}

// StartSentinelWith is StartSentinel with passwords.
func StartSentinelWith(t testing.TB, opts SentinelOptions) *Sentinel {
	t.Helper()
	Require(t)
	// No diskless-sync delay (5 s by default): a replica is in sync at once.
	args := []string{"--repl-diskless-sync-delay", "0"}
	if opts.Password != "" {
		args = append(args, "--requirepass", opts.Password, "--masterauth", opts.Password)
	}
	sn := &Sentinel{opts: opts, t: t}
	sn.Master = Start(t, args...)
	sn.Replica = Start(t, append(args, "--replicaof", "127.0.0.1", strconv.Itoa(sn.Master.Port))...)

	// Sentinel rewrites its config file, so it lives in the sentinel's own directory.
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	var b strings.Builder
	fmt.Fprintf(&b, "sentinel resolve-hostnames no\n")
	fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d 1\n", MasterName, sn.Master.Port)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s 1000\n", MasterName)
	fmt.Fprintf(&b, "sentinel failover-timeout %s 5000\n", MasterName)
	if opts.Password != "" {
		fmt.Fprintf(&b, "sentinel auth-pass %s %s\n", MasterName, opts.Password)
	}
	if opts.SentinelPassword != "" {
		fmt.Fprintf(&b, "requirepass %s\n", opts.SentinelPassword)
	}
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sn.Sentinel = startServer(t, dir, []string{conf, "--sentinel"}, nil)
	sn.Addr = sn.Sentinel.Addr

	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := sn.Replica.doAuth(opts.Password, "INFO", "replication")
		if err == nil && strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not linked to master %s: %v %s", sn.Replica.Addr, sn.Master.Addr, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sn.waitReplicaLink(deadline)
	for {
		ok, why := sn.sentinelReady()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel not ready within 20 s: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sn
}

// sentinelReady reports whether the sentinel sees the master up and the replica connected.
func (sn *Sentinel) sentinelReady() (bool, string) {
	c := sn.sentinelClient()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := c.Master(ctx, MasterName).Result()
	if err != nil {
		return false, "SENTINEL MASTER: " + err.Error()
	}
	if m["flags"] != "master" {
		return false, "master flags " + m["flags"]
	}
	reps, err := c.Replicas(ctx, MasterName).Result()
	if err != nil {
		return false, "SENTINEL REPLICAS: " + err.Error()
	}
	for _, r := range reps {
		if r["port"] == strconv.Itoa(sn.Replica.Port) && r["flags"] == "slave" && r["master-link-status"] == "ok" {
			return true, ""
		}
	}
	return false, fmt.Sprintf("replicas %v", reps)
}

func (sn *Sentinel) sentinelClient() *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, Password: sn.opts.SentinelPassword, MaxRetries: -1})
}

// waitReplicaLink waits until the replica's link to the master is up and the master gets its
// acknowledgements (see waitAcks).
func (sn *Sentinel) waitReplicaLink(deadline time.Time) {
	sn.t.Helper()
	waitAcks(sn.t, sn.Master, sn.opts.Password, "redistest:ready", 1, deadline)
}

// waitAcks waits until n replicas acknowledge a write on master (with WAIT). A replica is
// "online" from the end of its sync, but after a diskless sync the master streams writes to
// it only from its first acknowledgement, up to a second later: until then WAIT cannot count
// it. The write is SET and DEL of key, or with key "" (a new, empty Cluster node) FLUSHALL.
func waitAcks(t testing.TB, master *Server, password, key string, n int, deadline time.Time) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: master.Addr, Password: password, MaxRetries: -1})
	defer c.Close()
	ctx := context.Background()
	for {
		err := func() error {
			conn := c.Conn()
			defer conn.Close()
			var err error
			if key == "" {
				err = conn.FlushAll(ctx).Err()
			} else if err = conn.Set(ctx, key, 1, 0).Err(); err == nil {
				err = conn.Del(ctx, key).Err()
			}
			if err != nil {
				return err
			}
			got, err := conn.Wait(ctx, n, 500*time.Millisecond).Result()
			if err == nil && got < int64(n) {
				err = fmt.Errorf("%d of %d replicas acknowledged", got, n)
			}
			return err
		}()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas of %s do not acknowledge writes: %v", master.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// MasterAddr asks the sentinel for the current master's address.
func (sn *Sentinel) MasterAddr() (string, error) {
	c := sn.sentinelClient()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	hp, err := c.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// Failover runs SENTINEL FAILOVER and returns once the sentinel reports the replica as the
// master and the new master says so. Master and Replica are swapped. The old master is left
// as the sentinel leaves it: still up, and still a master until the sentinel's next INFO poll
// (up to 10 s) turns it into a replica of the new one; clients must follow the sentinel, not
// stay on it. WaitReplicaLink waits for that.
func (sn *Sentinel) Failover() {
	sn.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	c := sn.sentinelClient()
	defer c.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Failover(ctx, MasterName).Err()
		cancel()
		if err == nil {
			break
		}
		// NOGOODSLAVE until the sentinel has fresh news of the replica; INPROG meanwhile.
		if time.Now().After(deadline) {
			sn.t.Fatalf("SENTINEL FAILOVER: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		addr, err := sn.MasterAddr()
		if err == nil && addr == sn.Replica.Addr {
			break
		}
		if time.Now().After(deadline) {
			sn.t.Fatalf("the sentinel still reports master %s (%v), want %s", addr, err, sn.Replica.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sn.Master, sn.Replica = sn.Replica, sn.Master
	for {
		info, err := sn.Master.doAuth(sn.opts.Password, "INFO", "replication")
		if err == nil && strings.Contains(info, "role:master") {
			break
		}
		if time.Now().After(deadline) {
			sn.t.Fatalf("new master %s: %v %s", sn.Master.Addr, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitReplicaLink waits until the replica acknowledges the master's writes (after a
// Failover: until the sentinel has converted the old master and it has synced).
func (sn *Sentinel) WaitReplicaLink(timeout time.Duration) {
	sn.t.Helper()
	sn.waitReplicaLink(time.Now().Add(timeout))
}
