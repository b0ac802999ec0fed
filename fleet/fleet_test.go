package fleet_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
	"github.com/keygate/keygate/store/storetest"
)

// gateway is one process' store, watcher and fleet member.
type gateway struct {
	s   *redisstore.Store
	rec *storetest.Recorder
	m   *fleet.Member
}

func join(t *testing.T, rdb redis.UniversalClient, host string, opts fleet.Options) gateway {
	t.Helper()
	s := redisstore.New(rdb, redisstore.Options{})
	rec := &storetest.Recorder{}
	unsub := s.Subscribe(rec)
	testutil.WaitFor(t, 5*time.Second, "the store to be healthy", rec.Healthy)
	opts.Hostname = host
	m, err := fleet.Join(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close() // again after a test's own Close: harmless
		unsub()
		s.Close()
	})
	return gateway{s: s, rec: rec, m: m}
}

func newKey(t *testing.T, s store.Store) store.Key {
	t.Helper()
	ctx := context.Background()
	in := store.Instance{ID: "acme", Name: "Acme", Environment: apikey.Production}
	if err := s.CreateInstance(ctx, in); err != nil && err != store.ErrInstanceExists {
		t.Fatal(err)
	}
	_, k, err := store.Mint(apikey.NewHasher(nil), in, "k", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	return k
}

func live(t *testing.T, m *fleet.Member) []fleet.Gateway {
	t.Helper()
	gws, err := m.Gateways(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return gws
}

func TestRedisFleetListsJoinsAndLeaves(t *testing.T) {
	srv := redistest.Start(t)
	client := func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) }
	a := join(t, client(), "host-a", fleet.Options{})
	b := join(t, client(), "host-b", fleet.Options{})
	c := join(t, client(), "host-c", fleet.Options{})
	testutil.WaitFor(t, 3*time.Second, "three gateways listed", func() bool { return len(live(t, a.m)) == 3 })
	hosts := map[string]string{}
	for _, g := range live(t, b.m) {
		hosts[g.ID] = g.Hostname
		if g.StartedAt.IsZero() || g.LastSeenAt.Before(g.StartedAt.Add(-time.Second)) || time.Since(g.LastSeenAt) > 3*time.Second {
			t.Errorf("gateway %s: started %v, last seen %v", g.ID, g.StartedAt, g.LastSeenAt)
		}
	}
	if hosts[a.m.ID()] != "host-a" || hosts[b.m.ID()] != "host-b" || hosts[c.m.ID()] != "host-c" {
		t.Errorf("gateways: %v", hosts)
	}
	if err := c.m.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(live(t, a.m)); n != 2 {
		t.Errorf("after Close: %d gateways, want 2 (Close removes at once)", n)
	}
}

func TestRedisFleetSilentGatewayIsGone(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	// A timeout long enough that a loaded machine does not make the ghost vanish before the
	// first look, short enough for a test.
	a := join(t, rdb, "a", fleet.Options{Timeout: time.Second, Interval: 50 * time.Millisecond})
	testutil.WaitFor(t, 2*time.Second, "the live gateway to be listed", func() bool { return len(live(t, a.m)) == 1 })
	// A gateway that heartbeated once and died (no Leave).
	ghost := fleet.Gateway{ID: "gw_ghost", Hostname: "dead", StartedAt: time.Now()}
	if err := a.s.Heartbeat(context.Background(), ghost); err != nil {
		t.Fatal(err)
	}
	if n := len(live(t, a.m)); n != 2 {
		t.Fatalf("%d gateways, want 2", n)
	}
	testutil.WaitFor(t, 4*time.Second, "the silent gateway to be gone", func() bool { return len(live(t, a.m)) == 1 })
	if g := live(t, a.m); g[0].ID != a.m.ID() {
		t.Errorf("left: %v", g)
	}
}

