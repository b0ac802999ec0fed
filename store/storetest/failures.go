package storetest

import (
	"errors"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testFailedCreate(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	before := x.key(in, "before", x.now)

	x.fp.Fail(StepCreateListed)
	k, secret := NewKey(t, in.ID, in.Environment, "doomed", x.now)
	err := x.s.CreateKey(x.ctx, k)
	x.fp.Fail("")
	if x.fp.Seen(StepCreateListed) == 0 {
		t.Fatalf("the store never reached fail point %q", StepCreateListed)
	}
	if err == nil {
		t.Fatalf("CreateKey succeeded although fail point %q failed", StepCreateListed)
	}
	_, err = x.s.LookupHash(x.ctx, apikey.Hasher{}.Sum(secret))
	wantErr(t, "LookupHash of a key whose create failed", err, store.ErrKeyNotFound)
	// At worst it is listed and does not work; the key before it is intact.
	checkKey(t, x.get(in.ID, before.ID), before)
	if l := x.lookup(before.Hash); l.ID != before.ID {
		t.Errorf("earlier key's lookup = %+v", l)
	}

	// The store still works, and a new key created now is usable and listed first.
	after := x.key(in, "after", x.now)
	if l := x.lookup(after.Hash); l.ID != after.ID {
		t.Errorf("LookupHash(after) = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil || len(keys) == 0 || keys[0].ID != after.ID {
		t.Errorf("ListKeys after a failed create = %v, %v; want %s first", ids(keys), err, after.ID)
	}
	for _, lk := range keys {
		if lk.ID == k.ID {
			if _, err := x.s.LookupHash(x.ctx, lk.Hash); !errors.Is(err, store.ErrKeyNotFound) {
				t.Errorf("the failed key is listed and works: %v", err)
			}
		}
	}
}

func testFailedRevoke(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k := x.key(in, "k", x.now)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()

	check := func(when string) (store.Key, store.Lookup) {
		t.Helper()
		got := x.get(in.ID, k.ID)
		l := x.lookup(k.Hash)
		if got.Status(x.now) == store.StatusRevoked && l.RevokedAt.IsZero() {
			t.Errorf("%s: listed revoked (at %v) but the lookup entry still works: %+v", when, got.RevokedAt, l)
		}
		return got, l
	}

	t1 := x.now.Add(time.Minute)
	x.fp.Fail(StepRevokeLookup)
	failed := x.event(store.EventKeyRevoked, in.ID, k.ID, "")
	_, _, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, t1, &failed)
	x.fp.Fail("")
	if x.fp.Seen(StepRevokeLookup) == 0 {
		t.Fatalf("the store never reached fail point %q", StepRevokeLookup)
	}
	if err == nil {
		t.Fatalf("RevokeKey succeeded although fail point %q failed", StepRevokeLookup)
	}
	check("after the failed revoke")
	if evs := x.events(in.ID); len(evs) != 0 {
		t.Errorf("the failed revoke recorded %+v", evs)
	}

	// A retry succeeds and the listed record and lookup entry agree; it records its event.
	t2 := x.now.Add(2 * time.Minute)
	retry := x.event(store.EventKeyRevoked, in.ID, k.ID, "")
	got, changed, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, t2, &retry)
	if err != nil || !changed {
		t.Fatalf("retried RevokeKey = changed %v, %v; want changed", changed, err)
	}
	if evs := x.events(in.ID); len(evs) != 1 || evs[0].ID != retry.ID {
		t.Errorf("events after the retried revoke = %+v, want only %s", evs, retry.ID)
	}
	if got.Status(x.now) != store.StatusRevoked {
		t.Fatalf("retried RevokeKey returned status %s", got.Status(x.now))
	}
	if !rec.Invalidated(k.Hash) {
		t.Errorf("retried RevokeKey returned before the watcher got Invalidate(hash)")
	}
	listed, l := check("after the retried revoke")
	if listed.RevokedAt.IsZero() || !listed.RevokedAt.Equal(l.RevokedAt) || !got.RevokedAt.Equal(l.RevokedAt) {
		t.Errorf("after the retry: returned RevokedAt %v, listed %v, lookup %v; want all equal", got.RevokedAt, listed.RevokedAt, l.RevokedAt)
	}
	if !l.RevokedAt.Equal(ms(t1)) && !l.RevokedAt.Equal(ms(t2)) {
		t.Errorf("RevokedAt %v is neither the failed nor the retried revoke's time", l.RevokedAt)
	}
	// And a third revoke keeps that time.
	again, _, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, x.now.Add(time.Hour), nil)
	if err != nil || !again.RevokedAt.Equal(l.RevokedAt) {
		t.Errorf("third RevokeKey = %v, %v; want RevokedAt %v", again.RevokedAt, err, l.RevokedAt)
	}
}

func testFailedRoll(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	old := x.key(in, "old", x.now)

	x.fp.Fail(StepRollClaimed)
	next, _ := NewKey(t, in.ID, in.Environment, old.Name, x.now)
	ev := x.event(store.EventKeyRolled, in.ID, old.ID, next.ID)
	_, err := x.s.RollKey(x.ctx, in.ID, old.ID, next, x.now.Add(time.Hour), &ev)
	x.fp.Fail("")
	if x.fp.Seen(StepRollClaimed) == 0 {
		t.Fatalf("the store never reached fail point %q", StepRollClaimed)
	}
	if err == nil {
		t.Fatalf("RollKey succeeded although fail point %q failed", StepRollClaimed)
	}
	// The claim is undone: the old key is as it was, works, and can be rolled again; the
	// replacement is nowhere and no event says it was made.
	x.rollLeftNothing(in.ID, old, old, next)
	if l := x.lookup(old.Hash); l.Status(x.now) != store.StatusActive || !l.ExpiresAt.IsZero() {
		t.Errorf("old key's lookup after a failed roll = %+v, want active, never expiring", l)
	}
	if evs := x.events(in.ID); len(evs) != 0 {
		t.Errorf("the failed roll recorded %+v", evs)
	}

	retry, _ := NewKey(t, in.ID, in.Environment, old.Name, x.now)
	ev2 := x.event(store.EventKeyRolled, in.ID, old.ID, retry.ID)
	if _, err := x.s.RollKey(x.ctx, in.ID, old.ID, retry, x.now.Add(time.Hour), &ev2); err != nil {
		t.Fatalf("RollKey after a failed roll: %v", err)
	}
	if l := x.lookup(retry.Hash); l.ID != retry.ID {
		t.Errorf("the retried roll's replacement lookup = %+v", l)
	}
	if evs := x.events(in.ID); len(evs) != 1 || evs[0].ID != ev2.ID {
		t.Errorf("events after the retried roll = %+v, want only %s", evs, ev2.ID)
	}
}
