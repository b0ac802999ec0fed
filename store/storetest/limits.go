package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Rate limits and quotas: the key fields, and the counters gateways lease units from.

// limitsOf is what a key or lookup carries of the limits, for comparisons.
type limitsOf struct {
	RateLimit *store.RateLimit
	Quota     *store.Quota
}

func (l limitsOf) String() string {
	s := "rate_limit "
	if l.RateLimit == nil {
		s += "none"
	} else {
		s += fmt.Sprintf("%d/%v", l.RateLimit.Limit, l.RateLimit.Window)
	}
	if l.Quota == nil {
		return s + ", quota none"
	}
	return s + fmt.Sprintf(", quota %d/%s", l.Quota.Limit, l.Quota.Period)
}

func limitsOfKey(k store.Key) limitsOf       { return limitsOf{k.RateLimit, k.Quota} }
func limitsOfLookup(l store.Lookup) limitsOf { return limitsOf{l.RateLimit, l.Quota} }

// checkLimits checks the limits of key k as Key, ListKeys and LookupHash return them.
func (x *suite) checkLimits(what string, k store.Key, want limitsOf) {
	x.t.Helper()
	check := func(where string, got limitsOf) {
		x.t.Helper()
		if !reflect.DeepEqual(got, want) {
			x.t.Errorf("%s: %s limits = %v, want %v", what, where, got, want)
		}
	}
	check("Key", limitsOfKey(x.get(k.Instance, k.ID)))
	check("LookupHash", limitsOfLookup(x.lookup(k.Hash)))
	found := false
	for _, l := range x.listAll(k.Instance, 3, "", x.now) {
		if l.ID == k.ID {
			found = true
			check("ListKeys", limitsOfKey(l))
		}
	}
	if !found {
		x.t.Errorf("%s: key %s not listed", what, k.ID)
	}
}

