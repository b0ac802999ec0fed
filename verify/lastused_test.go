package verify

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

// last_used_at: throttled writes that never hold up a request.

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

	// The write is off the request path: Verify answers while TouchKeys is held.
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
	testutil.WaitFor(t, 2*time.Second, "last_used_at to be recorded", func() bool { return lastUsed().Equal(base) })
	if n := f.st.touches.Load(); n != 1 {
		t.Fatalf("last_used_at writes = %d, want 1", n)
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
	testutil.WaitFor(t, 2*time.Second, "the second last_used_at write", func() bool { return lastUsed().Equal(base.Add(interval)) })
	if n := f.st.touches.Load(); n != 2 {
		t.Fatalf("last_used_at writes = %d, want 2 (one per TouchInterval)", n)
	}
	// Refused keys are not touched.
	f.revoke(k)
	f.clk.Advance(2 * interval)
	f.expect(secret, apikey.EnvUnknown, Revoked)
	time.Sleep(20 * time.Millisecond)
	if n := f.st.touches.Load(); n != 2 {
		t.Fatalf("last_used_at writes = %d after a refusal, want 2", n)
	}
}

// Many keys used at once are recorded in batches: the uses queued while a write is under way
// go to the store together, in calls of at most maxTouchBatch keys, and every key's last use
// lands.
func TestLastUsedAtBatched(t *testing.T) {
	run := func(t *testing.T, s store.Store) {
		f := newFixture(t, s, Config{})
		const n = maxTouchBatch + 44 // queued behind the held write: two batches, one full
		first, k0 := f.createKey(apikey.Sandbox, time.Time{})
		secrets := make([]string, n)
		keys := make([]store.Key, n)
		for i := range n {
			env := apikey.Sandbox
			if i%2 == 1 {
				env = apikey.Production // keys of two instances in one batch
			}
			secrets[i], keys[i] = f.createKey(env, time.Time{})
		}

		// The first use's write is held; meanwhile the others are used, each at a time of its
		// own, and queue up.
		g := newGate()
		f.st.touchGate.Store(g)
		f.expect(first, apikey.EnvUnknown, OK)
		g.wait(t)
		used := make([]time.Time, n)
		for i, secret := range secrets {
			f.clk.Advance(time.Millisecond)
			used[i] = f.clk.Now()
			f.expect(secret, apikey.EnvUnknown, OK)
		}
		f.st.touchGate.Store(nil)
		close(g.release)

		testutil.WaitFor(t, 5*time.Second, "every use to be written", func() bool { return f.st.touches.Load() == n+1 })
		// One call for the held use, then the queued ones in full batches and a last, partial one.
		if calls, want := f.st.touchCalls.Load(), int64(1+(n+maxTouchBatch-1)/maxTouchBatch); calls != want {
			t.Errorf("TouchKeys calls = %d for %d keys, want %d", calls, n+1, want)
		}
		if m := f.st.maxBatch.Load(); m != maxTouchBatch {
			t.Errorf("largest batch = %d keys, want %d", m, maxTouchBatch)
		}
		ctx := context.Background()
		check := func(k store.Key, want time.Time) {
			t.Helper()
			got, err := f.real.Key(ctx, k.Instance, k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.LastUsedAt.Equal(want) {
				t.Errorf("key %s: last_used_at = %v, want %v", k.ID, got.LastUsedAt, want)
			}
		}
		check(k0, base)
		for i, k := range keys {
			check(k, used[i])
		}
	}
	t.Run("file", func(t *testing.T) { run(t, nil) })
	t.Run("redis", func(t *testing.T) { run(t, openRedisStore(t, redistest.Start(t))) })
}

// Keys seen one after another, as cache misses come, share one write: a batch gathers the
// uses that come within touchGather of its first.
func TestLastUsedAtGathered(t *testing.T) {
	f := newFixture(t, nil, Config{})
	const n = 10
	secrets := make([]string, n)
	for i := range n {
		secrets[i], _ = f.createKey(apikey.Sandbox, time.Time{})
	}
	start := time.Now()
	for _, secret := range secrets {
		f.expect(secret, apikey.EnvUnknown, OK)
		time.Sleep(time.Millisecond) // each use alone in the queue when it comes
	}
	spread := time.Since(start)
	testutil.WaitFor(t, 5*time.Second, "every use to be written", func() bool { return f.st.touches.Load() == n })
	if calls := f.st.touchCalls.Load(); spread < touchGather && calls != 1 {
		t.Errorf("TouchKeys calls = %d for %d uses within %v, want 1", calls, n, spread)
	} else if calls > 2 {
		t.Errorf("TouchKeys calls = %d for %d uses within %v, want at most 2", calls, n, spread)
	}
}
