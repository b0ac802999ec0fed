package admin_test

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/store"
)

func keyPath(instance, id string) string { return keysPath(instance) + "/" + id }

// many returns n values made by f.
func many(n int, f func(i int) string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func manyMeta(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// lookup is what the gateway sees of a key: its lookup entry, found by the secret's hash.
func (e *apiEnv) lookup(t *testing.T, secret string) store.Lookup {
	t.Helper()
	l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(secret))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func prefixes(t *testing.T, list ...string) []netip.Prefix {
	t.Helper()
	if list == nil {
		return nil
	}
	out, err := store.ParseAllowedIPs(list)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkRestrictions checks a key object's and its lookup entry's restrictions.
func (e *apiEnv) checkRestrictions(t *testing.T, k keyObj, secret string, scopes, ips []string, meta map[string]string) {
	t.Helper()
	if meta == nil {
		meta = map[string]string{}
	}
	if !slices.Equal(k.Scopes, scopes) || (k.Scopes == nil) != (scopes == nil) {
		t.Fatalf("scopes %q, want %q", k.Scopes, scopes)
	}
	if !slices.Equal(k.AllowedIPs, ips) || (k.AllowedIPs == nil) != (ips == nil) {
		t.Fatalf("allowed_ips %q, want %q", k.AllowedIPs, ips)
	}
	if !reflect.DeepEqual(k.Metadata, meta) {
		t.Fatalf("metadata %v, want %v", k.Metadata, meta)
	}
	if secret == "" {
		return
	}
	l := e.lookup(t, secret)
	if !slices.Equal(l.Scopes, scopes) || !slices.Equal(l.AllowedIPs, prefixes(t, ips...)) || len(l.Metadata) != len(meta) {
		t.Fatalf("lookup entry has %q %v %v; want %q %q %v", l.Scopes, l.AllowedIPs, l.Metadata, scopes, ips, meta)
	}
	for name, v := range meta {
		if l.Metadata[name] != v {
			t.Fatalf("lookup entry metadata %v, want %v", l.Metadata, meta)
		}
	}
}

// badRestrictions are values of the new fields that create and update both refuse with 400
// invalid_request.
func badRestrictions() map[string]map[string]any {
	long := strings.Repeat("x", 300)
	return map[string]map[string]any{
		"empty scopes":           {"scopes": []string{}},
		"51 scopes":              {"scopes": many(51, func(i int) string { return fmt.Sprintf("s%d", i) })},
		"scope in capitals":      {"scopes": []string{"Charges:read"}},
		"scope with inner *":     {"scopes": []string{"charges*:read"}},
		"scope empty":            {"scopes": []string{""}},
		"scope too long":         {"scopes": []string{"a" + strings.Repeat("b", 64)}},
		"scope long garbage":     {"scopes": []string{long}},
		"scope twice":            {"scopes": []string{"charges:read", "charges:read"}},
		"scope starting with _":  {"scopes": []string{"_charges"}},
		"scopes a string":        {"scopes": "charges:read"},
		"scopes an object":       {"scopes": map[string]any{}},
		"scope a number":         {"scopes": []any{1}},
		"scope null":             {"scopes": []any{nil}},
		"empty allowed_ips":      {"allowed_ips": []string{}},
		"101 addresses":          {"allowed_ips": many(101, func(i int) string { return fmt.Sprintf("10.0.%d.%d", i/250, i%250) })},
		"bad IPv4":               {"allowed_ips": []string{"10.0.0.256"}},
		"prefix too long":        {"allowed_ips": []string{"10.0.0.0/33"}},
		"IPv6 zone":              {"allowed_ips": []string{"fe80::1%eth0"}},
		"host name":              {"allowed_ips": []string{"example.com"}},
		"address empty":          {"allowed_ips": []string{""}},
		"address long garbage":   {"allowed_ips": []string{long}},
		"allowed_ips a string":   {"allowed_ips": "10.0.0.1"},
		"address a number":       {"allowed_ips": []any{10}},
		"address null":           {"allowed_ips": []any{nil}},
		"21 metadata values":     {"metadata": manyMeta(21)},
		"metadata name space":    {"metadata": map[string]string{"bad name": "x"}},
		"metadata name empty":    {"metadata": map[string]string{"": "x"}},
		"metadata name 41":       {"metadata": map[string]string{strings.Repeat("n", 41): "x"}},
		"metadata name long":     {"metadata": map[string]string{long: "x"}},
		"metadata value 501":     {"metadata": map[string]string{"note": strings.Repeat("é", 501)}},
		"metadata value number":  {"metadata": map[string]any{"n": 1}},
		"metadata value null":    {"metadata": map[string]any{"n": nil}},
		"metadata value object":  {"metadata": map[string]any{"n": map[string]any{}}},
		"metadata value boolean": {"metadata": map[string]any{"n": true}},
		"metadata a list":        {"metadata": []string{"a"}},
		"metadata a string":      {"metadata": "a=b"},
		"Scopes spelled wrong":   {"Scopes": []string{"a"}},
		"unknown field":          {"rate_limits": 10},
	}
}

// checkNoEcho fails when an error message repeats a long run of what was sent.
func checkNoEcho(t *testing.T, r admintest.Reply) {
	t.Helper()
	if strings.Contains(r.Error.Message, strings.Repeat("x", 60)) || strings.Contains(r.Error.Message, strings.Repeat("é", 60)) {
		t.Fatalf("the answer echoes the value: %s", r)
	}
}

// A key created with restrictions shows them, in the answer, GET, the list and the lookup
// entry; the limits themselves are accepted.
func TestCreateRestrictedKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		// No restriction: null, null, {}; explicit nulls and {} are the same.
		plain := e.createKey(t, sandboxInst, map[string]any{"name": "plain"})
		e.checkRestrictions(t, plain, plain.Secret, nil, nil, nil)
		nulls := e.createKey(t, sandboxInst, map[string]any{"name": "nulls", "scopes": nil, "allowed_ips": nil, "metadata": nil})
		e.checkRestrictions(t, nulls, nulls.Secret, nil, nil, nil)
		empty := e.createKey(t, sandboxInst, map[string]any{"name": "empty meta", "metadata": map[string]string{}})
		e.checkRestrictions(t, empty, empty.Secret, nil, nil, nil)

		k := e.createKey(t, prodInst, map[string]any{
			"name":        "restricted",
			"scopes":      []string{"charges:read", "refunds:*", "a"},
			"allowed_ips": []string{"192.0.2.7", "10.1.2.3/8", "198.51.100.9/32", "2001:db8::/32", "2001:db8::1/128", "::ffff:203.0.113.5"},
			"metadata":    map[string]string{"customer": "cus_123", "plan-tier": "gold", "note": "日本"},
		})
		scopes := []string{"charges:read", "refunds:*", "a"}
		ips := []string{"192.0.2.7", "10.0.0.0/8", "198.51.100.9", "2001:db8::/32", "2001:db8::1", "203.0.113.5"}
		meta := map[string]string{"customer": "cus_123", "plan-tier": "gold", "note": "日本"}
		e.checkRestrictions(t, k, k.Secret, scopes, ips, meta)
		r := e.Do(t, "GET", keyPath(prodInst, k.ID), "reader", nil)
		admintest.Want(t, r, 200, "")
		got := checkKey(t, r.Obj, false)
		e.checkRestrictions(t, got, "", scopes, ips, meta)
		r = e.Do(t, "GET", keysPath(prodInst), "reader", nil)
		listIDs(t, r)
		first := checkKey(t, r.Obj["data"].([]any)[0].(map[string]any), false)
		if first.ID != k.ID {
			t.Fatalf("list starts with %s", first.ID)
		}
		e.checkRestrictions(t, first, "", scopes, ips, meta)

		// The limits: 50 scopes of 64 characters, 100 addresses, 20 values of 500 characters
		// under names of 40.
		big := map[string]string{}
		for i := range 20 {
			big[fmt.Sprintf("%s%02d", strings.Repeat("n", 38), i)] = strings.Repeat("é", 500)
		}
		bigScopes := many(50, func(i int) string { return fmt.Sprintf("%02d%s", i, strings.Repeat("s", 62)) })
		bigIPs := many(100, func(i int) string { return fmt.Sprintf("2001:db8::%x", i+1) })
		limits := e.createKey(t, sandboxInst, map[string]any{"name": "limits", "scopes": bigScopes, "allowed_ips": bigIPs, "metadata": big})
		e.checkRestrictions(t, limits, limits.Secret, bigScopes, bigIPs, big)
	})
}