func testLimitsRoundTrip(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	plain := x.key(in, "plain", x.now)
	x.checkLimits("a key without limits", plain, limitsOf{})

	cases := []limitsOf{
		{&store.RateLimit{Limit: 100, Window: time.Minute}, &store.Quota{Limit: 1000, Period: store.QuotaDay}},
		{&store.RateLimit{Limit: store.MaxRateLimit, Window: store.MaxRateLimitWindow}, nil},
		{nil, &store.Quota{Limit: store.MaxQuota, Period: store.QuotaTotal}},
		{&store.RateLimit{Limit: 1, Window: time.Second}, &store.Quota{Limit: 1, Period: store.QuotaMonth}},
	}
	var keys []store.Key
	for i, c := range cases {
		k, _ := NewKey(t, in.ID, in.Environment, fmt.Sprintf("limited %d", i), x.now)
		k = restricted(k)
		k.RateLimit, k.Quota = c.RateLimit, c.Quota
		if err := x.s.CreateKey(x.ctx, k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	for i, k := range keys {
		x.checkLimits(fmt.Sprintf("key %d (%v)", i, cases[i]), k, cases[i])
		// The limits sit beside the restrictions without disturbing them.
		x.checkEverywhere(fmt.Sprintf("key %d", i), k, ofKey(restricted(k)))
	}
	// What a store returns is the caller's to change.
	got := x.get(in.ID, keys[0].ID)
	got.RateLimit.Limit, got.Quota.Period = 7, store.QuotaTotal
	x.checkLimits("a key after its copy was changed", keys[0], cases[0])

	// A roll's replacement carries the limits the caller set (the admin copies them).
	next, _ := NewKey(t, in.ID, in.Environment, "next", x.now.Add(time.Second))
	next.RateLimit, next.Quota = cases[0].RateLimit, cases[0].Quota
	if _, err := x.s.RollKey(x.ctx, in.ID, keys[0].ID, next, x.now.Add(time.Hour), nil); err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	x.checkLimits("the replacement", next, cases[0])
	x.checkLimits("the rolled key", keys[0], cases[0])
}

func testUpdateLimits(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()

	rl := &store.RateLimit{Limit: 10, Window: time.Second}
	rl2 := &store.RateLimit{Limit: 500, Window: time.Hour}
	q := &store.Quota{Limit: 100, Period: store.QuotaDay}
	q2 := &store.Quota{Limit: 100, Period: store.QuotaMonth}
	var none *store.RateLimit
	var noQuota *store.Quota
	both := limitsOf{rl, q}
	cases := []struct {
		name   string
		start  limitsOf
		u      store.KeyUpdate
		want   limitsOf
		fields []string
	}{
		{"set rate_limit", limitsOf{}, store.KeyUpdate{RateLimit: &rl}, limitsOf{rl, nil}, []string{store.FieldRateLimit}},
		{"set quota", limitsOf{}, store.KeyUpdate{Quota: &q}, limitsOf{nil, q}, []string{store.FieldQuota}},
		{"set both", limitsOf{}, store.KeyUpdate{RateLimit: &rl, Quota: &q}, both, []string{store.FieldRateLimit, store.FieldQuota}},
		{"change rate_limit", both, store.KeyUpdate{RateLimit: &rl2}, limitsOf{rl2, q}, []string{store.FieldRateLimit}},
		{"change quota period", both, store.KeyUpdate{Quota: &q2}, limitsOf{rl, q2}, []string{store.FieldQuota}},
		{"remove rate_limit", both, store.KeyUpdate{RateLimit: &none}, limitsOf{nil, q}, []string{store.FieldRateLimit}},
		{"remove both", both, store.KeyUpdate{RateLimit: &none, Quota: &noQuota}, limitsOf{}, []string{store.FieldRateLimit, store.FieldQuota}},
		{"the same values", both, store.KeyUpdate{RateLimit: &rl, Quota: &q, Scopes: &[]string{"x"}}, both, []string{store.FieldScopes}},
	}
	for _, tc := range cases {
		k, _ := NewKey(t, in.ID, in.Environment, "k "+tc.name, x.now)
		k = restricted(k)
		k.RateLimit, k.Quota = tc.start.RateLimit, tc.start.Quota
		if err := x.s.CreateKey(x.ctx, k); err != nil {
			t.Fatal(err)
		}
		ev := x.event(store.EventKeyUpdated, in.ID, k.ID, "")
		got, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, tc.u, &ev)
		if err != nil {
			t.Errorf("UpdateKey(%s): %v", tc.name, err)
			continue
		}
		if !rec.Invalidated(k.Hash) {
			t.Errorf("UpdateKey(%s) returned before the watcher got Invalidate(hash)", tc.name)
		}
		if g := limitsOfKey(got); !reflect.DeepEqual(g, tc.want) {
			t.Errorf("UpdateKey(%s) returned limits %v, want %v", tc.name, g, tc.want)
		}
		x.checkLimits("after UpdateKey("+tc.name+")", k, tc.want)
		want, _ := tc.u.Apply(k)
		x.checkEverywhere("after UpdateKey("+tc.name+")", k, ofKey(want))
		if !slices.Equal(ev.Fields, tc.fields) {
			t.Errorf("UpdateKey(%s): the event's Fields = %v, want %v", tc.name, ev.Fields, tc.fields)
		}
		if e := eventsOf(x.events(in.ID), store.EventKeyUpdated, k.ID); len(e) != 1 || !slices.Equal(e[0].Fields, tc.fields) {
			t.Errorf("UpdateKey(%s) recorded %+v, want one event with fields %v", tc.name, e, tc.fields)
		}
	}

	// Setting the limits a key has changes nothing: no event, no invalidation.
	k, _ := NewKey(t, in.ID, in.Environment, "same", x.now)
	k.RateLimit, k.Quota = rl, q
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatal(err)
	}
	sameRL, sameQ := *rl, *q
	pRL, pQ := &sameRL, &sameQ
	ev := x.event(store.EventKeyUpdated, in.ID, k.ID, "")
	if _, err := x.s.UpdateKey(x.ctx, in.ID, k.ID, store.KeyUpdate{RateLimit: &pRL, Quota: &pQ}, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Fields != nil || len(eventsOf(x.events(in.ID), store.EventKeyUpdated, k.ID)) != 0 {
		t.Errorf("UpdateKey setting the same limits recorded a change: %v", ev.Fields)
	}
	time.Sleep(100 * time.Millisecond) // what the store's channel echoes arrives meanwhile
	if rec.Invalidated(k.Hash) {
		t.Errorf("UpdateKey setting the same limits invalidated the key")
	}
	x.checkLimits("after UpdateKey setting the same limits", k, both)
}
