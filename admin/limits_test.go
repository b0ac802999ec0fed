package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/store"
)

// limitsText is how a snapshot shows a key's limits.
func limitsText(r *store.RateLimit, q *store.Quota) string {
	s := "rate=none"
	if r != nil {
		s = fmt.Sprintf("rate=%d/%s", r.Limit, r.Window)
	}
	if q != nil {
		return s + fmt.Sprintf(" quota=%d/%s", q.Limit, q.Period)
	}
	return s + " quota=none"
}

// checkLimitFields checks the shape of a key object's limits: rate_limit and quota null or
// objects of exactly their members; quota_used a number with a quota and null without;
// quota_resets_at an RFC 3339 UTC time after now for a day or month quota, else null.
func checkLimitFields(t *testing.T, obj map[string]any, k keyObj) {
	t.Helper()
	members := func(f string, want ...string) {
		t.Helper()
		switch v := obj[f].(type) {
		case nil:
		case map[string]any:
			var got []string
			for m := range v {
				got = append(got, m)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("key %s has members %v, want %v", f, got, want)
			}
		default:
			t.Fatalf("key %s is a %T, want null or an object", f, v)
		}
	}
	members("rate_limit", "limit", "window_seconds")
	members("quota", "limit", "period")
	if k.Quota == nil {
		if obj["quota_used"] != nil || obj["quota_resets_at"] != nil {
			t.Fatalf("a key without a quota has quota_used %v, quota_resets_at %v", obj["quota_used"], obj["quota_resets_at"])
		}
		return
	}
	if _, ok := obj["quota_used"].(float64); !ok || *k.QuotaUsed < 0 {
		t.Fatalf("a key with a quota has quota_used %v", obj["quota_used"])
	}
	if k.Quota.Period == store.QuotaTotal {
		if k.QuotaResets != nil {
			t.Fatalf("a total quota resets at %s", *k.QuotaResets)
		}
		return
	}
	if at := utc(t, "quota_resets_at", k.QuotaResets); !at.After(time.Now().Add(-time.Minute)) {
		t.Fatalf("quota_resets_at %s is not ahead", *k.QuotaResets)
	}
}

// leaser returns the store's Leaser.
func (e *apiEnv) leaser(t *testing.T) store.Leaser { return e.s }

// lease takes n units of a key's current quota period, as a gateway would.
func (e *apiEnv) lease(t *testing.T, instance, id string, q store.Quota, n int64) {
	t.Helper()
	_, end, counter := store.QuotaPeriod(q, time.Now())
	granted, _, err := e.leaser(t).Lease(context.Background(), instance, id, counter, q.Limit, n, end)
	if err != nil || granted != n {
		t.Fatalf("leasing %d of %s: granted %d, %v", n, counter, granted, err)
	}
}

