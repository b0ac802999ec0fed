package storetest

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Restricted keys: scopes, allowed addresses and metadata, and UpdateKey.

// restricted sets every restriction on k: prefixes and single addresses of both families,
// and metadata with unicode values.
func restricted(k store.Key) store.Key {
	k.Scopes = []string{"charges:read", "refunds:*", "a"}
	k.AllowedIPs = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("0.0.0.0/0"),
	}
	k.Metadata = map[string]string{"team": "paiements ☕", "owner": "日本語のチーム", "empty": "", "Quote": `"x" \ y`}
	return k
}

// restrictionsOf is what a key or lookup carries of the restrictions, for comparisons.
type restrictionsOf struct {
	Scopes     []string
	AllowedIPs []netip.Prefix
	Metadata   map[string]string
}

func ofKey(k store.Key) restrictionsOf { return restrictionsOf{k.Scopes, k.AllowedIPs, k.Metadata} }

func ofLookup(l store.Lookup) restrictionsOf {
	return restrictionsOf{l.Scopes, l.AllowedIPs, l.Metadata}
}

// checkRestrictions compares exactly: a nil list stays nil and a set one keeps its order;
// metadata without values reads as nil.
func checkRestrictions(t interface {
	Helper()
	Errorf(string, ...any)
}, what string, got, want restrictionsOf) {
	t.Helper()
	if len(want.Metadata) == 0 {
		want.Metadata = nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: restrictions = %+v (scopes nil %v, ips nil %v), want %+v (scopes nil %v, ips nil %v)",
			what, got, got.Scopes == nil, got.AllowedIPs == nil, want, want.Scopes == nil, want.AllowedIPs == nil)
	}
}

// checkEverywhere checks the restrictions of key id as Key, ListKeys and LookupHash return them.
func (x *suite) checkEverywhere(what string, k store.Key, want restrictionsOf) {
	x.t.Helper()
	checkRestrictions(x.t, what+": Key", ofKey(x.get(k.Instance, k.ID)), want)
	checkRestrictions(x.t, what+": LookupHash", ofLookup(x.lookup(k.Hash)), want)
	found := false
	for _, l := range x.listAll(k.Instance, 3, "", x.now) {
		if l.ID == k.ID {
			found = true
			checkRestrictions(x.t, what+": ListKeys", ofKey(l), want)
		}
	}
	if !found {
		x.t.Errorf("%s: key %s not listed", what, k.ID)
	}
}

func testRestrictionsRoundTrip(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	plain := x.key(in, "plain", x.now)
	x.checkEverywhere("unrestricted key", plain, restrictionsOf{})

	full, _ := NewKey(t, in.ID, in.Environment, "full", x.now)
	full = restricted(full)
	if err := x.s.CreateKey(x.ctx, full); err != nil {
		t.Fatal(err)
	}
	x.checkEverywhere("restricted key", full, ofKey(full))

	// Each restriction alone; empty metadata is none.
	only := []func(*store.Key){
		func(k *store.Key) { k.Scopes = []string{"charges:write"} },
		func(k *store.Key) { k.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("::1/128")} },
		func(k *store.Key) { k.Metadata = map[string]string{"k": "v"} },
		func(k *store.Key) { k.Metadata = map[string]string{} },
	}
	for i, set := range only {
		k, _ := NewKey(t, in.ID, in.Environment, fmt.Sprintf("only%d", i), x.now)
		set(&k)
		if err := x.s.CreateKey(x.ctx, k); err != nil {
			t.Fatal(err)
		}
		x.checkEverywhere(fmt.Sprintf("key with restriction %d alone", i), k, ofKey(k))
	}
	// What a store returns is the caller's to change: it does not alias the store's state.
	got := x.get(in.ID, full.ID)
	got.Scopes[0], got.AllowedIPs[0], got.Metadata["team"] = "changed", netip.MustParsePrefix("1.2.3.4/32"), "changed"
	x.checkEverywhere("restricted key after its copy was changed", full, ofKey(restricted(full)))
}

