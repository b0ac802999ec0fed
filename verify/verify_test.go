package verify

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
)

// The tests run against real stores (bbolt files in a temporary directory, throwaway
// redis-server processes). The only thing between the Verifier and the store is testStore,
// which counts calls and can fail, hold or slow LookupHash; everything else, including
// Subscribe and so the invalidations, goes to the real store.

var errUnreachable = errors.New("test: store unreachable")

// gate holds one LookupHash (or TouchKey) call: reached is closed when the call arrives at
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
// TouchKey. All other methods (Subscribe included) are the real store's.
type testStore struct {
	store.Store

	lookups atomic.Int64
	touches atomic.Int64

	fail      atomic.Bool          // LookupHash fails without asking the store
	holdNext  atomic.Pointer[gate] // the next LookupHash reads the store, then waits at the gate
	maxDelay  atomic.Int64         // LookupHash sleeps up to this long after reading the store
	touchGate atomic.Pointer[gate] // every TouchKey waits at this gate
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

func (s *testStore) TouchKey(ctx context.Context, instance, id string, at time.Time) error {
	s.touches.Add(1)
	if g := s.touchGate.Load(); g != nil {
		select {
		case <-g.reached:
		default:
			close(g.reached)
		}
		<-g.release
	}
	return s.Store.TouchKey(ctx, instance, id, at)
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
	waitFor(t, 10*time.Second, "the redis store's invalidation listener to be healthy", s.Healthy)
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
	if _, err := f.real.RevokeKey(context.Background(), k.Instance, k.ID, f.clk.Now()); err != nil {
		f.t.Fatal(err)
	}
}

// waitCache waits until the cache has applied the sets queued so far (ristretto applies them
// on its own goroutine): after it, a filled key is a hit.
func (f *fixture) waitCache() { f.v.cache.Wait() }

// warm verifies a key once (a store call), waits for the fill and checks that the next
// Verify is a hit.
func (f *fixture) warm(secret string) {
	f.t.Helper()
	if r := f.v.Verify(secret, apikey.EnvUnknown); r.Code != OK {
		f.t.Fatalf("warming: got %v, want ok", r.Code)
	}
	f.waitCache()
	n := f.st.lookups.Load()
	if r := f.v.Verify(secret, apikey.EnvUnknown); r.Code != OK {
		f.t.Fatalf("warm key: got %v, want ok", r.Code)
	}
	if got := f.st.lookups.Load(); got != n {
		f.t.Fatalf("warm key made a store call (%d → %d): not cached", n, got)
	}
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

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// badChecksum returns a valid key with one checksum character changed.
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

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------------------
// 1. Every code.

func TestVerifyCodes(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		for _, env := range []apikey.Environment{apikey.Sandbox, apikey.Production} {
			secret, k := f.createKey(env, time.Time{})
			for _, want := range []apikey.Environment{apikey.EnvUnknown, env} {
				r := f.expect(secret, want, OK)
				if r.KeyID != k.ID || r.Instance != k.Instance || r.Environment != env {
					t.Fatalf("Verify = %+v, want key %s instance %s environment %v", r, k.ID, k.Instance, env)
				}
			}
		}
		// A key that expires later is OK until then.
		secret, k := f.createKey(apikey.Production, base.Add(24*time.Hour))
		if r := f.expect(secret, apikey.Production, OK); r.KeyID != k.ID {
			t.Fatalf("KeyID = %q, want %q", r.KeyID, k.ID)
		}
	})

	t.Run("InvalidKey/malformed", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		good, _ := f.createKey(apikey.Sandbox, time.Time{})
		for _, key := range []string{
			"",
			"sk_test_",
			good[:len(good)-1],                        // too short
			good + "0",                                // too long
			"sk_prod_" + good[8:],                     // unknown prefix
			"SK_TEST_" + good[8:],                     // prefix is case-sensitive
			"Bearer " + good[7:],                      // not a key
			good[:20] + "-" + good[21:],               // not base62
			good[:20] + "é"[:1] + good[21:],           // not ASCII
			good[:apikey.Len-6] + "!!!!!!",            // checksum not base62
			strings.Repeat("x", apikey.Len),           // right length, nothing else
			"sk_test_" + strings.Repeat("0", 38),      // base62 all through, wrong checksum
			"sk_live_" + good[8:],                     // the checksum covers the prefix
			" " + good[:len(good)-1],                  // leading space
			good[:len(good)-1] + "\n",                 // trailing newline
			good[:len(good)-1] + "\x00",               // NUL
			good[:len(good)-6] + "\u00e9\u00e9\u00e9", // multibyte checksum, right byte length
		} {
			for _, want := range []apikey.Environment{apikey.EnvUnknown, apikey.Sandbox, apikey.Production} {
				if r := f.v.Verify(key, want); r.Code != InvalidKey || r.KeyID != "" || r.Instance != "" {
					t.Errorf("Verify(%q, %v) = %+v, want invalid_api_key with no key fields", key, want, r)
				}
			}
		}
		f.expectLookups(0)
		f.expect(good, apikey.EnvUnknown, OK)
	})

	t.Run("InvalidKey/bad checksum", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		good, _ := f.createKey(apikey.Production, time.Time{})
		// The stored key itself with its checksum changed, and with a body character changed.
		b := []byte(good)
		if b[apikey.Len-1] == '0' {
			b[apikey.Len-1] = '1'
		} else {
			b[apikey.Len-1] = '0'
		}
		bad1 := string(b)
		b = []byte(good)
		if b[10] == 'A' {
			b[10] = 'B'
		} else {
			b[10] = 'A'
		}
		bad2 := string(b)
		for _, key := range []string{bad1, bad2, badChecksum(t, apikey.Sandbox), badChecksum(t, apikey.Production)} {
			for _, want := range []apikey.Environment{apikey.EnvUnknown, apikey.Sandbox, apikey.Production} {
				// Format and checksum come before the environment: a bad checksum on a
				// route of the other environment is invalid_api_key.
				f.expect(key, want, InvalidKey)
			}
		}
		f.expectLookups(0)
	})

	t.Run("InvalidKey/unknown key", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		f.createKey(apikey.Sandbox, time.Time{})
		unknown, err := apikey.Generate(apikey.Sandbox)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := apikey.Parse(unknown); err != nil {
			t.Fatal(err)
		}
		r := f.expect(unknown, apikey.EnvUnknown, InvalidKey)
		if r.KeyID != "" || r.Instance != "" {
			t.Fatalf("unknown key answered with key fields: %+v", r)
		}
		f.expectLookups(1) // valid checksum: it reaches the store
	})

	t.Run("InvalidKey/prefix disagrees with the record", func(t *testing.T) {
		// A record whose environment is not the key's prefix: not a key we issued.
		f := newFixture(t, nil, Config{})
		secret, err := apikey.Generate(apikey.Sandbox)
		if err != nil {
			t.Fatal(err)
		}
		k := store.Key{ID: "key_mismatch", Instance: productionInstance, Environment: apikey.Production,
			Name: "odd", Prefix: apikey.DisplayPrefix(secret), Hash: f.hasher.Sum(secret), CreatedAt: base}
		if err := f.real.CreateKey(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		f.expect(secret, apikey.EnvUnknown, InvalidKey)
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, InvalidKey)
	})

	t.Run("Revoked", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		f.revoke(k)
		r := f.expect(secret, apikey.EnvUnknown, Revoked)
		if r.KeyID != "" {
			t.Fatalf("revoked key answered with key fields: %+v", r)
		}
		f.waitCache()
		f.expect(secret, apikey.Sandbox, Revoked) // cached as revoked
		f.expectLookups(1)
	})

	t.Run("Expired/already at lookup", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		// expires_at not after now is expired: exactly now, and before.
		secret1, _ := f.createKey(apikey.Sandbox, base)
		secret2, _ := f.createKey(apikey.Production, base.Add(-time.Hour))
		f.expect(secret1, apikey.EnvUnknown, Expired)
		f.expect(secret2, apikey.Production, Expired)
	})

	t.Run("Expired/while cached", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		exp := base.Add(time.Hour)
		secret, _ := f.createKey(apikey.Sandbox, exp)
		f.warm(secret)
		n := f.st.lookups.Load()
		f.clk.Set(exp.Add(-time.Millisecond))
		f.expect(secret, apikey.EnvUnknown, OK)
		f.clk.Set(exp.Add(-time.Nanosecond))
		f.expect(secret, apikey.EnvUnknown, OK)
		// The cache never extends a key's life: at expires_at, the cached entry says expired.
		f.clk.Set(exp)
		f.expect(secret, apikey.EnvUnknown, Expired)
		f.clk.Set(exp.Add(24 * time.Hour))
		f.expect(secret, apikey.Sandbox, Expired)
		f.expectLookups(n) // decided from the cache
		if hits := f.v.Stats.CacheHits.Load(); hits < 5 {
			t.Fatalf("cache hits = %d, want ≥ 5", hits)
		}
	})

	t.Run("Expired/shortened expiry propagates", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		f.warm(secret)
		if _, err := f.real.ExpireKey(context.Background(), k.Instance, k.ID, f.clk.Now()); err != nil {
			t.Fatal(err)
		}
		f.expect(secret, apikey.EnvUnknown, Expired)
	})

	t.Run("Expired/roll with no grace", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		old, k := f.createKey(apikey.Production, time.Time{})
		f.warm(old)
		next, err := apikey.Generate(apikey.Production)
		if err != nil {
			t.Fatal(err)
		}
		nk := store.Key{ID: "key_rolled", Instance: k.Instance, Environment: k.Environment, Name: k.Name,
			Prefix: apikey.DisplayPrefix(next), Hash: f.hasher.Sum(next), CreatedAt: base}
		if _, err := store.Roll(context.Background(), f.real, k.Instance, k.ID, nk, f.clk.Now()); err != nil {
			t.Fatal(err)
		}
		f.expect(old, apikey.EnvUnknown, Expired)
		if r := f.expect(next, apikey.Production, OK); r.KeyID != "key_rolled" {
			t.Fatalf("rolled key id = %q", r.KeyID)
		}
	})

	t.Run("WrongEnvironment before any lookup", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		test, _ := f.createKey(apikey.Sandbox, time.Time{})
		live, _ := f.createKey(apikey.Production, time.Time{})
		unknownTest, _ := apikey.Generate(apikey.Sandbox)
		unknownLive, _ := apikey.Generate(apikey.Production)
		for i := 0; i < 3; i++ {
			f.expect(test, apikey.Production, WrongEnvironment)
			f.expect(live, apikey.Sandbox, WrongEnvironment)
			f.expect(unknownTest, apikey.Production, WrongEnvironment)
			f.expect(unknownLive, apikey.Sandbox, WrongEnvironment)
		}
		f.expectLookups(0)
		if n := f.v.Stats.StoreLookups.Load(); n != 0 {
			t.Fatalf("Stats.StoreLookups = %d, want 0", n)
		}
		// Cached keys too: the environment is decided from the prefix.
		f.warm(test)
		f.expect(test, apikey.Production, WrongEnvironment)
		// Revoked keys on the wrong route: still the environment first.
		revoked, k := f.createKey(apikey.Sandbox, time.Time{})
		f.revoke(k)
		n := f.st.lookups.Load()
		f.expect(revoked, apikey.Production, WrongEnvironment)
		f.expectLookups(n)
	})

	t.Run("Revoked and expired is Revoked", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		// Revoked while cached, then the clock passes its expiry.
		exp := base.Add(time.Hour)
		secret, k := f.createKey(apikey.Sandbox, exp)
		f.warm(secret)
		f.revoke(k)
		f.clk.Set(exp.Add(time.Minute))
		f.expect(secret, apikey.EnvUnknown, Revoked)
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, Revoked)
		// Both already at the first lookup.
		secret2, k2 := f.createKey(apikey.Production, base)
		f.revoke(k2)
		f.expect(secret2, apikey.Production, Revoked)
	})
}

