package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
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

// leasers is how many gateways lease from one counter at once.
const leasers = 16

// Concurrent leases never pass the limit, and use it up exactly: the grants add up to the
// limit, each answer's used is within it, and once it is spent every lease grants 0.
func testLeaseConcurrent(x *suite) {
	t := x.t
	const limit = 1000
	day := store.Quota{Limit: limit, Period: store.QuotaDay}
	_, end, name := store.QuotaPeriod(day, time.Now())
	for _, c := range []struct {
		counter  string
		expireAt time.Time
	}{
		{name, end},
		{"q:total", time.Time{}},
		{"rl:60:123", time.Now().Add(time.Hour)},
	} {
		var total atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, leasers)
		for i := range leasers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for n := int64(1 + i%7); ; {
					g, used, err := x.s.Lease(x.ctx, "acme", "key_conc", c.counter, limit, n, c.expireAt)
					switch {
					case err != nil:
						errs <- err
						return
					case g < 0 || g > n || used > limit || used < g:
						errs <- fmt.Errorf("Lease(%d) = %d granted, %d used (limit %d)", n, g, used, limit)
						return
					case g == 0:
						if used != limit {
							errs <- fmt.Errorf("Lease granted 0 with %d of %d used", used, limit)
						}
						return
					}
					total.Add(g)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("counter %s: %v", c.counter, err)
		}
		if got := total.Load(); got != limit {
			t.Errorf("counter %s: %d leasers were granted %d in all, want exactly %d", c.counter, leasers, got, limit)
		}
		if g, used, err := x.s.Lease(x.ctx, "acme", "key_conc", c.counter, limit, 5, c.expireAt); err != nil || g != 0 || used != limit {
			t.Errorf("counter %s: Lease once spent = %d granted, %d used, %v; want 0, %d", c.counter, g, used, err, limit)
		}
		if used, err := x.s.Used(x.ctx, "acme", "key_conc", c.counter); err != nil || used != limit {
			t.Errorf("counter %s: Used = %d, %v; want %d", c.counter, used, err, limit)
		}
	}
}

// Lease grants what is left up to the limit and says how much is used; Release gives units
// back, never below 0; n = 0 reads.
func testLeaseAndRelease(x *suite) {
	t := x.t
	for _, counter := range []string{"q:total", "q:month:2031-05", "rl:1:42"} {
		exp := time.Time{}
		if counter != "q:total" {
			exp = time.Now().Add(time.Hour)
		}
		lease := func(limit, n, wantGranted, wantUsed int64) {
			t.Helper()
			g, used, err := x.s.Lease(x.ctx, "acme", "key_a", counter, limit, n, exp)
			if err != nil || g != wantGranted || used != wantUsed {
				t.Errorf("%s: Lease(limit %d, n %d) = %d granted, %d used, %v; want %d, %d", counter, limit, n, g, used, err, wantGranted, wantUsed)
			}
		}
		used := func(want int64) {
			t.Helper()
			if got, err := x.s.Used(x.ctx, "acme", "key_a", counter); err != nil || got != want {
				t.Errorf("%s: Used = %d, %v; want %d", counter, got, err, want)
			}
		}
		release := func(n int64) {
			t.Helper()
			if err := x.s.Release(x.ctx, "acme", "key_a", counter, n); err != nil {
				t.Errorf("%s: Release(%d): %v", counter, n, err)
			}
		}
		used(0)
		release(5) // nothing to give back: stays 0
		used(0)
		lease(10, 0, 0, 0)
		lease(10, 3, 3, 3)
		lease(10, 5, 5, 8)
		lease(10, 5, 2, 10)
		lease(10, 1, 0, 10)
		lease(5, 1, 0, 10)  // a lowered limit grants nothing
		lease(12, 4, 2, 12) // a raised one grants what it leaves
		used(12)
		release(4)
		used(8)
		lease(10, 0, 0, 8)
		lease(10, 100, 2, 10)
		release(100) // never below 0
		used(0)
		release(1)
		used(0)
		lease(3, 2, 2, 2)
		used(2)
	}
	if _, _, err := x.s.Lease(x.ctx, "acme", "key_a", "q:total", 10, -1, time.Time{}); err == nil {
		t.Errorf("Lease of -1 units succeeded")
	}
	if err := x.s.Release(x.ctx, "acme", "key_a", "q:total", -1); err == nil {
		t.Errorf("Release of -1 units succeeded")
	}
}