// badLimits are values of rate_limit and quota that create and update both refuse with 400
// invalid_request.
func badLimits() map[string]map[string]any {
	rl := func(limit, window any) map[string]any {
		return map[string]any{"rate_limit": map[string]any{"limit": limit, "window_seconds": window}}
	}
	q := func(limit, period any) map[string]any {
		return map[string]any{"quota": map[string]any{"limit": limit, "period": period}}
	}
	return map[string]map[string]any{
		"rate limit 0":               rl(0, 1),
		"rate limit -1":              rl(-1, 1),
		"rate limit 1000001":         rl(1000001, 1),
		"rate limit 1.5":             rl(1.5, 1),
		"rate limit a string":        rl("100", 1),
		"rate limit null":            rl(nil, 1),
		"rate limit 1e3":             {"rate_limit": `{"limit":1e3,"window_seconds":1}`},
		"rate limit huge":            {"rate_limit": map[string]any{"limit": 1e30, "window_seconds": 1}},
		"window 0":                   rl(10, 0),
		"window 86401":               rl(10, 86401),
		"window 1.5":                 rl(10, 1.5),
		"window a string":            rl(10, "1s"),
		"window overflowing":         rl(10, int64(18446744074)), // ×1e9 wraps around int64
		"window huge":                rl(10, 9223372036854775807),
		"window missing":             {"rate_limit": map[string]any{"limit": 10}},
		"rate limit missing":         {"rate_limit": map[string]any{"window_seconds": 10}},
		"rate_limit empty":           {"rate_limit": map[string]any{}},
		"rate_limit unknown member":  {"rate_limit": map[string]any{"limit": 10, "window_seconds": 1, "burst": 5}},
		"rate_limit a number":        {"rate_limit": 100},
		"rate_limit a text":          {"rate_limit": "100/1s"},
		"rate_limit a list":          {"rate_limit": []int{100, 1}},
		"rate_limit true":            {"rate_limit": true},
		"quota 0":                    q(0, "day"),
		"quota 10^12+1":              q(int64(1_000_000_000_001), "day"),
		"quota 1.5":                  q(1.5, "day"),
		"quota a string":             q("100", "day"),
		"quota null limit":           q(nil, "day"),
		"quota period week":          q(100, "week"),
		"quota period Day":           q(100, "Day"),
		"quota period empty":         q(100, ""),
		"quota period a number":      q(100, 1),
		"quota period null":          q(100, nil),
		"quota period missing":       {"quota": map[string]any{"limit": 100}},
		"quota limit missing":        {"quota": map[string]any{"period": "day"}},
		"quota unknown member":       {"quota": map[string]any{"limit": 100, "period": "day", "used": 0}},
		"quota a number":             {"quota": 100},
		"quota a text":               {"quota": "100/day"},
		"quota a list":               {"quota": []any{100, "day"}},
		"quota_used is read-only":    {"quota_used": 0},
		"quota_resets_at read-only":  {"quota_resets_at": nil},
		"long unknown member":        {"quota": map[string]any{"limit": 100, "period": "day", strings.Repeat("x", 300): 1}},
		"long period":                q(100, strings.Repeat("x", 300)),
		"rate_limit spelled wrongly": {"rateLimit": map[string]any{"limit": 10, "window_seconds": 1}},
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// rawBody turns a test body into JSON, taking string values of rate_limit and quota that
// start with { as raw JSON.
func rawBody(body map[string]any) string {
	var parts []string
	for f, v := range body {
		var val string
		if s, ok := v.(string); ok && strings.HasPrefix(s, "{") {
			val = s
		} else {
			val = mustJSON(v)
		}
		parts = append(parts, fmt.Sprintf("%q:%s", f, val))
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// checkLimits checks a key object's limits and the store's record and lookup entry.
func (e *apiEnv) checkLimits(t *testing.T, k keyObj, secret string, rl *admin.RateLimit, q *admin.Quota) {
	t.Helper()
	if (k.RateLimit == nil) != (rl == nil) || (rl != nil && *k.RateLimit != *rl) {
		t.Fatalf("rate_limit %+v, want %+v", k.RateLimit, rl)
	}
	if (k.Quota == nil) != (q == nil) || (q != nil && *k.Quota != *q) {
		t.Fatalf("quota %+v, want %+v", k.Quota, q)
	}
	rec, err := e.s.Key(context.Background(), k.Instance, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := limitsText(storeRate(rl), storeQuota(q))
	if got := limitsText(rec.RateLimit, rec.Quota); got != want {
		t.Fatalf("the store holds %s, want %s", got, want)
	}
	if secret != "" {
		l := e.lookup(t, secret)
		if got := limitsText(l.RateLimit, l.Quota); got != want {
			t.Fatalf("the lookup entry holds %s, want %s", got, want)
		}
	}
}

func storeRate(r *admin.RateLimit) *store.RateLimit {
	if r == nil {
		return nil
	}
	return &store.RateLimit{Limit: r.Limit, Window: time.Duration(r.WindowSeconds) * time.Second}
}

func storeQuota(q *admin.Quota) *store.Quota {
	if q == nil {
		return nil
	}
	return &store.Quota{Limit: q.Limit, Period: q.Period}
}

// periodEnd is when the current period of a day or month quota ends, as the API writes it.
func periodEnd(period string) string {
	now := time.Now().UTC()
	switch period {
	case store.QuotaDay:
		return time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	case store.QuotaMonth:
		return time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	}
	return ""
}

func checkUse(t *testing.T, k keyObj, used int64) {
	t.Helper()
	if k.QuotaUsed == nil || *k.QuotaUsed != used {
		t.Fatalf("quota_used %v, want %d", k.QuotaUsed, used)
	}
	want := periodEnd(k.Quota.Period)
	if (want == "") != (k.QuotaResets == nil) || (want != "" && *k.QuotaResets != want) {
		t.Fatalf("quota_resets_at %v, want %q", k.QuotaResets, want)
	}
}

// A key created with limits shows them in the answer, GET, the list and the store; the
// bounds themselves are accepted; a key without limits shows null for all four fields.
func TestCreateLimitedKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		plain := e.createKey(t, sandboxInst, map[string]any{"name": "plain", "rate_limit": nil, "quota": nil})
		e.checkLimits(t, plain, plain.Secret, nil, nil)
		if plain.QuotaUsed != nil || plain.QuotaResets != nil {
			t.Fatalf("a key without a quota: %+v", plain)
		}

		rl := &admin.RateLimit{Limit: 100, WindowSeconds: 1}
		q := &admin.Quota{Limit: 10000, Period: "day"}
		k := e.createKey(t, prodInst, map[string]any{"name": "limited", "rate_limit": rl, "quota": q, "scopes": []string{"a"}})
		e.checkLimits(t, k, k.Secret, rl, q)
		checkUse(t, k, 0)
		e.checkRestrictions(t, k, k.Secret, []string{"a"}, nil, nil)
		r := e.Do(t, "GET", keyPath(prodInst, k.ID), "reader", nil)
		admintest.Want(t, r, 200, "")
		got := checkKey(t, r.Obj, false)
		e.checkLimits(t, got, "", rl, q)
		checkUse(t, got, 0)
		r = e.Do(t, "GET", keysPath(prodInst), "reader", nil)
		listIDs(t, r)
		first := checkKey(t, r.Obj["data"].([]any)[0].(map[string]any), false)
		if first.ID != k.ID {
			t.Fatalf("list starts with %s", first.ID)
		}
		e.checkLimits(t, first, "", rl, q)
		checkUse(t, first, 0)

		// Only one of the two; the bounds; a month and a total quota.
		for _, c := range []struct {
			rl *admin.RateLimit
			q  *admin.Quota
		}{
			{&admin.RateLimit{Limit: 1, WindowSeconds: 86400}, nil},
			{&admin.RateLimit{Limit: 1000000, WindowSeconds: 1}, &admin.Quota{Limit: 1, Period: "month"}},
			{nil, &admin.Quota{Limit: 1_000_000_000_000, Period: "total"}},
			{&admin.RateLimit{Limit: 1000, WindowSeconds: 60}, &admin.Quota{Limit: 5, Period: "day"}},
		} {
			body := map[string]any{"name": "bounds"}
			if c.rl != nil {
				body["rate_limit"] = c.rl
			}
			if c.q != nil {
				body["quota"] = c.q
			}
			k := e.createKey(t, sandboxInst, body)
			e.checkLimits(t, k, k.Secret, c.rl, c.q)
			if c.q != nil {
				checkUse(t, k, 0)
			}
		}
	})
}

// Every bad limit on create is 400 invalid_request, writes nothing, echoes nothing.
func TestCreateLimitedKeyRefused(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		for name, fields := range badLimits() {
			t.Run(name, func(t *testing.T) {
				body := map[string]any{"name": "refused", "scopes": []string{"ok"}}
				for f, v := range fields {
					body[f] = v
				}
				checkNoEcho(t, e.refused(t, "POST", keysPath(sandboxInst), "creator", rawBody(body), 400, "invalid_request"))
			})
		}
	})
}