func TestRedisConfirm(t *testing.T) {
	srv := redistest.Start(t)
	client := func() redis.UniversalClient { return redis.NewClient(&redis.Options{Addr: srv.Addr}) }
	a := join(t, client(), "a", fleet.Options{})
	b := join(t, client(), "b", fleet.Options{})
	c := join(t, client(), "c", fleet.Options{})
	testutil.WaitFor(t, 3*time.Second, "three gateways listed", func() bool { return len(live(t, a.m)) == 3 })
	ctx := context.Background()

	k := newKey(t, a.s)
	if _, _, err := a.s.RevokeKey(ctx, "acme", k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	p, err := a.m.Confirm(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.Gateways != 3 || p.Confirmed != 3 || len(p.Missing) != 0 || p.Elapsed > 500*time.Millisecond {
		t.Errorf("all live: %+v", p)
	}
	// Each confirmed gateway has applied the invalidation.
	for _, g := range []gateway{b, c} {
		if !g.rec.Invalidated(k.Hash) {
			t.Errorf("a gateway confirmed without having applied the invalidation")
		}
	}

	// A registered gateway that acknowledges nothing (frozen): reported missing after the wait.
	frozen := fleet.Gateway{ID: "gw_frozen", Hostname: "frozen", StartedAt: time.Now()}
	if err := a.s.Heartbeat(ctx, frozen); err != nil {
		t.Fatal(err)
	}
	k2 := newKey(t, a.s)
	if _, err := a.s.ExpireKey(ctx, "acme", k2.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p, err = a.m.Confirm(ctx, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 400*time.Millisecond {
		t.Errorf("Confirm with a frozen gateway took %v, want the wait (200ms)", d)
	}
	if p.Gateways != 4 || p.Confirmed != 3 || len(p.Missing) != 1 || p.Missing[0].ID != "gw_frozen" {
		t.Errorf("one frozen: %+v", p)
	}
	// It catches up: its acknowledgement covers the write.
	if _, err := a.s.Client().HSet(ctx, "nora:{fleet}:acks", "gw_frozen", string(a.s.Published())).Result(); err != nil {
		t.Fatal(err)
	}
	if p, _ = a.m.Confirm(ctx, time.Second); p.Confirmed != 4 {
		t.Errorf("caught up: %+v", p)
	}
}

func TestRedisAckIsPerBatchAndAfterDelivery(t *testing.T) {
	srv := redistest.Start(t)
	a := join(t, redis.NewClient(&redis.Options{Addr: srv.Addr}), "a", fleet.Options{})
	b := join(t, redis.NewClient(&redis.Options{Addr: srv.Addr}), "b", fleet.Options{})
	ctx := context.Background()
	k := newKey(t, a.s)
	if _, err := a.s.UpdateKey(ctx, "acme", k.ID, store.KeyUpdate{Scopes: &[]string{"x:read"}}, nil); err != nil {
		t.Fatal(err)
	}
	pos := a.s.Published()
	if pos == "" {
		t.Fatal("no position after a write")
	}
	testutil.WaitFor(t, 2*time.Second, "b to acknowledge", func() bool {
		ok, err := a.s.Acked(ctx, []string{b.m.ID()}, pos)
		return err == nil && ok[0]
	})
	if !b.rec.Invalidated(k.Hash) {
		t.Error("b acknowledged before delivering")
	}
}

func TestFileStoreConfirmsAtOnce(t *testing.T) {
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := fleet.Join(s, fleet.Options{Hostname: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	testutil.WaitFor(t, 2*time.Second, "the gateway listed", func() bool { return len(live(t, m)) == 1 })
	k := newKey(t, s)
	if _, _, err := s.RevokeKey(context.Background(), "acme", k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	p, err := m.Confirm(context.Background(), time.Second)
	if err != nil || p.Gateways != 1 || p.Confirmed != 1 || p.Elapsed > 50*time.Millisecond {
		t.Errorf("file store: %+v, %v", p, err)
	}
	m.Close()
	if n := len(live(t, m)); n != 0 {
		t.Errorf("after Close: %d", n)
	}
}

// On Cluster the fleet's two hashes share a slot (the {fleet} tag, or the prefix's own), so
// the listing script, which touches both, works whatever the prefix.
func TestClusterFleet(t *testing.T) {
	cl := redistest.StartCluster(t)
	for _, prefix := range []string{"nora:", "{nora}:"} {
		t.Run(prefix, func(t *testing.T) {
			open := func(host string) gateway {
				s := redisstore.New(cl.Client(), redisstore.Options{KeyPrefix: prefix})
				rec := &storetest.Recorder{}
				unsub := s.Subscribe(rec)
				testutil.WaitFor(t, 5*time.Second, "the store to be healthy", rec.Healthy)
				m, err := fleet.Join(s, fleet.Options{Hostname: host})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close(); unsub(); s.Close() })
				return gateway{s: s, rec: rec, m: m}
			}
			a, b := open("a"), open("b")
			testutil.WaitFor(t, 3*time.Second, "two gateways listed", func() bool { return len(live(t, a.m)) == 2 })
			k := newKey(t, a.s)
			if _, _, err := a.s.RevokeKey(context.Background(), "acme", k.ID, time.Now(), nil); err != nil {
				t.Fatal(err)
			}
			p, err := a.m.Confirm(context.Background(), time.Second)
			if err != nil || p.Gateways != 2 || p.Confirmed != 2 {
				t.Errorf("cluster: %+v, %v", p, err)
			}
			if !b.rec.Invalidated(k.Hash) {
				t.Error("b confirmed without having applied the invalidation")
			}
		})
	}
}
