package admin_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/admintest"
)

// /healthz answers ok while the store answers.
func TestHealthz(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		r := e.Do(t, "GET", "/healthz", "", nil)
		admintest.Want(t, r, 200, "")
		if !reflect.DeepEqual(r.Obj, map[string]any{"status": "ok"}) {
			t.Fatalf("healthz answered %s", r)
		}
	})
}

// /v1/me tells a token its name, permissions and instances.
func TestMe(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		for _, tc := range []struct {
			role, name string
			perms      []string
			instances  []string
		}{
			{"ops", "ops", allPerms, []string{"*"}},
			{"reader", "reader", []string{"apiKey.read"}, []string{"*"}},
			{"nothing", "nothing", []string{}, []string{"*"}},
			{"scoped", "scoped", allPerms, []string{sandboxInst}},
			{"env", "env-ops", allPerms, []string{"*"}},
		} {
			r := e.Do(t, "GET", "/v1/me", tc.role, nil)
			admintest.Want(t, r, 200, "")
			var me struct {
				Name        string   `json:"name"`
				Permissions []string `json:"permissions"`
				Instances   []string `json:"instances"`
			}
			json.Unmarshal(r.Body, &me)
			if me.Name != tc.name || !slices.Equal(me.Permissions, tc.perms) || !slices.Equal(me.Instances, tc.instances) ||
				me.Permissions == nil || len(r.Obj) != 3 {
				t.Fatalf("%s: /v1/me = %s", tc.role, r)
			}
		}
	})
}

// Every instance, or only those of a scoped token.
func TestListInstances(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		r := e.Do(t, "GET", "/v1/instances", "ops", nil)
		admintest.Want(t, r, 200, "")
		if r.Obj["object"] != "list" {
			t.Fatalf("not a list: %s", r)
		}
		found := map[string]map[string]any{}
		for _, d := range r.Obj["data"].([]any) {
			m := d.(map[string]any)
			found[m["id"].(string)] = m
		}
		for id, wantObj := range map[string]map[string]any{
			sandboxInst: {"object": "instance", "id": sandboxInst, "name": "Acme (sandbox)", "environment": "sandbox"},
			prodInst:    {"object": "instance", "id": prodInst, "name": "Acme (production)", "environment": "production"},
		} {
			if !reflect.DeepEqual(found[id], wantObj) {
				t.Fatalf("instance %s = %v, want %v", id, found[id], wantObj)
			}
		}
		// A scoped token sees only its instances.
		ids, _ := listIDs(t, e.Do(t, "GET", "/v1/instances", "scoped", nil))
		if !slices.Equal(ids, []string{sandboxInst}) {
			t.Fatalf("scoped token lists %v", ids)
		}
	})
}

// A new instance is stored, listed, and takes keys of its environment; an id is taken once.
func TestCreateInstance(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		r := e.Do(t, "POST", "/v1/instances", "ops", map[string]string{"id": "beta_2", "name": "Béta", "environment": "production"})
		admintest.Want(t, r, 201, "")
		if !reflect.DeepEqual(r.Obj, map[string]any{"object": "instance", "id": "beta_2", "name": "Béta", "environment": "production"}) {
			t.Fatalf("created %s", r)
		}
		in, err := e.s.Instance(context.Background(), "beta_2")
		if err != nil || in.Name != "Béta" || in.Environment != apikey.Production {
			t.Fatalf("store has %+v, %v", in, err)
		}
		ids, _ := listIDs(t, e.Do(t, "GET", "/v1/instances", "ops", nil))
		if !slices.Contains(ids, "beta_2") {
			t.Fatalf("new instance not listed: %v", ids)
		}
		e.refused(t, "POST", "/v1/instances", "ops", map[string]string{"id": "beta_2", "name": "Other", "environment": "sandbox"}, 409, "instance_exists")
		e.refused(t, "POST", "/v1/instances", "ops", map[string]string{"id": sandboxInst, "name": "Again", "environment": "sandbox"}, 409, "instance_exists")
		// A key in the new instance is a live key.
		k := e.createKey(t, "beta_2", map[string]string{"name": "first"})
		if !strings.HasPrefix(k.Secret, "sk_live_") {
			t.Fatalf("production instance minted %s…", k.Prefix)
		}
	})
}
