package storetest

import (
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testCreateAndGet(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k, secret := NewKey(t, in.ID, in.Environment, "Deploy bot ✓", x.now)
	k.ExpiresAt = x.now.Add(30*24*time.Hour + 987654321)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	got := x.get(in.ID, k.ID)
	checkKey(t, got, k)
	if got.Prefix != secret[:apikey.DisplayPrefixLen] {
		t.Errorf("Prefix = %q", got.Prefix)
	}
	if st := got.Status(x.now); st != store.StatusActive {
		t.Errorf("status = %s, want active", st)
	}

	// A key that never expires keeps a zero ExpiresAt; a sandbox key keeps its environment.
	sb := x.instance("acme-sandbox", apikey.Sandbox)
	k2, _ := NewKey(t, sb.ID, sb.Environment, "n", x.now.Add(time.Millisecond))
	if err := x.s.CreateKey(x.ctx, k2); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	checkKey(t, x.get(sb.ID, k2.ID), k2)
}

func testLookupHash(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k, secret := NewKey(t, in.ID, in.Environment, "k", x.now)
	k.ExpiresAt = x.now.Add(48*time.Hour + 1234567)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	l := x.lookup(apikey.Hasher{}.Sum(secret))
	if l.ID != k.ID || l.Instance != in.ID || l.Environment != apikey.Sandbox {
		t.Errorf("LookupHash = %+v, want id %s instance %s sandbox", l, k.ID, in.ID)
	}
	sameTime(t, "Lookup.ExpiresAt", l.ExpiresAt, k.ExpiresAt)
	sameTime(t, "Lookup.RevokedAt", l.RevokedAt, time.Time{})
	if st := l.Status(x.now); st != store.StatusActive {
		t.Errorf("lookup status = %s, want active", st)
	}

	never := x.key(in, "never", x.now)
	l = x.lookup(never.Hash)
	if l.ID != never.ID || !l.ExpiresAt.IsZero() || !l.RevokedAt.IsZero() {
		t.Errorf("LookupHash(never) = %+v", l)
	}

	other, _ := apikey.Generate(apikey.Sandbox)
	_, err := x.s.LookupHash(x.ctx, apikey.Hasher{}.Sum(other))
	wantErr(t, "LookupHash(unknown)", err, store.ErrKeyNotFound)
	_, err = x.s.LookupHash(x.ctx, apikey.Hash{})
	wantErr(t, "LookupHash(zero hash)", err, store.ErrKeyNotFound)
}

func testNotFound(x *suite) {
	t := x.t
	a := x.instance("a", apikey.Sandbox)
	b := x.instance("b", apikey.Sandbox)
	ka := x.key(a, "ka", x.now)
	_, err := x.s.Key(x.ctx, a.ID, "key_missing")
	wantErr(t, "Key(unknown id)", err, store.ErrKeyNotFound)
	_, err = x.s.Key(x.ctx, b.ID, ka.ID)
	wantErr(t, "Key(id of another instance)", err, store.ErrKeyNotFound)
	_, err = x.s.Key(x.ctx, "missing", ka.ID)
	wantErr(t, "Key(missing instance)", err, store.ErrInstanceNotFound)
}

func testCreateMissingInstance(x *suite) {
	t := x.t
	k, secret := NewKey(t, "ghost", apikey.Sandbox, "k", x.now)
	wantErr(t, "CreateKey in a missing instance", x.s.CreateKey(x.ctx, k), store.ErrInstanceNotFound)
	_, err := x.s.LookupHash(x.ctx, apikey.Hasher{}.Sum(secret))
	wantErr(t, "LookupHash after a refused create", err, store.ErrKeyNotFound)
	if ins, err := x.s.Instances(x.ctx); err != nil || len(ins) != 0 {
		t.Errorf("Instances after a refused create = %v, %v; want none", ins, err)
	}
	_, err = x.s.Instance(x.ctx, "ghost")
	wantErr(t, "Instance(ghost)", err, store.ErrInstanceNotFound)
	_, _, err = x.s.ListKeys(x.ctx, "ghost", store.ListOptions{Limit: 10})
	wantErr(t, "ListKeys(ghost)", err, store.ErrInstanceNotFound)

	// Once the instance exists, it holds nothing from the refused create.
	x.instance("ghost", apikey.Sandbox)
	keys, more, err := x.s.ListKeys(x.ctx, "ghost", store.ListOptions{Limit: 10})
	if err != nil || len(keys) != 0 || more {
		t.Errorf("ListKeys(ghost) = %v, %v, %v; want empty", ids(keys), more, err)
	}
	_, err = x.s.Key(x.ctx, "ghost", k.ID)
	wantErr(t, "Key of the refused create", err, store.ErrKeyNotFound)
	// And the same key can now be created.
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatalf("CreateKey once the instance exists: %v", err)
	}
	if l := x.lookup(k.Hash); l.ID != k.ID {
		t.Errorf("LookupHash = %+v", l)
	}
}

