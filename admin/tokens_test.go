package admin_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/admintest"
)

// Without a valid Bearer admin token, every call is 401 and writes nothing.
func TestUnauthorized(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		ops := e.Tok["ops"]
		k := e.createKey(t, sandboxInst, map[string]string{"name": "guarded"})
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(ops+":"))
		basicPass := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+ops))
		headers := map[string]http.Header{
			"no header":         {},
			"wrong token":       admintest.Bearer(admintest.RandomToken()),
			"token prefix":      admintest.Bearer(ops[:len(ops)-1]),
			"token and more":    admintest.Bearer(ops + "x"),
			"extra words":       {"Authorization": {"Bearer " + ops + " please"}},
			"Basic scheme":      {"Authorization": {basic}},
			"Basic as password": {"Authorization": {basicPass}},
			"Token scheme":      {"Authorization": {"Token " + ops}},
			"bare token":        {"Authorization": {ops}},
			"empty bearer":      {"Authorization": {"Bearer "}},
			"two headers":       {"Authorization": {"Bearer " + ops, "Bearer " + ops}},
			"hash as token":     admintest.Bearer("sha256:" + admintest.TokenSHA(e.Tok["hashed"])),
			"hash of hashed":    admintest.Bearer(admintest.TokenSHA(e.Tok["hashed"])),
			"cookie only":       {"Cookie": {"token=" + ops + "; admin_token=" + ops + "; nora_admin=" + ops + "; session=" + ops}},
		}
		calls := []struct{ method, path string }{
			{"GET", "/v1/me"},
			{"GET", "/v1/instances"},
			{"POST", "/v1/instances"},
			{"GET", keysPath(sandboxInst)},
			{"POST", keysPath(sandboxInst)},
			{"GET", keysPath(sandboxInst) + "/" + k.ID},
			{"DELETE", keysPath(sandboxInst) + "/" + k.ID},
			{"PATCH", keysPath(sandboxInst) + "/" + k.ID},
			{"POST", keysPath(sandboxInst) + "/" + k.ID + "/roll"},
			{"GET", "/v1/instances/" + sandboxInst + "/events"},
			{"GET", keysPath(sandboxInst) + "/" + k.ID + "/usage"},
			{"GET", "/v1/instances/" + sandboxInst + "/usage"},
			{"GET", keysPath(ghostInst)},
		}
		for name, h := range headers {
			t.Run(name, func(t *testing.T) {
				for _, c := range calls {
					var body any
					if c.method == "POST" {
						body = map[string]string{"name": "sneaky", "id": "sneaky", "environment": "sandbox"}
						if strings.HasSuffix(c.path, "/keys") {
							body = map[string]string{"name": "sneaky"}
						} else if strings.HasSuffix(c.path, "/roll") {
							body = map[string]any{}
						}
					}
					if c.method == "PATCH" {
						body = map[string]any{"name": "sneaky", "scopes": nil}
					}
					e.refusedH(t, c.method, c.path, body, h, 401, "unauthorized")
				}
			})
		}
		if got := checkKey(t, e.Do(t, "GET", keysPath(sandboxInst)+"/"+k.ID, "ops", nil).Obj, false); got.Status != "active" {
			t.Fatalf("guarded key is %s", got.Status)
		}
	})
}