// PATCH sets, changes and removes (null) the limits, alone or with other fields, in the
// answer, GET, the store and the lookup entry, recording the fields that changed.
func TestUpdateKeyLimits(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		k := e.createKey(t, sandboxInst, map[string]any{"name": "to limit"})
		p := keyPath(sandboxInst, k.ID)
		patch := func(t *testing.T, body any) keyObj {
			t.Helper()
			r := e.Do(t, "PATCH", p, "creator", body)
			admintest.Want(t, r, 200, "")
			got := checkKey(t, r.Obj, false)
			g := e.Do(t, "GET", p, "reader", nil)
			admintest.Want(t, g, 200, "")
			again := checkKey(t, g.Obj, false)
			if mustJSON(again) != mustJSON(got) {
				t.Fatalf("GET after PATCH = %+v, PATCH answered %+v", again, got)
			}
			return got
		}
		checkEvent := func(t *testing.T, fields ...string) {
			t.Helper()
			ev := e.events(t, sandboxInst)[0]
			if ev.Type != store.EventKeyUpdated || ev.KeyID != k.ID || !slices.Equal(ev.Fields, fields) {
				t.Fatalf("last event %+v, want api_key.updated of %s with fields %v", ev, k.ID, fields)
			}
		}
		rl := &admin.RateLimit{Limit: 50, WindowSeconds: 10}
		got := patch(t, map[string]any{"rate_limit": rl})
		e.checkLimits(t, got, k.Secret, rl, nil)
		checkEvent(t, "rate_limit")
		rl = &admin.RateLimit{Limit: 5, WindowSeconds: 10}
		got = patch(t, map[string]any{"rate_limit": rl})
		e.checkLimits(t, got, k.Secret, rl, nil)
		q := &admin.Quota{Limit: 1000, Period: "month"}
		got = patch(t, map[string]any{"quota": q})
		e.checkLimits(t, got, k.Secret, rl, q)
		checkUse(t, got, 0)
		checkEvent(t, "quota")
		// With other fields; only what changed is listed.
		q = &admin.Quota{Limit: 1000, Period: "total"}
		got = patch(t, map[string]any{"name": "limited", "rate_limit": rl, "quota": q})
		e.checkLimits(t, got, k.Secret, rl, q)
		checkUse(t, got, 0)
		checkEvent(t, "name", "quota")
		// The same values again: nothing written.
		before := e.snapshot(t)
		patch(t, map[string]any{"rate_limit": rl, "quota": q})
		if after := e.snapshot(t); after != before {
			t.Fatalf("an update that changes nothing wrote:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		// null removes each.
		got = patch(t, map[string]any{"rate_limit": nil})
		e.checkLimits(t, got, k.Secret, nil, q)
		checkEvent(t, "rate_limit")
		got = patch(t, map[string]any{"quota": nil})
		e.checkLimits(t, got, k.Secret, nil, nil)
		if got.QuotaUsed != nil || got.QuotaResets != nil {
			t.Fatalf("quota removed but %+v", got)
		}
		checkEvent(t, "quota")
	})
}