// Counters are per instance, per key and per counter name.
func testCountersApart(x *suite) {
	t := x.t
	type c struct{ instance, key, counter string }
	all := []c{
		{"acme", "key_1", "q:total"},
		{"acme", "key_1", "q:day:2031-05-17"},
		{"acme", "key_1", "q:day:2031-05-18"},
		{"acme", "key_1", "rl:60:1"},
		{"acme", "key_1", "rl:60:2"},
		{"acme", "key_1", "rl:1:1"},
		{"acme", "key_2", "q:total"},
		{"acme", "key_2", "rl:60:1"},
		{"other", "key_1", "q:total"},
		{"other", "key_1", "rl:60:1"},
	}
	exp := time.Now().Add(time.Hour)
	for i, k := range all {
		if g, used, err := x.s.Lease(x.ctx, k.instance, k.key, k.counter, 100, int64(i+1), exp); err != nil || g != int64(i+1) || used != int64(i+1) {
			t.Errorf("Lease(%+v, %d) = %d, %d, %v: not a fresh counter", k, i+1, g, used, err)
		}
	}
	for i, k := range all {
		if used, err := x.s.Used(x.ctx, k.instance, k.key, k.counter); err != nil || used != int64(i+1) {
			t.Errorf("Used(%+v) = %d, %v; want %d", k, used, err, i+1)
		}
	}
	if err := x.s.Release(x.ctx, "acme", "key_1", "q:total", 1); err != nil {
		t.Fatal(err)
	}
	for i, k := range all {
		want := int64(i + 1)
		if i == 0 {
			want--
		}
		if used, err := x.s.Used(x.ctx, k.instance, k.key, k.counter); err != nil || used != want {
			t.Errorf("after a Release of another counter, Used(%+v) = %d, %v; want %d", k, used, err, want)
		}
	}
}

// A counter is dropped after its expireAt and starts again at 0; a counter without one is kept.
func testCounterExpiry(x *suite) {
	t := x.t
	exp := time.Now().Add(300 * time.Millisecond)
	for _, counter := range []string{"q:day:2031-05-17", "rl:1:7"} {
		if g, used, err := x.s.Lease(x.ctx, "acme", "key_e", counter, 10, 10, exp); err != nil || g != 10 || used != 10 {
			t.Fatalf("%s: Lease = %d, %d, %v", counter, g, used, err)
		}
	}
	if g, _, err := x.s.Lease(x.ctx, "acme", "key_e", "q:total", 10, 10, time.Time{}); err != nil || g != 10 {
		t.Fatalf("q:total: Lease = %d, %v", g, err)
	}
	for _, counter := range []string{"q:day:2031-05-17", "rl:1:7"} {
		testutil.WaitFor(t, 5*time.Second, counter+" to expire", func() bool {
			used, err := x.s.Used(x.ctx, "acme", "key_e", counter)
			return err == nil && used == 0
		})
		// Released into an expired counter: nothing comes back to life.
		if err := x.s.Release(x.ctx, "acme", "key_e", counter, 3); err != nil {
			t.Errorf("%s: Release after expiry: %v", counter, err)
		}
		if used, err := x.s.Used(x.ctx, "acme", "key_e", counter); err != nil || used != 0 {
			t.Errorf("%s: Used after a Release into the expired counter = %d, %v; want 0", counter, used, err)
		}
		next := time.Now().Add(time.Hour)
		if g, used, err := x.s.Lease(x.ctx, "acme", "key_e", counter, 10, 4, next); err != nil || g != 4 || used != 4 {
			t.Errorf("%s: Lease after expiry = %d granted, %d used, %v; want 4, 4", counter, g, used, err)
		}
	}
	if used, err := x.s.Used(x.ctx, "acme", "key_e", "q:total"); err != nil || used != 10 {
		t.Errorf("q:total after the others expired: Used = %d, %v; want 10", used, err)
	}
	// A lease moves the expiry to the one it gives.
	short := time.Now().Add(200 * time.Millisecond)
	if _, _, err := x.s.Lease(x.ctx, "acme", "key_e", "q:month:2031-05", 10, 1, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := x.s.Lease(x.ctx, "acme", "key_e", "q:month:2031-05", 10, 1, short); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the counter to take the later lease's expiry", func() bool {
		used, err := x.s.Used(x.ctx, "acme", "key_e", "q:month:2031-05")
		return err == nil && used == 0
	})
}

// store.UsedMany (one MGET on Redis) answers what Used answers, counter by counter, in order;
// a counter never leased is 0, and counters of another instance are apart.
func testUsedMany(x *suite) {
	t := x.t
	exp := time.Now().Add(time.Hour)
	for i, lease := range []struct {
		inst, key, counter string
		n                  int64
	}{
		{"acme", "key_a", "q:total", 7},
		{"acme", "key_b", "q:day:2031-05-17", 3},
		{"acme", "key_c", "q:total", 11},
		{"other", "key_a", "q:total", 5},
	} {
		if _, _, err := x.s.Lease(x.ctx, lease.inst, lease.key, lease.counter, 100, lease.n, exp); err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
	}
	refs := []store.CounterRef{{KeyID: "key_c", Counter: "q:total"}, {KeyID: "key_a", Counter: "q:total"}, {KeyID: "key_b", Counter: "q:day:2031-05-17"},
		{KeyID: "key_b", Counter: "q:total"}, {KeyID: "key_z", Counter: "q:total"}}
	got, err := store.UsedMany(x.ctx, x.s, "acme", refs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{11, 7, 3, 0, 0}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("UsedMany = %v, want %v", got, want)
	}
	for i, r := range refs {
		if n, err := x.s.Used(x.ctx, "acme", r.KeyID, r.Counter); err != nil || n != got[i] {
			t.Errorf("Used(%s %s) = %d, %v; UsedMany said %d", r.KeyID, r.Counter, n, err, got[i])
		}
	}
	if none, err := store.UsedMany(x.ctx, x.s, "acme", nil); err != nil || len(none) != 0 {
		t.Errorf("UsedMany of nothing = %v, %v", none, err)
	}
}