// A token missing the permission, or acting outside its instances, gets 403; a scoped token
// cannot tell whether an instance exists.
func TestForbidden(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "scoped target"})
		pk := e.createKey(t, prodInst, map[string]string{"name": "prod target"})
		// Missing permission.
		e.refused(t, "POST", keysPath(sandboxInst), "reader", map[string]string{"name": "x"}, 403, "forbidden")
		e.refused(t, "GET", keysPath(sandboxInst), "creator", nil, 403, "forbidden")
		e.refused(t, "DELETE", keysPath(sandboxInst)+"/"+k.ID, "creator", nil, 403, "forbidden")
		e.refused(t, "POST", keysPath(sandboxInst)+"/"+k.ID+"/roll", "creator", nil, 403, "forbidden")
		e.refused(t, "POST", keysPath(sandboxInst)+"/"+k.ID+"/roll", "deleter", nil, 403, "forbidden")
		e.refused(t, "PATCH", keysPath(sandboxInst)+"/"+k.ID, "reader", map[string]string{"name": "x"}, 403, "forbidden")
		e.refused(t, "PATCH", keysPath(sandboxInst)+"/"+k.ID, "deleter", map[string]string{"name": "x"}, 403, "forbidden")
		e.refused(t, "PATCH", keysPath(sandboxInst)+"/"+k.ID, "reader", `{"scopes":[]}`, 403, "forbidden")
		e.refused(t, "POST", "/v1/instances", "roller", map[string]string{"id": "forbidden-1", "name": "x", "environment": "sandbox"}, 403, "forbidden")
		// Missing permission beats a bad request and a missing instance.
		e.refused(t, "POST", keysPath(sandboxInst), "reader", `{"bogus":`, 403, "forbidden")
		e.refused(t, "POST", keysPath(ghostInst), "reader", map[string]string{"name": "x"}, 403, "forbidden")
		// Scope: an existing instance outside it, and one that does not exist.
		for _, inst := range []string{prodInst, ghostInst} {
			id := pk.ID
			if inst == ghostInst {
				id = randomKeyID(t)
			}
			for _, c := range []struct {
				method, path string
				body         any
			}{
				{"GET", keysPath(inst), nil},
				{"POST", keysPath(inst), map[string]string{"name": "x"}},
				{"GET", keysPath(inst) + "/" + id, nil},
				{"DELETE", keysPath(inst) + "/" + id, nil},
				{"PATCH", keysPath(inst) + "/" + id, map[string]any{"name": "x"}},
				{"POST", keysPath(inst) + "/" + id + "/roll", map[string]any{"expire_old_in_seconds": 0}},
				{"GET", "/v1/instances/" + inst + "/events", nil},
				{"GET", keysPath(inst) + "/" + id + "/usage", nil},
				{"GET", "/v1/instances/" + inst + "/usage?granularity=day", nil},
			} {
				r := e.refused(t, c.method, c.path, "scoped", c.body, 403, "forbidden")
				if strings.Contains(r.Error.Message, "not found") || strings.Contains(r.Error.Message, "No such") {
					t.Fatalf("a scoped refusal tells whether the instance exists: %s", r)
				}
			}
		}
		// The same key through another instance's path is out of scope, not found.
		e.refused(t, "GET", keysPath(prodInst)+"/"+k.ID, "scoped", nil, 403, "forbidden")
		e.refused(t, "POST", "/v1/instances", "scoped", map[string]string{"id": "scoped-new", "name": "x", "environment": "sandbox"}, 403, "forbidden")
		// The prod key is untouched.
		if got := checkKey(t, e.Do(t, "GET", keysPath(prodInst)+"/"+pk.ID, "ops", nil).Obj, false); got.Status != "active" {
			t.Fatalf("prod key is %s", got.Status)
		}
	})
}

