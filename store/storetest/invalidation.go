package storetest

import (
	"fmt"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

func testInvalidations(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	var ks []store.Key
	for i := range 6 {
		ks = append(ks, x.key(in, fmt.Sprintf("k%d", i), x.now))
	}
	rec := &Recorder{}
	unsubscribe := x.s.Subscribe(rec)
	testutil.WaitFor(t, 5*time.Second, "the watcher to be told SetHealthy(true)", rec.Healthy)

	if _, _, err := x.s.RevokeKey(x.ctx, in.ID, ks[0].ID, x.now, nil); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[0].Hash) {
		t.Errorf("RevokeKey returned before the watcher got Invalidate(hash)")
	}
	if _, err := x.s.ExpireKey(x.ctx, in.ID, ks[1].ID, x.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[1].Hash) {
		t.Errorf("ExpireKey returned before the watcher got Invalidate(hash)")
	}
	if _, err := x.s.ExpireKey(x.ctx, in.ID, ks[2].ID, x.now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[2].Hash) {
		t.Errorf("ExpireKey into the past returned before the watcher got Invalidate(hash)")
	}
	// Creating and touching keys refuse nothing; they need not invalidate, and never the
	// untouched keys.
	if err := x.s.TouchKey(x.ctx, in.ID, ks[5].ID, x.now); err != nil {
		t.Fatal(err)
	}
	for _, h := range rec.Invalidations() {
		if h == ks[3].Hash || h == ks[4].Hash {
			t.Errorf("invalidation of a key nobody changed")
		}
	}

	// Several watchers all hear it.
	rec2 := &Recorder{}
	unsubscribe2 := x.s.Subscribe(rec2)
	defer unsubscribe2()
	if _, _, err := x.s.RevokeKey(x.ctx, in.ID, ks[3].ID, x.now, nil); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[3].Hash) || !rec2.Invalidated(ks[3].Hash) {
		t.Errorf("RevokeKey returned before every watcher got Invalidate(hash)")
	}

	// After unsubscribe: nothing more, even what the store's own channel echoes later.
	unsubscribe()
	unsubscribe() // harmless twice
	time.Sleep(100 * time.Millisecond)
	before := rec.Events()
	if _, _, err := x.s.RevokeKey(x.ctx, in.ID, ks[4].ID, x.now, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := x.s.ExpireKey(x.ctx, in.ID, ks[5].ID, x.now); err != nil {
		t.Fatal(err)
	}
	if !rec2.Invalidated(ks[4].Hash) || !rec2.Invalidated(ks[5].Hash) {
		t.Errorf("the still-subscribed watcher missed invalidations")
	}
	time.Sleep(300 * time.Millisecond)
	if rec.Invalidated(ks[4].Hash) || rec.Invalidated(ks[5].Hash) || rec.Events() != before {
		t.Errorf("an unsubscribed watcher still received events (%d before, %d after)", before, rec.Events())
	}
}