// Every bad restriction on create is 400 invalid_request, writes nothing, echoes nothing.
func TestCreateRestrictedKeyRefused(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		for name, fields := range badRestrictions() {
			t.Run(name, func(t *testing.T) {
				body := map[string]any{"name": "refused"}
				for f, v := range fields {
					body[f] = v
				}
				checkNoEcho(t, e.refused(t, "POST", keysPath(sandboxInst), "creator", body, 400, "invalid_request"))
			})
		}
	})
}

// PATCH changes the fields it names, each alone or all at once, in the answer, GET and
// the lookup entry, and records api_key.updated with the names of the changed fields.
func TestUpdateKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		day := time.Now().UTC().AddDate(0, 0, 30).Format("2006-01-02")
		day2 := time.Now().UTC().AddDate(0, 0, 3).Format("2006-01-02")
		k := e.createKey(t, sandboxInst, map[string]any{"name": "to change"})
		p := keyPath(sandboxInst, k.ID)
		patch := func(t *testing.T, body any) keyObj {
			t.Helper()
			r := e.Do(t, "PATCH", p, "creator", body)
			admintest.Want(t, r, 200, "")
			got := checkKey(t, r.Obj, false)
			if got.ID != k.ID || got.Prefix != k.Prefix || *got.CreatedAt != *k.CreatedAt || got.Status != "active" {
				t.Fatalf("patched key %+v, was %+v", got, k)
			}
			g := e.Do(t, "GET", p, "reader", nil)
			admintest.Want(t, g, 200, "")
			if again := checkKey(t, g.Obj, false); !reflect.DeepEqual(again, got) {
				t.Fatalf("GET after PATCH = %+v, PATCH answered %+v", again, got)
			}
			return got
		}
		lastEvent := func(t *testing.T) store.Event {
			t.Helper()
			return e.events(t, sandboxInst)[0]
		}
		checkEvent := func(t *testing.T, fields ...string) {
			t.Helper()
			ev := lastEvent(t)
			if ev.Type != store.EventKeyUpdated || ev.KeyID != k.ID || ev.Actor != "creator" || !slices.Equal(ev.Fields, fields) {
				t.Fatalf("last event %+v, want api_key.updated of %s by creator with fields %v", ev, k.ID, fields)
			}
			near(t, "event created_at", ev.CreatedAt, time.Now(), 5*time.Second)
		}

		t.Run("name", func(t *testing.T) {
			got := patch(t, map[string]any{"name": "renamed"})
			if got.Name != "renamed" || got.ExpiresAt != nil {
				t.Fatalf("%+v", got)
			}
			e.checkRestrictions(t, got, k.Secret, nil, nil, nil)
			checkEvent(t, "name")
		})
		t.Run("expires_at", func(t *testing.T) {
			got := patch(t, map[string]any{"expires_at": day})
			if got.ExpiresAt == nil || *got.ExpiresAt != day+"T00:00:00Z" || got.Name != "renamed" {
				t.Fatalf("%+v", got)
			}
			if l := e.lookup(t, k.Secret); !l.ExpiresAt.Equal(utc(t, "expires_at", got.ExpiresAt)) {
				t.Fatalf("lookup expires %v", l.ExpiresAt)
			}
			checkEvent(t, "expires_at")
			got = patch(t, map[string]any{"expires_at": day2 + "T10:00:00+02:00"})
			if *got.ExpiresAt != day2+"T08:00:00Z" {
				t.Fatalf("expires_at %s", *got.ExpiresAt)
			}
			got = patch(t, map[string]any{"expires_at": nil})
			if got.ExpiresAt != nil {
				t.Fatalf("expires_at null left %s", *got.ExpiresAt)
			}
			if l := e.lookup(t, k.Secret); !l.ExpiresAt.IsZero() {
				t.Fatalf("lookup expires %v after expires_at null", l.ExpiresAt)
			}
			checkEvent(t, "expires_at")
		})
		t.Run("scopes", func(t *testing.T) {
			got := patch(t, map[string]any{"scopes": []string{"charges:read", "refunds:*"}})
			e.checkRestrictions(t, got, k.Secret, []string{"charges:read", "refunds:*"}, nil, nil)
			checkEvent(t, "scopes")
			got = patch(t, map[string]any{"scopes": []string{"charges:read"}})
			e.checkRestrictions(t, got, k.Secret, []string{"charges:read"}, nil, nil)
			got = patch(t, map[string]any{"scopes": nil})
			e.checkRestrictions(t, got, k.Secret, nil, nil, nil)
			checkEvent(t, "scopes")
		})
		t.Run("allowed_ips", func(t *testing.T) {
			got := patch(t, map[string]any{"allowed_ips": []string{"203.0.113.0/24", "2001:db8::1/128"}})
			e.checkRestrictions(t, got, k.Secret, nil, []string{"203.0.113.0/24", "2001:db8::1"}, nil)
			checkEvent(t, "allowed_ips")
			got = patch(t, map[string]any{"allowed_ips": nil})
			e.checkRestrictions(t, got, k.Secret, nil, nil, nil)
		})
		t.Run("metadata", func(t *testing.T) {
			got := patch(t, map[string]any{"metadata": map[string]string{"customer": "cus_1", "tier": "gold"}})
			e.checkRestrictions(t, got, k.Secret, nil, nil, map[string]string{"customer": "cus_1", "tier": "gold"})
			checkEvent(t, "metadata")
			// The whole object is replaced, not merged.
			got = patch(t, map[string]any{"metadata": map[string]string{"customer": "cus_2"}})
			e.checkRestrictions(t, got, k.Secret, nil, nil, map[string]string{"customer": "cus_2"})
			got = patch(t, map[string]any{"metadata": map[string]string{}})
			e.checkRestrictions(t, got, k.Secret, nil, nil, nil)
			patch(t, map[string]any{"metadata": map[string]string{"x": "y"}})
			got = patch(t, map[string]any{"metadata": nil})
			e.checkRestrictions(t, got, k.Secret, nil, nil, nil)
			checkEvent(t, "metadata")
		})
		t.Run("all together", func(t *testing.T) {
			got := patch(t, map[string]any{
				"name": "everything", "expires_at": day, "scopes": []string{"a:b"},
				"allowed_ips": []string{"192.0.2.1"}, "metadata": map[string]string{"m": "1"},
			})
			if got.Name != "everything" || got.ExpiresAt == nil || *got.ExpiresAt != day+"T00:00:00Z" {
				t.Fatalf("%+v", got)
			}
			e.checkRestrictions(t, got, k.Secret, []string{"a:b"}, []string{"192.0.2.1"}, map[string]string{"m": "1"})
			checkEvent(t, "name", "expires_at", "scopes", "allowed_ips", "metadata")
			// Only what changed is listed.
			got = patch(t, map[string]any{"name": "everything", "scopes": []string{"a:b", "c"}, "metadata": map[string]string{"m": "1"}})
			e.checkRestrictions(t, got, k.Secret, []string{"a:b", "c"}, []string{"192.0.2.1"}, map[string]string{"m": "1"})
			checkEvent(t, "scopes")
		})
		t.Run("no change", func(t *testing.T) {
			// Values equal to the key's: 200, the key as it is, no event.
			before := e.snapshot(t)
			got := patch(t, map[string]any{"name": "everything", "scopes": []string{"a:b", "c"}, "allowed_ips": []string{"192.0.2.1/32"}})
			if got.Name != "everything" {
				t.Fatalf("%+v", got)
			}
			if after := e.snapshot(t); after != before {
				t.Fatalf("an update that changes nothing wrote:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
		// Nothing else was touched: the other keys and the other instance.
		other := e.createKey(t, sandboxInst, map[string]any{"name": "bystander"})
		patch(t, map[string]any{"scopes": []string{"z"}})
		r := e.Do(t, "GET", keyPath(sandboxInst, other.ID), "reader", nil)
		e.checkRestrictions(t, checkKey(t, r.Obj, false), other.Secret, nil, nil, nil)
	})
}

// Every bad value in a PATCH is 400 (invalid_request, or invalid_expiration for a bad
// expiry) and writes nothing; so is a body that names no field.
func TestUpdateKeyRefused(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		now := time.Now().UTC()
		k := e.createKey(t, sandboxInst, map[string]any{"name": "target", "scopes": []string{"keep"},
			"allowed_ips": []string{"192.0.2.1"}, "metadata": map[string]string{"keep": "me"}})
		p := keyPath(sandboxInst, k.ID)
		for name, body := range badRestrictions() {
			t.Run(name, func(t *testing.T) {
				checkNoEcho(t, e.refused(t, "PATCH", p, "creator", body, 400, "invalid_request"))
				// A bad field spoils a good one sent with it.
				body["name"] = "changed"
				e.refused(t, "PATCH", p, "creator", body, 400, "invalid_request")
			})
		}
		for _, tc := range []struct {
			name string
			body any
			code string
		}{
			{"empty object", `{}`, "invalid_request"},
			{"empty body", ``, "invalid_request"},
			{"null body", `null`, "invalid_request"},
			{"array body", `[{"name":"x"}]`, "invalid_request"},
			{"bad JSON", `{"name":`, "invalid_request"},
			{"two objects", `{"name":"a"}{"name":"b"}`, "invalid_request"},
			{"name empty", map[string]any{"name": ""}, "invalid_request"},
			{"name spaces", map[string]any{"name": "   "}, "invalid_request"},
			{"name 101", map[string]any{"name": strings.Repeat("é", 101)}, "invalid_request"},
			{"name control", map[string]any{"name": "a\x00b"}, "invalid_request"},
			{"name null", map[string]any{"name": nil}, "invalid_request"},
			{"name number", map[string]any{"name": 7}, "invalid_request"},
			{"expires_at number", map[string]any{"expires_at": 20300101}, "invalid_request"},
			{"expires_at list", map[string]any{"expires_at": []string{"2030-01-01"}}, "invalid_request"},
			{"expires_at today", map[string]any{"expires_at": now.Format("2006-01-02")}, "invalid_expiration"},
			{"expires_at past", map[string]any{"expires_at": "2001-01-01"}, "invalid_expiration"},
			{"expires_at garbage", map[string]any{"expires_at": "next week"}, "invalid_expiration"},
			{"expires_at empty", map[string]any{"expires_at": ""}, "invalid_expiration"},
			{"expires_at later today", map[string]any{"expires_at": now.Format("2006-01-02") + "T23:59:59Z"}, "invalid_expiration"},
			{"good name, bad expiry", map[string]any{"name": "fine", "expires_at": "2001-01-01"}, "invalid_expiration"},
			{"unknown field only", map[string]any{"status": "active"}, "invalid_request"},
			{"read-only field", map[string]any{"prefix": "sk_test_aaaaaa"}, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				checkNoEcho(t, e.refused(t, "PATCH", p, "creator", tc.body, 400, tc.code))
			})
		}
		// A body over 64 KiB.
		e.refused(t, "PATCH", p, "creator", `{"name":"ok"}`+strings.Repeat(" ", 70000), 413, "request_too_large")
		// The target is as it was.
		r := e.Do(t, "GET", p, "reader", nil)
		got := checkKey(t, r.Obj, false)
		if got.Name != "target" {
			t.Fatalf("target renamed to %q", got.Name)
		}
		e.checkRestrictions(t, got, k.Secret, []string{"keep"}, []string{"192.0.2.1"}, map[string]string{"keep": "me"})
	})
}

