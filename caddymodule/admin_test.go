package caddymodule_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

// The nora_admin handler in real Caddy: the Caddyfile's tokens (named, unnamed, sha256:,
// {env.*}, scoped) reach the admin API, one key's life goes through it, the site serves the
// web page, and Caddy's logs hold no secret. The API itself (every call, every error, the
// permission matrix, both stores) is tested in package admin, without Caddy.

const (
	sandboxInst = "acme-sandbox"
	prodInst    = "acme-prod"
	envTokenVar = "KEYGATE_TEST_ADMIN_TOKEN"
)

var allPerms = []string{"apiKey.read", "apiKey.create", "apiKey.delete", "instance.manage"}

// adminRoles are the named tokens of the test endpoint; the role is the token's name.
var adminRoles = []struct {
	role  string
	perms []string
	scope []string // nil: every instance
}{
	{"ops", allPerms, nil},
	{"reader", []string{"apiKey.read"}, nil},
	{"nothing", nil, nil},
	{"scoped", allPerms, []string{sandboxInst}},
}

// adminEnv is one running Caddy with a nora_admin site.
type adminEnv struct {
	*admintest.Client // Tok: role (and "unnamed", "hashed", "env") → clear token
	s                 store.Store
	logFiles          []string
}

func keysPath(instance string) string { return "/v1/instances/" + instance + "/keys" }

// startAdmin runs Caddy with a file store, the two instances and a nora_admin site holding
// the tokens of adminRoles, an unnamed one, one given as sha256:<hex> and one from {env.*},
// logging (main log at DEBUG, access log) to files.
func startAdmin(t *testing.T) *adminEnv {
	t.Helper()
	e := &adminEnv{Client: &admintest.Client{Tok: map[string]string{}}}
	for _, r := range adminRoles {
		e.Tok[r.role] = admintest.RandomToken()
	}
	e.Tok["unnamed"] = admintest.RandomToken()
	e.Tok["hashed"] = admintest.RandomToken()
	e.Tok["env"] = admintest.RandomToken()
	t.Setenv(envTokenVar, e.Tok["env"])

	dir := t.TempDir()
	mainLog, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	e.logFiles = []string{mainLog, accessLog}
	port := redistest.FreePort(t)
	e.Base = fmt.Sprintf("http://127.0.0.1:%d", port)

	var b strings.Builder
	fmt.Fprintf(&b, `{
	admin off
	auto_https off
	log {
		output file %s
		format json
		level DEBUG
	}
	nora {
		store file %s
		instance %s sandbox "Acme (sandbox)"
		instance %s production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	log {
		output file %s
		format json
	}
	nora_admin {
`, mainLog, filepath.Join(dir, "keys.db"), sandboxInst, prodInst, port, accessLog)
	for _, r := range adminRoles {
		fmt.Fprintf(&b, "\t\ttoken %s %s {\n\t\t\tname %s\n", e.Tok[r.role], strings.Join(r.perms, " "), r.role)
		if r.scope != nil {
			fmt.Fprintf(&b, "\t\t\tinstances %s\n", strings.Join(r.scope, " "))
		}
		b.WriteString("\t\t}\n")
	}
	fmt.Fprintf(&b, "\t\ttoken %s apiKey.read apiKey.create\n", e.Tok["unnamed"])
	fmt.Fprintf(&b, "\t\ttoken sha256:%s apiKey.read\n", admintest.TokenSHA(e.Tok["hashed"]))
	fmt.Fprintf(&b, "\t\ttoken {env.%s} %s {\n\t\t\tname env-ops\n\t\t}\n", envTokenVar, strings.Join(allPerms, " "))
	b.WriteString("\t}\n}\n")

	loadNoPersist(t, b.String())
	e.s = noraApp(t).KeyStore()
	if e.s == nil {
		t.Fatal("no store after start")
	}
	waitInstances(t, e.s, 2)
	return e
}