func TestHasherPepper(t *testing.T) {
	h := apikey.NewHasher([]byte("pepper"))
	f := newFixture(t, nil, Config{Hasher: h})
	secret, k := f.createKey(apikey.Sandbox, time.Time{}) // stored with the peppered hash
	if r := f.expect(secret, apikey.EnvUnknown, OK); r.KeyID != k.ID {
		t.Fatalf("KeyID = %q", r.KeyID)
	}
	// The same secret stored under its plain SHA-256 is unknown to a peppered verifier.
	plain, err := apikey.Generate(apikey.Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	pk := store.Key{ID: "key_plain", Instance: sandboxInstance, Environment: apikey.Sandbox, Name: "plain",
		Prefix: apikey.DisplayPrefix(plain), Hash: apikey.Hasher{}.Sum(plain), CreatedAt: base}
	if err := f.real.CreateKey(context.Background(), pk); err != nil {
		t.Fatal(err)
	}
	f.expect(plain, apikey.EnvUnknown, InvalidKey)
}

// Two keys whose hashes share the 64 bits ristretto indexes by must never share an entry:
// a hit compares the full hash.
func TestCacheEntryComparesFullHash(t *testing.T) {
	f := newFixture(t, nil, Config{})
	a, ka := f.createKey(apikey.Sandbox, time.Time{})
	b, kb := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(a)
	// Put a's entry where b's would be (what a collision of the first 8 bytes would do).
	ha, hb := f.hasher.Sum(a), f.hasher.Sum(b)
	ea, ok := f.v.cache.Get(cacheKey(&ha))
	if !ok {
		t.Fatal("a is not cached")
	}
	f.v.cache.Set(cacheKey(&hb), ea, 1)
	f.waitCache()
	if got, ok := f.v.cache.Get(cacheKey(&hb)); !ok || got != ea {
		t.Fatal("could not plant the colliding entry")
	}
	n := f.st.lookups.Load()
	r := f.expect(b, apikey.EnvUnknown, OK)
	if r.KeyID != kb.ID || r.KeyID == ka.ID {
		t.Fatalf("b answered as key %s, want %s (a is %s)", r.KeyID, kb.ID, ka.ID)
	}
	f.expectLookups(n + 1)
	// An unknown key landing on a's entry is not a's either.
	unknown, _ := apikey.Generate(apikey.Sandbox)
	hu := f.hasher.Sum(unknown)
	f.v.cache.Set(cacheKey(&hu), ea, 1)
	f.waitCache()
	f.expect(unknown, apikey.EnvUnknown, InvalidKey)
}

// ---------------------------------------------------------------------------------------
// 2. Store calls: hits, bad checksums, the negative cache.

func TestCacheHitMakesNoStoreCall(t *testing.T) {
	f := newFixture(t, nil, Config{})
	secret, k := f.createKey(apikey.Production, time.Time{})
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(1)
	f.waitCache()
	hits := f.v.Stats.CacheHits.Load()
	for i := 0; i < 1000; i++ {
		if r := f.v.Verify(secret, apikey.Production); r.Code != OK || r.KeyID != k.ID {
			t.Fatalf("hit %d: %+v", i, r)
		}
	}
	f.expectLookups(1)
	if got := f.v.Stats.CacheHits.Load() - hits; got != 1000 {
		t.Fatalf("cache hits = %d, want 1000", got)
	}
}

func TestBadChecksumFloodMakesNoStoreCall(t *testing.T) {
	f := newFixture(t, nil, Config{})
	good, _ := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(good)
	n := f.st.lookups.Load()
	for i := 0; i < 10_000; i++ {
		env := apikey.Sandbox
		if i%2 == 1 {
			env = apikey.Production
		}
		key := badChecksum(t, env)
		if r := f.v.Verify(key, apikey.EnvUnknown); r.Code != InvalidKey {
			t.Fatalf("bad checksum key %d: %v", i, r.Code)
		}
	}
	f.expectLookups(n)
	if got := f.v.Stats.Results[InvalidKey].Load(); got != 10_000 {
		t.Fatalf("invalid_api_key results = %d, want 10000", got)
	}
	// The valid key still works, from the cache.
	f.expect(good, apikey.Sandbox, OK)
	f.expectLookups(n)
}

func TestUnknownKeyNegativeCache(t *testing.T) {
	const negTTL = 10 * time.Second
	f := newFixture(t, nil, Config{NegativeTTL: negTTL})
	unknown, err := apikey.Generate(apikey.Production)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		f.expect(unknown, apikey.EnvUnknown, InvalidKey)
	}
	f.expectLookups(1)
	if got := f.v.Stats.NegativeHits.Load(); got != 99 {
		t.Fatalf("negative hits = %d, want 99", got)
	}
	// Still remembered just before NegativeTTL has passed…
	f.clk.Advance(negTTL - time.Millisecond)
	f.expect(unknown, apikey.EnvUnknown, InvalidKey)
	f.expectLookups(1)
	// …and asked again once it has.
	f.clk.Advance(time.Millisecond)
	for i := 0; i < 100; i++ {
		f.expect(unknown, apikey.EnvUnknown, InvalidKey)
	}
	f.expectLookups(2)

	// A key created after it was remembered as unknown works once the entry lapses.
	secret, k := f.createKeyWithSecret(unknown)
	f.expect(secret, apikey.EnvUnknown, InvalidKey) // still remembered
	f.clk.Advance(negTTL)
	if r := f.expect(secret, apikey.EnvUnknown, OK); r.KeyID != k.ID {
		t.Fatalf("KeyID = %q", r.KeyID)
	}
	f.expectLookups(3)
}

