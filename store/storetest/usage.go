package storetest

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Usage counts (store.UsageStore): what gateways add per key and minute, read back per
// minute, hour and day, for a key or its instance.

// usageTests are the usage counts' tests (store.UsageStore).
var usageTests = []contractTest{
	{"UsageAddsUpPerMinuteHourAndDay", testUsageSums},
	{"UsageRangeBoundaries", testUsageBoundaries},
	{"UsageKeepsKeysAndInstancesApart", testUsageApart},
	{"UsageMinutesGoAfterTheirRetentionTheirHoursStay", testUsageMinuteRetention},
	{"UsageHoursGoAfterTheirRetention", testUsageHourRetention},
	{"UsageConcurrentAddsLoseNothing", testUsageConcurrent},
	{"UsageOneBatchOfManyKeys", testUsageManyKeys},
	{"UsageRefusesBadQueriesAndCounts", testUsageErrors},
}

// usageStore returns the suite's store as a UsageStore.
func (x *suite) usageStore() store.UsageStore {
	x.t.Helper()
	u, ok := x.s.(store.UsageStore)
	if !ok {
		x.t.Fatalf("%T does not implement store.UsageStore", x.s)
	}
	return u
}

func (x *suite) addUsage(counts ...store.UsageCount) {
	x.t.Helper()
	if err := x.usageStore().AddUsage(x.ctx, counts); err != nil {
		x.t.Fatalf("AddUsage: %v", err)
	}
}

// checkUsage checks what Usage returns for one query.
func (x *suite) checkUsage(what, instance, keyID string, g store.Granularity, from, to time.Time, want ...store.UsageBucket) {
	x.t.Helper()
	got, err := x.usageStore().Usage(x.ctx, instance, keyID, g, from, to)
	if err != nil {
		x.t.Errorf("%s: Usage(%s, %q, %s, %v, %v): %v", what, instance, keyID, g, from, to, err)
		return
	}
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = got[i].Start.Equal(want[i].Start) && got[i].Start.Location() == time.UTC &&
			got[i].OK == want[i].OK && reflect.DeepEqual(got[i].Refused, want[i].Refused)
	}
	if !same {
		x.t.Errorf("%s: Usage(%s, %q, %s, %v, %v) =\n\t%s\nwant\n\t%s", what, instance, keyID, g,
			from.UTC(), to.UTC(), formatBuckets(got), formatBuckets(want))
	}
}

