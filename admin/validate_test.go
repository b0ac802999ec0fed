package admin_test

import (
	"strings"
	"testing"
	"time"
)

// Names: 1 to 100 characters, not only spaces.
func TestKeyNames(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		for _, name := range []string{strings.Repeat("a", 100), strings.Repeat("é", 100), "x", strings.Repeat("日本", 50), " padded "} {
			k := e.createKey(t, sandboxInst, map[string]string{"name": name})
			if k.Name != name {
				t.Fatalf("name %q came back as %q", name, k.Name)
			}
		}
		for _, name := range []string{"", " ", "  \t\n ", "\u3000\u00a0", strings.Repeat("a", 101), strings.Repeat("é", 101)} {
			e.refused(t, "POST", keysPath(sandboxInst), "ops", map[string]string{"name": name}, 400, "invalid_request")
			e.refused(t, "POST", "/v1/instances", "ops", map[string]string{"id": "named", "name": name, "environment": "sandbox"}, 400, "invalid_request")
		}
		old := e.createKey(t, sandboxInst, map[string]string{"name": "roll names"})
		for _, name := range []string{"", "   ", strings.Repeat("é", 101)} {
			e.refused(t, "POST", keysPath(sandboxInst)+"/"+old.ID+"/roll", "ops", map[string]string{"name": name}, 400, "invalid_request")
		}
	})
}

// expires_at: a future date (00:00 UTC that day) or a future RFC 3339 time, stored in UTC.
func TestExpiration(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		now := time.Now().UTC()
		today := now.Format("2006-01-02")
		tomorrow := now.AddDate(0, 0, 1).Format("2006-01-02")
		dayAfter := now.AddDate(0, 0, 2).Format("2006-01-02")
		yesterday := now.AddDate(0, 0, -1).Format("2006-01-02")
		for _, exp := range []string{
			today, yesterday, "garbage", "2020-13-45", "tomorrow", "",
			today + "T23:59:59Z",
			now.Add(-time.Hour).Format(time.RFC3339),
			tomorrow + "T01:00:00+02:00", // today 23:00 UTC
			tomorrow + "T00:00:00+00:01",
			tomorrow + "T00:00:00", // no offset
		} {
			e.refused(t, "POST", keysPath(sandboxInst), "ops", map[string]string{"name": "x", "expires_at": exp}, 400, "invalid_expiration")
		}
		old := e.createKey(t, sandboxInst, map[string]string{"name": "roll exp"})
		e.refused(t, "POST", keysPath(sandboxInst)+"/"+old.ID+"/roll", "ops", map[string]string{"expires_at": today}, 400, "invalid_expiration")

		for _, tc := range []struct{ in, out string }{
			{tomorrow, tomorrow + "T00:00:00Z"},
			{tomorrow + "T00:00:00Z", tomorrow + "T00:00:00Z"},
			{dayAfter + "T10:00:00+02:00", dayAfter + "T08:00:00Z"},
			{tomorrow + "T00:30:00-05:00", tomorrow + "T05:30:00Z"},
			{tomorrow + "T02:00:00+02:00", tomorrow + "T00:00:00Z"},
		} {
			k := e.createKey(t, sandboxInst, map[string]string{"name": "exp", "expires_at": tc.in})
			if k.ExpiresAt == nil || *k.ExpiresAt != tc.out || k.Status != "active" {
				t.Fatalf("expires_at %q answered %v, want %s", tc.in, k.ExpiresAt, tc.out)
			}
		}
		// A JSON null is no expiry.
		if k := e.createKey(t, sandboxInst, map[string]any{"name": "never", "expires_at": nil}); k.ExpiresAt != nil {
			t.Fatalf("expires_at null gave %s", *k.ExpiresAt)
		}
	})
}