// loadNoPersist is load without Caddy's autosave: these configs hold clear admin tokens,
// which have no business in ~/.config/caddy/autosave.json.
func loadNoPersist(t *testing.T, caddyfile string) {
	t.Helper()
	if err := caddy.Load(adaptNoPersist(t, caddyfile), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
}

func adaptNoPersist(t *testing.T, caddyfile string) []byte {
	t.Helper()
	cfg, err := adapt(caddyfile)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	adm, _ := m["admin"].(map[string]any)
	if adm == nil {
		adm = map[string]any{}
		m["admin"] = adm
	}
	adm["config"] = map[string]any{"persist": false}
	if cfg, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAdminThroughCaddy(t *testing.T) {
	e := startAdmin(t)

	t.Run("healthz", func(t *testing.T) {
		r := e.Do(t, "GET", "/healthz", "", nil)
		admintest.Want(t, r, 200, "")
		if !reflect.DeepEqual(r.Obj, map[string]any{"status": "ok"}) {
			t.Fatalf("healthz answered %s", r)
		}
	})

	t.Run("tokens from the Caddyfile", func(t *testing.T) {
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
			{"unnamed", "token-" + admintest.TokenSHA(e.Tok["unnamed"])[:8], []string{"apiKey.read", "apiKey.create"}, []string{"*"}},
			{"hashed", "token-" + admintest.TokenSHA(e.Tok["hashed"])[:8], []string{"apiKey.read"}, []string{"*"}},
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
		// The permissions and the scope are enforced, and a wrong token is refused.
		admintest.Want(t, e.Do(t, "POST", keysPath(sandboxInst), "hashed", map[string]string{"name": "x"}), 403, "forbidden")
		admintest.Want(t, e.Do(t, "GET", keysPath(prodInst), "scoped", nil), 403, "forbidden")
		admintest.Want(t, e.Send(t, "GET", "/v1/me", nil, admintest.Bearer(admintest.RandomToken())), 401, "unauthorized")
		admintest.Want(t, e.Send(t, "GET", "/v1/me", nil, admintest.Bearer("sha256:"+admintest.TokenSHA(e.Tok["hashed"]))), 401, "unauthorized")
	})

	t.Run("create, list, revoke", func(t *testing.T) {
		r := e.Do(t, "POST", keysPath(sandboxInst), "ops", map[string]string{"name": "through caddy"})
		admintest.Want(t, r, 201, "")
		secret, _ := r.Obj["secret"].(string)
		id, _ := r.Obj["id"].(string)
		if !strings.HasPrefix(secret, "sk_test_") || r.Obj["name"] != "through caddy" || r.Obj["status"] != "active" {
			t.Fatalf("created %s", r)
		}
		l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(secret))
		if err != nil || l.ID != id || l.Instance != sandboxInst {
			t.Fatalf("lookup of the new secret: %+v, %v", l, err)
		}
		r = e.Do(t, "GET", keysPath(sandboxInst), "reader", nil)
		admintest.Want(t, r, 200, "")
		data, _ := r.Obj["data"].([]any)
		if len(data) != 1 || data[0].(map[string]any)["id"] != id || data[0].(map[string]any)["secret"] != nil {
			t.Fatalf("list = %s", r)
		}
		r = e.Do(t, "DELETE", keysPath(sandboxInst)+"/"+id, "ops", nil)
		admintest.Want(t, r, 200, "")
		if r.Obj["status"] != "revoked" {
			t.Fatalf("revoked %s", r)
		}
		if l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(secret)); err != nil || l.RevokedAt.IsZero() {
			t.Fatalf("lookup entry after revoke: %+v %v", l, err)
		}
		evs, _, err := e.s.ListEvents(context.Background(), sandboxInst, store.ListOptions{Limit: 10})
		if err != nil || len(evs) != 2 || evs[0].Type != "api_key.revoked" || evs[0].Actor != "ops" || evs[1].Type != "api_key.created" {
			t.Fatalf("events %+v %v", evs, err)
		}
	})

	t.Run("web page", func(t *testing.T) {
		for _, tc := range []struct{ path, contentType string }{
			{"/", "text/html"},
			{"/app.js", "javascript"},
			{"/style.css", "text/css"},
		} {
			resp, err := http.Get(e.Base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), tc.contentType) || len(body) == 0 {
				t.Fatalf("GET %s: %d %q, %d bytes", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
			}
			if csp := resp.Header.Get("Content-Security-Policy"); csp != admin.PageCSP {
				t.Fatalf("GET %s: Content-Security-Policy %q, want %q", tc.path, csp, admin.PageCSP)
			}
			if resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Fatalf("GET %s: X-Frame-Options %q", tc.path, resp.Header.Get("X-Frame-Options"))
			}
		}
	})

	t.Run("no token in answers or logs", func(t *testing.T) {
		secrets := e.Tokens()
		answers := e.Answers()
		keySecrets := e.Secrets()
		for _, s := range secrets {
			if bytes.Contains(answers, []byte(s)) {
				t.Fatal("an answer carries an admin token")
			}
		}
		if len(keySecrets) != 1 {
			t.Fatalf("%d key secrets seen, want 1", len(keySecrets))
		}
		for i, f := range e.logFiles {
			logs, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(bytes.TrimSpace(logs)) == 0 {
				t.Fatalf("log %s is empty: the capture does not work", f)
			}
			if i == 1 && !bytes.Contains(logs, []byte("/v1/me")) {
				t.Fatalf("access log %s does not hold the requests", f)
			}
			for _, s := range append(secrets, keySecrets...) {
				if line, ok := admintest.LineWith(logs, s); ok {
					t.Fatalf("log %s carries a secret: %.300s", filepath.Base(f), line)
				}
			}
		}
	})
}

