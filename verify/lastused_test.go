package verify

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
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
	testutil.WaitFor(t, 2*time.Second, "last_used_at to be recorded", func() bool { return lastUsed().Equal(base) })
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
	testutil.WaitFor(t, 2*time.Second, "the second last_used_at write", func() bool { return lastUsed().Equal(base.Add(interval)) })
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