func testUpdateKey(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()

	name := "renamed ✓"
	later := x.now.Add(48*time.Hour + 1234567)
	scopes := []string{"charges:read"}
	ips := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::7/128")}
	meta := map[string]string{"team": "ünïcødé"}
	var noScopes []string
	var noIPs []netip.Prefix
	var noMeta map[string]string
	cases := []struct {
		name   string
		start  func(store.Key) store.Key
		u      store.KeyUpdate
		fields []string
	}{
		{"name", nil, store.KeyUpdate{Name: &name}, []string{store.FieldName}},
		{"expiry", nil, store.KeyUpdate{ExpiresAt: &later}, []string{store.FieldExpiresAt}},
		{"scopes", nil, store.KeyUpdate{Scopes: &scopes}, []string{store.FieldScopes}},
		{"allowed_ips", nil, store.KeyUpdate{AllowedIPs: &ips}, []string{store.FieldAllowedIPs}},
		{"metadata", nil, store.KeyUpdate{Metadata: &meta}, []string{store.FieldMetadata}},
		{"all", nil, store.KeyUpdate{Name: &name, ExpiresAt: &later, Scopes: &scopes, AllowedIPs: &ips, Metadata: &meta},
			[]string{store.FieldName, store.FieldExpiresAt, store.FieldScopes, store.FieldAllowedIPs, store.FieldMetadata}},
		// Narrowing a restricted key, and widening it back to unrestricted.
		{"narrow", restricted, store.KeyUpdate{Scopes: &scopes, AllowedIPs: &ips}, []string{store.FieldScopes, store.FieldAllowedIPs}},
		{"widen", restricted, store.KeyUpdate{Scopes: &noScopes, AllowedIPs: &noIPs, Metadata: &noMeta},
			[]string{store.FieldScopes, store.FieldAllowedIPs, store.FieldMetadata}},
		// Set fields that already hold these values change nothing of what they hold.
		{"partly the same", restricted, store.KeyUpdate{Name: &name, Scopes: &[]string{"charges:read", "refunds:*", "a"}}, []string{store.FieldName}},
	}
	for _, tc := range cases {
		k, _ := NewKey(t, in.ID, in.Environment, "k "+tc.name, x.now)
		if tc.start != nil {
			k = tc.start(k)
		}
		if err := x.s.CreateKey(x.ctx, k); err != nil {
			t.Fatal(err)
		}
		want, _ := tc.u.Apply(k)
		ev := x.event(store.EventKeyUpdated, in.ID, k.ID, "")
		before := len(x.events(in.ID))
		got, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, tc.u, &ev)
		if err != nil {
			t.Errorf("UpdateKey(%s): %v", tc.name, err)
			continue
		}
		if !rec.Invalidated(k.Hash) {
			t.Errorf("UpdateKey(%s) returned before the watcher got Invalidate(hash)", tc.name)
		}
		checkKey(t, got, want)
		checkRestrictions(t, "UpdateKey("+tc.name+") returned", ofKey(got), ofKey(want))
		checkKey(t, x.get(in.ID, k.ID), want)
		x.checkEverywhere("after UpdateKey("+tc.name+")", k, ofKey(want))
		sameTime(t, "Lookup.ExpiresAt after UpdateKey("+tc.name+")", x.lookup(k.Hash).ExpiresAt, want.ExpiresAt)
		if !slices.Equal(ev.Fields, tc.fields) {
			t.Errorf("UpdateKey(%s): the event's Fields = %v, want %v", tc.name, ev.Fields, tc.fields)
		}
		evs := x.events(in.ID)
		wantEv := x.stored(ev)
		wantEv.Fields = tc.fields
		if len(evs) != before+1 || !reflect.DeepEqual(evs[0], wantEv) {
			t.Errorf("events after UpdateKey(%s): %d new, newest %+v; want 1, %+v", tc.name, len(evs)-before, evs[0], wantEv)
		}
	}

	// Nothing to change: the key as it is, no event, no invalidation.
	k, _ := NewKey(t, in.ID, in.Environment, "same", x.now)
	k = restricted(k)
	k.ExpiresAt = later
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatal(err)
	}
	same := k.Name
	sameLater := later.Add(123 * time.Microsecond) // the same millisecond
	sameScopes := slices.Clone(k.Scopes)
	sameIPs := slices.Clone(k.AllowedIPs)
	sameMeta := map[string]string{}
	for n, v := range k.Metadata {
		sameMeta[n] = v
	}
	before := len(x.events(in.ID))
	for i, u := range []store.KeyUpdate{
		{},
		{Name: &same, ExpiresAt: &sameLater, Scopes: &sameScopes, AllowedIPs: &sameIPs, Metadata: &sameMeta},
	} {
		ev := x.event(store.EventKeyUpdated, in.ID, k.ID, "")
		got, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, u, &ev)
		if err != nil {
			t.Fatalf("UpdateKey changing nothing #%d: %v", i, err)
		}
		checkKey(t, got, k)
		checkRestrictions(t, fmt.Sprintf("UpdateKey changing nothing #%d", i), ofKey(got), ofKey(k))
		if ev.Fields != nil {
			t.Errorf("UpdateKey changing nothing #%d set the event's Fields to %v", i, ev.Fields)
		}
	}
	if n := len(x.events(in.ID)); n != before {
		t.Errorf("UpdateKey changing nothing recorded %d events", n-before)
	}
	time.Sleep(100 * time.Millisecond) // what the store's channel echoes arrives meanwhile
	if rec.Invalidated(k.Hash) {
		t.Errorf("UpdateKey changing nothing invalidated the key")
	}
	x.checkEverywhere("after UpdateKey changing nothing", k, ofKey(k))

	// Without an event, a change is made all the same.
	if _, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, store.KeyUpdate{Scopes: &scopes}, nil); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(k.Hash) {
		t.Errorf("UpdateKey without an event returned before the watcher got Invalidate(hash)")
	}
	want := k
	want.Scopes = scopes
	x.checkEverywhere("after UpdateKey without an event", k, ofKey(want))
	if n := len(x.events(in.ID)); n != before {
		t.Errorf("UpdateKey without an event recorded %d events", n-before)
	}

	// Refusals.
	_, err := x.s.UpdateKey(x.ctx, in.ID, "key_missing", store.KeyUpdate{Name: &name}, nil)
	wantErr(t, "UpdateKey(unknown id)", err, store.ErrKeyNotFound)
	_, err = x.s.UpdateKey(x.ctx, "ghost", k.ID, store.KeyUpdate{Name: &name}, nil)
	wantErr(t, "UpdateKey(missing instance)", err, store.ErrInstanceNotFound)
	other := x.instance("other", apikey.Sandbox)
	stray := x.event(store.EventKeyUpdated, other.ID, k.ID, "")
	_, err = x.s.UpdateKey(x.ctx, in.ID, k.ID, store.KeyUpdate{Name: &name}, &stray)
	wantErr(t, "UpdateKey with an event of another instance", err, store.ErrWrongInstance)
	if got := x.get(in.ID, k.ID); got.Name != k.Name {
		t.Errorf("refused UpdateKey renamed the key to %q", got.Name)
	}
	if n := len(x.events(in.ID)) + len(x.events(other.ID)); n != before {
		t.Errorf("refused UpdateKeys recorded %d events", n-before)
	}
}