// A revoked key cannot be changed (409 api_key_revoked); a missing one is 404; a bad path
// is 400. Nothing is written.
func TestUpdateKeyConflictsAndPaths(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]any{"name": "revoked soon", "scopes": []string{"a"}})
		admintest.Want(t, e.Do(t, "DELETE", keyPath(sandboxInst, k.ID), "ops", nil), 200, "")
		for _, body := range []map[string]any{
			{"name": "x"}, {"scopes": nil}, {"expires_at": nil}, {"allowed_ips": []string{"192.0.2.1"}}, {"metadata": map[string]string{"a": "b"}},
		} {
			r := e.refused(t, "PATCH", keyPath(sandboxInst, k.ID), "creator", body, 409, "api_key_revoked")
			if r.Error.Type != "invalid_request_error" {
				t.Fatalf("409 of type %q", r.Error.Type)
			}
		}
		// A bad value is still a 400, before the store is asked.
		e.refused(t, "PATCH", keyPath(sandboxInst, k.ID), "creator", map[string]any{"scopes": []string{}}, 400, "invalid_request")
		// An expired key may be changed (its expiry too).
		exp := e.mintKey(t, sandboxInst, time.Now().Add(-time.Minute))
		r := e.Do(t, "PATCH", keyPath(sandboxInst, exp.ID), "creator", map[string]any{"name": "still here"})
		admintest.Want(t, r, 200, "")
		if got := checkKey(t, r.Obj, false); got.Name != "still here" || got.Status != "expired" {
			t.Fatalf("patched expired key %+v", got)
		}

		e.refused(t, "PATCH", keyPath(sandboxInst, randomKeyID(t)), "creator", map[string]any{"name": "x"}, 404, "api_key_not_found")
		e.refused(t, "PATCH", keyPath(prodInst, exp.ID), "creator", map[string]any{"name": "x"}, 404, "api_key_not_found")
		r = e.refused(t, "PATCH", keyPath(ghostInst, randomKeyID(t)), "creator", map[string]any{"name": "x"}, 404, "")
		if r.Error.Code != "instance_not_found" && r.Error.Code != "api_key_not_found" {
			t.Fatalf("PATCH in a missing instance: %s", r)
		}
		e.refused(t, "PATCH", keysPath(sandboxInst)+"/notakey", "creator", map[string]any{"name": "x"}, 400, "invalid_request")
		e.refused(t, "PATCH", keyPath("Bad-Instance", k.ID), "creator", map[string]any{"name": "x"}, 400, "invalid_request")
	})
}