// Every token against every call on every kind of instance.
func TestPermissionMatrix(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		type keyCall struct {
			name   string
			perms  []string
			method string
			path   func(inst, id string) string
			body   any
			ok     int
		}
		keyCalls := []keyCall{
			{"list keys", []string{"apiKey.read"}, "GET", func(in, _ string) string { return keysPath(in) }, nil, 200},
			{"create key", []string{"apiKey.create"}, "POST", func(in, _ string) string { return keysPath(in) }, map[string]string{"name": "matrix"}, 201},
			{"get key", []string{"apiKey.read"}, "GET", func(in, id string) string { return keysPath(in) + "/" + id }, nil, 200},
			{"update key", []string{"apiKey.create"}, "PATCH", func(in, id string) string { return keysPath(in) + "/" + id }, map[string]any{"name": "patched", "scopes": []string{"a"},
				"rate_limit": map[string]any{"limit": 10, "window_seconds": 1}, "quota": map[string]any{"limit": 10, "period": "day"}}, 200},
			{"revoke key", []string{"apiKey.delete"}, "DELETE", func(in, id string) string { return keysPath(in) + "/" + id }, nil, 200},
			{"roll key", []string{"apiKey.create", "apiKey.delete"}, "POST", func(in, id string) string { return keysPath(in) + "/" + id + "/roll" }, map[string]any{"expire_old_in_seconds": 0}, 201},
			{"list events", []string{"apiKey.read"}, "GET", func(in, _ string) string { return "/v1/instances/" + in + "/events" }, nil, 200},
			{"key usage", []string{"apiKey.read"}, "GET", func(in, id string) string { return keysPath(in) + "/" + id + "/usage" }, nil, 200},
			{"instance usage", []string{"apiKey.read"}, "GET", func(in, _ string) string { return "/v1/instances/" + in + "/usage" }, nil, 200},
		}
		n := 0
		for _, role := range adminRoles {
			t.Run(role.role, func(t *testing.T) {
				has := func(ps ...string) bool {
					for _, p := range ps {
						if !slices.Contains(role.perms, p) {
							return false
						}
					}
					return true
				}
				covers := func(in string) bool { return role.scope == nil || slices.Contains(role.scope, in) }

				admintest.Want(t, e.Do(t, "GET", "/v1/me", role.role, nil), 200, "")
				ids, _ := listIDs(t, e.Do(t, "GET", "/v1/instances", role.role, nil))
				for _, id := range ids {
					if !covers(id) {
						t.Fatalf("lists instance %s outside its scope", id)
					}
				}
				if role.scope != nil && !slices.Equal(ids, role.scope) {
					t.Fatalf("scoped token lists %v", ids)
				}
				if role.scope == nil && (!slices.Contains(ids, sandboxInst) || !slices.Contains(ids, prodInst)) {
					t.Fatalf("lists %v", ids)
				}

				n++
				newID := fmt.Sprintf("matrix-%d", n)
				body := map[string]string{"id": newID, "name": "Matrix", "environment": "sandbox"}
				if has("instance.manage") && covers(newID) {
					admintest.Want(t, e.Do(t, "POST", "/v1/instances", role.role, body), 201, "")
				} else {
					e.refused(t, "POST", "/v1/instances", role.role, body, 403, "forbidden")
				}

				for _, inst := range []string{sandboxInst, prodInst, ghostInst} {
					for _, c := range keyCalls {
						id := randomKeyID(t)
						if inst != ghostInst {
							id = e.mintKey(t, inst, time.Time{}).ID
						}
						what := fmt.Sprintf("%s %s on %s", role.role, c.name, inst)
						switch {
						case !has(c.perms...) || !covers(inst):
							e.refused(t, c.method, c.path(inst, id), role.role, c.body, 403, "forbidden")
						case inst == ghostInst:
							r := e.refused(t, c.method, c.path(inst, id), role.role, c.body, 404, "")
							if r.Error.Code != "instance_not_found" && r.Error.Code != "api_key_not_found" {
								t.Fatalf("%s: %s", what, r)
							}
						default:
							r := e.Do(t, c.method, c.path(inst, id), role.role, c.body)
							if r.Status != c.ok {
								t.Fatalf("%s: got %s, want %d", what, r, c.ok)
							}
							if c.ok == 201 {
								checkKey(t, r.Obj, true)
							}
						}
					}
				}
			})
		}
	})
}

// Unnamed tokens are named from their hash, in /v1/me and in the events; a token configured
// as sha256:<hex> authenticates with the clear token.
func TestTokenNaming(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		h := sha256.Sum256([]byte(e.Tok["unnamed"]))
		name := "token-" + hex.EncodeToString(h[:])[:8]
		r := e.Do(t, "GET", "/v1/me", "unnamed", nil)
		admintest.Want(t, r, 200, "")
		if r.Obj["name"] != name {
			t.Fatalf("unnamed token is named %v, want %s", r.Obj["name"], name)
		}
		inst := e.newInstance(t, "sandbox")
		admintest.Want(t, e.Do(t, "POST", keysPath(inst), "unnamed", map[string]string{"name": "by unnamed"}), 201, "")
		evs := e.events(t, inst)
		if len(evs) != 1 || evs[0].Actor != name || evs[0].Type != "api_key.created" {
			t.Fatalf("events %+v, want one api_key.created by %s", evs, name)
		}
		// A token given as sha256:<hex> authenticates with the clear token.
		r = e.Do(t, "GET", "/v1/me", "hashed", nil)
		admintest.Want(t, r, 200, "")
		if want := "token-" + admintest.TokenSHA(e.Tok["hashed"])[:8]; r.Obj["name"] != want {
			t.Fatalf("hashed token is named %v, want %s", r.Obj["name"], want)
		}
		admintest.Want(t, e.Do(t, "GET", keysPath(sandboxInst), "hashed", nil), 200, "")
		e.refused(t, "POST", keysPath(sandboxInst), "hashed", map[string]string{"name": "x"}, 403, "forbidden")
		// The env token (set through {env.*}) works and keeps its name.
		r = e.Do(t, "GET", "/v1/me", "env", nil)
		if admintest.Want(t, r, 200, ""); r.Obj["name"] != "env-ops" {
			t.Fatalf("env token named %v", r.Obj["name"])
		}
	})
}