// createKeyWithSecret stores a key with a given secret (a production key).
func (f *fixture) createKeyWithSecret(secret string) (string, store.Key) {
	f.t.Helper()
	env, err := apikey.Parse(secret)
	if err != nil {
		f.t.Fatal(err)
	}
	inst := sandboxInstance
	if env == apikey.Production {
		inst = productionInstance
	}
	k := store.Key{ID: "key_given", Instance: inst, Environment: env, Name: "given",
		Prefix: apikey.DisplayPrefix(secret), Hash: f.hasher.Sum(secret), CreatedAt: base}
	if err := f.real.CreateKey(context.Background(), k); err != nil {
		f.t.Fatal(err)
	}
	return secret, k
}

// ---------------------------------------------------------------------------------------
// 3. Singleflight.

func TestSingleflightColdKey(t *testing.T) {
	f := newFixture(t, nil, Config{})
	secret, k := f.createKey(apikey.Sandbox, time.Time{})
	g := newGate()
	f.st.holdNext.Store(g)

	const n = 50
	results := make(chan Result, n)
	for i := 0; i < n; i++ {
		go func() { results <- f.v.Verify(secret, apikey.EnvUnknown) }()
	}
	g.wait(t)
	// All 50 are inside singleflight's Do while the one store call is held: the 49 others
	// have joined it (the call stays in the group's map until it returns).
	waitFor(t, 10*time.Second, "50 goroutines in singleflight.Do", func() bool {
		return goroutinesIn(singleflightDo) == n
	})
	close(g.release)
	for i := 0; i < n; i++ {
		select {
		case r := <-results:
			if r.Code != OK || r.KeyID != k.ID {
				t.Fatalf("goroutine got %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("verifies did not return")
		}
	}
	f.expectLookups(1)
	if got := f.v.Stats.StoreLookups.Load(); got != 1 {
		t.Fatalf("Stats.StoreLookups = %d, want 1", got)
	}
	// And it was cached once for all.
	f.waitCache()
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(1)
}

// Concurrent misses on one unknown key make one call too.
func TestSingleflightUnknownKey(t *testing.T) {
	f := newFixture(t, nil, Config{})
	unknown, _ := apikey.Generate(apikey.Production)
	g := newGate()
	f.st.holdNext.Store(g)
	const n = 20
	results := make(chan Result, n)
	for i := 0; i < n; i++ {
		go func() { results <- f.v.Verify(unknown, apikey.Production) }()
	}
	g.wait(t)
	waitFor(t, 10*time.Second, "20 goroutines in singleflight.Do", func() bool {
		return goroutinesIn(singleflightDo) == n
	})
	close(g.release)
	for i := 0; i < n; i++ {
		if r := <-results; r.Code != InvalidKey {
			t.Fatalf("got %v", r.Code)
		}
	}
	f.expectLookups(1)
}

// ---------------------------------------------------------------------------------------
// 4. Revocation in the same process.

func TestRevokeSameProcess(t *testing.T) {
	run := func(t *testing.T, s store.Store) {
		f := newFixture(t, s, Config{})
		for i := 0; i < 20; i++ {
			secret, k := f.createKey(apikey.Sandbox, time.Time{})
			f.warm(secret)
			// No sleep: once RevokeKey has returned, this process refuses the key.
			f.revoke(k)
			f.expect(secret, apikey.EnvUnknown, Revoked)
			f.expect(secret, apikey.Sandbox, Revoked)
		}
	}
	t.Run("file", func(t *testing.T) { run(t, nil) })
	t.Run("redis", func(t *testing.T) { run(t, openRedisStore(t, redistest.Start(t))) })
}

// ---------------------------------------------------------------------------------------
// 5. The fill/revoke race.

func TestFillRevokeRace(t *testing.T) {
	t.Run("request after the revoke makes its own call", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		g := newGate()
		f.st.holdNext.Store(g)
		old := make(chan Result, 1)
		go func() { old <- f.v.Verify(secret, apikey.EnvUnknown) }()
		g.wait(t) // the lookup has read the key (active) and is held before it returns

		f.revoke(k) // delivers Invalidate before it returns

		// A request after the revoke must not join the held lookup: it makes its own
		// store call and sees the revocation, while the old lookup is still held.
		after := make(chan Result, 1)
		go func() { after <- f.v.Verify(secret, apikey.EnvUnknown) }()
		select {
		case r := <-after:
			if r.Code != Revoked {
				t.Fatalf("request after the revoke: %v, want api_key_revoked", r.Code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("request after the revoke joined the lookup that started before it")
		}
		f.expectLookups(2)

		// Now the old lookup returns its stale answer (it started before the revoke, so
		// either answer is allowed for it) and tries to fill the cache.
		close(g.release)
		r := <-old
		if r.Code != OK && r.Code != Revoked {
			t.Fatalf("old request: %v", r.Code)
		}
		t.Logf("request that started before the revoke answered %v", r.Code)
		f.waitCache()
		for i := 0; i < 10; i++ {
			f.expect(secret, apikey.EnvUnknown, Revoked)
		}
	})

	t.Run("old lookup result is not cached", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Production, time.Time{})
		g := newGate()
		f.st.holdNext.Store(g)
		old := make(chan Result, 1)
		go func() { old <- f.v.Verify(secret, apikey.EnvUnknown) }()
		g.wait(t)
		f.revoke(k)
		close(g.release)
		if r := <-old; r.Code != OK && r.Code != Revoked {
			t.Fatalf("old request: %v", r.Code)
		}
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, Revoked)
		f.expectLookups(2) // the old result was not cached: a new lookup
	})

	t.Run("cached key, lookup held across a revoke after a flush", func(t *testing.T) {
		// The cached entry has been flushed (as after a lost invalidation): the refill
		// lookup is held, the key is revoked, then the refill returns.
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		f.warm(secret)
		f.v.Flush()
		g := newGate()
		f.st.holdNext.Store(g)
		old := make(chan Result, 1)
		go func() { old <- f.v.Verify(secret, apikey.EnvUnknown) }()
		g.wait(t)
		f.revoke(k)
		f.expect(secret, apikey.EnvUnknown, Revoked)
		close(g.release)
		<-old
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, Revoked)
	})
}