// A roll's replacement has the old key's scopes, allowed addresses and metadata.
func TestRollCopiesRestrictions(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		scopes := []string{"charges:*"}
		ips := []string{"10.0.0.0/8", "2001:db8::1"}
		meta := map[string]string{"customer": "cus_9"}
		old := e.createKey(t, sandboxInst, map[string]any{"name": "roll me", "scopes": scopes, "allowed_ips": ips, "metadata": meta})
		// Changed after creation: the roll copies the key as it is now.
		r := e.Do(t, "PATCH", keyPath(sandboxInst, old.ID), "creator", map[string]any{"scopes": []string{"charges:read"}})
		admintest.Want(t, r, 200, "")
		scopes = []string{"charges:read"}
		r = e.Do(t, "POST", keyPath(sandboxInst, old.ID)+"/roll", "roller", map[string]any{"expire_old_in_seconds": 60, "name": "rolled"})
		admintest.Want(t, r, 201, "")
		nk := checkKey(t, r.Obj, true)
		if nk.Name != "rolled" {
			t.Fatalf("new key %+v", nk)
		}
		e.checkRestrictions(t, nk, nk.Secret, scopes, ips, meta)
		// The old key keeps its own during the grace.
		g := e.Do(t, "GET", keyPath(sandboxInst, old.ID), "reader", nil)
		e.checkRestrictions(t, checkKey(t, g.Obj, false), old.Secret, scopes, ips, meta)
		// An unrestricted key rolls into an unrestricted one.
		plain := e.createKey(t, sandboxInst, map[string]any{"name": "plain"})
		r = e.Do(t, "POST", keyPath(sandboxInst, plain.ID)+"/roll", "roller", nil)
		admintest.Want(t, r, 201, "")
		pk := checkKey(t, r.Obj, true)
		e.checkRestrictions(t, pk, pk.Secret, nil, nil, nil)
	})
}

