package storetest

import (
	"errors"
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
	got, err := store.Roll(x.ctx, x.s, in.ID, old.ID, next, grace)
	if err != nil {
		t.Fatalf("Roll: %v", err)
	}
	if !rec.Invalidated(old.Hash) {
		t.Errorf("Roll returned before the old key's hash was invalidated")
	}
	wantOld := old
	wantOld.ExpiresAt = grace
	checkKey(t, got, wantOld)
	checkKey(t, x.get(in.ID, old.ID), wantOld)
	sameTime(t, "old Lookup.ExpiresAt", x.lookup(old.Hash).ExpiresAt, grace)
	checkKey(t, x.get(in.ID, next.ID), next)
	if l := x.lookup(apikey.Hasher{}.Sum(nextSecret)); l.ID != next.ID || l.Status(x.now) != store.StatusActive {
		t.Errorf("new key lookup = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil || !slices.Equal(ids(keys), []string{next.ID, old.ID}) {
		t.Errorf("after roll, list = %v, %v; want [new old]", ids(keys), err)
	}

	// An old key that already expires earlier keeps its expiry.
	soon, _ := NewKey(t, in.ID, in.Environment, "soon", x.now)
	soon.ExpiresAt = x.now.Add(10 * time.Minute)
	if err := x.s.CreateKey(x.ctx, soon); err != nil {
		t.Fatal(err)
	}
	next2, _ := NewKey(t, in.ID, in.Environment, "soon", x.now)
	got, err = store.Roll(x.ctx, x.s, in.ID, soon.ID, next2, x.now.Add(time.Hour))
	if err != nil {
		t.Fatalf("Roll: %v", err)
	}
	sameTime(t, "ExpiresAt of an old key expiring before the grace", got.ExpiresAt, soon.ExpiresAt)
	sameTime(t, "Lookup.ExpiresAt of an old key expiring before the grace", x.lookup(soon.Hash).ExpiresAt, soon.ExpiresAt)

	// Grace 0: the old key is expired at once.
	next3, _ := NewKey(t, in.ID, in.Environment, "again", x.now)
	got, err = store.Roll(x.ctx, x.s, in.ID, next.ID, next3, x.now)
	if err != nil {
		t.Fatalf("Roll: %v", err)
	}
	if got.Status(x.now) != store.StatusExpired || x.lookup(next.Hash).Status(x.now) != store.StatusExpired {
		t.Errorf("old key after a roll with no grace: %s / lookup %s, want expired", got.Status(x.now), x.lookup(next.Hash).Status(x.now))
	}

	// Into another instance: refused, nothing created.
	b := x.instance("b", apikey.Production)
	stray, _ := NewKey(t, b.ID, b.Environment, "stray", x.now)
	if _, err := store.Roll(x.ctx, x.s, in.ID, next3.ID, stray, x.now); err == nil {
		t.Errorf("Roll into another instance succeeded")
	}
	if _, err := x.s.LookupHash(x.ctx, stray.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("refused roll created the new key: %v", err)
	}
	unknown, _ := NewKey(t, in.ID, in.Environment, "x", x.now)
	_, err = store.Roll(x.ctx, x.s, in.ID, "key_missing", unknown, x.now)
	wantErr(t, "Roll(unknown id)", err, store.ErrKeyNotFound)
}