// A fill queued in ristretto's buffer before an invalidation must not become visible after
// Invalidate has returned. The cache's own goroutine is stalled (through its Cost hook) before
// the fill's set, and again between that set and the invalidation's delete: Invalidate must
// not return while the fill is pending, or the key would be answered from the cache again.
func TestInvalidateWaitsForQueuedFill(t *testing.T) {
	f := newFixture(t, nil, Config{})
	secret, k := f.createKey(apikey.Sandbox, time.Time{})

	var mu sync.Mutex
	stalls := map[*entry]*gate{}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters: 10_000, MaxCost: 1_000, BufferItems: 64, IgnoreInternalCost: true,
		// Called on the cache's goroutine for sets of cost 0 (the verifier's cost 1).
		Cost: func(e *entry) int64 {
			mu.Lock()
			g := stalls[e]
			mu.Unlock()
			if g != nil {
				close(g.reached)
				<-g.release
			}
			return 1
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.v.cache.Close()
	f.v.cache = c
	var releases []func()
	// On failure, release the stalls before the fixture closes the cache (its Close waits
	// for the cache's goroutine).
	t.Cleanup(func() {
		for _, r := range releases {
			r()
		}
	})
	stall := func(key uint64) *gate {
		g, e := newGate(), &entry{}
		mu.Lock()
		stalls[e] = g
		mu.Unlock()
		releases = append(releases, sync.OnceFunc(func() { close(g.release) }))
		c.Set(key, e, 0)
		return g
	}

	g1 := stall(1 << 62)
	g1.wait(t) // the cache's goroutine is stalled: what follows stays queued
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(1) // the fill is queued behind the first stall
	g2 := stall(1<<62 + 1)

	done := make(chan error, 1)
	go func() {
		_, err := f.real.RevokeKey(context.Background(), k.Instance, k.ID, base)
		done <- err
	}()
	returnedEarly := false
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		returnedEarly = true
	case <-time.After(200 * time.Millisecond):
	}
	releases[0]()
	g2.wait(t) // the fill has been applied; the invalidation's delete is still queued
	if returnedEarly {
		// RevokeKey (and so Invalidate) returned while the fill was queued.
		f.expect(secret, apikey.EnvUnknown, Revoked)
	}
	releases[1]()
	if !returnedEarly {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	f.expect(secret, apikey.EnvUnknown, Revoked)
	f.waitCache()
	f.expect(secret, apikey.EnvUnknown, Revoked)
}

// After RevokeKey returns, every Verify that starts afterwards says revoked, whatever the
// lookups in flight, the flushes and the refills were doing.
func TestRevokeRaceStress(t *testing.T) {
	run := func(t *testing.T, s store.Store, rounds int) {
		f := newFixture(t, s, Config{})
		f.st.maxDelay.Store(int64(200 * time.Microsecond)) // slow lookups: wide fill windows
		var afterTotal, violations atomic.Int64
		for round := 0; round < rounds; round++ {
			secret, k := f.createKey(apikey.Sandbox, time.Time{})
			var revoked, stop atomic.Bool
			var wg sync.WaitGroup
			var firstBad atomic.Pointer[string]
			for w := 0; w < 6; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						startedAfter := revoked.Load()
						r := f.v.Verify(secret, apikey.EnvUnknown)
						switch {
						case startedAfter:
							afterTotal.Add(1)
							if r.Code != Revoked {
								violations.Add(1)
								msg := fmt.Sprintf("round %d: Verify started after RevokeKey returned answered %v", round, r.Code)
								firstBad.CompareAndSwap(nil, &msg)
							}
						case r.Code != OK && r.Code != Revoked:
							msg := fmt.Sprintf("round %d: Verify answered %v", round, r.Code)
							firstBad.CompareAndSwap(nil, &msg)
						}
					}
				}()
			}
			// Something keeps refilling the cache: flushes force new lookups and fills that
			// race with the revocation.
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					f.v.Flush()
					time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
				}
			}()
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			if _, err := f.real.RevokeKey(context.Background(), k.Instance, k.ID, f.clk.Now()); err != nil {
				t.Fatal(err)
			}
			revoked.Store(true)
			time.Sleep(3 * time.Millisecond)
			stop.Store(true)
			wg.Wait()
			if m := firstBad.Load(); m != nil {
				t.Fatal(*m)
			}
			// Settled: the key stays revoked.
			f.waitCache()
			f.expect(secret, apikey.EnvUnknown, Revoked)
		}
		if violations.Load() != 0 {
			t.Fatalf("%d verifies after the revoke were not refused", violations.Load())
		}
		if afterTotal.Load() == 0 {
			t.Fatal("no Verify started after a revoke: the test tested nothing")
		}
		t.Logf("%d rounds, %d verifies started after the revoke, %d store lookups",
			rounds, afterTotal.Load(), f.st.lookups.Load())
	}
	t.Run("file", func(t *testing.T) { run(t, nil, 30) })
	t.Run("redis", func(t *testing.T) { run(t, openRedisStore(t, redistest.Start(t)), 15) })
}