// A revoked key is refused, and nothing is written.
func testUpdateRevoked(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k, _ := NewKey(t, in.ID, in.Environment, "k", x.now)
	k = restricted(k)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, _, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, x.now, nil); err != nil {
		t.Fatal(err)
	}
	beforeKey, beforeLookup, beforeEvents := x.get(in.ID, k.ID), x.lookup(k.Hash), x.events(in.ID)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()
	time.Sleep(100 * time.Millisecond) // the revocation's echo on the store's channel

	name, never, none := "new", time.Time{}, []string(nil)
	ev := x.event(store.EventKeyUpdated, in.ID, k.ID, "")
	_, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, store.KeyUpdate{Name: &name, ExpiresAt: &never, Scopes: &none}, &ev)
	wantErr(t, "UpdateKey of a revoked key", err, store.ErrKeyRevoked)
	if got := x.get(in.ID, k.ID); !reflect.DeepEqual(got, beforeKey) {
		t.Errorf("refused UpdateKey changed the key:\n%+v\nwas\n%+v", got, beforeKey)
	}
	if got := x.lookup(k.Hash); !reflect.DeepEqual(got, beforeLookup) {
		t.Errorf("refused UpdateKey changed the lookup:\n%+v\nwas\n%+v", got, beforeLookup)
	}
	if got := x.events(in.ID); !reflect.DeepEqual(got, beforeEvents) {
		t.Errorf("refused UpdateKey changed the events: %+v, was %+v", got, beforeEvents)
	}
	if ev.Fields != nil {
		t.Errorf("refused UpdateKey set the event's Fields to %v", ev.Fields)
	}
}

