package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testRevoke(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k := x.key(in, "k", x.now)
	other := x.key(in, "other", x.now)
	t1 := x.now.Add(time.Hour + 345678)
	ev := x.event(store.EventKeyRevoked, in.ID, k.ID, "")
	got, changed, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, t1, &ev)
	if err != nil || !changed {
		t.Fatalf("RevokeKey = changed %v, %v; want changed", changed, err)
	}
	want := k
	want.RevokedAt = t1
	checkKey(t, got, want)
	if got.Status(x.now) != store.StatusRevoked {
		t.Errorf("returned status %s, want revoked", got.Status(x.now))
	}
	checkKey(t, x.get(in.ID, k.ID), want)
	l := x.lookup(k.Hash)
	sameTime(t, "Lookup.RevokedAt", l.RevokedAt, t1)
	if l.Status(x.now) != store.StatusRevoked {
		t.Errorf("lookup status %s, want revoked", l.Status(x.now))
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10, Status: store.StatusRevoked, Now: x.now})
	if err != nil || !slices.Equal(ids(keys), []string{k.ID}) {
		t.Errorf("revoked keys listed = %v, %v; want [%s]", ids(keys), err, k.ID)
	}

	if evs := x.events(in.ID); len(evs) != 1 || !reflect.DeepEqual(evs[0], x.stored(ev)) {
		t.Errorf("events after a revoke = %+v, want [%+v]", evs, x.stored(ev))
	}

	// Again, later or earlier: nothing changes, the first RevokedAt is returned, no event
	// is recorded.
	for _, at := range []time.Time{t1.Add(time.Hour), t1.Add(-time.Hour)} {
		ev2 := x.event(store.EventKeyRevoked, in.ID, k.ID, "")
		again, changed, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, at, &ev2)
		if err != nil || changed {
			t.Fatalf("second RevokeKey = changed %v, %v; want unchanged", changed, err)
		}
		checkKey(t, again, want)
		checkKey(t, x.get(in.ID, k.ID), want)
		sameTime(t, "Lookup.RevokedAt after a second revoke", x.lookup(k.Hash).RevokedAt, t1)
	}

	if evs := x.events(in.ID); len(evs) != 1 {
		t.Errorf("repeated revokes recorded events: %+v", evs)
	}

	// The other key is untouched.
	checkKey(t, x.get(in.ID, other.ID), other)
	if l := x.lookup(other.Hash); !l.RevokedAt.IsZero() {
		t.Errorf("other key's lookup revoked: %+v", l)
	}

	_, _, err = x.s.RevokeKey(x.ctx, in.ID, "key_missing", t1, nil)
	wantErr(t, "RevokeKey(unknown id)", err, store.ErrKeyNotFound)
	b := x.instance("b", apikey.Production)
	_, _, err = x.s.RevokeKey(x.ctx, b.ID, other.ID, t1, nil)
	wantErr(t, "RevokeKey(id of another instance)", err, store.ErrKeyNotFound)
	if l := x.lookup(other.Hash); !l.RevokedAt.IsZero() {
		t.Errorf("revoking through another instance revoked the key: %+v", l)
	}
	_, _, err = x.s.RevokeKey(x.ctx, "missing", other.ID, t1, nil)
	wantErr(t, "RevokeKey(missing instance)", err, store.ErrInstanceNotFound)
	// An event for another instance's trail: refused, nothing revoked.
	stray := x.event(store.EventKeyRevoked, b.ID, other.ID, "")
	_, _, err = x.s.RevokeKey(x.ctx, in.ID, other.ID, t1, &stray)
	wantErr(t, "RevokeKey with another instance's event", err, store.ErrWrongInstance)
	checkKey(t, x.get(in.ID, other.ID), other)
	if evs := x.events(b.ID); len(evs) != 0 {
		t.Errorf("a refused revoke recorded %+v", evs)
	}
}

func testExpire(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k := x.key(in, "k", x.now)
	steps := []struct {
		at, want time.Time
	}{
		{x.now.Add(10*time.Hour + 111), x.now.Add(10 * time.Hour)}, // never → 10 h
		{x.now.Add(20 * time.Hour), x.now.Add(10 * time.Hour)},     // later: ignored
		{x.now.Add(5 * time.Hour), x.now.Add(5 * time.Hour)},       // earlier: taken
		{x.now.Add(5 * time.Hour), x.now.Add(5 * time.Hour)},       // the same: unchanged
		{x.now.Add(-time.Hour), x.now.Add(-time.Hour)},             // into the past: expired
	}
	for i, st := range steps {
		got, err := x.s.ExpireKey(x.ctx, in.ID, k.ID, st.at)
		if err != nil {
			t.Fatalf("ExpireKey #%d: %v", i, err)
		}
		want := k
		want.ExpiresAt = st.want
		checkKey(t, got, want)
		checkKey(t, x.get(in.ID, k.ID), want)
		sameTime(t, fmt.Sprintf("Lookup.ExpiresAt after step %d", i), x.lookup(k.Hash).ExpiresAt, st.want)
	}
	if st := x.get(in.ID, k.ID).Status(x.now); st != store.StatusExpired {
		t.Errorf("status %s, want expired", st)
	}
	if st := x.lookup(k.Hash).Status(x.now); st != store.StatusExpired {
		t.Errorf("lookup status %s, want expired", st)
	}

	// A zero time would mean "never": refused, the expiry unchanged.
	if _, err := x.s.ExpireKey(x.ctx, in.ID, k.ID, time.Time{}); !errors.Is(err, store.ErrNoExpiry) {
		t.Errorf("ExpireKey(zero time) = %v, want ErrNoExpiry", err)
	}
	sameTime(t, "ExpiresAt after ExpireKey(zero)", x.get(in.ID, k.ID).ExpiresAt, x.now.Add(-time.Hour))

	// A key created with an expiry is never extended either.
	k2, _ := NewKey(t, in.ID, in.Environment, "k2", x.now)
	k2.ExpiresAt = x.now.Add(time.Hour)
	if err := x.s.CreateKey(x.ctx, k2); err != nil {
		t.Fatal(err)
	}
	got, err := x.s.ExpireKey(x.ctx, in.ID, k2.ID, x.now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "ExpiresAt after a later ExpireKey", got.ExpiresAt, x.now.Add(time.Hour))
	sameTime(t, "Lookup.ExpiresAt after a later ExpireKey", x.lookup(k2.Hash).ExpiresAt, x.now.Add(time.Hour))

	_, err = x.s.ExpireKey(x.ctx, in.ID, "key_missing", x.now)
	wantErr(t, "ExpireKey(unknown id)", err, store.ErrKeyNotFound)
	_, err = x.s.ExpireKey(x.ctx, "missing", k2.ID, x.now)
	wantErr(t, "ExpireKey(missing instance)", err, store.ErrInstanceNotFound)
}
