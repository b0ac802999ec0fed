package verify

import (
	"context"
	"encoding/hex"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

// Revocation across processes, through Redis.

func TestCrossProcessRevocationRedis(t *testing.T) {
	srv := redistest.Start(t)
	sa, sb := openRedisStore(t, srv), openRedisStore(t, srv)
	fa := newFixture(t, sa, Config{})
	fb := newFixture(t, sb, Config{})
	testutil.WaitFor(t, 10*time.Second, "verifier B healthy", fb.v.Healthy)

	var worst time.Duration
	for i := 0; i < 5; i++ {
		secret, k := fa.createKey(apikey.Production, time.Time{})
		fa.warm(secret)
		fb.warm(secret) // B caches it: its next answers cost no store call

		start := time.Now()
		if _, _, err := sa.RevokeKey(context.Background(), k.Instance, k.ID, fa.clk.Now(), nil); err != nil {
			t.Fatal(err)
		}
		returned := time.Since(start)
		fa.expect(secret, apikey.EnvUnknown, Revoked) // the process that served it: at once
		testutil.WaitEvery(t, time.Second-returned, time.Millisecond, "gateway B to refuse the key (1 s after the revoke at most)", func() bool {
			return fb.v.Verify(secret, apikey.EnvUnknown).Code == Revoked
		})
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
	testutil.WaitFor(t, 10*time.Second, "verifier B healthy", fb.v.Healthy)
	secret, k := fa.createKey(apikey.Sandbox, time.Time{})

	g := newGate()
	fb.st.holdNext.Store(g)
	old := make(chan Result, 1)
	go func() { old <- fb.v.Verify(secret, apikey.EnvUnknown) }()
	g.wait(t)
	gen := fb.v.gen.Load()
	if _, _, err := sa.RevokeKey(context.Background(), k.Instance, k.ID, fa.clk.Now(), nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "B to receive the invalidation", func() bool { return fb.v.gen.Load() != gen })
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
	testutil.WaitFor(t, 10*time.Second, "verifier healthy", f.v.Healthy)
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
