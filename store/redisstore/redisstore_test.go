package redisstore

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// open returns a Store on srv, closed at the end of the test.
func open(t *testing.T, srv *redistest.Server, opts Options) *Store {
	t.Helper()
	s := New(redis.NewClient(&redis.Options{Addr: srv.Addr}), opts)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, fp func(step string) error) store.Store {
		return open(t, redistest.Start(t), Options{FailPoint: fp})
	})
}

// gateway is one Store with a subscribed recording watcher, as a gateway process holds.
type gateway struct {
	s   *Store
	rec *storetest.Recorder
}

func newGateway(t *testing.T, srv *redistest.Server, prefix string) gateway {
	t.Helper()
	g := gateway{s: open(t, srv, Options{KeyPrefix: prefix}), rec: &storetest.Recorder{}}
	t.Cleanup(g.s.Subscribe(g.rec))
	testutil.WaitFor(t, 5*time.Second, "the store to be healthy", g.rec.Healthy)
	return g
}

// makeKeys creates an instance and n keys through s.
func makeKeys(t *testing.T, s store.Store, n int) []store.Key {
	t.Helper()
	ctx := context.Background()
	in := store.Instance{ID: "acme", Name: "Acme", Environment: apikey.Production}
	if err := s.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	var out []store.Key
	for range n {
		k, _ := storetest.NewKey(t, in.ID, in.Environment, "k", time.Now())
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

// killClients closes every normal client connection of srv except the admin client's own,
// running the extra commands in the same transaction (so that no client reconnects before
// they took effect).
func killClients(t *testing.T, admin *redis.Client, extra ...[]any) {
	t.Helper()
	ctx := context.Background()
	cmds, err := admin.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
		for _, args := range extra {
			p.Do(ctx, args...)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("killing client connections: %v", err)
	}
	if n, _ := cmds[0].(*redis.Cmd).Int(); n == 0 {
		t.Fatalf("CLIENT KILL killed no connection")
	}
}

// sawFalseThenTrue reports whether the health history turned false after index from, and
// then true again.
func sawFalseThenTrue(h []bool, from int) bool {
	down := false
	for _, ok := range h[from:] {
		if !ok {
			down = true
		} else if down {
			return true
		}
	}
	return false
}

func TestRevocationReachesOtherGateway(t *testing.T) {
	srv := redistest.Start(t)
	a := newGateway(t, srv, "")
	b := newGateway(t, srv, "")
	other := newGateway(t, srv, "other:")
	ctx := context.Background()
	keys := makeKeys(t, a.s, 2)

	// Shared state: B sees A's key.
	if l, err := b.s.LookupHash(ctx, keys[0].Hash); err != nil || l.ID != keys[0].ID {
		t.Fatalf("B's LookupHash of A's key = %+v, %v", l, err)
	}
	start := time.Now()
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if !a.rec.Invalidated(keys[0].Hash) {
		t.Errorf("A's own watcher not invalidated before RevokeKey returned")
	}
	testutil.WaitEvery(t, time.Second, 2*time.Millisecond, "the revocation through A to reach B", func() bool { return b.rec.Invalidated(keys[0].Hash) })
	t.Logf("revocation reached B in %v", time.Since(start))
	if l, err := b.s.LookupHash(ctx, keys[0].Hash); err != nil || l.RevokedAt.IsZero() {
		t.Errorf("B's LookupHash after the revoke = %+v, %v", l, err)
	}
	// A shorter expiry propagates the same way.
	if _, err := a.s.ExpireKey(ctx, "acme", keys[1].ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the expiry through A to reach B", func() bool { return b.rec.Invalidated(keys[1].Hash) })

	// key_prefix isolation: a deployment with another prefix hears nothing and sees nothing.
	time.Sleep(300 * time.Millisecond)
	if got := other.rec.Invalidations(); len(got) != 0 || other.rec.Flushes() != 0 {
		t.Errorf("store with another key_prefix received %d invalidations and %d flushes", len(got), other.rec.Flushes())
	}
	if ins, err := other.s.Instances(ctx); err != nil || len(ins) != 0 {
		t.Errorf("store with another key_prefix sees instances %v, %v", ins, err)
	}
	if _, err := other.s.LookupHash(ctx, keys[0].Hash); err != store.ErrKeyNotFound {
		t.Errorf("store with another key_prefix finds the key: %v", err)
	}
	// And the other way round.
	okeys := makeKeys(t, other.s, 1)
	if _, _, err := other.s.RevokeKey(ctx, "acme", okeys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if a.rec.Invalidated(okeys[0].Hash) || b.rec.Invalidated(okeys[0].Hash) {
		t.Errorf("revocation under another key_prefix reached the nora: stores")
	}
}

func TestReplayAfterDroppedConnection(t *testing.T) {
	srv := redistest.Start(t)
	a := newGateway(t, srv, "")
	b := newGateway(t, srv, "")
	ctx := context.Background()
	keys := makeKeys(t, a.s, 3)
	// Establish B's cursor on a real stream entry.
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the first revocation to reach B", func() bool { return b.rec.Invalidated(keys[0].Hash) })
	mark := len(b.rec.HealthHistory())
	flushes := b.rec.Flushes()

	killClients(t, srv.Client())
	// B is reconnecting (it backs off after the error); revoke meanwhile.
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[1].ID, time.Now(), nil); err != nil {
		t.Fatalf("RevokeKey through A after the kill: %v", err)
	}
	testutil.WaitFor(t, 2*time.Second, "B to replay the missed invalidation or flush", func() bool {
		return b.rec.Invalidated(keys[1].Hash) || b.rec.Flushes() > flushes
	})
	if !b.rec.Invalidated(keys[1].Hash) {
		t.Errorf("B flushed instead of replaying, although the stream still held the entry")
	}
	testutil.WaitFor(t, 5*time.Second, "B's health to turn false, then true, after the dropped connection", func() bool { return sawFalseThenTrue(b.rec.HealthHistory(), mark) })
	t.Logf("B's health history: %v (from %d)", b.rec.HealthHistory(), mark)

	// After that, invalidations flow as before.
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[2].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the revocation after the reconnect to reach B", func() bool { return b.rec.Invalidated(keys[2].Hash) })
}

func TestFlushWhenStreamLost(t *testing.T) {
	srv := redistest.Start(t)
	a := newGateway(t, srv, "")
	b := newGateway(t, srv, "")
	ctx := context.Background()
	keys := makeKeys(t, a.s, 3)
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the first revocation to reach B", func() bool { return b.rec.Invalidated(keys[0].Hash) })
	flushes := b.rec.Flushes()

	// The stream is lost while B is disconnected, then recreated by the next publish.
	killClients(t, srv.Client(), []any{"DEL", "nora:inval"})
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[1].ID, time.Now(), nil); err != nil {
		t.Fatalf("RevokeKey through A after the kill: %v", err)
	}
	testutil.WaitFor(t, 2*time.Second, "B to flush or get the invalidation after the stream was lost", func() bool {
		return b.rec.Flushes() > flushes || b.rec.Invalidated(keys[1].Hash)
	})
	t.Logf("B: %d flushes, invalidated: %v", b.rec.Flushes()-flushes, b.rec.Invalidated(keys[1].Hash))
	testutil.WaitFor(t, 5*time.Second, "B to be healthy again", b.rec.Healthy)
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[2].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the revocation after the stream was recreated to reach B", func() bool { return b.rec.Invalidated(keys[2].Hash) })
}

// A stream recreated with ids lower than B's cursor (Redis lost it and someone wrote again):
// whatever B missed cannot be told, so it must flush, and then follow the new stream.
func TestFlushWhenStreamIDsGoBack(t *testing.T) {
	srv := redistest.Start(t)
	a := newGateway(t, srv, "")
	b := newGateway(t, srv, "")
	ctx := context.Background()
	keys := makeKeys(t, a.s, 2)
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the first revocation to reach B", func() bool { return b.rec.Invalidated(keys[0].Hash) })
	flushes := b.rec.Flushes()
	killClients(t, srv.Client(), []any{"DEL", "nora:inval"}, []any{"XADD", "nora:inval", "1-1", "h", "junk"})
	testutil.WaitFor(t, 2*time.Second, "B to flush after the stream was recreated with lower ids", func() bool { return b.rec.Flushes() > flushes })
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[1].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the revocation after the stream was recreated to reach B", func() bool { return b.rec.Invalidated(keys[1].Hash) })
}

// A stream trimmed past B's cursor while B was away: B must flush.
func TestFlushWhenStreamTrimmedPastCursor(t *testing.T) {
	srv := redistest.Start(t)
	a := newGateway(t, srv, "")
	b := newGateway(t, srv, "")
	ctx := context.Background()
	keys := makeKeys(t, a.s, 2)
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the first revocation to reach B", func() bool { return b.rec.Invalidated(keys[0].Hash) })
	flushes := b.rec.Flushes()
	// While B is away, an entry it never saw is published and trimmed away: B cannot
	// replay it, so it must flush.
	killClients(t, srv.Client(),
		[]any{"XADD", "nora:inval", "*", "h", "ab" + strings.Repeat("0", 62)},
		[]any{"XADD", "nora:inval", "*", "h", "cd" + strings.Repeat("0", 62)},
		[]any{"XTRIM", "nora:inval", "MAXLEN", "1"})
	testutil.WaitFor(t, 2*time.Second, "B to flush after the stream was trimmed past its cursor", func() bool { return b.rec.Flushes() > flushes })
	if _, _, err := a.s.RevokeKey(ctx, "acme", keys[1].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the revocation after the trim to reach B", func() bool { return b.rec.Invalidated(keys[1].Hash) })
}

func TestCompareIDs(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"0-0", "0-0", 0},
		{"1-0", "1-0", 0},
		{"1-1", "1-0", 1},
		{"1-0", "1-1", -1},
		{"2-0", "1-99", 1},
		{"10-0", "9-0", 1}, // numeric, not lexical
		{"9-10", "9-9", 1}, // numeric sequence too
		{"0-0", "1-0", -1},
		{"1526919030474-55", "1526919030474-56", -1},
		{"1526919030475-0", "1526919030474-999", 1},
		{"18446744073709551615-18446744073709551615", "18446744073709551615-18446744073709551614", 1},
		{"18446744073709551615-0", "0-0", 1},
		{"5", "5-0", 0}, // an id without a sequence is sequence 0
	}
	for _, tc := range tests {
		if got := compareIDs(tc.a, tc.b); got != tc.want {
			t.Errorf("compareIDs(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := compareIDs(tc.b, tc.a); got != -tc.want {
			t.Errorf("compareIDs(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
	ids := []string{"10-0", "2-5", "2-10", "0-1", "1526919030474-0", "3-0"}
	slices.SortFunc(ids, compareIDs)
	if want := []string{"0-1", "2-5", "2-10", "3-0", "10-0", "1526919030474-0"}; !slices.Equal(ids, want) {
		t.Errorf("sorted = %v, want %v", ids, want)
	}
}

// The listener reports how long after its publication each invalidation arrived.
func TestObserveLag(t *testing.T) {
	srv := redistest.Start(t)
	lags := make(chan time.Duration, 16)
	a := newGateway(t, srv, "")
	b := open(t, srv, Options{ObserveLag: func(d time.Duration) { lags <- d }})
	testutil.WaitFor(t, 5*time.Second, "the listener to become healthy", b.Healthy)
	keys := makeKeys(t, a.s, 1)
	if _, _, err := a.s.RevokeKey(context.Background(), "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-lags:
		if d < -time.Second || d > time.Second { // the Redis server's clock is this machine's
			t.Fatalf("lag %v", d)
		}
		t.Logf("lag %v", d)
	case <-time.After(2 * time.Second):
		t.Fatal("no lag observed")
	}
}