func formatBuckets(bs []store.UsageBucket) string {
	if len(bs) == 0 {
		return "none"
	}
	var parts []string
	for _, b := range bs {
		s := fmt.Sprintf("%s ok %d", b.Start.Format(time.RFC3339), b.OK)
		if b.Start.Location() != time.UTC {
			s += " (not UTC)"
		}
		switch {
		case b.Refused == nil:
		case len(b.Refused) == 0:
			s += " refused {} (not nil)"
		default:
			var rs []string
			for _, code := range slices.Sorted(maps.Keys(b.Refused)) {
				rs = append(rs, fmt.Sprintf("%s:%d", code, b.Refused[code]))
			}
			s += " refused " + strings.Join(rs, ",")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n\t")
}

// ub is a usage bucket (refused nil: none).
func ub(start time.Time, ok int64, refused map[string]int64) store.UsageBucket {
	return store.UsageBucket{Start: start, OK: ok, Refused: refused}
}

// uc is a usage count.
func uc(instance, keyID string, minute time.Time, ok int64, refused map[string]int64) store.UsageCount {
	return store.UsageCount{Instance: instance, KeyID: keyID, Minute: minute, OK: ok, Refused: refused}
}

type codes = map[string]int64

const (
	codeRevoked = "api_key_revoked"
	codeQuota   = "quota_exceeded"
	codeRate    = "rate_limited"
)

func testUsageSums(x *suite) {
	in := x.instance("acme", apikey.Sandbox)
	k1, k2 := x.key(in, "one", x.now).ID, x.key(in, "two", x.now).ID
	// The counts' times are in the suite's zone (UTC+2) and not on the minute: the store
	// buckets them by UTC minute, hour and day.
	zone := x.now.Location()
	at := func(day, hour, min, sec int) time.Time { return time.Date(2031, 5, day, hour, min, sec, 0, zone) }
	utc := func(day, hour, min int) time.Time { return time.Date(2031, 5, day, hour, min, 0, 0, time.UTC) }
	// Two gateways' flushes.
	x.addUsage(
		uc(in.ID, k1, x.now, 3, codes{codeRevoked: 1}), // 08:20:30 UTC
		uc(in.ID, k1, x.now.Add(time.Minute), 2, nil),
		uc(in.ID, k2, x.now, 5, codes{codeRate: 2}),
		uc(in.ID, k1, at(17, 11, 5, 0), 1, nil),  // 09:05 UTC
		uc(in.ID, k1, at(18, 2, 10, 0), 7, nil),  // the 18th, 00:10 UTC
		uc(in.ID, k1, at(17, 1, 30, 0), 4, nil),  // the 16th, 23:30 UTC
		uc(in.ID, k1, at(17, 10, 23, 0), 0, nil), // nothing
	)
	x.addUsage(
		uc(in.ID, k1, at(17, 10, 20, 5), 4, codes{codeRevoked: 2, codeQuota: 1}),
		uc(in.ID, k1, at(17, 10, 20, 59), 1, nil), // the same minute again
		uc(in.ID, k2, at(17, 10, 59, 0), 1, nil),
		uc(in.ID, k2, at(17, 10, 20, 0), 0, codes{codeRevoked: 1}),
		uc(in.ID, k1, at(17, 10, 22, 0), 0, codes{codeQuota: 3}),   // refused only
		uc(in.ID, k1, at(17, 10, 24, 0), 0, codes{codeRevoked: 0}), // nothing
	)

	from, to := utc(15, 0, 0), utc(20, 0, 0)
	x.checkUsage("key one by minute", in.ID, k1, store.Minute, from, to,
		ub(utc(16, 23, 30), 4, nil),
		ub(utc(17, 8, 20), 8, codes{codeRevoked: 3, codeQuota: 1}),
		ub(utc(17, 8, 21), 2, nil),
		ub(utc(17, 8, 22), 0, codes{codeQuota: 3}),
		ub(utc(17, 9, 5), 1, nil),
		ub(utc(18, 0, 10), 7, nil),
	)
	x.checkUsage("key one by hour", in.ID, k1, store.Hour, from, to,
		ub(utc(16, 23, 0), 4, nil),
		ub(utc(17, 8, 0), 10, codes{codeRevoked: 3, codeQuota: 4}),
		ub(utc(17, 9, 0), 1, nil),
		ub(utc(18, 0, 0), 7, nil),
	)
	x.checkUsage("key one by day", in.ID, k1, store.Day, from, to,
		ub(utc(16, 0, 0), 4, nil),
		ub(utc(17, 0, 0), 11, codes{codeRevoked: 3, codeQuota: 4}),
		ub(utc(18, 0, 0), 7, nil),
	)
	x.checkUsage("key two by minute", in.ID, k2, store.Minute, from, to,
		ub(utc(17, 8, 20), 5, codes{codeRate: 2, codeRevoked: 1}),
		ub(utc(17, 8, 59), 1, nil),
	)
	x.checkUsage("key two by hour", in.ID, k2, store.Hour, from, to,
		ub(utc(17, 8, 0), 6, codes{codeRate: 2, codeRevoked: 1}))
	x.checkUsage("key two by day", in.ID, k2, store.Day, from, to,
		ub(utc(17, 0, 0), 6, codes{codeRate: 2, codeRevoked: 1}))

	x.checkUsage("the instance by minute", in.ID, "", store.Minute, from, to,
		ub(utc(16, 23, 30), 4, nil),
		ub(utc(17, 8, 20), 13, codes{codeRevoked: 4, codeQuota: 1, codeRate: 2}),
		ub(utc(17, 8, 21), 2, nil),
		ub(utc(17, 8, 22), 0, codes{codeQuota: 3}),
		ub(utc(17, 8, 59), 1, nil),
		ub(utc(17, 9, 5), 1, nil),
		ub(utc(18, 0, 10), 7, nil),
	)
	x.checkUsage("the instance by hour", in.ID, "", store.Hour, from, to,
		ub(utc(16, 23, 0), 4, nil),
		ub(utc(17, 8, 0), 16, codes{codeRevoked: 4, codeQuota: 4, codeRate: 2}),
		ub(utc(17, 9, 0), 1, nil),
		ub(utc(18, 0, 0), 7, nil),
	)
	x.checkUsage("the instance by day", in.ID, "", store.Day, from, to,
		ub(utc(16, 0, 0), 4, nil),
		ub(utc(17, 0, 0), 17, codes{codeRevoked: 4, codeQuota: 4, codeRate: 2}),
		ub(utc(18, 0, 0), 7, nil),
	)
	// The range may be given in any zone.
	x.checkUsage("a range given in UTC+2", in.ID, k2, store.Hour, at(17, 10, 0, 0), at(17, 11, 0, 0),
		ub(utc(17, 8, 0), 6, codes{codeRate: 2, codeRevoked: 1}))
}

func testUsageBoundaries(x *suite) {
	const inst, k = "acme", "key_edges"
	utc := func(day, hour, min int) time.Time { return time.Date(2031, 5, day, hour, min, 0, 0, time.UTC) }
	// Powers of two: each sum says which counts it holds.
	x.addUsage(
		uc(inst, k, utc(17, 9, 59), 1, nil),
		uc(inst, k, utc(17, 10, 0), 2, nil),
		uc(inst, k, utc(17, 10, 1), 4, nil),
		uc(inst, k, utc(17, 10, 2), 8, nil),
		uc(inst, k, utc(17, 10, 5), 16, nil),
		uc(inst, k, utc(17, 10, 59), 32, nil),
		uc(inst, k, utc(17, 11, 0), 64, nil),
		uc(inst, k, utc(17, 23, 59), 128, nil),
		uc(inst, k, utc(18, 0, 0), 256, nil),
	)
	const ms = time.Millisecond
	m := store.Minute
	x.checkUsage("from inclusive, to exclusive", inst, k, m, utc(17, 10, 0), utc(17, 10, 2),
		ub(utc(17, 10, 0), 2, nil), ub(utc(17, 10, 1), 4, nil))
	x.checkUsage("from truncated to its minute", inst, k, m, utc(17, 10, 0).Add(59*time.Second), utc(17, 10, 2),
		ub(utc(17, 10, 0), 2, nil), ub(utc(17, 10, 1), 4, nil))
	x.checkUsage("a minute starting just before to", inst, k, m, utc(17, 10, 1), utc(17, 10, 2).Add(ms),
		ub(utc(17, 10, 1), 4, nil), ub(utc(17, 10, 2), 8, nil))
	x.checkUsage("empty minutes left out", inst, k, m, utc(17, 10, 0), utc(17, 10, 10),
		ub(utc(17, 10, 0), 2, nil), ub(utc(17, 10, 1), 4, nil), ub(utc(17, 10, 2), 8, nil), ub(utc(17, 10, 5), 16, nil))
	x.checkUsage("a range between counts", inst, k, m, utc(17, 10, 3), utc(17, 10, 5))
	x.checkUsage("an empty range", inst, k, m, utc(17, 10, 2), utc(17, 10, 2))
	x.checkUsage("a range ending before it starts", inst, k, m, utc(17, 10, 5), utc(17, 10, 0))
	x.checkUsage("across the hour", inst, k, m, utc(17, 10, 59), utc(17, 11, 1),
		ub(utc(17, 10, 59), 32, nil), ub(utc(17, 11, 0), 64, nil))

	h := store.Hour
	x.checkUsage("one hour", inst, k, h, utc(17, 10, 0), utc(17, 11, 0), ub(utc(17, 10, 0), 62, nil))
	x.checkUsage("from truncated to its hour", inst, k, h, utc(17, 10, 30), utc(17, 11, 0), ub(utc(17, 10, 0), 62, nil))
	x.checkUsage("an hour starting just before to", inst, k, h, utc(17, 10, 30), utc(17, 11, 0).Add(ms),
		ub(utc(17, 10, 0), 62, nil), ub(utc(17, 11, 0), 64, nil))
	x.checkUsage("the hour before", inst, k, h, utc(17, 9, 0), utc(17, 10, 0), ub(utc(17, 9, 0), 1, nil))
	x.checkUsage("empty hours left out", inst, k, h, utc(17, 0, 0), utc(19, 0, 0),
		ub(utc(17, 9, 0), 1, nil), ub(utc(17, 10, 0), 62, nil), ub(utc(17, 11, 0), 64, nil),
		ub(utc(17, 23, 0), 128, nil), ub(utc(18, 0, 0), 256, nil))

	d := store.Day
	x.checkUsage("one day", inst, k, d, utc(17, 0, 0), utc(18, 0, 0), ub(utc(17, 0, 0), 255, nil))
	x.checkUsage("from truncated to its day", inst, k, d, utc(17, 12, 0), utc(18, 0, 0), ub(utc(17, 0, 0), 255, nil))
	x.checkUsage("the next day", inst, k, d, utc(18, 0, 0), utc(19, 0, 0), ub(utc(18, 0, 0), 256, nil))
	x.checkUsage("a day starting just before to", inst, k, d, utc(17, 0, 0), utc(18, 0, 0).Add(ms),
		ub(utc(17, 0, 0), 255, nil), ub(utc(18, 0, 0), 256, nil))
	x.checkUsage("a day with nothing", inst, k, d, utc(16, 0, 0), utc(17, 0, 0))
	x.checkUsage("the instance, the same", inst, "", d, utc(10, 0, 0), utc(30, 0, 0),
		ub(utc(17, 0, 0), 255, nil), ub(utc(18, 0, 0), 256, nil))
}

func testUsageApart(x *suite) {
	// The store does not check that instances and keys exist; the same key id in two
	// instances, and key ids one the prefix of the other, are apart.
	m := store.Minute.Truncate(x.now)
	next := m.Add(time.Minute)
	x.addUsage(
		uc("acme", "key_a", m, 1, nil),
		uc("acme", "key_ab", m, 2, codes{codeRevoked: 1}),
		uc("globex", "key_a", m, 4, nil),
		uc("globex", "key_b", next, 8, nil),
	)
	from, to := m.Add(-time.Hour), m.Add(time.Hour)
	x.checkUsage("acme key_a", "acme", "key_a", store.Minute, from, to, ub(m, 1, nil))
	x.checkUsage("acme key_ab", "acme", "key_ab", store.Minute, from, to, ub(m, 2, codes{codeRevoked: 1}))
	x.checkUsage("acme key_b", "acme", "key_b", store.Minute, from, to)
	x.checkUsage("globex key_a", "globex", "key_a", store.Minute, from, to, ub(m, 4, nil))
	x.checkUsage("globex key_b", "globex", "key_b", store.Minute, from, to, ub(next, 8, nil))
	x.checkUsage("acme", "acme", "", store.Minute, from, to, ub(m, 3, codes{codeRevoked: 1}))
	x.checkUsage("globex", "globex", "", store.Minute, from, to, ub(m, 4, nil), ub(next, 8, nil))
	x.checkUsage("an instance without counts", "initech", "", store.Minute, from, to)
	hour, day := store.Hour.Truncate(m), store.Day.Truncate(m)
	x.checkUsage("acme by hour", "acme", "", store.Hour, from, to, ub(hour, 3, codes{codeRevoked: 1}))
	x.checkUsage("globex by hour", "globex", "", store.Hour, from, to, ub(hour, 12, nil))
	x.checkUsage("globex key_b by day", "globex", "key_b", store.Day, day, day.Add(24*time.Hour), ub(day, 8, nil))
	x.checkUsage("acme by day", "acme", "", store.Day, day, day.Add(24*time.Hour), ub(day, 3, codes{codeRevoked: 1}))
}

// usageByDay sums buckets (oldest first) by UTC day.
func usageByDay(bs ...store.UsageBucket) []store.UsageBucket {
	var out []store.UsageBucket
	for _, b := range bs {
		d := store.Day.Truncate(b.Start)
		if n := len(out); n > 0 && out[n-1].Start.Equal(d) {
			out[n-1].OK += b.OK
			for code, c := range b.Refused {
				if out[n-1].Refused == nil {
					out[n-1].Refused = codes{}
				}
				out[n-1].Refused[code] += c
			}
			continue
		}
		out = append(out, ub(d, b.OK, maps.Clone(b.Refused)))
	}
	return out
}

func testUsageMinuteRetention(x *suite) {
	// By the real clock: the store drops minutes by its own. Each time is an hour or more
	// away from its minutes' retention (48 hours from the end of their hour).
	now := time.Now().UTC()
	old := store.Minute.Truncate(now.Add(-50 * time.Hour))
	mid := store.Minute.Truncate(now.Add(-46 * time.Hour))
	recent := store.Minute.Truncate(now.Add(-time.Hour))
	const inst, k = "acme", "key_ret"
	x.addUsage(uc(inst, k, old, 5, codes{codeRevoked: 1}))
	x.addUsage(uc(inst, k, old, 2, nil), uc(inst, k, mid, 3, nil), uc(inst, k, recent, 2, nil))

	from, to := now.Add(-72*time.Hour), now.Add(time.Hour)
	for _, key := range []string{k, ""} {
		x.checkUsage("minutes of the last 72 hours", inst, key, store.Minute, from, to,
			ub(mid, 3, nil), ub(recent, 2, nil))
		x.checkUsage("the old minute alone", inst, key, store.Minute, old, old.Add(time.Minute))
		hours := []store.UsageBucket{
			ub(store.Hour.Truncate(old), 7, codes{codeRevoked: 1}),
			ub(store.Hour.Truncate(mid), 3, nil),
			ub(store.Hour.Truncate(recent), 2, nil),
		}
		x.checkUsage("hours of the last 72 hours", inst, key, store.Hour, from, to, hours...)
		x.checkUsage("days of the last 72 hours", inst, key, store.Day, from, to, usageByDay(hours...)...)
	}
}

func testUsageHourRetention(x *suite) {
	now := time.Now().UTC()
	const day = 24 * time.Hour
	old := store.Minute.Truncate(now.Add(-92 * day)) // its day ended 90 days ago, and more
	kept := store.Minute.Truncate(now.Add(-88 * day))
	const inst, k = "acme", "key_ret"
	x.addUsage(uc(inst, k, old, 5, nil), uc(inst, k, kept, 3, codes{codeRevoked: 2}))

	from, to := now.Add(-100*day), now
	for _, key := range []string{k, ""} {
		x.checkUsage("hours of the last 100 days", inst, key, store.Hour, from, to,
			ub(store.Hour.Truncate(kept), 3, codes{codeRevoked: 2}))
		x.checkUsage("days of the last 100 days", inst, key, store.Day, from, to,
			ub(store.Day.Truncate(kept), 3, codes{codeRevoked: 2}))
		x.checkUsage("the old day alone", inst, key, store.Day, old, old.Add(time.Minute))
		x.checkUsage("the kept minute", inst, key, store.Minute, kept.Add(-time.Hour), kept.Add(time.Hour))
	}
}

func testUsageConcurrent(x *suite) {
	const inst, k1, k2 = "acme", "key_one", "key_two"
	const workers, rounds = 8, 20
	m := time.Date(2031, 5, 17, 10, 59, 0, 0, time.UTC)
	u := x.usageStore()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				err := u.AddUsage(x.ctx, []store.UsageCount{
					uc(inst, k1, m, 1, codes{codeRevoked: 1}),
					uc(inst, k1, m.Add(time.Minute), 2, nil),
					uc(inst, k2, m, 3, codes{codeQuota: 1}),
				})
				if err != nil {
					x.t.Errorf("AddUsage: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	const n = workers * rounds
	from, to := m.Add(-24*time.Hour), m.Add(24*time.Hour)
	next, hour, day := m.Add(time.Minute), store.Hour.Truncate(m), store.Day.Truncate(m)
	x.checkUsage("key one by minute", inst, k1, store.Minute, from, to,
		ub(m, n, codes{codeRevoked: n}), ub(next, 2*n, nil))
	x.checkUsage("key one by hour", inst, k1, store.Hour, from, to,
		ub(hour, n, codes{codeRevoked: n}), ub(store.Hour.Truncate(next), 2*n, nil))
	x.checkUsage("key two by minute", inst, k2, store.Minute, from, to, ub(m, 3*n, codes{codeQuota: n}))
	x.checkUsage("the instance by minute", inst, "", store.Minute, from, to,
		ub(m, 4*n, codes{codeRevoked: n, codeQuota: n}), ub(next, 2*n, nil))
	x.checkUsage("the instance by day", inst, "", store.Day, from, to,
		ub(day, 6*n, codes{codeRevoked: n, codeQuota: n}))
}

func testUsageErrors(x *suite) {
	t := x.t
	u := x.usageStore()
	b := time.Date(2031, 5, 17, 10, 0, 0, 0, time.UTC)
	for _, g := range []store.Granularity{"", "week", "Minute", "minutes"} {
		_, err := u.Usage(x.ctx, "acme", "", g, b, b.Add(time.Hour))
		wantErr(t, fmt.Sprintf("Usage(granularity %q)", g), err, store.ErrGranularity)
	}

	// The guard against runaway ranges: at most MaxUsageBuckets buckets. (The ranges end now,
	// so that most of what they cover is past its retention and cheap to read.)
	const most = store.MaxUsageBuckets
	now := time.Now().UTC()
	mEnd, hEnd, dEnd := store.Minute.Truncate(now), store.Hour.Truncate(now), store.Day.Truncate(now)
	cases := []struct {
		g    store.Granularity
		from time.Time
		to   time.Time
		ok   bool
	}{
		{store.Minute, mEnd.Add(-most * time.Minute), mEnd, true},
		{store.Minute, mEnd.Add(-most*time.Minute + 30*time.Second), mEnd, true},
		{store.Minute, mEnd.Add(-most * time.Minute), mEnd.Add(time.Millisecond), false},
		{store.Hour, hEnd.Add(-most * time.Hour), hEnd, true},
		{store.Hour, hEnd.Add(-most*time.Hour - time.Minute), hEnd, false},
		{store.Day, dEnd.AddDate(0, 0, -most), dEnd, true},
		{store.Day, dEnd.AddDate(0, 0, -most), dEnd.Add(time.Millisecond), false},
		{store.Minute, time.Unix(0, 0), b.AddDate(1000, 0, 0), false},
	}
	for _, c := range cases {
		_, err := u.Usage(x.ctx, "acme", "", c.g, c.from, c.to)
		what := fmt.Sprintf("Usage(%s, %v, %v)", c.g, c.from, c.to)
		if c.ok && err != nil {
			t.Errorf("%s: %v", what, err)
		}
		if !c.ok {
			wantErr(t, what, err, store.ErrUsageRange)
		}
	}

	// A batch with an invalid count is refused whole.
	const inst, k = "acme", "key_bad"
	good := uc(inst, k, b, 1, nil)
	for _, bad := range []store.UsageCount{
		uc("", k, b, 1, nil),
		uc(inst, "", b, 1, nil),
		uc(inst, k, b, -1, nil),
		uc(inst, k, b, 1, codes{codeRevoked: -1}),
	} {
		if err := u.AddUsage(x.ctx, []store.UsageCount{good, bad}); err == nil {
			t.Errorf("AddUsage(%+v) succeeded", bad)
		}
	}
	x.checkUsage("after the refused batches", inst, k, store.Minute, b, b.Add(time.Hour))
	x.checkUsage("the instance after the refused batches", inst, "", store.Day, b, b.Add(24*time.Hour))

	// Nothing to add is no error.
	for _, counts := range [][]store.UsageCount{nil, {uc(inst, k, b, 0, nil)}, {uc(inst, k, b, 0, codes{codeQuota: 0})}} {
		if err := u.AddUsage(x.ctx, counts); err != nil {
			t.Errorf("AddUsage(%v): %v", counts, err)
		}
	}
	x.checkUsage("after zero counts", inst, k, store.Minute, b, b.Add(time.Hour))
}

// One AddUsage of 2,000 keys (as a gateway flushes after a busy interval: a store may split
// it, e.g. in transactions of bounded size) loses nothing and counts nothing twice.
func testUsageManyKeys(x *suite) {
	const inst, keys = "acme", 2000
	m := time.Date(2031, 5, 17, 10, 59, 0, 0, time.UTC)
	var counts []store.UsageCount
	for i := range keys {
		var refused codes
		if i%10 == 0 {
			refused = codes{codeRevoked: 1, codeQuota: 2}
		}
		counts = append(counts, uc(inst, fmt.Sprintf("key_%05d", i), m, int64(i%7+1), refused))
	}
	u := x.usageStore()
	if err := u.AddUsage(x.ctx, counts); err != nil {
		x.t.Fatal(err)
	}
	var ok int64
	for i := range keys {
		ok += int64(i%7 + 1)
	}
	from, to := m.Add(-time.Hour), m.Add(time.Hour)
	x.checkUsage("the instance by minute", inst, "", store.Minute, from, to,
		ub(m, ok, codes{codeRevoked: keys / 10, codeQuota: 2 * keys / 10}))
	x.checkUsage("the instance by hour", inst, "", store.Hour, from, to,
		ub(store.Hour.Truncate(m), ok, codes{codeRevoked: keys / 10, codeQuota: 2 * keys / 10}))
	for _, i := range []int{0, 1, 999, 1000, keys - 1} {
		var refused codes
		if i%10 == 0 {
			refused = codes{codeRevoked: 1, codeQuota: 2}
		}
		x.checkUsage(fmt.Sprintf("key %d by minute", i), inst, fmt.Sprintf("key_%05d", i), store.Minute, from, to,
			ub(m, int64(i%7+1), refused))
	}
}