func testTouch(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k := x.key(in, "k", x.now)
	k.ExpiresAt = time.Time{}
	t2 := x.now.Add(2*time.Minute + 777777)
	for i, st := range []struct{ at, want time.Time }{
		{t2, t2},
		{x.now.Add(time.Minute), t2}, // earlier: never moves back
		{t2, t2},                     // same
		{t2.Add(time.Hour), t2.Add(time.Hour)},
	} {
		if err := x.s.TouchKey(x.ctx, in.ID, k.ID, st.at); err != nil {
			t.Fatalf("TouchKey #%d: %v", i, err)
		}
		want := k
		want.LastUsedAt = st.want
		checkKey(t, x.get(in.ID, k.ID), want)
	}
	// Touching changes nothing else: still active, same lookup.
	if l := x.lookup(k.Hash); l.ID != k.ID || !l.RevokedAt.IsZero() || !l.ExpiresAt.IsZero() {
		t.Errorf("lookup after touch = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 1})
	if err != nil || len(keys) != 1 {
		t.Fatalf("ListKeys: %v %v", ids(keys), err)
	}
	sameTime(t, "listed LastUsedAt", keys[0].LastUsedAt, t2.Add(time.Hour))
}

func testTouchKeys(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	b := x.instance("other", apikey.Production)
	a1, a2, a3 := x.key(a, "a1", x.now), x.key(a, "a2", x.now), x.key(a, "untouched", x.now)
	b1 := x.key(b, "b1", x.now)
	t1 := x.now.Add(time.Minute + 111111)
	t2 := x.now.Add(2*time.Minute + 222222)
	if err := x.s.TouchKey(x.ctx, a.ID, a2.ID, t2); err != nil {
		t.Fatalf("TouchKey: %v", err)
	}

	// Empty batches do nothing and are no error.
	if err := x.s.TouchKeys(x.ctx, nil); err != nil {
		t.Errorf("TouchKeys(nil): %v", err)
	}
	if err := x.s.TouchKeys(x.ctx, []store.Touch{}); err != nil {
		t.Errorf("TouchKeys(empty): %v", err)
	}

	// One batch: keys of two instances, an unknown key and a key of a missing instance
	// (ignored), a use earlier than the one recorded (a2: kept at t2), and two uses of one key
	// with the later first (a1: t1 stays).
	err := x.s.TouchKeys(x.ctx, []store.Touch{
		{Instance: a.ID, ID: a1.ID, At: t1},
		{Instance: a.ID, ID: "key_nosuchkeyxxxxxxxxxxxxx", At: t1},
		{Instance: a.ID, ID: a2.ID, At: t1},
		{Instance: b.ID, ID: b1.ID, At: t2},
		{Instance: "ghost", ID: a1.ID, At: t2},
		{Instance: b.ID, ID: a1.ID, At: t2}, // a1's id in the wrong instance: no such key
		{Instance: a.ID, ID: a1.ID, At: x.now},
	})
	if err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	for _, c := range []struct {
		k    store.Key
		want time.Time
	}{{a1, t1}, {a2, t2}, {a3, time.Time{}}, {b1, t2}} {
		want := c.k
		want.LastUsedAt = c.want
		checkKey(t, x.get(c.k.Instance, c.k.ID), want)
	}
	_, err = x.s.Key(x.ctx, a.ID, "key_nosuchkeyxxxxxxxxxxxxx")
	wantErr(t, "Key(unknown key after TouchKeys)", err, store.ErrKeyNotFound)
	_, err = x.s.Key(x.ctx, b.ID, a1.ID)
	wantErr(t, "Key(id of another instance after TouchKeys)", err, store.ErrKeyNotFound)
	_, err = x.s.Instance(x.ctx, "ghost")
	wantErr(t, "Instance(ghost) after TouchKeys", err, store.ErrInstanceNotFound)

	// A later batch moves them on; an unknown key alone is no error either.
	t3 := t2.Add(time.Hour)
	if err := x.s.TouchKeys(x.ctx, []store.Touch{{Instance: a.ID, ID: a1.ID, At: t3}, {Instance: b.ID, ID: b1.ID, At: t3}}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	sameTime(t, "a1 LastUsedAt", x.get(a.ID, a1.ID).LastUsedAt, t3)
	sameTime(t, "b1 LastUsedAt", x.get(b.ID, b1.ID).LastUsedAt, t3)
	if err := x.s.TouchKeys(x.ctx, []store.Touch{{Instance: a.ID, ID: "key_nosuchkeyxxxxxxxxxxxxx", At: t3}}); err != nil {
		t.Errorf("TouchKeys(unknown key only): %v", err)
	}
	// Touching changes nothing else: the keys still look up as before.
	if l := x.lookup(b1.Hash); l.ID != b1.ID || l.Instance != b.ID || !l.RevokedAt.IsZero() {
		t.Errorf("lookup after TouchKeys = %+v", l)
	}
}
