package verify

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store/filestore"
)

// Close and Retire: what a verifier leaves behind.

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
	n, waiting := 0, true
	defer func() {
		if waiting { // WaitEvery timed out: show who is left
			buf := make([]byte, 1<<20)
			t.Logf("goroutines after Close: %d, baseline %d\n%s", n, baseline, buf[:runtime.Stack(buf, true)])
		}
	}()
	testutil.WaitEvery(t, 5*time.Second, 5*time.Millisecond, "the goroutines to fall back to the baseline after Close", func() bool {
		n = runtime.NumGoroutine()
		return n <= baseline+tolerance
	})
	waiting = false
	t.Logf("goroutines: baseline %d, after Close %d", baseline, n)
	// The store's invalidations no longer reach the closed verifiers.
	_, k := createKeyIn(t, s, apikey.Hasher{}, apikey.Sandbox, time.Time{})
	if _, _, err := s.RevokeKey(context.Background(), k.Instance, k.ID, base, nil); err != nil {
		t.Fatal(err)
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
	if _, _, err := f.real.RevokeKey(context.Background(), "acme-sandbox", k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	f.expect(secret, apikey.EnvUnknown, Revoked)
}
