package admin_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/internal/testutil"
)

// 404s: instance_not_found and api_key_not_found, nothing written.
func TestNotFound(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		p := keysPath(sandboxInst)
		unknown := randomKeyID(t)
		e.refused(t, "GET", keysPath(ghostInst), "ops", nil, 404, "instance_not_found")
		e.refused(t, "POST", keysPath(ghostInst), "ops", map[string]string{"name": "x"}, 404, "instance_not_found")
		e.refused(t, "POST", keysPath(ghostInst)+"/"+unknown+"/roll", "ops", nil, 404, "instance_not_found")
		e.refused(t, "GET", "/v1/instances/"+ghostInst+"/events", "ops", nil, 404, "instance_not_found")
		e.refused(t, "GET", p+"/"+unknown, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "GET", p+"/"+unknown+"/usage", "ops", nil, 404, "api_key_not_found")
		e.refused(t, "GET", "/v1/instances/"+ghostInst+"/usage", "ops", nil, 404, "instance_not_found")
		e.refused(t, "DELETE", p+"/"+unknown, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "PATCH", p+"/"+unknown, "ops", map[string]string{"name": "x"}, 404, "api_key_not_found")
		e.refused(t, "POST", p+"/"+unknown+"/roll", "ops", map[string]any{"expire_old_in_seconds": 0}, 404, "api_key_not_found")
		// A key of a missing instance: 404, whichever code.
		for _, m := range []string{"GET", "DELETE"} {
			r := e.refused(t, m, keysPath(ghostInst)+"/"+unknown, "ops", nil, 404, "")
			if r.Error.Code != "instance_not_found" && r.Error.Code != "api_key_not_found" {
				t.Fatalf("%s key of a missing instance: %s", m, r)
			}
		}
	})
}

// With the store down every call that needs it is 503 store_unavailable with Retry-After,
// refusals that need no store still come first, and (Redis) it recovers by itself.
func TestStoreUnavailable(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "before the crash"})
		e.storeDown(t)
		start := time.Now()
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{"POST", keysPath(sandboxInst), map[string]string{"name": "x"}},
			{"GET", keysPath(sandboxInst), nil},
			{"GET", keysPath(sandboxInst) + "/" + k.ID, nil},
			{"DELETE", keysPath(sandboxInst) + "/" + k.ID, nil},
			{"PATCH", keysPath(sandboxInst) + "/" + k.ID, map[string]any{"name": "x"}},
			{"POST", keysPath(sandboxInst) + "/" + k.ID + "/roll", nil},
			{"GET", "/v1/instances/" + sandboxInst + "/events", nil},
			{"GET", keysPath(sandboxInst) + "/" + k.ID + "/usage", nil},
			{"GET", "/v1/instances/" + sandboxInst + "/usage", nil},
			{"GET", "/v1/instances", nil},
			{"POST", "/v1/instances", map[string]string{"id": "down", "name": "x", "environment": "sandbox"}},
		} {
			r := e.Do(t, c.method, c.path, "ops", c.body)
			admintest.Want(t, r, 503, "store_unavailable")
			if r.Header.Get("Retry-After") != "1" {
				t.Fatalf("%s %s: Retry-After %q", c.method, c.path, r.Header.Get("Retry-After"))
			}
		}
		r := e.Do(t, "GET", "/healthz", "", nil)
		admintest.Want(t, r, 503, "")
		if r.Obj["status"] == "ok" {
			t.Fatalf("healthz with the store down: %s", r)
		}
		// Refusals that need no store still come first.
		admintest.Want(t, e.Do(t, "POST", keysPath(sandboxInst), "", map[string]string{"name": "x"}), 401, "unauthorized")
		admintest.Want(t, e.Do(t, "POST", keysPath(sandboxInst), "reader", map[string]string{"name": "x"}), 403, "forbidden")
		admintest.Want(t, e.Do(t, "GET", "/v1/me", "ops", nil), 200, "")
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("answering with the store down took %v", d)
		}
		// The failures were logged (the log capture works, and so the check that no secret
		// reaches the log: newAPIEnv's).
		if len(bytes.TrimSpace(e.logs.Bytes())) == 0 {
			t.Fatal("nothing logged with the store down")
		}
		if e.srv == nil {
			return // a closed file store stays closed
		}
		// It recovers by itself.
		e.srv.Restart()
		testutil.WaitEvery(t, 10*time.Second, 50*time.Millisecond, "/healthz to answer 200 after the restart", func() bool {
			return e.Do(t, "GET", "/healthz", "", nil).Status == 200
		})
	})
}