// Every bad limit in a PATCH is 400 invalid_request and writes nothing, even beside a good
// field; a revoked key's limits cannot be changed.
func TestUpdateKeyLimitsRefused(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]any{"name": "target",
			"rate_limit": map[string]any{"limit": 10, "window_seconds": 1}, "quota": map[string]any{"limit": 10, "period": "day"}})
		p := keyPath(sandboxInst, k.ID)
		for name, body := range badLimits() {
			t.Run(name, func(t *testing.T) {
				checkNoEcho(t, e.refused(t, "PATCH", p, "creator", rawBody(body), 400, "invalid_request"))
				body["name"] = "changed"
				e.refused(t, "PATCH", p, "creator", rawBody(body), 400, "invalid_request")
			})
		}
		admintest.Want(t, e.Do(t, "DELETE", p, "ops", nil), 200, "")
		for _, body := range []map[string]any{
			{"rate_limit": nil}, {"quota": nil}, {"quota": map[string]any{"limit": 10, "period": "month"}},
		} {
			e.refused(t, "PATCH", p, "creator", body, 409, "api_key_revoked")
		}
	})
}

// A roll gives the replacement the old key's limits as they are now; the replacement's
// quota is counted afresh while the old key keeps its count.
func TestRollCopiesLimits(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		old := e.createKey(t, sandboxInst, map[string]any{"name": "roll me",
			"rate_limit": map[string]any{"limit": 10, "window_seconds": 1}, "quota": map[string]any{"limit": 100, "period": "day"}})
		rl := &admin.RateLimit{Limit: 20, WindowSeconds: 60}
		q := &admin.Quota{Limit: 100, Period: "day"}
		admintest.Want(t, e.Do(t, "PATCH", keyPath(sandboxInst, old.ID), "creator", map[string]any{"rate_limit": rl}), 200, "")
		leased := int64(7)
		e.lease(t, sandboxInst, old.ID, *storeQuota(q), leased)
		r := e.Do(t, "POST", keyPath(sandboxInst, old.ID)+"/roll", "roller", map[string]any{"expire_old_in_seconds": 60})
		admintest.Want(t, r, 201, "")
		nk := checkKey(t, r.Obj, true)
		e.checkLimits(t, nk, nk.Secret, rl, q)
		checkUse(t, nk, 0)
		g := e.Do(t, "GET", keyPath(sandboxInst, nk.ID), "reader", nil)
		checkUse(t, checkKey(t, g.Obj, false), 0)
		g = e.Do(t, "GET", keyPath(sandboxInst, old.ID), "reader", nil)
		ok := checkKey(t, g.Obj, false)
		e.checkLimits(t, ok, old.Secret, rl, q)
		checkUse(t, ok, leased)
		// An unlimited key rolls into an unlimited one.
		plain := e.createKey(t, sandboxInst, map[string]any{"name": "plain"})
		r = e.Do(t, "POST", keyPath(sandboxInst, plain.ID)+"/roll", "roller", nil)
		admintest.Want(t, r, 201, "")
		pk := checkKey(t, r.Obj, true)
		e.checkLimits(t, pk, pk.Secret, nil, nil)
	})
}