// The events list shows api_key.updated with its "fields"; other events have none.
func TestUpdateEventInList(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		inst := e.newInstance(t, "sandbox")
		k := e.createKey(t, inst, map[string]any{"name": "evented"})
		admintest.Want(t, e.Do(t, "PATCH", keyPath(inst, k.ID), "env", map[string]any{"metadata": map[string]string{"a": "b"}, "name": "renamed"}), 200, "")
		r := e.Do(t, "GET", "/v1/instances/"+inst+"/events", "reader", nil)
		ids, _ := listIDs(t, r)
		if len(ids) != 2 {
			t.Fatalf("events %s", r)
		}
		data := r.Obj["data"].([]any)
		up, created := data[0].(map[string]any), data[1].(map[string]any)
		var keys []string
		for f := range up {
			keys = append(keys, f)
		}
		slices.Sort(keys)
		if want := []string{"actor", "created_at", "fields", "id", "instance", "key_id", "object", "type"}; !slices.Equal(keys, want) {
			t.Fatalf("update event has fields %v, want %v", keys, want)
		}
		if up["type"] != "api_key.updated" || up["key_id"] != k.ID || up["actor"] != "env-ops" || up["object"] != "event" || up["instance"] != inst {
			t.Fatalf("update event %v", up)
		}
		if f, ok := up["fields"].([]any); !ok || len(f) != 2 || f[0] != "name" || f[1] != "metadata" {
			t.Fatalf("update event fields %v, want [name metadata]", up["fields"])
		}
		if _, ok := created["fields"]; ok || created["type"] != "api_key.created" {
			t.Fatalf("created event %v", created)
		}
	})
}
