package verify

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
)

// The tests run against real stores (bbolt files in a temporary directory, throwaway
// redis-server processes). The only thing between the Verifier and the store is testStore,
// which counts calls and can fail, hold or slow LookupHash; everything else, including
// Subscribe and so the invalidations, goes to the real store.

var errUnreachable = errors.New("test: store unreachable")

// gate holds one LookupHash (or TouchKeys) call: reached is closed when the call arrives at
// the gate, and the call goes on when release is closed.
type gate struct {
	reached chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{reached: make(chan struct{}), release: make(chan struct{})} }

// wait waits for a call to reach the gate.
func (g *gate) wait(t testing.TB) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("no store call reached the gate")
	}
}

// testStore is a real store.Store with counters and fault injection around LookupHash and
// TouchKeys. All other methods (Subscribe included) are the real store's.
type testStore struct {
	store.Store

	lookups atomic.Int64
	// touches counts the keys' uses passed to TouchKeys (the last_used_at writes),
	// touchCalls the calls, and maxBatch is the most uses one call carried.
	touches    atomic.Int64
	touchCalls atomic.Int64
	maxBatch   atomic.Int64

	fail      atomic.Bool          // LookupHash fails without asking the store
	holdNext  atomic.Pointer[gate] // the next LookupHash reads the store, then waits at the gate
	maxDelay  atomic.Int64         // LookupHash sleeps up to this long after reading the store
	touchGate atomic.Pointer[gate] // every TouchKeys waits at this gate
}

func (s *testStore) LookupHash(ctx context.Context, h apikey.Hash) (store.Lookup, error) {
	s.lookups.Add(1)
	if s.fail.Load() {
		return store.Lookup{}, errUnreachable
	}
	// Read first, then hold or delay: the answer is what the store said when the lookup
	// started, delivered late (the worst case for a race with a revocation).
	l, err := s.Store.LookupHash(ctx, h)
	if g := s.holdNext.Swap(nil); g != nil {
		close(g.reached)
		select {
		case <-g.release:
		case <-ctx.Done():
			return store.Lookup{}, ctx.Err()
		}
	}
	if d := s.maxDelay.Load(); d > 0 {
		time.Sleep(time.Duration(rand.Int64N(d)))
	}
	return l, err
}

func (s *testStore) TouchKeys(ctx context.Context, ts []store.Touch) error {
	s.touchCalls.Add(1)
	s.touches.Add(int64(len(ts)))
	for n := int64(len(ts)); ; {
		m := s.maxBatch.Load()
		if n <= m || s.maxBatch.CompareAndSwap(m, n) {
			break
		}
	}
	if g := s.touchGate.Load(); g != nil {
		select {
		case <-g.reached:
		default:
			close(g.reached)
		}
		<-g.release
	}
	return s.Store.TouchKeys(ctx, ts)
}

// clock is a controllable Config.Now.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// base is the tests' start time, on a millisecond (stores keep milliseconds).
var base = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

const (
	sandboxInstance    = "acme-sandbox"
	productionInstance = "acme-prod"
)

// fixture is a Verifier on a testStore on a real store with two instances.
type fixture struct {
	t      testing.TB
	real   store.Store
	st     *testStore
	v      *Verifier
	clk    *clock
	hasher apikey.Hasher
}

func openFileStore(t testing.TB) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openRedisStore(t testing.TB, srv *redistest.Server) *redisstore.Store {
	t.Helper()
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	testutil.WaitFor(t, 10*time.Second, "the redis store's invalidation listener to be healthy", s.Healthy)
	return s
}

func createInstances(t testing.TB, s store.Store) {
	t.Helper()
	ctx := context.Background()
	for _, in := range []store.Instance{
		{ID: sandboxInstance, Name: "Acme (sandbox)", Environment: apikey.Sandbox},
		{ID: productionInstance, Name: "Acme (production)", Environment: apikey.Production},
	} {
		if err := s.CreateInstance(ctx, in); err != nil && !errors.Is(err, store.ErrInstanceExists) {
			t.Fatal(err)
		}
	}
}

