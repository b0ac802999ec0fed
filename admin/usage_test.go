package admin_test

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/store"
)

func usagePath(instance, id string, q url.Values) string {
	p := "/v1/instances/" + instance + "/usage"
	if id != "" {
		p = keysPath(instance) + "/" + id + "/usage"
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

func decodeUsage(t *testing.T, r admintest.Reply) admin.Usage {
	t.Helper()
	admintest.Want(t, r, 200, "")
	var u admin.Usage
	if err := json.Unmarshal(r.Body, &u); err != nil {
		t.Fatalf("decoding %s: %v", r, err)
	}
	if u.Object != "usage" {
		t.Fatalf("object %q, want usage", u.Object)
	}
	return u
}

func TestUsageAnswers(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		ctx := context.Background()
		a := e.createKey(t, sandboxInst, map[string]string{"name": "a"})
		b := e.createKey(t, sandboxInst, map[string]string{"name": "b"})
		// Usage as two gateways would add it: three hours ago, and in the last minutes.
		now := time.Now().UTC()
		h3 := now.Add(-3 * time.Hour).Truncate(time.Minute)
		m1 := now.Add(-time.Minute).Truncate(time.Minute)
		if err := e.s.AddUsage(ctx, []store.UsageCount{
			{Instance: sandboxInst, KeyID: a.ID, Minute: h3, OK: 10, Refused: map[string]int64{"api_key_ip_not_allowed": 2}},
			{Instance: sandboxInst, KeyID: a.ID, Minute: m1, OK: 5},
			{Instance: sandboxInst, KeyID: b.ID, Minute: m1, OK: 7, Refused: map[string]int64{"rate_limit_exceeded": 1}},
		}); err != nil {
			t.Fatal(err)
		}
		if err := e.s.AddUsage(ctx, []store.UsageCount{{Instance: sandboxInst, KeyID: a.ID, Minute: m1, OK: 1, Refused: map[string]int64{"api_key_revoked": 4}}}); err != nil {
			t.Fatal(err)
		}

		// Defaults: hours of the last 24 h, every bucket present, oldest first.
		u := decodeUsage(t, e.Do(t, "GET", usagePath(sandboxInst, a.ID, nil), "reader", nil))
		if u.Granularity != "hour" || u.KeyID == nil || *u.KeyID != a.ID || u.Instance != sandboxInst {
			t.Fatalf("answer head %+v", u)
		}
		if n := len(u.Data); n != 24 && n != 25 {
			t.Fatalf("%d hour buckets for the last 24 h", n)
		}
		for i, bk := range u.Data {
			if !bk.Start.Equal(bk.Start.Truncate(time.Hour)) || (i > 0 && !bk.Start.Equal(u.Data[i-1].Start.Add(time.Hour))) || bk.Refused == nil {
				t.Fatalf("bucket %d %+v: not aligned, not consecutive, or refused null", i, bk)
			}
		}
		if u.Total.OK != 16 || u.Total.Refused["api_key_ip_not_allowed"] != 2 || u.Total.Refused["api_key_revoked"] != 4 || len(u.Total.Refused) != 2 {
			t.Fatalf("total %+v, want ok 16, ip 2, revoked 4", u.Total)
		}
		var sum int64
		for _, bk := range u.Data {
			sum += bk.OK
			if bk.Start.Equal(h3.Truncate(time.Hour)) && (bk.OK != 10 || bk.Refused["api_key_ip_not_allowed"] != 2) {
				t.Fatalf("the bucket three hours ago: %+v", bk)
			}
		}
		if sum != u.Total.OK {
			t.Fatalf("buckets sum to %d, total says %d", sum, u.Total.OK)
		}

		// Minutes over an explicit range (to exclusive); the instance sums both keys.
		q := url.Values{"granularity": {"minute"}, "from": {m1.Format(time.RFC3339)}, "to": {m1.Add(time.Minute).Format(time.RFC3339)}}
		u = decodeUsage(t, e.Do(t, "GET", usagePath(sandboxInst, a.ID, q), "reader", nil))
		if len(u.Data) != 1 || u.Data[0].OK != 6 || u.Data[0].Refused["api_key_revoked"] != 4 {
			t.Fatalf("key a's minute: %+v", u.Data)
		}
		u = decodeUsage(t, e.Do(t, "GET", usagePath(sandboxInst, "", q), "reader", nil))
		if u.KeyID != nil || len(u.Data) != 1 || u.Data[0].OK != 13 || u.Data[0].Refused["rate_limit_exceeded"] != 1 || u.Data[0].Refused["api_key_revoked"] != 4 {
			t.Fatalf("the instance's minute: key_id %v, %+v", u.KeyID, u.Data)
		}
		// Days, from a date; an offset in a time is honoured.
		day := now.Truncate(24 * time.Hour)
		q = url.Values{"granularity": {"day"}, "from": {day.AddDate(0, 0, -1).Format("2006-01-02")}, "to": {day.Add(24 * time.Hour).In(time.FixedZone("x", 2*3600)).Format(time.RFC3339)}}
		u = decodeUsage(t, e.Do(t, "GET", usagePath(sandboxInst, "", q), "reader", nil))
		if len(u.Data) != 2 || !u.Data[1].Start.Equal(day) || u.Total.OK != 23 {
			t.Fatalf("days: %+v (total %+v), want 2 days summing to 23", u.Data, u.Total)
		}
		// Another instance sees none of it.
		u = decodeUsage(t, e.Do(t, "GET", usagePath(prodInst, "", nil), "reader", nil))
		if u.Total.OK != 0 || len(u.Total.Refused) != 0 {
			t.Fatalf("prod instance total %+v", u.Total)
		}
	})
}

func TestUsageRefusesBadQueries(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "a"})
		for _, q := range []string{
			"granularity=week", "granularity=", "granularity=Minute",
			"from=yesterday", "to=2026-13-01", "from=2026-12-01T10:00:00", // no offset
			"from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", // backwards
			"from=2026-12-01T00:00:00Z&to=2026-12-01T00:00:00Z", // empty
			"granularity=minute&from=2026-11-01&to=2026-11-04",  // 4,320 minutes
			"granularity=hour&from=2025-01-01&to=2026-01-01",    // 8,760 hours
			"limit=10", "from=1969-12-31",
		} {
			e.refused(t, "GET", keysPath(sandboxInst)+"/"+k.ID+"/usage?"+q, "reader", nil, 400, "invalid_request")
			e.refused(t, "GET", "/v1/instances/"+sandboxInst+"/usage?"+q, "reader", nil, 400, "invalid_request")
		}
		e.refused(t, "GET", keysPath(sandboxInst)+"/not-a-key/usage", "reader", nil, 400, "invalid_request")
		// 48 hours of minutes is the most one answer holds, and fits.
		r := e.Do(t, "GET", keysPath(sandboxInst)+"/"+k.ID+"/usage?granularity=minute&from=2026-11-01&to=2026-11-03", "reader", nil)
		if u := decodeUsage(t, r); len(u.Data) != admin.MaxUsageBuckets {
			t.Fatalf("48 h of minutes: %d buckets", len(u.Data))
		}
	})
}