// ---------------------------------------------------------------------------------------
// 6. Across processes, through Redis.

func TestCrossProcessRevocationRedis(t *testing.T) {
	srv := redistest.Start(t)
	sa, sb := openRedisStore(t, srv), openRedisStore(t, srv)
	fa := newFixture(t, sa, Config{})
	fb := newFixture(t, sb, Config{})
	waitFor(t, 10*time.Second, "verifier B healthy", fb.v.Healthy)

	var worst time.Duration
	for i := 0; i < 5; i++ {
		secret, k := fa.createKey(apikey.Production, time.Time{})
		fa.warm(secret)
		fb.warm(secret) // B caches it: its next answers cost no store call

		start := time.Now()
		if _, err := sa.RevokeKey(context.Background(), k.Instance, k.ID, fa.clk.Now()); err != nil {
			t.Fatal(err)
		}
		returned := time.Since(start)
		fa.expect(secret, apikey.EnvUnknown, Revoked) // the process that served it: at once
		deadline := start.Add(time.Second)
		for {
			if fb.v.Verify(secret, apikey.EnvUnknown).Code == Revoked {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("gateway B still accepts the key 1 s after the revoke")
			}
			time.Sleep(time.Millisecond)
		}
		delay := time.Since(start)
		worst = max(worst, delay)
		t.Logf("revoke %d: RevokeKey returned after %v; B refused after %v", i, returned, delay)
		fb.expect(secret, apikey.Production, Revoked)
	}
	t.Logf("worst delay to B: %v", worst)
}