// quota_used is the counter of the current period, in GET, the list, PATCH and DELETE
// answers; each period has its own counter.
func TestQuotaUsed(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		inst := e.newInstance(t, "sandbox")
		day := e.createKey(t, inst, map[string]any{"name": "day", "quota": map[string]any{"limit": 10000, "period": "day"}})
		month := e.createKey(t, inst, map[string]any{"name": "month", "quota": map[string]any{"limit": 50, "period": "month"}})
		total := e.createKey(t, inst, map[string]any{"name": "total", "quota": map[string]any{"limit": 5, "period": "total"}})
		none := e.createKey(t, inst, map[string]any{"name": "none", "rate_limit": map[string]any{"limit": 5, "window_seconds": 1}})
		e.lease(t, inst, day.ID, store.Quota{Limit: 10000, Period: "day"}, 1234)
		e.lease(t, inst, month.ID, store.Quota{Limit: 50, Period: "month"}, 50)
		e.lease(t, inst, total.ID, store.Quota{Limit: 5, Period: "total"}, 2)
		// Yesterday's and last month's counters are not today's.
		l := e.leaser(t)
		ctx := context.Background()
		_, _, yesterday := store.QuotaPeriod(store.Quota{Period: "day"}, time.Now().AddDate(0, 0, -1))
		if _, _, err := l.Lease(ctx, inst, day.ID, yesterday, 10000, 99, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{day.ID: 1234, month.ID: 50, total.ID: 2}
		r := e.Do(t, "GET", keysPath(inst), "reader", nil)
		listIDs(t, r)
		for _, d := range r.Obj["data"].([]any) {
			k := checkKey(t, d.(map[string]any), false)
			if k.ID == none.ID {
				if k.QuotaUsed != nil {
					t.Fatalf("a key without a quota lists quota_used %d", *k.QuotaUsed)
				}
				continue
			}
			checkUse(t, k, want[k.ID])
			g := e.Do(t, "GET", keyPath(inst, k.ID), "reader", nil)
			checkUse(t, checkKey(t, g.Obj, false), want[k.ID])
		}
		r = e.Do(t, "PATCH", keyPath(inst, day.ID), "creator", map[string]any{"name": "day renamed"})
		admintest.Want(t, r, 200, "")
		checkUse(t, checkKey(t, r.Obj, false), 1234)
		r = e.Do(t, "DELETE", keyPath(inst, total.ID), "ops", nil)
		admintest.Want(t, r, 200, "")
		checkUse(t, checkKey(t, r.Obj, false), 2)
		// A changed period reads the new period's counter.
		r = e.Do(t, "PATCH", keyPath(inst, day.ID), "creator", map[string]any{"quota": map[string]any{"limit": 10000, "period": "month"}})
		admintest.Want(t, r, 200, "")
		checkUse(t, checkKey(t, r.Obj, false), 0)
	})
}
