package e2e

// Fault tests: no invalidation is lost when the gateways' connections are killed around a
// revoke, and a cache fill racing a revoke never brings the key back.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

// refusalWatch is what happened on one gateway after a revoke around a connection loss.
type refusalWatch struct {
	reconnected time.Time // first connection named after the gateway seen after t0
	caughtUp    time.Time // its listener seen blocked in XREAD again (the channel is healthy)
	refused     time.Time // first api_key_revoked
	lateOK      int       // 200s after the listener caught up: a lost invalidation
	staleOK     int       // 200s after the first refusal but before the listener caught up
	other       []string  // answers other than 200 and api_key_revoked
}

// watchRefusal polls every gateway for key from t0 (one goroutine each) while following
// CLIENT LIST, until each gateway refuses the key and its listener has been caught up for
// 200 ms, or 5 s pass.
func watchRefusal(t *testing.T, c *faultCluster, admin *redis.Client, key string, t0 time.Time) []refusalWatch {
	t.Helper()
	n := len(c.gateways)
	var (
		mu     sync.Mutex
		out    = make([]refusalWatch, n)
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		polled sync.WaitGroup
	)
	deadline := t0.Add(5 * time.Second)
	// CLIENT LIST follower. Every gateway connection was killed or refused after t0's fault,
	// so a connection bearing its name is a reconnection, and one blocked in XREAD is its
	// listener, caught up with the stream.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cl, err := clientList(context.Background(), admin)
			now := time.Now()
			if err == nil {
				mu.Lock()
				for i, g := range c.gateways {
					for _, m := range cl {
						if m["name"] != g.name {
							continue
						}
						if out[i].reconnected.IsZero() {
							out[i].reconnected = now
						}
						if m["cmd"] == "xread" && strings.Contains(m["flags"], "b") && out[i].caughtUp.IsZero() {
							out[i].caughtUp = now
						}
					}
				}
				mu.Unlock()
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	for i, g := range c.gateways {
		polled.Add(1)
		go func() {
			defer polled.Done()
			hc := faultClient(2)
			defer hc.CloseIdleConnections()
			for time.Now().Before(deadline) {
				sent := time.Now()
				a, err := try(hc, g.url+"/", key)
				now := time.Now()
				mu.Lock()
				w := &out[i]
				switch {
				case err != nil:
					w.other = append(w.other, err.Error())
				case a.status == 200 && !w.caughtUp.IsZero() && sent.After(w.caughtUp):
					w.lateOK++
				case a.status == 200 && !w.refused.IsZero():
					w.staleOK++
				case a.status == 200:
				case a.status == 401 && a.Error.Code == "api_key_revoked":
					if w.refused.IsZero() {
						w.refused = now
					}
				default:
					w.other = append(w.other, fmt.Sprintf("%d %s", a.status, a.Error.Code))
				}
				done := !w.refused.IsZero() && !w.caughtUp.IsZero() && now.Sub(w.caughtUp) > 200*time.Millisecond
				mu.Unlock()
				if done {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	polled.Wait()
	close(stop)
	wg.Wait()
	return out
}

// checkRefusal asserts the watch: each gateway refused within 1 s of reconnecting (or of t0,
// whichever is later), its listener caught up, and after that it never served the key.
func checkRefusal(t *testing.T, c *faultCluster, ws []refusalWatch, t0 time.Time) {
	t.Helper()
	for i, w := range ws {
		name := c.gateways[i].name
		if len(w.other) > 0 {
			t.Errorf("%s: unexpected answers: %v", name, w.other[:min(5, len(w.other))])
		}
		if w.refused.IsZero() {
			t.Errorf("%s: never refused the revoked key (5 s)", name)
			continue
		}
		if w.caughtUp.IsZero() {
			t.Errorf("%s: its invalidation listener was not seen catching up (5 s)", name)
		}
		from := t0
		if w.reconnected.After(from) {
			from = w.reconnected
		}
		if d := w.refused.Sub(from); d > time.Second {
			t.Errorf("%s: refused the revoked key %v after reconnecting: over the 1 s bound", name, d)
		}
		if w.lateOK > 0 {
			t.Errorf("%s: served the revoked key %d times after its listener caught up: a lost invalidation", name, w.lateOK)
		}
		if w.staleOK > 0 {
			t.Logf("%s: served the revoked key %d times from its stale cache between its first refusal and catching up", name, w.staleOK)
		}
		t.Logf("%s: reconnected +%v, refused +%v, listener caught up +%v (from t0: the fault, or the gateways let back in)",
			name, since(t0, w.reconnected), since(t0, w.refused), since(t0, w.caughtUp))
	}
}

func since(t0, t time.Time) time.Duration {
	if t.IsZero() {
		return -1
	}
	return t.Sub(t0).Round(100 * time.Microsecond)
}

// cachedAnswers checks, gateway by gateway, that once its channel is healthy the revoked key
// is refused from the cache and the control key served from it (no store lookup), and returns
// how many lookups the control key's first request cost on each (1 after a flush, 0 after a
// replay that dropped only the revoked key).
func cachedAnswers(t *testing.T, c *faultCluster, key, control string) []int64 {
	t.Helper()
	var firstControl []int64
	for _, g := range c.gateways {
		before := c.srv.CommandCalls("hmget")
		if a := get(t, g.url+"/", control); a.status != 200 {
			t.Fatalf("%s: the control key is refused: %d %s", g.name, a.status, a.body)
		}
		firstControl = append(firstControl, c.srv.CommandCalls("hmget")-before)
		for i := 0; ; i++ {
			before := c.srv.CommandCalls("hmget")
			a := get(t, g.url+"/", key)
			if a.status != 401 || a.Error.Code != "api_key_revoked" {
				t.Fatalf("%s: the revoked key got %d %s", g.name, a.status, a.body)
			}
			b := get(t, g.url+"/", control)
			if b.status != 200 {
				t.Fatalf("%s: the control key is refused: %d %s", g.name, b.status, b.body)
			}
			if c.srv.CommandCalls("hmget") == before {
				break // both answered from a trusted cache
			}
			if i == 100 {
				t.Fatalf("%s: the cache is still not trusted (every request asks the store)", g.name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return firstControl
}

// With the gateways' Redis connections killed just before or while a key is revoked, every
// gateway refuses the key within 1 s of reconnecting, by replaying the stream or, when the
// stream lost entries meanwhile, by flushing; and once its listener is back it never serves
// the key from its cache again.
func TestFaultNoLostInvalidation(t *testing.T) {
	c := startFaultCluster(t, faultConfig{gateways: 3})
	ctx := context.Background()

	// An ACL user for the admin side, so that the default user (the gateways') can be switched
	// off to keep the gateways out while the test revokes.
	if err := c.rdb.Do(ctx, "ACL", "SETUSER", "fault-admin", "on", ">fault-admin-pw", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(&redis.Options{Addr: c.srv.Addr, Username: "fault-admin", Password: "fault-admin-pw"})
	defer admin.Close()
	adminStore := redisstore.New(redis.NewClient(&redis.Options{Addr: c.srv.Addr, Username: "fault-admin", Password: "fault-admin-pw"}), redisstore.Options{})
	defer adminStore.Close()
	killGatewayConns := func() {
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
			t.Fatalf("CLIENT KILL: %v", err)
		}
	}
	revoke := func(s *redisstore.Store, k store.Key) {
		if _, _, err := s.RevokeKey(ctx, k.Instance, k.ID, time.Now(), nil); err != nil {
			t.Fatalf("revoke: %v", err)
		}
	}
	control, _ := c.mint(t)
	c.warm(t, control)

	t.Run("revoke then kill", func(t *testing.T) {
		for round := 0; round < 3; round++ {
			key, k := c.mint(t)
			c.warm(t, key)
			revoke(c.store, k)
			killGatewayConns()
			t0 := time.Now()
			checkRefusal(t, c, watchRefusal(t, c, admin, key, t0), t0)
			cachedAnswers(t, c, key, control)
		}
	})

	t.Run("kill then revoke", func(t *testing.T) {
		for round := 0; round < 3; round++ {
			key, k := c.mint(t)
			c.warm(t, key)
			killGatewayConns()
			// The revoke lands while the gateways reconnect (their listeners back off 50 ms).
			time.Sleep(time.Duration(round*20) * time.Millisecond)
			revoke(adminStore, k)
			t0 := time.Now()
			checkRefusal(t, c, watchRefusal(t, c, admin, key, t0), t0)
			cachedAnswers(t, c, key, control)
		}
	})

	// The gateways are kept out (default user off) while the key is revoked, then let back in.
	heldOut := func(t *testing.T, trim bool) []int64 {
		key, k := c.mint(t)
		c.warm(t, key)
		c.warm(t, control)
		if err := admin.Do(ctx, "ACL", "SETUSER", "default", "off").Err(); err != nil {
			t.Fatal(err)
		}
		reenabled := false
		defer func() {
			if !reenabled {
				admin.Do(ctx, "ACL", "SETUSER", "default", "on")
			}
		}()
		killGatewayConns()
		revoke(adminStore, k)
		if trim {
			// The stream loses every entry, the revoke's too: replay is impossible.
			if err := admin.Do(ctx, "XTRIM", "nora:inval", "MAXLEN", "0").Err(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond) // the gateways try and fail to reconnect meanwhile
		if n := namedConns(t, admin); n["gw0"]+n["gw1"]+n["gw2"] != 0 {
			t.Fatalf("gateways connected while the default user was off: %v", n)
		}
		if err := admin.Do(ctx, "ACL", "SETUSER", "default", "on").Err(); err != nil {
			t.Fatal(err)
		}
		reenabled = true
		t0 := time.Now()
		checkRefusal(t, c, watchRefusal(t, c, admin, key, t0), t0)
		return cachedAnswers(t, c, key, control)
	}
	t.Run("revoke while disconnected: replay", func(t *testing.T) {
		costs := heldOut(t, false)
		for i, n := range costs {
			if n != 0 {
				t.Errorf("%s: the control key cost %d lookups after the reconnection: the cache was flushed, not replayed", c.gateways[i].name, n)
			}
		}
	})
	t.Run("revoke while disconnected, stream trimmed: flush", func(t *testing.T) {
		costs := heldOut(t, true)
		for i, n := range costs {
			if n != 1 {
				t.Errorf("%s: the control key cost %d lookups after the reconnection, want 1 (the cache flushed)", c.gateways[i].name, n)
			}
		}
	})
}

// Many concurrent requests on a cold key, on 3 gateways, while it is revoked: once the revoke
// has returned and the 1 s bound has passed, not one request succeeds (a fill that raced the
// revocation never puts the key back).
func TestFaultFillRevokeRace(t *testing.T) {
	c := startFaultCluster(t, faultConfig{gateways: 3})
	const perGateway = 8
	for round, delay := range []time.Duration{0, time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		key, k := c.mint(t) // cold: no gateway has seen it
		type result struct {
			start time.Time
			ok    bool
			err   string
		}
		var (
			mu      sync.Mutex
			results []result
			revoked atomic.Int64 // unix nanoseconds when the revoke returned
			wg      sync.WaitGroup
			started = make(chan struct{})
		)
		for _, g := range c.gateways {
			hc := faultClient(perGateway)
			for w := 0; w < perGateway; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-started
					for {
						r := revoked.Load()
						if r != 0 && time.Since(time.Unix(0, r)) > 1300*time.Millisecond {
							return
						}
						start := time.Now()
						a, err := try(hc, g.url+"/", key)
						res := result{start: start, ok: err == nil && a.status == 200}
						switch {
						case err != nil:
							res.err = err.Error()
						case a.status != 200 && (a.status != 401 || a.Error.Code != "api_key_revoked"):
							res.err = fmt.Sprintf("%d %s", a.status, a.Error.Code)
						}
						mu.Lock()
						results = append(results, res)
						mu.Unlock()
					}
				}()
			}
		}
		close(started)
		time.Sleep(delay)
		if _, _, err := c.store.RevokeKey(context.Background(), k.Instance, k.ID, time.Now(), nil); err != nil {
			t.Fatal(err)
		}
		revokedAt := time.Now()
		revoked.Store(revokedAt.UnixNano())
		wg.Wait()

		var before, within, after, beforeOK, withinOK, afterOK, bad int
		lastOK := "none" // the last success sent after the revoke returned
		var lastOKAt time.Duration
		for _, r := range results {
			if d := r.start.Sub(revokedAt); r.ok && d >= 0 && d >= lastOKAt {
				lastOKAt, lastOK = d, "+"+d.Round(10*time.Microsecond).String()
			}
			if r.err != "" {
				bad++
				if bad <= 5 {
					t.Errorf("round %d: unexpected answer: %s", round, r.err)
				}
			}
			switch d := r.start.Sub(revokedAt); {
			case d < 0:
				before++
				if r.ok {
					beforeOK++
				}
			case d <= time.Second:
				within++
				if r.ok {
					withinOK++
				}
			default:
				after++
				if r.ok {
					afterOK++
				}
			}
		}
		if afterOK > 0 {
			t.Errorf("round %d: %d of %d requests started more than 1 s after the revoke returned succeeded", round, afterOK, after)
		}
		if after == 0 {
			t.Errorf("round %d: no request was sent after the 1 s bound", round)
		}
		t.Logf("round %d (revoke %v after the first requests): started before the revoke returned %d (%d succeeded), within 1 s %d (%d succeeded), after %d (%d succeeded); success sent after the revoke returned: last %s",
			round, delay, before, beforeOK, within, withinOK, after, afterOK, lastOK)
		for _, g := range c.gateways {
			if a := get(t, g.url+"/", key); a.status != 401 || a.Error.Code != "api_key_revoked" {
				t.Errorf("%s: after the race: %d %s", g.name, a.status, a.body)
			}
		}
	}
}