// The fill/revoke race across processes: B's lookup reads the key before A revokes it, and
// returns only after B has received the invalidation.
func TestCrossProcessFillRevokeRaceRedis(t *testing.T) {
	srv := redistest.Start(t)
	sa, sb := openRedisStore(t, srv), openRedisStore(t, srv)
	fa := newFixture(t, sa, Config{})
	fb := newFixture(t, sb, Config{})
	waitFor(t, 10*time.Second, "verifier B healthy", fb.v.Healthy)
	secret, k := fa.createKey(apikey.Sandbox, time.Time{})

	g := newGate()
	fb.st.holdNext.Store(g)
	old := make(chan Result, 1)
	go func() { old <- fb.v.Verify(secret, apikey.EnvUnknown) }()
	g.wait(t)
	gen := fb.v.gen.Load()
	if _, err := sa.RevokeKey(context.Background(), k.Instance, k.ID, fa.clk.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "B to receive the invalidation", func() bool { return fb.v.gen.Load() != gen })
	after := make(chan Result, 1)
	go func() { after <- fb.v.Verify(secret, apikey.EnvUnknown) }()
	select {
	case r := <-after:
		if r.Code != Revoked {
			t.Fatalf("B after the invalidation: %v", r.Code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B's request after the invalidation joined the held lookup")
	}
	close(g.release)
	<-old
	fb.waitCache()
	fb.expect(secret, apikey.EnvUnknown, Revoked)
}

// A lookup that started while the invalidation channel was not yet healthy (a Redis store's
// listener before it has taken its position in the stream) must not fill the cache when the
// channel turns healthy: a revocation written meanwhile may be behind that position and is
// never delivered.
func TestLookupStartedWhileUnhealthyDoesNotFillRedis(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedisStore(t, srv)
	f := newFixture(t, s, Config{})
	waitFor(t, 10*time.Second, "verifier healthy", f.v.Healthy)
	secret, _ := f.createKey(apikey.Production, time.Time{})

	f.v.SetHealthy(false) // what the store says before its listener is positioned
	g := newGate()
	f.st.holdNext.Store(g)
	old := make(chan Result, 1)
	go func() { old <- f.v.Verify(secret, apikey.EnvUnknown) }()
	g.wait(t) // read the key as active

	// Another gateway revokes it; the entry lands before the listener's position, so this
	// process is never told (written as RevokeKey writes it, without the stream entry).
	h := f.hasher.Sum(secret)
	rdb := srv.Client()
	if err := rdb.HSet(context.Background(), "nora:h:"+hex.EncodeToString(h[:]), "rev", store.Millis(base)).Err(); err != nil {
		t.Fatal(err)
	}
	f.v.SetHealthy(true) // the listener is positioned and caught up
	close(g.release)
	<-old
	f.waitCache()
	f.expect(secret, apikey.EnvUnknown, Revoked)
}

// ---------------------------------------------------------------------------------------
// 7. Health.

func TestHealth(t *testing.T) {
	const maxStale = 30 * time.Second

	t.Run("unhealthy channel: cache not trusted", func(t *testing.T) {
		f := newFixture(t, nil, Config{MaxStale: maxStale})
		if !f.v.Healthy() {
			t.Fatal("verifier on a file store is not healthy")
		}
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		f.warm(secret)
		n := f.st.lookups.Load()
		f.v.SetHealthy(false)
		if f.v.Healthy() {
			t.Fatal("Healthy after SetHealthy(false)")
		}
		for i := int64(1); i <= 5; i++ {
			if r := f.expect(secret, apikey.EnvUnknown, OK); r.KeyID != k.ID {
				t.Fatalf("KeyID %q", r.KeyID)
			}
			f.expectLookups(n + i) // checked at the store every time
		}
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, OK)
		f.expectLookups(n + 6) // lookups while unhealthy do not fill the cache either

		// Back to healthy: hits again.
		f.v.SetHealthy(true)
		n = f.st.lookups.Load()
		for i := 0; i < 10; i++ {
			f.expect(secret, apikey.EnvUnknown, OK)
		}
		f.expectLookups(n)
	})

	t.Run("store and channel down: max_stale", func(t *testing.T) {
		f := newFixture(t, nil, Config{MaxStale: maxStale})
		cached, _ := f.createKey(apikey.Sandbox, time.Time{})
		uncached, _ := f.createKey(apikey.Sandbox, time.Time{})
		f.warm(cached)

		f.st.fail.Store(true)
		f.v.SetHealthy(false) // the channel dropped now (f.clk)
		n := f.st.lookups.Load()
		// Uncached: fail closed at once.
		f.expect(uncached, apikey.EnvUnknown, Unavailable)
		// Cached: served while the channel has been down for at most MaxStale.
		f.expect(cached, apikey.EnvUnknown, OK)
		f.clk.Advance(maxStale / 2)
		f.expect(cached, apikey.EnvUnknown, OK)
		f.expect(uncached, apikey.EnvUnknown, Unavailable)
		f.clk.Advance(maxStale / 2)
		f.expect(cached, apikey.EnvUnknown, OK)
		if got := f.st.lookups.Load(); got != n+5 {
			t.Fatalf("store lookups = %d, want %d (the store is tried first every time)", got, n+5)
		}
		// Past MaxStale: unavailable too.
		f.clk.Advance(time.Millisecond)
		f.expect(cached, apikey.EnvUnknown, Unavailable)
		f.clk.Advance(time.Hour)
		f.expect(cached, apikey.EnvUnknown, Unavailable)
		// Wrong environment and bad checksums are still decided without the store.
		f.expect(cached, apikey.Production, WrongEnvironment)
		f.expect(badChecksum(t, apikey.Sandbox), apikey.EnvUnknown, InvalidKey)

		// The store comes back, the channel not yet: answered by the store.
		f.st.fail.Store(false)
		n = f.st.lookups.Load()
		f.expect(cached, apikey.EnvUnknown, OK)
		f.expect(uncached, apikey.EnvUnknown, OK)
		f.expectLookups(n + 2)

		// The channel comes back: hits from the cache again.
		f.v.SetHealthy(true)
		f.waitCache()
		n = f.st.lookups.Load()
		for i := 0; i < 10; i++ {
			f.expect(cached, apikey.EnvUnknown, OK)
		}
		f.expectLookups(n)
	})

	t.Run("store down, channel up: hits served, misses unavailable", func(t *testing.T) {
		f := newFixture(t, nil, Config{MaxStale: maxStale})
		cached, _ := f.createKey(apikey.Production, time.Time{})
		uncached, _ := f.createKey(apikey.Production, time.Time{})
		f.warm(cached)
		f.st.fail.Store(true)
		n := f.st.lookups.Load()
		f.clk.Advance(time.Hour)
		f.expect(cached, apikey.EnvUnknown, OK)
		f.expectLookups(n)
		f.expect(uncached, apikey.EnvUnknown, Unavailable)
		unknown, _ := apikey.Generate(apikey.Production)
		f.expect(unknown, apikey.EnvUnknown, Unavailable) // unknown is not remembered as unknown
		f.st.fail.Store(false)
		f.expect(unknown, apikey.EnvUnknown, InvalidKey)
	})

	t.Run("Flush", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, _ := f.createKey(apikey.Sandbox, time.Time{})
		unknown, _ := apikey.Generate(apikey.Sandbox)
		f.warm(secret)
		f.expect(unknown, apikey.EnvUnknown, InvalidKey)
		n := f.st.lookups.Load()
		f.v.Flush()
		f.expect(secret, apikey.EnvUnknown, OK)
		f.expectLookups(n + 1)
		f.expect(unknown, apikey.EnvUnknown, InvalidKey) // the negative cache is flushed too
		f.expectLookups(n + 2)
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, OK)
		f.expectLookups(n + 2)
	})
}