// Every malformed body, path and query is 400 invalid_request, writes nothing and echoes nothing.
func TestBadRequests(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		p := keysPath(sandboxInst)
		k := e.createKey(t, sandboxInst, map[string]string{"name": "target"})
		longField := strings.Repeat("z", 300)
		for _, tc := range []struct {
			name, method, path string
			body               any
		}{
			{"bad JSON", "POST", p, `{"name":`},
			{"not JSON", "POST", p, `name=x`},
			{"empty body", "POST", p, ``},
			{"array", "POST", p, `[{"name":"x"}]`},
			{"two objects", "POST", p, `{"name":"a"}{"name":"b"}`},
			{"trailing garbage", "POST", p, `{"name":"a"} x`},
			{"unknown field", "POST", p, `{"name":"x","bogus":1}`},
			{"long unknown field", "POST", p, `{"name":"x","` + longField + `":1}`},
			{"name missing", "POST", p, `{}`},
			{"name null", "POST", p, `{"name":null}`},
			{"name number", "POST", p, `{"name":42}`},
			{"expires_at number", "POST", p, `{"name":"x","expires_at":20300101}`},
			{"bad instance id in path", "POST", keysPath("ACME"), map[string]string{"name": "x"}},
			{"bad instance id in path (list)", "GET", keysPath("-acme"), nil},
			{"bad instance id in path (events)", "GET", "/v1/instances/acme.sandbox/events", nil},
			{"bad instance id in path (get)", "GET", keysPath("Acme") + "/" + k.ID, nil},
			{"bad key id (get)", "GET", p + "/notakey", nil},
			{"bad key id (delete)", "DELETE", p + "/key_short", nil},
			{"bad key id (roll)", "POST", p + "/" + k.ID + "x/roll", nil},
			{"bad key id (patch)", "PATCH", p + "/key_", map[string]string{"name": "x"}},
			{"instance id with capitals", "POST", "/v1/instances", map[string]string{"id": "Beta", "name": "x", "environment": "sandbox"}},
			{"instance id with space", "POST", "/v1/instances", map[string]string{"id": "be ta", "name": "x", "environment": "sandbox"}},
			{"instance id empty", "POST", "/v1/instances", map[string]string{"id": "", "name": "x", "environment": "sandbox"}},
			{"instance id leading dash", "POST", "/v1/instances", map[string]string{"id": "-beta", "name": "x", "environment": "sandbox"}},
			{"instance id too long", "POST", "/v1/instances", map[string]string{"id": strings.Repeat("a", 64), "name": "x", "environment": "sandbox"}},
			{"instance id missing", "POST", "/v1/instances", map[string]string{"name": "x", "environment": "sandbox"}},
			{"instance environment", "POST", "/v1/instances", map[string]string{"id": "gamma", "name": "x", "environment": "staging"}},
			{"instance environment missing", "POST", "/v1/instances", map[string]string{"id": "gamma", "name": "x"}},
			{"instance unknown field", "POST", "/v1/instances", map[string]string{"id": "gamma", "name": "x", "environment": "sandbox", "region": "eu"}},
			{"instance bad JSON", "POST", "/v1/instances", `{"id":"gamma"`},
			{"limit 0", "GET", p + "?limit=0", nil},
			{"limit 1001", "GET", p + "?limit=1001", nil},
			{"limit abc", "GET", p + "?limit=abc", nil},
			{"limit -1", "GET", p + "?limit=-1", nil},
			{"limit 1.5", "GET", p + "?limit=1.5", nil},
			{"limit empty", "GET", p + "?limit=", nil},
			{"unknown starting_after", "GET", p + "?starting_after=" + randomKeyID(t), nil},
			{"garbage starting_after", "GET", p + "?starting_after=nope", nil},
			{"starting_after of another instance", "GET", keysPath(prodInst) + "?starting_after=" + k.ID, nil},
			{"unknown status", "GET", p + "?status=deleted", nil},
			{"empty status", "GET", p + "?status=", nil},
			{"events limit 0", "GET", "/v1/instances/" + sandboxInst + "/events?limit=0", nil},
			{"events limit 1001", "GET", "/v1/instances/" + sandboxInst + "/events?limit=1001", nil},
			{"events unknown starting_after", "GET", "/v1/instances/" + sandboxInst + "/events?starting_after=evt_nope", nil},
			{"grace -1", "POST", p + "/" + k.ID + "/roll", `{"expire_old_in_seconds":-1}`},
			{"grace 604801", "POST", p + "/" + k.ID + "/roll", `{"expire_old_in_seconds":604801}`},
			{"grace string", "POST", p + "/" + k.ID + "/roll", `{"expire_old_in_seconds":"60"}`},
			{"grace fraction", "POST", p + "/" + k.ID + "/roll", `{"expire_old_in_seconds":1.5}`},
			{"grace huge", "POST", p + "/" + k.ID + "/roll", `{"expire_old_in_seconds":99999999999999999999}`},
			{"roll unknown field", "POST", p + "/" + k.ID + "/roll", `{"grace":60}`},
			{"roll bad JSON", "POST", p + "/" + k.ID + "/roll", `{`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.refused(t, tc.method, tc.path, "ops", tc.body, 400, "invalid_request")
				if strings.Contains(r.Error.Message, longField[:100]) {
					t.Fatalf("the answer echoes the body: %s", r)
				}
			})
		}
		// The target key is untouched by all of that.
		r := e.Do(t, "GET", p+"/"+k.ID, "ops", nil)
		if got := checkKey(t, r.Obj, false); got.Status != "active" || got.ExpiresAt != nil {
			t.Fatalf("target key is now %+v", got)
		}
	})
}

// Bodies over 64 KiB are 413, however the bytes are spent.
func TestRequestTooLarge(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "big target"})
		big := `{"name":"` + strings.Repeat("a", 70000) + `"}`
		padded := `{"name":"ok"}` + strings.Repeat(" ", 70000)
		leading := strings.Repeat(" ", 70000) + `{"name":"ok"}`
		for _, body := range []string{big, padded, leading} {
			e.refused(t, "POST", keysPath(sandboxInst), "ops", body, 413, "request_too_large")
		}
		e.refused(t, "POST", keysPath(sandboxInst), "ops", `{"name":"ok","expires_at":"`+strings.Repeat("9", 1<<17)+`"}`, 413, "request_too_large")
		e.refused(t, "POST", "/v1/instances", "ops", `{"id":"huge","name":"huge","environment":"sandbox"}`+strings.Repeat("\n", 66000), 413, "request_too_large")
		e.refused(t, "POST", keysPath(sandboxInst)+"/"+k.ID+"/roll", "ops", `{"expire_old_in_seconds":0}`+strings.Repeat("\t", 66000), 413, "request_too_large")
		// Exactly 64 KiB is not over the limit; one byte more is.
		exact := `{"name":"exact"}`
		exact += strings.Repeat(" ", 64<<10-len(exact))
		if k := e.createKey(t, sandboxInst, exact); k.Name != "exact" {
			t.Fatalf("64 KiB body made %+v", k)
		}
		e.refused(t, "POST", keysPath(sandboxInst), "ops", exact+" ", 413, "request_too_large")
		// The rolled-at target is untouched.
		if got := checkKey(t, e.Do(t, "GET", keysPath(sandboxInst)+"/"+k.ID, "ops", nil).Obj, false); got.Status != "active" || got.ExpiresAt != nil {
			t.Fatalf("target key is now %+v", got)
		}
	})
}