// Unlike ExpireKey, UpdateKey moves an expiry later, or to never, and back earlier.
func testUpdateExpiry(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()
	k, _ := NewKey(t, in.ID, in.Environment, "k", x.now)
	k.ExpiresAt = x.now.Add(time.Hour)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatal(err)
	}
	for i, at := range []time.Time{
		x.now.Add(24*time.Hour + 999), // later
		{},                            // never
		x.now.Add(time.Minute),        // earlier again
		x.now.Add(-time.Minute),       // into the past: expired
		x.now.Add(time.Hour),          // and back: an expired key is not refused
	} {
		got, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, store.KeyUpdate{ExpiresAt: &at}, nil)
		if err != nil {
			t.Fatalf("UpdateKey of the expiry #%d: %v", i, err)
		}
		sameTime(t, fmt.Sprintf("ExpiresAt returned #%d", i), got.ExpiresAt, at)
		sameTime(t, fmt.Sprintf("ExpiresAt stored #%d", i), x.get(in.ID, k.ID).ExpiresAt, at)
		sameTime(t, fmt.Sprintf("Lookup.ExpiresAt #%d", i), x.lookup(k.Hash).ExpiresAt, at)
	}
	if st := x.lookup(k.Hash).Status(x.now); st != store.StatusActive {
		t.Errorf("lookup status %s after the expiry moved back to the future, want active", st)
	}
	if !rec.Invalidated(k.Hash) {
		t.Errorf("expiry updates delivered no invalidation")
	}
}

// Concurrent updates of one key: each succeeds and records one event, the last writer wins
// whole (its name goes with its scopes), and the lookup entry agrees with the record.
func testConcurrentUpdates(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k, _ := NewKey(t, in.ID, in.Environment, "k", x.now)
	k = restricted(k)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatal(err)
	}
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, rollers)
	evs := make([]store.Event, rollers)
	for i := range rollers {
		evs[i] = x.event(store.EventKeyUpdated, in.ID, k.ID, "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("n%02d", i)
			scopes := []string{fmt.Sprintf("s%02d", i)}
			ips := []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)}
			<-start
			var got store.Key
			got, errs[i] = x.s.UpdateKey(x.ctx, in.ID, k.ID, store.KeyUpdate{Name: &name, Scopes: &scopes, AllowedIPs: &ips}, &evs[i])
			if errs[i] == nil && (got.Name != name || !slices.Equal(got.Scopes, scopes)) {
				errs[i] = fmt.Errorf("returned %q %v, want %q %v", got.Name, got.Scopes, name, scopes)
			}
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent UpdateKey %d: %v", i, err)
		}
	}
	got := x.get(in.ID, k.ID)
	var i int
	if _, err := fmt.Sscanf(got.Name, "n%02d", &i); err != nil {
		t.Fatalf("after concurrent updates the name is %q", got.Name)
	}
	want := got
	want.Scopes = []string{fmt.Sprintf("s%02d", i)}
	want.AllowedIPs = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 32)}
	want.Metadata = k.Metadata
	x.checkEverywhere("after concurrent updates (the last writer's)", k, ofKey(want))
	updated := eventsOf(x.events(in.ID), store.EventKeyUpdated, k.ID)
	if len(updated) != rollers {
		t.Errorf("concurrent updates recorded %d events, want %d", len(updated), rollers)
	}
	seen := map[string]bool{}
	for _, e := range updated {
		seen[e.ID] = true
		if !slices.Equal(e.Fields, []string{store.FieldName, store.FieldScopes, store.FieldAllowedIPs}) {
			t.Errorf("event %s of a concurrent update lists %v", e.ID, e.Fields)
		}
	}
	for _, e := range evs {
		if !seen[e.ID] {
			t.Errorf("event %s of a concurrent update is missing", e.ID)
		}
	}
	if !rec.Invalidated(k.Hash) {
		t.Errorf("concurrent updates delivered no invalidation")
	}
}