// The store really goes away: the Redis store's listener reports the channel down, cached keys
// serve for MaxStale, and everything recovers by itself when Redis is back.
func TestStoreDownRedis(t *testing.T) {
	const maxStale = 30 * time.Second
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	s := openRedisStore(t, srv)
	f := newFixture(t, s, Config{MaxStale: maxStale, LookupTimeout: 2 * time.Second})
	waitFor(t, 10*time.Second, "verifier healthy", f.v.Healthy)
	cached, _ := f.createKey(apikey.Sandbox, time.Time{})
	uncached, _ := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(cached)

	srv.Kill()
	waitFor(t, 10*time.Second, "the verifier to hear the channel dropped", func() bool { return !f.v.Healthy() })
	n := f.st.lookups.Load()
	f.expect(uncached, apikey.EnvUnknown, Unavailable)
	f.expect(cached, apikey.EnvUnknown, OK)
	f.clk.Advance(maxStale)
	f.expect(cached, apikey.EnvUnknown, OK)
	f.clk.Advance(time.Millisecond)
	f.expect(cached, apikey.EnvUnknown, Unavailable)
	if got := f.st.lookups.Load(); got != n+4 {
		t.Fatalf("store lookups = %d, want %d", got, n+4)
	}

	srv.Restart()
	waitFor(t, 10*time.Second, "the verifier to recover", f.v.Healthy)
	f.expect(cached, apikey.EnvUnknown, OK)
	// go-redis keeps refusing new connections for a moment after failed dials (its pool
	// retries the dial in the background): the store answers again within seconds.
	waitFor(t, 10*time.Second, "the uncached key to be answered by the store", func() bool {
		return f.v.Verify(uncached, apikey.EnvUnknown).Code == OK
	})
}

// ---------------------------------------------------------------------------------------
// 8. last_used_at.

