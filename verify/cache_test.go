package verify

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

// Store calls: hits, bad checksums, the negative cache, singleflight.

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
	testutil.WaitFor(t, 10*time.Second, "50 goroutines in singleflight.Do", func() bool {
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
	testutil.WaitFor(t, 10*time.Second, "20 goroutines in singleflight.Do", func() bool {
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

// A positive entry serves for TTL after its fill, then the key is looked up again: the TTL is
// counted on the verifier's clock, on every hit.
func TestPositiveEntryGoesStaleAfterTTL(t *testing.T) {
	const ttl = time.Minute
	f := newFixture(t, nil, Config{TTL: ttl})
	secret, _ := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(secret)
	n := f.st.lookups.Load()
	f.clk.Advance(ttl - time.Millisecond)
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(n) // still a hit
	f.clk.Advance(time.Millisecond)
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(n + 1) // stale: looked up and filled again
	f.expect(secret, apikey.EnvUnknown, OK)
	f.expectLookups(n + 1)
}