// newFixture opens a Verifier on s (a fresh file store when nil). cfg.Now defaults to the
// fixture's clock, cfg.LookupTimeout to 10s (held lookups must not time out), cfg.Size to
// 10,000.
func newFixture(t testing.TB, s store.Store, cfg Config) *fixture {
	t.Helper()
	if s == nil {
		s = openFileStore(t)
	}
	createInstances(t, s)
	f := &fixture{t: t, real: s, st: &testStore{Store: s}, clk: newClock(base), hasher: cfg.Hasher}
	if cfg.Now == nil {
		cfg.Now = f.clk.Now
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = 10 * time.Second
	}
	if cfg.Size == 0 {
		cfg.Size = 10_000 // the default (1,000,000) costs ~0.3s of sketch allocation per verifier
	}
	v, err := New(f.st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	f.v = v
	return f
}

// createKey stores a new key of env (in the instance of that environment) and returns its
// secret and record.
func (f *fixture) createKey(env apikey.Environment, expires time.Time) (string, store.Key) {
	f.t.Helper()
	return createKeyIn(f.t, f.real, f.hasher, env, expires)
}

func createKeyIn(t testing.TB, s store.Store, hasher apikey.Hasher, env apikey.Environment, expires time.Time) (string, store.Key) {
	t.Helper()
	secret, err := apikey.Generate(env)
	if err != nil {
		t.Fatal(err)
	}
	id, err := apikey.NewID("key_", 16)
	if err != nil {
		t.Fatal(err)
	}
	inst := sandboxInstance
	if env == apikey.Production {
		inst = productionInstance
	}
	k := store.Key{ID: id, Instance: inst, Environment: env, Name: "test key",
		Prefix: apikey.DisplayPrefix(secret), Hash: hasher.Sum(secret),
		CreatedAt: base, ExpiresAt: expires}
	if err := s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

func (f *fixture) revoke(k store.Key) {
	f.t.Helper()
	if _, _, err := f.real.RevokeKey(context.Background(), k.Instance, k.ID, f.clk.Now(), nil); err != nil {
		f.t.Fatal(err)
	}
}

// waitCache lets the cache apply its pending bookkeeping (otter's sets are visible at once; its
// eviction policy catches up here): after it, a filled key is a hit.
func (f *fixture) waitCache() { f.v.cache.CleanUp() }

// warm verifies a key once (a store call), waits for the fill and checks that the next
// Verify is a hit.
//
// On a Redis store, this process's listener also hears its own earlier writes back from the
// stream, a moment later: such an invalidation arriving during the warming lookup rightly
// keeps that lookup from filling the cache. warm then tries again (a few times at most).
func (f *fixture) warm(secret string) {
	f.t.Helper()
	var n, got int64
	for range 5 {
		if r := f.v.Verify(secret, apikey.EnvUnknown); r.Code != OK {
			f.t.Fatalf("warming: got %v, want ok", r.Code)
		}
		f.waitCache()
		n = f.st.lookups.Load()
		if r := f.v.Verify(secret, apikey.EnvUnknown); r.Code != OK {
			f.t.Fatalf("warm key: got %v, want ok", r.Code)
		}
		if got = f.st.lookups.Load(); got == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.t.Fatalf("warm key made a store call (%d → %d): not cached", n, got)
}

func (f *fixture) expect(secret string, want apikey.Environment, code Code) Result {
	f.t.Helper()
	r := f.v.Verify(secret, want)
	if r.Code != code {
		f.t.Fatalf("Verify(%s…, %v) = %v, want %v", safePrefix(secret), want, r.Code, code)
	}
	return r
}

func (f *fixture) expectLookups(want int64) {
	f.t.Helper()
	if got := f.st.lookups.Load(); got != want {
		f.t.Fatalf("store lookups = %d, want %d", got, want)
	}
}

func safePrefix(s string) string {
	if len(s) > apikey.DisplayPrefixLen {
		return s[:apikey.DisplayPrefixLen]
	}
	return s
}
func badChecksum(t testing.TB, env apikey.Environment) string {
	t.Helper()
	k, err := apikey.Generate(env)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte(k)
	i := len(b) - 1 - rand.IntN(6)
	if b[i] == '0' {
		b[i] = '1'
	} else {
		b[i] = '0'
	}
	return string(b)
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

const singleflightDo = "golang.org/x/sync/singleflight.(*Group).Do("