func TestAdminConfig(t *testing.T) {
	global := func(t *testing.T) string {
		return fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n\tnora {\n\t\tstore file %s\n\t}\n}\n", filepath.Join(t.TempDir(), "keys.db"))
	}

	t.Run("Caddyfile errors name the line", func(t *testing.T) {
		for _, tc := range []struct {
			name, file string
			want       []string
		}{
			{"no token", "{\n\tadmin off\n}\n:80 {\n\tnora_admin\n}\n", []string{"Caddyfile:5", "token"}},
			{"empty block", "{\n\tadmin off\n}\n:80 {\n\tnora_admin {\n\t}\n}\n", []string{"Caddyfile:", "token"}},
			{"unknown permission", ":80 {\n\tnora_admin {\n\t\ttoken abcdefghijklmnopqrstuvwxyz apiKey.read\n\t\ttoken abcdefghijklmnopqrstuvwxyz0 apiKey.write\n\t}\n}\n", []string{"Caddyfile:4", "apiKey.write"}},
			{"permission case", ":80 {\n\tnora_admin {\n\t\ttoken abcdefghijklmnopqrstuvwxyz apikey.read\n\t}\n}\n", []string{"Caddyfile:3"}},
			{"token without value", ":80 {\n\tnora_admin {\n\t\ttoken\n\t}\n}\n", []string{"Caddyfile:3"}},
			{"argument", ":80 {\n\tnora_admin now\n}\n", []string{"Caddyfile:2"}},
			{"unknown option", ":80 {\n\tnora_admin {\n\t\ttoken abcdefghijklmnopqrstuvwxyz apiKey.read\n\t\tcookie on\n\t}\n}\n", []string{"Caddyfile:4"}},
			{"unknown token option", ":80 {\n\tnora_admin {\n\t\ttoken abcdefghijklmnopqrstuvwxyz apiKey.read {\n\t\t\tscope all\n\t\t}\n\t}\n}\n", []string{"Caddyfile:4"}},
			{"instances without ids", ":80 {\n\tnora_admin {\n\t\ttoken abcdefghijklmnopqrstuvwxyz apiKey.read {\n\t\t\tinstances\n\t\t}\n\t}\n}\n", []string{"Caddyfile:4"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := adapt(tc.file)
				if err == nil {
					t.Fatal("adapted")
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not name %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "abcdefghijklmnopqrstuvwxyz") {
					t.Fatalf("error repeats the token: %v", err)
				}
			})
		}
	})

	t.Run("JSON config refused at load", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.db")
		cfg := func(handler string) string {
			return fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"nora":{"store":{"type":"file","path":%q}},"http":{"servers":{"s":{"listen":["127.0.0.1:%d"],"routes":[{"handle":[%s]}]}}}}}`,
				path, redistest.FreePort(t), handler)
		}
		for _, tc := range []struct{ name, handler, want, secret string }{
			{"no tokens", `{"handler":"nora_admin"}`, "token", ""},
			{"empty tokens", `{"handler":"nora_admin","tokens":[]}`, "token", ""},
			{"short token", `{"handler":"nora_admin","tokens":[{"token":"abc123xyz","permissions":["apiKey.read"]}]}`, "short", "abc123xyz"},
			{"15-character token", `{"handler":"nora_admin","tokens":[{"token":"abcdefghijklmno","permissions":["apiKey.read"]}]}`, "short", "abcdefghijklmno"},
			{"unknown permission", `{"handler":"nora_admin","tokens":[{"token":"abcdefghijklmnopqrstuvwxyz","permissions":["apiKey.write"]}]}`, "apiKey.write", "abcdefghijklmnopqrstuvwxyz"},
			{"bad sha256", `{"handler":"nora_admin","tokens":[{"token":"sha256:abcd","permissions":["apiKey.read"]}]}`, "sha256", ""},
			{"sha256 not hex", `{"handler":"nora_admin","tokens":[{"token":"sha256:` + strings.Repeat("zz", 32) + `","permissions":["apiKey.read"]}]}`, "sha256", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := caddy.Load([]byte(cfg(tc.handler)), true)
				if err == nil {
					caddy.Stop()
					t.Fatal("config loaded")
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %q does not mention %q", err, tc.want)
				}
				if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
					t.Fatalf("error repeats the token: %v", err)
				}
			})
		}
	})

	t.Run("short clear token in Caddyfile", func(t *testing.T) {
		cfg, err := adapt(global(t) + fmt.Sprintf("http://127.0.0.1:%d {\n\tnora_admin {\n\t\ttoken tooShort123 apiKey.read\n\t}\n}\n", redistest.FreePort(t)))
		if err != nil {
			t.Fatal(err)
		}
		err = caddy.Load(cfg, true)
		if err == nil {
			caddy.Stop()
			t.Fatal("a 11-character token loaded")
		}
		if strings.Contains(err.Error(), "tooShort123") || !strings.Contains(err.Error(), "16") {
			t.Fatalf("error %q", err)
		}
		// Set through {env.*}: refused just the same.
		t.Setenv("KEYGATE_TEST_SHORT_TOKEN", "tooShort123")
		cfg, err = adapt(global(t) + fmt.Sprintf("http://127.0.0.1:%d {\n\tnora_admin {\n\t\ttoken {env.KEYGATE_TEST_SHORT_TOKEN} apiKey.read\n\t}\n}\n", redistest.FreePort(t)))
		if err != nil {
			t.Fatal(err)
		}
		if err := caddy.Load(cfg, true); err == nil {
			caddy.Stop()
			t.Fatal("a short token from the environment loaded")
		} else if strings.Contains(err.Error(), "tooShort123") {
			t.Fatalf("error repeats the token: %v", err)
		}
	})

	t.Run("unset env token", func(t *testing.T) {
		const v = "KEYGATE_TEST_UNSET_ADMIN_TOKEN"
		t.Setenv(v, "")
		os.Unsetenv(v)
		port := redistest.FreePort(t)
		loadNoPersist(t, global(t)+fmt.Sprintf("http://127.0.0.1:%d {\n\tnora_admin {\n\t\ttoken {env.%s} apiKey.read apiKey.create\n\t}\n}\n", port, v))
		e := &admintest.Client{Base: fmt.Sprintf("http://127.0.0.1:%d", port), Tok: map[string]string{}}
		for _, h := range []http.Header{{}, admintest.Bearer("anything-at-all-0123456789"), admintest.Bearer("")} {
			r := e.Send(t, "GET", "/v1/me", nil, h)
			admintest.Want(t, r, 503, "admin_disabled")
			if !strings.Contains(r.Error.Message, v) {
				t.Fatalf("message %q does not say what to set", r.Error.Message)
			}
		}
		admintest.Want(t, e.Send(t, "POST", keysPath(sandboxInst), `{"name":"x"}`, admintest.Bearer("")), 503, "admin_disabled")
		admintest.Want(t, e.Send(t, "GET", "/healthz", nil, nil), 200, "")
	})

	t.Run("unset env token beside a set one", func(t *testing.T) {
		const v = "KEYGATE_TEST_UNSET_ADMIN_TOKEN2"
		t.Setenv(v, "")
		os.Unsetenv(v)
		tok := admintest.RandomToken()
		port := redistest.FreePort(t)
		loadNoPersist(t, global(t)+fmt.Sprintf("http://127.0.0.1:%d {\n\tnora_admin {\n\t\ttoken {env.%s} apiKey.read\n\t\ttoken %s apiKey.read {\n\t\t\tname set\n\t\t}\n\t}\n}\n", port, v, tok))
		e := &admintest.Client{Base: fmt.Sprintf("http://127.0.0.1:%d", port)}
		r := e.Send(t, "GET", "/v1/me", nil, admintest.Bearer(tok))
		if admintest.Want(t, r, 200, ""); r.Obj["name"] != "set" {
			t.Fatalf("me = %s", r)
		}
		admintest.Want(t, e.Send(t, "GET", "/v1/me", nil, http.Header{}), 401, "unauthorized")
	})
}

// TestAdminBeforeStoreOpens: Caddy starts its apps in map order, so the admin site can be
// serving before the nora app has opened the store. A request in that window waits for the
// app's start and is answered, and the endpoint works from then on.
func TestAdminBeforeStoreOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	tok := admintest.RandomToken()
	port := redistest.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg := adaptNoPersist(t, fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store file %s
	}
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read
	}
}
`, path, port, tok))
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(p string) (int, string) {
		req, _ := http.NewRequest("GET", base+p, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for attempt := 1; attempt <= 20; attempt++ {
		// Holding the store file's lock keeps the nora app's Start waiting.
		hold, err := filestore.Open(path, filestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		loaded := make(chan error, 1)
		go func() { loaded <- caddy.Load(cfg, true) }()
		// Let go of the file a little later: until then the nora app cannot start.
		released := make(chan struct{})
		time.AfterFunc(300*time.Millisecond, func() { hold.Close(); close(released) })
		early, earlyBody := 0, ""
		for early == 0 {
			select {
			case <-released:
			default:
				early, earlyBody = get("/v1/me")
				time.Sleep(5 * time.Millisecond)
				continue
			}
			break
		}
		<-released
		if err := <-loaded; err != nil {
			t.Fatalf("load: %v", err)
		}
		if early == 0 { // the nora app started first this time
			caddy.Stop()
			continue
		}
		t.Cleanup(func() { caddy.Stop() })
		// A request that came while the app was starting waited for it, and was answered.
		if early != http.StatusOK {
			t.Fatalf("a request during start-up got %d %s, want 200 (it waits for the start)", early, earlyBody)
		}
		testutil.WaitEvery(t, 2*time.Second, 20*time.Millisecond, fmt.Sprintf("/v1/me to answer 200 after start-up (attempt %d)", attempt), func() bool {
			status, _ := get("/v1/me")
			return status == http.StatusOK
		})
		if status, body := get("/healthz"); status != http.StatusOK {
			t.Fatalf("healthz %d %s", status, body)
		}
		return
	}
	t.Skip("the admin site never started before the nora app")
}
