package verify

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
)

// Revocation in the same process, and the fill/revoke race.

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
			if _, _, err := f.real.RevokeKey(context.Background(), k.Instance, k.ID, f.clk.Now(), nil); err != nil {
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