// A roll's replacement carries what the caller set: the admin copies the old key's
// restrictions.
func testRollKeepsRestrictions(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	old, _ := NewKey(t, in.ID, in.Environment, "old", x.now)
	old = restricted(old)
	if err := x.s.CreateKey(x.ctx, old); err != nil {
		t.Fatal(err)
	}
	next, _ := NewKey(t, in.ID, in.Environment, "old", x.now.Add(time.Second))
	next.Scopes, next.AllowedIPs, next.Metadata = old.Scopes, old.AllowedIPs, old.Metadata
	got, err := x.s.RollKey(x.ctx, in.ID, old.ID, next, x.now.Add(time.Hour), nil)
	if err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	checkRestrictions(t, "the rolled key returned", ofKey(got), ofKey(old))
	x.checkEverywhere("the rolled key", old, ofKey(old))
	x.checkEverywhere("the replacement", next, ofKey(old))

	// And an unrestricted replacement of an unrestricted key stays so.
	plain := x.key(in, "plain", x.now)
	next2, _ := NewKey(t, in.ID, in.Environment, "plain", x.now.Add(time.Second))
	if _, err := x.s.RollKey(x.ctx, in.ID, plain.ID, next2, x.now.Add(time.Hour), nil); err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	x.checkEverywhere("an unrestricted replacement", next2, restrictionsOf{})
	if _, err := x.s.LookupHash(x.ctx, next2.Hash); errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("the replacement does not look up")
	}
}

// A key replaced by a roll is not updated (ErrAlreadyRolled, nothing written): an update
// could bring a rolled-out key back, a later expiry on a key rolled with no grace.
func testUpdateRolled(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	old, _ := NewKey(t, in.ID, in.Environment, "old", x.now)
	if err := x.s.CreateKey(x.ctx, old); err != nil {
		t.Fatal(err)
	}
	next, _ := NewKey(t, in.ID, in.Environment, "next", x.now)
	if _, err := x.s.RollKey(x.ctx, in.ID, old.ID, next, x.now, nil); err != nil {
		t.Fatal(err)
	}
	before, beforeLookup := x.get(in.ID, old.ID), x.lookup(old.Hash)
	later := x.now.Add(365 * 24 * time.Hour)
	_, err := x.s.UpdateKey(x.ctx, in.ID, old.ID, store.KeyUpdate{ExpiresAt: &later}, nil)
	wantErr(t, "UpdateKey of a rolled key", err, store.ErrAlreadyRolled)
	if got := x.get(in.ID, old.ID); !reflect.DeepEqual(got, before) {
		t.Errorf("refused UpdateKey changed the rolled key:\n%+v\nwas\n%+v", got, before)
	}
	if got := x.lookup(old.Hash); !reflect.DeepEqual(got, beforeLookup) {
		t.Errorf("refused UpdateKey changed the rolled key's lookup:\n%+v\nwas\n%+v", got, beforeLookup)
	}
	// The replacement is updated as usual.
	if _, err := x.s.UpdateKey(x.ctx, in.ID, next.ID, store.KeyUpdate{ExpiresAt: &later}, nil); err != nil {
		t.Fatalf("UpdateKey of the replacement: %v", err)
	}
}
