package storetest

import (
	"errors"
	"reflect"
	"slices"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testRoll(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()

	old := x.key(in, "old", x.now)
	next, nextSecret := NewKey(t, in.ID, in.Environment, old.Name, x.now.Add(time.Second))
	grace := x.now.Add(time.Hour + 999999)
	ev := x.event(store.EventKeyRolled, in.ID, old.ID, next.ID)
	got, err := x.s.RollKey(x.ctx, in.ID, old.ID, next, grace, &ev)
	if err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	if !rec.Invalidated(old.Hash) {
		t.Errorf("RollKey returned before the old key's hash was invalidated")
	}
	wantOld := old
	wantOld.ExpiresAt = grace
	wantOld.ReplacedBy = next.ID
	checkKey(t, got, wantOld)
	checkKey(t, x.get(in.ID, old.ID), wantOld)
	if got.ReplacedBy != next.ID || x.get(in.ID, old.ID).ReplacedBy != next.ID {
		t.Errorf("old key's ReplacedBy = %q (returned) / %q (stored), want %s", got.ReplacedBy, x.get(in.ID, old.ID).ReplacedBy, next.ID)
	}
	sameTime(t, "old Lookup.ExpiresAt", x.lookup(old.Hash).ExpiresAt, grace)
	checkKey(t, x.get(in.ID, next.ID), next)
	if r := x.get(in.ID, next.ID).ReplacedBy; r != "" {
		t.Errorf("the replacement's ReplacedBy = %q, want none", r)
	}
	if l := x.lookup(apikey.Hasher{}.Sum(nextSecret)); l.ID != next.ID || l.Status(x.now) != store.StatusActive {
		t.Errorf("new key lookup = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil || !slices.Equal(ids(keys), []string{next.ID, old.ID}) {
		t.Errorf("after roll, list = %v, %v; want [new old]", ids(keys), err)
	}
	if evs := x.events(in.ID); len(evs) != 1 || !reflect.DeepEqual(evs[0], x.stored(ev)) {
		t.Errorf("events after a roll = %+v, want [%+v]", evs, x.stored(ev))
	}

	// Rolled once, never again: refused with the old key as it is, nothing written.
	again, _ := NewKey(t, in.ID, in.Environment, "again", x.now.Add(2*time.Second))
	ev2 := x.event(store.EventKeyRolled, in.ID, old.ID, again.ID)
	got, err = x.s.RollKey(x.ctx, in.ID, old.ID, again, x.now.Add(2*time.Second), &ev2)
	wantErr(t, "RollKey of a rolled key", err, store.ErrAlreadyRolled)
	if got.ID != old.ID || got.ReplacedBy != next.ID {
		t.Errorf("refused RollKey returned %s replaced by %q, want %s replaced by %s", got.ID, got.ReplacedBy, old.ID, next.ID)
	}
	x.rollLeftNothing(in.ID, old, wantOld, again)
	if n := len(x.events(in.ID)); n != 1 {
		t.Errorf("a refused roll recorded an event: %d events", n)
	}

	// An old key that already expires earlier keeps its expiry.
	soon, _ := NewKey(t, in.ID, in.Environment, "soon", x.now)
	soon.ExpiresAt = x.now.Add(10 * time.Minute)
	if err := x.s.CreateKey(x.ctx, soon); err != nil {
		t.Fatal(err)
	}
	next2, _ := NewKey(t, in.ID, in.Environment, "soon", x.now)
	got, err = x.s.RollKey(x.ctx, in.ID, soon.ID, next2, x.now.Add(time.Hour), nil)
	if err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	sameTime(t, "ExpiresAt of an old key expiring before the grace", got.ExpiresAt, soon.ExpiresAt)
	sameTime(t, "Lookup.ExpiresAt of an old key expiring before the grace", x.lookup(soon.Hash).ExpiresAt, soon.ExpiresAt)

	// Grace 0: the old key is expired at once.
	next3, _ := NewKey(t, in.ID, in.Environment, "again", x.now)
	got, err = x.s.RollKey(x.ctx, in.ID, next.ID, next3, x.now, nil)
	if err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	if got.Status(x.now) != store.StatusExpired || x.lookup(next.Hash).Status(x.now) != store.StatusExpired {
		t.Errorf("old key after a roll with no grace: %s / lookup %s, want expired", got.Status(x.now), x.lookup(next.Hash).Status(x.now))
	}

	// Into another instance: refused, nothing created.
	b := x.instance("b", apikey.Production)
	stray, _ := NewKey(t, b.ID, b.Environment, "stray", x.now)
	_, err = x.s.RollKey(x.ctx, in.ID, next3.ID, stray, x.now, nil)
	wantErr(t, "RollKey into another instance", err, store.ErrWrongInstance)
	if _, err := x.s.LookupHash(x.ctx, stray.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("refused roll created the new key: %v", err)
	}
	unknown, _ := NewKey(t, in.ID, in.Environment, "x", x.now)
	_, err = x.s.RollKey(x.ctx, in.ID, "key_missing", unknown, x.now, nil)
	wantErr(t, "RollKey(unknown id)", err, store.ErrKeyNotFound)
	ghost, _ := NewKey(t, "ghost", in.Environment, "x", x.now)
	_, err = x.s.RollKey(x.ctx, "ghost", next3.ID, ghost, x.now, nil)
	wantErr(t, "RollKey(missing instance)", err, store.ErrInstanceNotFound)
}

// Only an active key rolls: a revoked or an expired one is refused, with the key as it is,
// and nothing is written.
func testRollRefusesInactive(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	revoked := x.key(in, "revoked", x.now)
	wantRevoked, _, err := x.s.RevokeKey(x.ctx, in.ID, revoked.ID, x.now, nil)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := NewKey(t, in.ID, in.Environment, "expired", x.now.Add(-time.Hour))
	expired.ExpiresAt = x.now // not after the roll's time: expired
	if err := x.s.CreateKey(x.ctx, expired); err != nil {
		t.Fatal(err)
	}
	for _, old := range []store.Key{wantRevoked, expired} {
		next, _ := NewKey(t, in.ID, in.Environment, old.Name, x.now)
		ev := x.event(store.EventKeyRolled, in.ID, old.ID, next.ID)
		got, err := x.s.RollKey(x.ctx, in.ID, old.ID, next, x.now.Add(time.Hour), &ev)
		wantErr(t, "RollKey of a "+old.Name+" key", err, store.ErrNotActive)
		if errors.Is(err, store.ErrNotActive) {
			checkKey(t, got, old)
		}
		x.rollLeftNothing(in.ID, old, old, next)
	}
	if n := len(x.events(in.ID)); n != 0 {
		t.Errorf("refused rolls recorded %d events", n)
	}
}

// rollLeftNothing checks that a refused or failed roll of old into next left old as want
// and next nowhere: not listed, not found by hash.
func (x *suite) rollLeftNothing(instance string, old, want, next store.Key) {
	x.t.Helper()
	got := x.get(instance, old.ID)
	checkKey(x.t, got, want)
	if got.ReplacedBy != want.ReplacedBy {
		x.t.Errorf("old key's ReplacedBy = %q, want %q", got.ReplacedBy, want.ReplacedBy)
	}
	if _, err := x.s.LookupHash(x.ctx, next.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		x.t.Errorf("the replacement of a roll that did not happen looks up: %v", err)
	}
	if _, err := x.s.Key(x.ctx, instance, next.ID); !errors.Is(err, store.ErrKeyNotFound) {
		x.t.Errorf("the replacement of a roll that did not happen is listed: %v", err)
	}
}