func TestLastUsedAt(t *testing.T) {
	const interval = time.Minute
	f := newFixture(t, nil, Config{TouchInterval: interval})
	secret, k := f.createKey(apikey.Sandbox, time.Time{})
	lastUsed := func() time.Time {
		got, err := f.real.Key(context.Background(), k.Instance, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.LastUsedAt
	}
	if !lastUsed().IsZero() {
		t.Fatal("new key has a last_used_at")
	}

	// The write is off the request path: Verify answers while TouchKey is held.
	g := newGate()
	f.st.touchGate.Store(g)
	done := make(chan Result, 1)
	go func() { done <- f.v.Verify(secret, apikey.EnvUnknown) }()
	select {
	case r := <-done:
		if r.Code != OK {
			t.Fatalf("got %v", r.Code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Verify waited for the last_used_at write")
	}
	g.wait(t)
	f.st.touchGate.Store(nil)
	close(g.release)
	waitFor(t, 2*time.Second, "last_used_at to be recorded", func() bool { return lastUsed().Equal(base) })
	if n := f.st.touches.Load(); n != 1 {
		t.Fatalf("TouchKey calls = %d, want 1", n)
	}
	f.waitCache()

	// 100 more uses within TouchInterval: no more writes.
	for i := 0; i < 100; i++ {
		f.clk.Advance(interval / 200)
		f.expect(secret, apikey.EnvUnknown, OK)
	}
	// Once TouchInterval has passed, one more write; writes are queued in order, so when it
	// has landed any write queued by the 100 uses would have been counted.
	f.clk.Set(base.Add(interval))
	f.expect(secret, apikey.EnvUnknown, OK)
	waitFor(t, 2*time.Second, "the second last_used_at write", func() bool { return lastUsed().Equal(base.Add(interval)) })
	if n := f.st.touches.Load(); n != 2 {
		t.Fatalf("TouchKey calls = %d, want 2 (one per TouchInterval)", n)
	}
	// Refused keys are not touched.
	f.revoke(k)
	f.clk.Advance(2 * interval)
	f.expect(secret, apikey.EnvUnknown, Revoked)
	time.Sleep(20 * time.Millisecond)
	if n := f.st.touches.Load(); n != 2 {
		t.Fatalf("TouchKey calls = %d after a refusal, want 2", n)
	}
}

// ---------------------------------------------------------------------------------------
// 9. Stats and codes.

func TestCodeString(t *testing.T) {
	for c, want := range map[Code]string{
		OK:               "ok",
		InvalidKey:       "invalid_api_key",
		Revoked:          "api_key_revoked",
		Expired:          "api_key_expired",
		WrongEnvironment: "api_key_wrong_environment",
		Unavailable:      "auth_unavailable",
		numCodes:         "unknown",
		Code(200):        "unknown",
	} {
		if got := c.String(); got != want {
			t.Errorf("Code(%d).String() = %q, want %q", c, got, want)
		}
	}
}

func TestStats(t *testing.T) {
	f := newFixture(t, nil, Config{})
	secret, k := f.createKey(apikey.Sandbox, time.Time{})
	expiring, _ := f.createKey(apikey.Sandbox, base.Add(time.Hour))
	unknown, _ := apikey.Generate(apikey.Sandbox)
	s := &f.v.Stats

	check := func(what string, got uint64, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", what, got, want)
		}
	}
	f.expect("nope", apikey.EnvUnknown, InvalidKey)       // no lookup, no cache
	f.expect(secret, apikey.Production, WrongEnvironment) // no lookup, no cache
	f.expect(secret, apikey.EnvUnknown, OK)               // miss, lookup
	f.waitCache()                                         //
	f.expect(secret, apikey.EnvUnknown, OK)               // hit
	f.expect(secret, apikey.Sandbox, OK)                  // hit
	f.expect(unknown, apikey.EnvUnknown, InvalidKey)      // miss, lookup
	f.expect(unknown, apikey.EnvUnknown, InvalidKey)      // miss, negative hit
	f.expect(expiring, apikey.EnvUnknown, OK)             // miss, lookup
	f.waitCache()                                         //
	f.clk.Advance(time.Hour)                              //
	f.expect(expiring, apikey.EnvUnknown, Expired)        // hit
	f.revoke(k)                                           //
	f.expect(secret, apikey.EnvUnknown, Revoked)          // miss, lookup
	f.st.fail.Store(true)                                 //
	other, _ := apikey.Generate(apikey.Sandbox)           //
	f.expect(other, apikey.EnvUnknown, Unavailable)       // miss, lookup (failed)

	check("Results[OK]", s.Results[OK].Load(), 4)
	check("Results[InvalidKey]", s.Results[InvalidKey].Load(), 3)
	check("Results[Revoked]", s.Results[Revoked].Load(), 1)
	check("Results[Expired]", s.Results[Expired].Load(), 1)
	check("Results[WrongEnvironment]", s.Results[WrongEnvironment].Load(), 1)
	check("Results[Unavailable]", s.Results[Unavailable].Load(), 1)
	check("CacheHits", s.CacheHits.Load(), 3)
	check("CacheMisses", s.CacheMisses.Load(), 6)
	check("NegativeHits", s.NegativeHits.Load(), 1)
	check("StoreLookups", s.StoreLookups.Load(), 5)
	f.expectLookups(5)
	var total uint64
	for i := range s.Results {
		total += s.Results[i].Load()
	}
	check("sum of Results", total, 11)
}

// ---------------------------------------------------------------------------------------
// 10. Close.

func TestCloseStopsGoroutines(t *testing.T) {
	s := openFileStore(t)
	createInstances(t, s)
	secret, _ := createKeyIn(t, s, apikey.Hasher{}, apikey.Sandbox, time.Time{})
	runtime.GC()
	baseline := runtime.NumGoroutine()

	var vs []*Verifier
	for i := 0; i < 5; i++ {
		st := &testStore{Store: s}
		v, err := New(st, Config{Size: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		if r := v.Verify(secret, apikey.EnvUnknown); r.Code != OK {
			t.Fatalf("got %v", r.Code)
		}
		vs = append(vs, v)
	}
	if n := runtime.NumGoroutine(); n <= baseline {
		t.Fatalf("goroutines with 5 verifiers open: %d, baseline %d", n, baseline)
	}
	if n := s.Len(); n != 5 {
		t.Fatalf("subscribed watchers = %d, want 5", n)
	}
	for _, v := range vs {
		v.Close()
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("subscribed watchers after Close = %d, want 0", n)
	}
	const tolerance = 1
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline+tolerance {
			t.Logf("goroutines: baseline %d, after Close %d", baseline, n)
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines after Close: %d, baseline %d\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The store's invalidations no longer reach the closed verifiers.
	_, k := createKeyIn(t, s, apikey.Hasher{}, apikey.Sandbox, time.Time{})
	if _, err := s.RevokeKey(context.Background(), k.Instance, k.ID, base); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------------------
// Allocations on the hit path (SPEC §9 item 1: at most 2).

func TestVerifyCacheHitAllocs(t *testing.T) {
	if raceEnabled() {
		t.Skip("the race detector changes allocation counts")
	}
	for _, tc := range []struct {
		name   string
		hasher apikey.Hasher
	}{
		{"sha256", apikey.Hasher{}},
		{"hmac", apikey.NewHasher([]byte("pepper"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Config{Hasher: tc.hasher, Now: time.Now})
			secret, _ := f.createKey(apikey.Production, time.Time{})
			f.warm(secret)
			n := f.st.lookups.Load()
			allocs := testing.AllocsPerRun(10_000, func() {
				if f.v.Verify(secret, apikey.Production).Code != OK {
					panic("not ok")
				}
			})
			f.expectLookups(n)
			t.Logf("allocations per cache hit: %v", allocs)
			if allocs > 2 {
				t.Fatalf("cache hit allocates %v times, want ≤ 2", allocs)
			}
			bad := badChecksum(t, apikey.Production)
			if a := testing.AllocsPerRun(10_000, func() { f.v.Verify(bad, apikey.EnvUnknown) }); a > 0 {
				t.Fatalf("bad checksum allocates %v times, want 0", a)
			}
		})
	}
}

// A retired verifier (its config replaced) stops trusting its cache at once and no longer
// hears invalidations, but keeps answering correctly from the store until it closes.
func TestRetireStopsTrustingTheCache(t *testing.T) {
	f := newFixture(t, nil, Config{})
	secret, k := f.createKey(apikey.Sandbox, time.Time{})
	f.expect(secret, apikey.EnvUnknown, OK)
	f.waitCache()
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(1)

	f.v.Retire(time.Hour)
	if f.real.(*filestore.Store).Len() != 0 {
		t.Fatal("a retired verifier is still subscribed")
	}
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(2) // asked the store, not the cache
	if _, err := f.real.RevokeKey(context.Background(), "acme-sandbox", k.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	f.expect(secret, apikey.EnvUnknown, Revoked)
}