// storeDown makes the store fail: the Redis server is killed, the file store closed.
func (e *apiEnv) storeDown(t *testing.T) {
	t.Helper()
	if e.srv != nil {
		e.srv.Kill()
		return
	}
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A path no call has is 404 not_found; a method the path does not take is 405
// method_not_allowed with Allow. Neither needs a token to be told so, and neither writes.
func TestNoSuchCall(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "routed"})
		for _, role := range []string{"", "ops"} {
			for _, path := range []string{"/v1/nope", "/v1/instances/" + sandboxInst + "/nope", keysPath(sandboxInst) + "/" + k.ID + "/nope"} {
				e.refused(t, "GET", path, role, nil, 404, "not_found")
			}
			for _, c := range []struct{ method, path, allow string }{
				{"PUT", "/v1/instances", "GET, POST"},
				{"DELETE", "/v1/me", "GET"},
				{"PUT", keysPath(sandboxInst) + "/" + k.ID, "GET, PATCH, DELETE"},
				{"PATCH", keysPath(sandboxInst), "GET, POST"},
				{"PATCH", keysPath(sandboxInst) + "/" + k.ID + "/roll", "POST"},
				{"GET", keysPath(sandboxInst) + "/" + k.ID + "/roll", "POST"},
				{"POST", "/v1/instances/" + sandboxInst + "/events", "GET"},
				{"POST", keysPath(sandboxInst) + "/" + k.ID + "/usage", "GET"},
				{"DELETE", "/v1/instances/" + sandboxInst + "/usage", "GET"},
			} {
				r := e.refused(t, c.method, c.path, role, nil, 405, "method_not_allowed")
				if got := r.Header.Get("Allow"); got != c.allow {
					t.Fatalf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
				}
			}
		}
	})
}

// No answer carries an admin token and the log holds neither a token nor a key secret, with
// keys created, rolled and revoked, tokens sent in the wrong places and the store failing.
// (newAPIEnv checks the same at the end of every test; this one makes sure there is
// something to check.)
func TestNoSecretInAnswersOrLogs(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		var keys []keyObj
		for i := 0; i < 5; i++ {
			keys = append(keys, e.createKey(t, sandboxInst, map[string]string{"name": fmt.Sprintf("k%d", i)}))
		}
		admintest.Want(t, e.Do(t, "POST", keysPath(sandboxInst)+"/"+keys[0].ID+"/roll", "roller", map[string]any{"expire_old_in_seconds": 60}), 201, "")
		admintest.Want(t, e.Do(t, "DELETE", keysPath(sandboxInst)+"/"+keys[1].ID, "deleter", nil), 200, "")
		listIDs(t, e.Do(t, "GET", keysPath(sandboxInst), "reader", nil))
		// Tokens and secrets where they do not belong.
		e.refusedH(t, "GET", "/v1/me", nil, http.Header{"Authorization": {"Token " + e.Tok["ops"]}}, 401, "unauthorized")
		e.refusedH(t, "GET", "/v1/me", nil, http.Header{"Cookie": {"token=" + e.Tok["ops"]}}, 401, "unauthorized")
		e.refused(t, "POST", keysPath(sandboxInst), "ops", map[string]string{"name": "x", "expires_at": e.Tok["env"]}, 400, "invalid_expiration")
		e.refused(t, "POST", keysPath(sandboxInst), "ops", map[string]string{"name": "x", "bogus": e.Tok["hashed"] + keys[2].Secret}, 400, "invalid_request")
		e.refused(t, "GET", keysPath(sandboxInst)+"?starting_after="+keys[3].Secret, "ops", nil, 400, "invalid_request")
		e.storeDown(t)
		admintest.Want(t, e.Do(t, "POST", keysPath(sandboxInst), "ops", map[string]string{"name": e.Tok["ops"]}), 503, "store_unavailable")
		admintest.Want(t, e.Do(t, "GET", keysPath(sandboxInst)+"/"+keys[4].ID, "ops", nil), 503, "store_unavailable")

		n := len(e.Secrets())
		if n != 6 {
			t.Fatalf("%d key secrets seen, want 6 (5 created, 1 rolled)", n)
		}
		if len(bytes.TrimSpace(e.logs.Bytes())) == 0 {
			t.Fatal("nothing logged with the store down: the log capture does not work")
		}
		e.checkNoSecretLeaked(t)
	})
}
