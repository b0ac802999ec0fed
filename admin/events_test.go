package admin_test

import (
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/admintest"
)

// The audit trail: newest first, who did what to which key, paged like the keys.
func TestListEvents(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		inst := e.newInstance(t, "production")
		a := e.createKey(t, inst, map[string]string{"name": "a"})
		admintest.Want(t, e.Do(t, "DELETE", keysPath(inst)+"/"+a.ID, "ops", nil), 200, "")
		b := e.createKey(t, inst, map[string]string{"name": "b"})
		r := e.Do(t, "POST", keysPath(inst)+"/"+b.ID+"/roll", "env", map[string]any{"expire_old_in_seconds": 60})
		admintest.Want(t, r, 201, "")
		c := checkKey(t, r.Obj, true)

		r = e.Do(t, "GET", "/v1/instances/"+inst+"/events", "reader", nil)
		ids, more := listIDs(t, r)
		if len(ids) != 4 || more {
			t.Fatalf("events %s", r)
		}
		type ev struct{ typ, key, newKey, actor string }
		wantEvents := []ev{
			{"api_key.rolled", b.ID, c.ID, "env-ops"},
			{"api_key.created", b.ID, "", "ops"},
			{"api_key.revoked", a.ID, "", "ops"},
			{"api_key.created", a.ID, "", "ops"},
		}
		for i, d := range r.Obj["data"].([]any) {
			m := d.(map[string]any)
			fields := []string{"object", "id", "type", "instance", "key_id", "actor", "created_at"}
			if wantEvents[i].newKey != "" {
				fields = append(fields, "new_key_id")
			}
			var got []string
			for f := range m {
				got = append(got, f)
			}
			sort.Strings(got)
			sort.Strings(fields)
			if !slices.Equal(got, fields) {
				t.Fatalf("event %d has fields %v, want %v", i, got, fields)
			}
			nk, _ := m["new_key_id"].(string)
			g := ev{m["type"].(string), m["key_id"].(string), nk, m["actor"].(string)}
			if g != wantEvents[i] || m["object"] != "event" || m["instance"] != inst || m["id"] == "" {
				t.Fatalf("event %d = %v, want %+v", i, m, wantEvents[i])
			}
			ca := m["created_at"].(string)
			near(t, "event created_at", utc(t, "created_at", &ca), time.Now(), time.Minute)
		}
		// Paging like the keys list.
		page, more := listIDs(t, e.Do(t, "GET", "/v1/instances/"+inst+"/events?limit=3", "reader", nil))
		if !slices.Equal(page, ids[:3]) || !more {
			t.Fatalf("events?limit=3 = %v %v", page, more)
		}
		page, more = listIDs(t, e.Do(t, "GET", "/v1/instances/"+inst+"/events?limit=3&starting_after="+ids[2], "reader", nil))
		if !slices.Equal(page, ids[3:]) || more {
			t.Fatalf("events second page = %v %v", page, more)
		}
		// An instance without events answers an empty list.
		empty := e.newInstance(t, "sandbox")
		if page, more := listIDs(t, e.Do(t, "GET", "/v1/instances/"+empty+"/events", "reader", nil)); len(page) != 0 || more {
			t.Fatalf("empty trail = %v", page)
		}
	})
}
