package verify

import (
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
)

// Health: when the cache is trusted, and the store going away.

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

		// The channel comes back: hits from the cache again (the entry went stale in the
		// hour the clock moved: one lookup refills it).
		f.v.SetHealthy(true)
		f.expect(cached, apikey.EnvUnknown, OK)
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
		f.clk.Advance(4 * time.Minute) // past MaxStale, within the cache TTL (5m)
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
	testutil.WaitFor(t, 10*time.Second, "verifier healthy", f.v.Healthy)
	cached, _ := f.createKey(apikey.Sandbox, time.Time{})
	uncached, _ := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(cached)

	srv.Kill()
	testutil.WaitFor(t, 10*time.Second, "the verifier to hear the channel dropped", func() bool { return !f.v.Healthy() })
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
	testutil.WaitFor(t, 10*time.Second, "the verifier to recover", f.v.Healthy)
	f.expect(cached, apikey.EnvUnknown, OK)
	// go-redis keeps refusing new connections for a moment after failed dials (its pool
	// retries the dial in the background): the store answers again within seconds.
	testutil.WaitFor(t, 10*time.Second, "the uncached key to be answered by the store", func() bool {
		return f.v.Verify(uncached, apikey.EnvUnknown).Code == OK
	})
}
