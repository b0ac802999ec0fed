package caddymodule_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

// The admin endpoint (SPEC §5, §10) in real Caddy, against both stores.

const (
	sandboxInst = "acme-sandbox"
	prodInst    = "acme-prod"
	ghostInst   = "no-such-instance" // a well-formed id that names no instance
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
	{"creator", []string{"apiKey.create"}, nil},
	{"deleter", []string{"apiKey.delete"}, nil},
	{"instancer", []string{"instance.manage"}, nil},
	{"roller", []string{"apiKey.create", "apiKey.delete"}, nil},
	{"nothing", nil, nil},
	{"scoped", allPerms, []string{sandboxInst}},
}

// adminEnv is one running Caddy with a nora_admin site.
type adminEnv struct {
	base      string
	s         store.Store
	srv       *redistest.Server // nil for the file store
	tok       map[string]string // role (and "unnamed", "hashed", "env") → clear token
	logFiles  []string
	mu        sync.Mutex
	answers   [][]byte // every answer body and its headers
	secrets   []string // every key secret the API handed out
	instances int      // counter for fresh instance ids
}

func randomToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func tokenSHA(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func startAdmin(t *testing.T, storeLine string, srv *redistest.Server) *adminEnv {
	t.Helper()
	e := &adminEnv{srv: srv, tok: map[string]string{}}
	for _, r := range adminRoles {
		e.tok[r.role] = randomToken()
	}
	e.tok["unnamed"] = randomToken()
	e.tok["hashed"] = randomToken()
	e.tok["env"] = randomToken()
	t.Setenv(envTokenVar, e.tok["env"])

	dir := t.TempDir()
	mainLog, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	e.logFiles = []string{mainLog, accessLog}
	port := redistest.FreePort(t)
	e.base = fmt.Sprintf("http://127.0.0.1:%d", port)

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
		%s
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
`, mainLog, storeLine, sandboxInst, prodInst, port, accessLog)
	for _, r := range adminRoles {
		fmt.Fprintf(&b, "\t\ttoken %s %s {\n\t\t\tname %s\n", e.tok[r.role], strings.Join(r.perms, " "), r.role)
		if r.scope != nil {
			fmt.Fprintf(&b, "\t\t\tinstances %s\n", strings.Join(r.scope, " "))
		}
		b.WriteString("\t\t}\n")
	}
	fmt.Fprintf(&b, "\t\ttoken %s apiKey.read apiKey.create\n", e.tok["unnamed"])
	fmt.Fprintf(&b, "\t\ttoken sha256:%s apiKey.read\n", tokenSHA(e.tok["hashed"]))
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

// reply is an answer of the admin endpoint.
type reply struct {
	status int
	header http.Header
	body   []byte
	obj    map[string]any
	Error  struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (r reply) String() string {
	b := bytes.TrimSpace(r.body)
	if len(b) > 600 {
		return fmt.Sprintf("%d %s… (%d bytes)", r.status, b[:600], len(b))
	}
	return fmt.Sprintf("%d %s", r.status, b)
}

// send makes one request. body: nil (none), string or []byte (sent as is), anything else
// (sent as JSON).
func (e *adminEnv) send(t *testing.T, method, path string, body any, header http.Header) reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: raw}
	var hdr bytes.Buffer
	resp.Header.Write(&hdr)
	e.mu.Lock()
	e.answers = append(e.answers, raw, hdr.Bytes())
	e.mu.Unlock()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q (%s)", method, path, ct, r)
	}
	if err := json.Unmarshal(raw, &r.obj); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %q", method, path, raw)
	}
	json.Unmarshal(raw, &r)
	if r.status >= 400 && path != "/healthz" {
		if r.Error.Type == "" || r.Error.Code == "" || r.Error.Message == "" || len(r.obj) != 1 {
			t.Fatalf("%s %s: error answer not of the error shape: %s", method, path, r)
		}
		if r.status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s %s: 401 without WWW-Authenticate", method, path)
		}
	}
	if s, ok := r.obj["secret"].(string); ok {
		e.mu.Lock()
		e.secrets = append(e.secrets, s)
		e.mu.Unlock()
	}
	return r
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// do sends a request with the token of role ("" for none).
func (e *adminEnv) do(t *testing.T, method, path, role string, body any) reply {
	t.Helper()
	h := http.Header{}
	if role != "" {
		tok, ok := e.tok[role]
		if !ok {
			t.Fatalf("no token for role %q", role)
		}
		h = bearer(tok)
	}
	return e.send(t, method, path, body, h)
}

func want(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.status != status || (code != "" && r.Error.Code != code) {
		t.Fatalf("got %s; want %d %s", r, status, code)
	}
}

// snapshot is everything the store holds that the admin API can change.
func (e *adminEnv) snapshot(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	ins, err := e.s.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	nKeys, nEvents := 0, 0
	for _, in := range ins {
		fmt.Fprintf(&b, "instance %s %q %s\n", in.ID, in.Name, in.Environment)
		for after := ""; ; {
			keys, more, err := e.s.ListKeys(ctx, in.ID, store.ListOptions{Limit: 1000, StartingAfter: after, Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				nKeys++
				fmt.Fprintf(&b, "key %s %s %q %s %x %d %d %d %d\n", k.ID, k.Instance, k.Name, k.Prefix, k.Hash,
					store.Millis(k.CreatedAt), store.Millis(k.ExpiresAt), store.Millis(k.RevokedAt), store.Millis(k.LastUsedAt))
				after = k.ID
			}
			if !more {
				break
			}
		}
		for after := ""; ; {
			evs, more, err := e.s.ListEvents(ctx, in.ID, store.ListOptions{Limit: 1000, StartingAfter: after})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				nEvents++
				fmt.Fprintf(&b, "event %s %s %s %s %s %d\n", ev.ID, ev.Type, ev.KeyID, ev.NewKeyID, ev.Actor, store.Millis(ev.CreatedAt))
				after = ev.ID
			}
			if !more {
				break
			}
		}
	}
	fmt.Fprintf(&b, "%d instances, %d keys, %d events\n", len(ins), nKeys, nEvents)
	return b.String()
}

// refusedH sends a request that must be refused with status and code, and checks that the
// store holds exactly what it held before.
func (e *adminEnv) refusedH(t *testing.T, method, path string, body any, h http.Header, status int, code string) reply {
	t.Helper()
	before := e.snapshot(t)
	r := e.send(t, method, path, body, h)
	want(t, r, status, code)
	if after := e.snapshot(t); after != before {
		t.Fatalf("%s %s refused with %d but the store changed:\nbefore:\n%s\nafter:\n%s", method, path, status, before, after)
	}
	return r
}

func (e *adminEnv) refused(t *testing.T, method, path, role string, body any, status int, code string) reply {
	t.Helper()
	h := http.Header{}
	if role != "" {
		h = bearer(e.tok[role])
	}
	return e.refusedH(t, method, path, body, h, status, code)
}

// keyObj is the key object of the API.
type keyObj struct {
	Object      string  `json:"object"`
	ID          string  `json:"id"`
	Instance    string  `json:"instance"`
	Environment string  `json:"environment"`
	Name        string  `json:"name"`
	Prefix      string  `json:"prefix"`
	Status      string  `json:"status"`
	CreatedAt   *string `json:"created_at"`
	ExpiresAt   *string `json:"expires_at"`
	RevokedAt   *string `json:"revoked_at"`
	LastUsedAt  *string `json:"last_used_at"`
	Secret      string  `json:"secret"`
}

var keyFields = []string{"object", "id", "instance", "environment", "name", "prefix", "status",
	"created_at", "expires_at", "revoked_at", "last_used_at"}

var keyIDRe = regexp.MustCompile(`^key_[0-9A-Za-z]{8,}$`)

// checkKey checks a key object's shape and invariants and returns it.
func checkKey(t *testing.T, obj map[string]any, withSecret bool) keyObj {
	t.Helper()
	n := len(keyFields)
	for _, f := range keyFields {
		if _, ok := obj[f]; !ok {
			t.Fatalf("key object without %q: %v", f, obj)
		}
	}
	if _, ok := obj["secret"]; ok != withSecret {
		t.Fatalf("key object: secret present = %v, want %v: %v", ok, withSecret, obj)
	}
	if withSecret {
		n++
	}
	if len(obj) != n {
		t.Fatalf("key object has %d fields, want %d: %v", len(obj), n, obj)
	}
	raw, _ := json.Marshal(obj)
	var k keyObj
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatalf("key object: %v: %s", err, raw)
	}
	if k.Object != "api_key" || !keyIDRe.MatchString(k.ID) {
		t.Fatalf("key object: object %q id %q", k.Object, k.ID)
	}
	if k.Environment != "sandbox" && k.Environment != "production" {
		t.Fatalf("key environment %q", k.Environment)
	}
	pfx := "sk_test_"
	if k.Environment == "production" {
		pfx = "sk_live_"
	}
	if len(k.Prefix) != 14 || !strings.HasPrefix(k.Prefix, pfx) {
		t.Fatalf("key prefix %q (environment %s)", k.Prefix, k.Environment)
	}
	created := utc(t, "created_at", k.CreatedAt)
	if d := time.Since(created); d < -5*time.Second || d > 10*time.Minute {
		t.Fatalf("created_at %s is not about now", *k.CreatedAt)
	}
	if k.ExpiresAt != nil {
		utc(t, "expires_at", k.ExpiresAt)
	}
	if k.RevokedAt != nil {
		utc(t, "revoked_at", k.RevokedAt)
		if k.Status != "revoked" {
			t.Fatalf("key with revoked_at has status %q", k.Status)
		}
	}
	if k.LastUsedAt != nil {
		t.Fatalf("admin-created key has last_used_at %s", *k.LastUsedAt)
	}
	switch k.Status {
	case "active", "expired", "revoked":
	default:
		t.Fatalf("key status %q", k.Status)
	}
	if withSecret {
		env, err := apikey.Parse(k.Secret)
		if err != nil {
			t.Fatalf("secret does not parse: %v", err)
		}
		if env.String() != k.Environment {
			t.Fatalf("secret environment %s, key environment %s", env, k.Environment)
		}
		if k.Secret[:14] != k.Prefix {
			t.Fatalf("prefix %q is not the secret's first 14 characters", k.Prefix)
		}
		if k.Status != "active" {
			t.Fatalf("new key has status %q", k.Status)
		}
	}
	return k
}

// utc parses an answer's time: RFC 3339, UTC, written with Z.
func utc(t *testing.T, what string, s *string) time.Time {
	t.Helper()
	if s == nil {
		t.Fatalf("%s is null", what)
	}
	if !strings.HasSuffix(*s, "Z") {
		t.Fatalf("%s %q is not UTC with Z", what, *s)
	}
	tm, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		t.Fatalf("%s %q: %v", what, *s, err)
	}
	return tm
}

func near(t *testing.T, what string, got, want time.Time, slack time.Duration) {
	t.Helper()
	if d := got.Sub(want); d < -slack || d > slack {
		t.Fatalf("%s = %s, want about %s", what, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
	}
}

func keysPath(instance string) string { return "/v1/instances/" + instance + "/keys" }

// createKey creates a key through the API with the ops token.
func (e *adminEnv) createKey(t *testing.T, instance string, body any) keyObj {
	t.Helper()
	r := e.do(t, "POST", keysPath(instance), "ops", body)
	want(t, r, 201, "")
	k := checkKey(t, r.obj, true)
	in, err := e.s.Instance(context.Background(), instance)
	if err != nil {
		t.Fatal(err)
	}
	if k.Instance != instance || k.Environment != in.Environment.String() {
		t.Fatalf("created key in %s/%s, want %s/%s", k.Instance, k.Environment, instance, in.Environment)
	}
	return k
}

// mintKey puts a key straight into the store.
func (e *adminEnv) mintKey(t *testing.T, instance string, expires time.Time) store.Key {
	t.Helper()
	in, err := e.s.Instance(context.Background(), instance)
	if err != nil {
		t.Fatal(err)
	}
	_, k, err := store.Mint(apikey.Hasher{}, in, "minted", expires, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return k
}

// newInstance creates a fresh instance through the API.
func (e *adminEnv) newInstance(t *testing.T, env string) string {
	t.Helper()
	e.instances++
	id := fmt.Sprintf("inst-%d", e.instances)
	r := e.do(t, "POST", "/v1/instances", "ops", map[string]string{"id": id, "name": "Instance " + id, "environment": env})
	want(t, r, 201, "")
	return id
}

func listIDs(t *testing.T, r reply) (ids []string, more bool) {
	t.Helper()
	want(t, r, 200, "")
	if r.obj["object"] != "list" {
		t.Fatalf("list object %v", r.obj["object"])
	}
	data, ok := r.obj["data"].([]any)
	if !ok {
		t.Fatalf("list data is %T, want an array: %s", r.obj["data"], r)
	}
	more, ok = r.obj["has_more"].(bool)
	if !ok {
		t.Fatalf("list without has_more: %s", r)
	}
	ids = []string{}
	for _, d := range data {
		m := d.(map[string]any)
		ids = append(ids, m["id"].(string))
	}
	return ids, more
}

func randomKeyID(t *testing.T) string {
	id, err := apikey.NewID("key_", 24)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// awayFromMidnight waits when the UTC date is about to change, so "today" stays today.
func awayFromMidnight() {
	now := time.Now().UTC()
	if d := now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now); d < 5*time.Second {
		time.Sleep(d + 100*time.Millisecond)
	}
}

func TestAdminAPI(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		adminSuite(t, "store file "+filepath.Join(t.TempDir(), "keys.db"), nil)
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		adminSuite(t, "store redis "+srv.URL(0), srv)
	})
}

func adminSuite(t *testing.T, storeLine string, srv *redistest.Server) {
	start := time.Now()
	e := startAdmin(t, storeLine, srv)

	t.Run("healthz", func(t *testing.T) {
		r := e.do(t, "GET", "/healthz", "", nil)
		want(t, r, 200, "")
		if !reflect.DeepEqual(r.obj, map[string]any{"status": "ok"}) {
			t.Fatalf("healthz answered %s", r)
		}
	})

	t.Run("me", func(t *testing.T) {
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
			r := e.do(t, "GET", "/v1/me", tc.role, nil)
			want(t, r, 200, "")
			var me struct {
				Name        string   `json:"name"`
				Permissions []string `json:"permissions"`
				Instances   []string `json:"instances"`
			}
			json.Unmarshal(r.body, &me)
			if me.Name != tc.name || !slices.Equal(me.Permissions, tc.perms) || !slices.Equal(me.Instances, tc.instances) ||
				me.Permissions == nil || len(r.obj) != 3 {
				t.Fatalf("%s: /v1/me = %s", tc.role, r)
			}
		}
	})

	t.Run("list instances", func(t *testing.T) {
		r := e.do(t, "GET", "/v1/instances", "ops", nil)
		want(t, r, 200, "")
		if r.obj["object"] != "list" {
			t.Fatalf("not a list: %s", r)
		}
		found := map[string]map[string]any{}
		for _, d := range r.obj["data"].([]any) {
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
		ids, _ := listIDs(t, e.do(t, "GET", "/v1/instances", "scoped", nil))
		if !slices.Equal(ids, []string{sandboxInst}) {
			t.Fatalf("scoped token lists %v", ids)
		}
	})

	t.Run("create instance", func(t *testing.T) {
		r := e.do(t, "POST", "/v1/instances", "ops", map[string]string{"id": "beta_2", "name": "Béta", "environment": "production"})
		want(t, r, 201, "")
		if !reflect.DeepEqual(r.obj, map[string]any{"object": "instance", "id": "beta_2", "name": "Béta", "environment": "production"}) {
			t.Fatalf("created %s", r)
		}
		in, err := e.s.Instance(context.Background(), "beta_2")
		if err != nil || in.Name != "Béta" || in.Environment != apikey.Production {
			t.Fatalf("store has %+v, %v", in, err)
		}
		ids, _ := listIDs(t, e.do(t, "GET", "/v1/instances", "ops", nil))
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

	t.Run("keys create and get", func(t *testing.T) {
		before := time.Now()
		for _, inst := range []string{sandboxInst, prodInst} {
			k := e.createKey(t, inst, map[string]string{"name": "Server key"})
			if k.Name != "Server key" || k.Status != "active" || k.ExpiresAt != nil || k.RevokedAt != nil || k.LastUsedAt != nil {
				t.Fatalf("created %+v", k)
			}
			near(t, "created_at", utc(t, "created_at", k.CreatedAt), before, 5*time.Second)
			// Only the hash is stored, and it finds the key.
			l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(k.Secret))
			if err != nil || l.ID != k.ID || l.Instance != inst {
				t.Fatalf("lookup of the new secret: %+v, %v", l, err)
			}
			r := e.do(t, "GET", keysPath(inst)+"/"+k.ID, "reader", nil)
			want(t, r, 200, "")
			got := checkKey(t, r.obj, false)
			k.Secret = ""
			if !reflect.DeepEqual(got, k) {
				t.Fatalf("get = %+v, create = %+v", got, k)
			}
		}
		// With an expiry date: the key stops at 00:00 UTC that day.
		awayFromMidnight()
		day := time.Now().UTC().AddDate(0, 0, 30).Format("2006-01-02")
		k := e.createKey(t, sandboxInst, map[string]string{"name": "expiring", "expires_at": day})
		if k.ExpiresAt == nil || *k.ExpiresAt != day+"T00:00:00Z" {
			t.Fatalf("expires_at %v, want %sT00:00:00Z", k.ExpiresAt, day)
		}
		// A key of another instance is not found there.
		e.refused(t, "GET", keysPath(prodInst)+"/"+k.ID, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "DELETE", keysPath(prodInst)+"/"+k.ID, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "POST", keysPath(prodInst)+"/"+k.ID+"/roll", "ops", nil, 404, "api_key_not_found")
	})

	t.Run("list keys", func(t *testing.T) {
		inst := e.newInstance(t, "sandbox")
		var ids []string // oldest first
		for i := 0; i < 5; i++ {
			ids = append(ids, e.createKey(t, inst, map[string]string{"name": fmt.Sprintf("k%d", i)}).ID)
		}
		p := keysPath(inst)
		for _, tc := range []struct {
			query string
			want  []string
			more  bool
		}{
			{"", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
			{"?limit=2", []string{ids[4], ids[3]}, true},
			{"?limit=2&starting_after=" + ids[3], []string{ids[2], ids[1]}, true},
			{"?limit=2&starting_after=" + ids[1], []string{ids[0]}, false},
			{"?starting_after=" + ids[0], []string{}, false},
			{"?limit=5", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
			{"?limit=4", []string{ids[4], ids[3], ids[2], ids[1]}, true},
			{"?limit=1000", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
			{"?limit=1", []string{ids[4]}, true},
		} {
			r := e.do(t, "GET", p+tc.query, "reader", nil)
			got, more := listIDs(t, r)
			if !slices.Equal(got, tc.want) || more != tc.more {
				t.Fatalf("list%s = %v has_more %v; want %v %v", tc.query, got, more, tc.want, tc.more)
			}
			for _, d := range r.obj["data"].([]any) {
				checkKey(t, d.(map[string]any), false)
			}
		}
		// Status filter.
		want(t, e.do(t, "DELETE", p+"/"+ids[2], "ops", nil), 200, "")
		expired := e.mintKey(t, inst, time.Now().Add(-time.Minute))
		for _, tc := range []struct {
			query string
			want  []string
			more  bool
		}{
			{"?status=revoked", []string{ids[2]}, false},
			{"?status=expired", []string{expired.ID}, false},
			{"?status=active", []string{ids[4], ids[3], ids[1], ids[0]}, false},
			{"?status=active&limit=2", []string{ids[4], ids[3]}, true},
			{"?status=active&limit=2&starting_after=" + ids[3], []string{ids[1], ids[0]}, false},
			{"", []string{expired.ID, ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
		} {
			r := e.do(t, "GET", p+tc.query, "reader", nil)
			got, more := listIDs(t, r)
			if !slices.Equal(got, tc.want) || more != tc.more {
				t.Fatalf("list%s = %v has_more %v; want %v %v", tc.query, got, more, tc.want, tc.more)
			}
			for _, d := range r.obj["data"].([]any) {
				k := checkKey(t, d.(map[string]any), false)
				if st := strings.TrimPrefix(tc.query, "?status="); strings.HasPrefix(tc.query, "?status=") && !strings.HasPrefix(st, k.Status) {
					t.Fatalf("list%s holds a %s key", tc.query, k.Status)
				}
			}
		}
	})

	t.Run("revoke", func(t *testing.T) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "to revoke"})
		before := time.Now()
		r := e.do(t, "DELETE", keysPath(sandboxInst)+"/"+k.ID, "deleter", nil)
		want(t, r, 200, "")
		rk := checkKey(t, r.obj, false)
		if rk.ID != k.ID || rk.Status != "revoked" || rk.RevokedAt == nil {
			t.Fatalf("revoked %s", r)
		}
		near(t, "revoked_at", utc(t, "revoked_at", rk.RevokedAt), before, 5*time.Second)
		time.Sleep(20 * time.Millisecond)
		r = e.do(t, "DELETE", keysPath(sandboxInst)+"/"+k.ID, "ops", nil)
		want(t, r, 200, "")
		again := checkKey(t, r.obj, false)
		if !reflect.DeepEqual(again, rk) {
			t.Fatalf("second revoke = %+v, first = %+v", again, rk)
		}
		r = e.do(t, "GET", keysPath(sandboxInst)+"/"+k.ID, "reader", nil)
		want(t, r, 200, "")
		if got := checkKey(t, r.obj, false); !reflect.DeepEqual(got, rk) {
			t.Fatalf("get after revoke = %+v", got)
		}
		l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(k.Secret))
		if err != nil || l.RevokedAt.IsZero() {
			t.Fatalf("lookup entry after revoke: %+v %v", l, err)
		}
		// One revocation, one event.
		n := 0
		for _, ev := range e.events(t, sandboxInst) {
			if ev.KeyID == k.ID && ev.Type == "api_key.revoked" {
				n++
				if ev.Actor != "deleter" {
					t.Fatalf("revoke event actor %q", ev.Actor)
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d api_key.revoked events for one key revoked twice", n)
		}
	})

	t.Run("roll", func(t *testing.T) {
		awayFromMidnight()
		day := time.Now().UTC().AddDate(0, 0, 30).Format("2006-01-02")
		roll := func(t *testing.T, old keyObj, role string, body any) keyObj {
			t.Helper()
			r := e.do(t, "POST", keysPath(sandboxInst)+"/"+old.ID+"/roll", role, body)
			want(t, r, 201, "")
			nk := checkKey(t, r.obj, true)
			if nk.ID == old.ID || nk.Secret == old.Secret || nk.Instance != old.Instance {
				t.Fatalf("rolled %+v into %+v", old, nk)
			}
			return nk
		}
		get := func(t *testing.T, id string) keyObj {
			t.Helper()
			r := e.do(t, "GET", keysPath(sandboxInst)+"/"+id, "ops", nil)
			want(t, r, 200, "")
			return checkKey(t, r.obj, false)
		}

		t.Run("grace 0", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "Roll me", "expires_at": day})
			before := time.Now()
			nk := roll(t, old, "roller", map[string]any{"expire_old_in_seconds": 0})
			if nk.Name != "Roll me" || nk.ExpiresAt == nil || *nk.ExpiresAt != *old.ExpiresAt {
				t.Fatalf("new key %+v does not keep name and expiry of %+v", nk, old)
			}
			o := get(t, old.ID)
			if o.Status != "expired" {
				t.Fatalf("old key is %s after a roll with no grace", o.Status)
			}
			near(t, "old expires_at", utc(t, "expires_at", o.ExpiresAt), before, 5*time.Second)
			if got := get(t, nk.ID); got.Status != "active" {
				t.Fatalf("new key is %s", got.Status)
			}
			// The old key now fails at the store too.
			l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(old.Secret))
			if err != nil || l.Status(time.Now()) != store.StatusExpired {
				t.Fatalf("old lookup %+v %v", l, err)
			}
			// An expired key cannot be rolled again; nothing is written.
			e.refused(t, "POST", keysPath(sandboxInst)+"/"+old.ID+"/roll", "ops", map[string]any{}, 400, "invalid_request")
		})
		t.Run("no body", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "default grace"})
			nk := roll(t, old, "ops", nil)
			if nk.Name != old.Name || nk.ExpiresAt != nil {
				t.Fatalf("new key %+v", nk)
			}
			if o := get(t, old.ID); o.Status != "expired" {
				t.Fatalf("expire_old_in_seconds does not default to 0: old key %s", o.Status)
			}
			// No body sent chunked, without Content-Length: the same.
			old = e.createKey(t, sandboxInst, map[string]string{"name": "chunked"})
			c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST %s/%s/roll HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
				keysPath(sandboxInst), old.ID, strings.TrimPrefix(e.base, "http://"), e.tok["ops"])
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("roll with an empty chunked body: %d %s", resp.StatusCode, b)
			}
			if o := get(t, old.ID); o.Status != "expired" {
				t.Fatalf("old key %s after a roll with an empty chunked body", o.Status)
			}
			// An empty object means the defaults too.
			old = e.createKey(t, sandboxInst, map[string]string{"name": "empty object"})
			roll(t, old, "ops", "{}")
			if o := get(t, old.ID); o.Status != "expired" {
				t.Fatalf("old key %s after a roll with {}", o.Status)
			}
		})
		t.Run("grace 3600", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "graceful"})
			before := time.Now()
			nk := roll(t, old, "ops", map[string]any{"expire_old_in_seconds": 3600})
			if nk.ExpiresAt != nil || nk.Name != "graceful" {
				t.Fatalf("new key %+v", nk)
			}
			o := get(t, old.ID)
			if o.Status != "active" {
				t.Fatalf("old key is %s during its grace", o.Status)
			}
			near(t, "old expires_at", utc(t, "expires_at", o.ExpiresAt), before.Add(time.Hour), 5*time.Second)
		})
		t.Run("grace 7 days", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "week"})
			before := time.Now()
			roll(t, old, "ops", map[string]any{"expire_old_in_seconds": 604800})
			near(t, "old expires_at", utc(t, "expires_at", get(t, old.ID).ExpiresAt), before.Add(7*24*time.Hour), 5*time.Second)
		})
		t.Run("new name and expiry", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "old name", "expires_at": day})
			day2 := time.Now().UTC().AddDate(0, 0, 10).Format("2006-01-02")
			nk := roll(t, old, "ops", map[string]any{"name": "new name", "expires_at": day2})
			if nk.Name != "new name" || nk.ExpiresAt == nil || *nk.ExpiresAt != day2+"T00:00:00Z" {
				t.Fatalf("new key %+v", nk)
			}
		})
		t.Run("grace shorter than old expiry only", func(t *testing.T) {
			// A grace longer than the old key's remaining life never extends it.
			old := e.createKey(t, sandboxInst, map[string]string{"name": "short life", "expires_at": time.Now().UTC().AddDate(0, 0, 2).Format("2006-01-02")})
			roll(t, old, "ops", map[string]any{"expire_old_in_seconds": 604800})
			if o := get(t, old.ID); *o.ExpiresAt != *old.ExpiresAt {
				t.Fatalf("roll moved the old expiry from %s to %s", *old.ExpiresAt, *o.ExpiresAt)
			}
		})
	})

	t.Run("events", func(t *testing.T) {
		inst := e.newInstance(t, "production")
		a := e.createKey(t, inst, map[string]string{"name": "a"})
		want(t, e.do(t, "DELETE", keysPath(inst)+"/"+a.ID, "ops", nil), 200, "")
		b := e.createKey(t, inst, map[string]string{"name": "b"})
		r := e.do(t, "POST", keysPath(inst)+"/"+b.ID+"/roll", "env", map[string]any{"expire_old_in_seconds": 60})
		want(t, r, 201, "")
		c := checkKey(t, r.obj, true)

		r = e.do(t, "GET", "/v1/instances/"+inst+"/events", "reader", nil)
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
		for i, d := range r.obj["data"].([]any) {
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
		page, more := listIDs(t, e.do(t, "GET", "/v1/instances/"+inst+"/events?limit=3", "reader", nil))
		if !slices.Equal(page, ids[:3]) || !more {
			t.Fatalf("events?limit=3 = %v %v", page, more)
		}
		page, more = listIDs(t, e.do(t, "GET", "/v1/instances/"+inst+"/events?limit=3&starting_after="+ids[2], "reader", nil))
		if !slices.Equal(page, ids[3:]) || more {
			t.Fatalf("events second page = %v %v", page, more)
		}
		// An instance without events answers an empty list.
		empty := e.newInstance(t, "sandbox")
		if page, more := listIDs(t, e.do(t, "GET", "/v1/instances/"+empty+"/events", "reader", nil)); len(page) != 0 || more {
			t.Fatalf("empty trail = %v", page)
		}
	})

	t.Run("names", func(t *testing.T) {
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

	t.Run("expiration", func(t *testing.T) {
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

	t.Run("bad requests", func(t *testing.T) {
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
		r := e.do(t, "GET", p+"/"+k.ID, "ops", nil)
		if got := checkKey(t, r.obj, false); got.Status != "active" || got.ExpiresAt != nil {
			t.Fatalf("target key is now %+v", got)
		}
	})

	t.Run("unauthorized", func(t *testing.T) {
		ops := e.tok["ops"]
		k := e.createKey(t, sandboxInst, map[string]string{"name": "guarded"})
		basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(ops+":"))
		basicPass := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+ops))
		headers := map[string]http.Header{
			"no header":         {},
			"wrong token":       bearer(randomToken()),
			"token prefix":      bearer(ops[:len(ops)-1]),
			"token and more":    bearer(ops + "x"),
			"extra words":       {"Authorization": {"Bearer " + ops + " please"}},
			"Basic scheme":      {"Authorization": {basic}},
			"Basic as password": {"Authorization": {basicPass}},
			"Token scheme":      {"Authorization": {"Token " + ops}},
			"bare token":        {"Authorization": {ops}},
			"empty bearer":      {"Authorization": {"Bearer "}},
			"two headers":       {"Authorization": {"Bearer " + ops, "Bearer " + ops}},
			"hash as token":     bearer("sha256:" + tokenSHA(e.tok["hashed"])),
			"hash of hashed":    bearer(tokenSHA(e.tok["hashed"])),
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
			{"POST", keysPath(sandboxInst) + "/" + k.ID + "/roll"},
			{"GET", "/v1/instances/" + sandboxInst + "/events"},
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
					e.refusedH(t, c.method, c.path, body, h, 401, "unauthorized")
				}
			})
		}
		if got := checkKey(t, e.do(t, "GET", keysPath(sandboxInst)+"/"+k.ID, "ops", nil).obj, false); got.Status != "active" {
			t.Fatalf("guarded key is %s", got.Status)
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "scoped target"})
		pk := e.createKey(t, prodInst, map[string]string{"name": "prod target"})
		// Missing permission.
		e.refused(t, "POST", keysPath(sandboxInst), "reader", map[string]string{"name": "x"}, 403, "forbidden")
		e.refused(t, "GET", keysPath(sandboxInst), "creator", nil, 403, "forbidden")
		e.refused(t, "DELETE", keysPath(sandboxInst)+"/"+k.ID, "creator", nil, 403, "forbidden")
		e.refused(t, "POST", keysPath(sandboxInst)+"/"+k.ID+"/roll", "creator", nil, 403, "forbidden")
		e.refused(t, "POST", keysPath(sandboxInst)+"/"+k.ID+"/roll", "deleter", nil, 403, "forbidden")
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
				{"POST", keysPath(inst) + "/" + id + "/roll", map[string]any{"expire_old_in_seconds": 0}},
				{"GET", "/v1/instances/" + inst + "/events", nil},
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
		if got := checkKey(t, e.do(t, "GET", keysPath(prodInst)+"/"+pk.ID, "ops", nil).obj, false); got.Status != "active" {
			t.Fatalf("prod key is %s", got.Status)
		}
	})

	t.Run("not found", func(t *testing.T) {
		p := keysPath(sandboxInst)
		unknown := randomKeyID(t)
		e.refused(t, "GET", keysPath(ghostInst), "ops", nil, 404, "instance_not_found")
		e.refused(t, "POST", keysPath(ghostInst), "ops", map[string]string{"name": "x"}, 404, "instance_not_found")
		e.refused(t, "POST", keysPath(ghostInst)+"/"+unknown+"/roll", "ops", nil, 404, "instance_not_found")
		e.refused(t, "GET", "/v1/instances/"+ghostInst+"/events", "ops", nil, 404, "instance_not_found")
		e.refused(t, "GET", p+"/"+unknown, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "DELETE", p+"/"+unknown, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "POST", p+"/"+unknown+"/roll", "ops", map[string]any{"expire_old_in_seconds": 0}, 404, "api_key_not_found")
		// A key of a missing instance: 404, whichever code.
		for _, m := range []string{"GET", "DELETE"} {
			r := e.refused(t, m, keysPath(ghostInst)+"/"+unknown, "ops", nil, 404, "")
			if r.Error.Code != "instance_not_found" && r.Error.Code != "api_key_not_found" {
				t.Fatalf("%s key of a missing instance: %s", m, r)
			}
		}
	})

	t.Run("request too large", func(t *testing.T) {
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
		if got := checkKey(t, e.do(t, "GET", keysPath(sandboxInst)+"/"+k.ID, "ops", nil).obj, false); got.Status != "active" || got.ExpiresAt != nil {
			t.Fatalf("target key is now %+v", got)
		}
	})

	t.Run("permission matrix", func(t *testing.T) {
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
			{"revoke key", []string{"apiKey.delete"}, "DELETE", func(in, id string) string { return keysPath(in) + "/" + id }, nil, 200},
			{"roll key", []string{"apiKey.create", "apiKey.delete"}, "POST", func(in, id string) string { return keysPath(in) + "/" + id + "/roll" }, map[string]any{"expire_old_in_seconds": 0}, 201},
			{"list events", []string{"apiKey.read"}, "GET", func(in, _ string) string { return "/v1/instances/" + in + "/events" }, nil, 200},
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

				want(t, e.do(t, "GET", "/v1/me", role.role, nil), 200, "")
				ids, _ := listIDs(t, e.do(t, "GET", "/v1/instances", role.role, nil))
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
					want(t, e.do(t, "POST", "/v1/instances", role.role, body), 201, "")
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
							r := e.do(t, c.method, c.path(inst, id), role.role, c.body)
							if r.status != c.ok {
								t.Fatalf("%s: got %s, want %d", what, r, c.ok)
							}
							if c.ok == 201 {
								checkKey(t, r.obj, true)
							}
						}
					}
				}
			})
		}
	})

	t.Run("token naming", func(t *testing.T) {
		h := sha256.Sum256([]byte(e.tok["unnamed"]))
		name := "token-" + hex.EncodeToString(h[:])[:8]
		r := e.do(t, "GET", "/v1/me", "unnamed", nil)
		want(t, r, 200, "")
		if r.obj["name"] != name {
			t.Fatalf("unnamed token is named %v, want %s", r.obj["name"], name)
		}
		inst := e.newInstance(t, "sandbox")
		want(t, e.do(t, "POST", keysPath(inst), "unnamed", map[string]string{"name": "by unnamed"}), 201, "")
		evs := e.events(t, inst)
		if len(evs) != 1 || evs[0].Actor != name || evs[0].Type != "api_key.created" {
			t.Fatalf("events %+v, want one api_key.created by %s", evs, name)
		}
		// A token given as sha256:<hex> authenticates with the clear token.
		r = e.do(t, "GET", "/v1/me", "hashed", nil)
		want(t, r, 200, "")
		if want := "token-" + tokenSHA(e.tok["hashed"])[:8]; r.obj["name"] != want {
			t.Fatalf("hashed token is named %v, want %s", r.obj["name"], want)
		}
		want(t, e.do(t, "GET", keysPath(sandboxInst), "hashed", nil), 200, "")
		e.refused(t, "POST", keysPath(sandboxInst), "hashed", map[string]string{"name": "x"}, 403, "forbidden")
		// The env token (set through {env.*}) works and keeps its name.
		r = e.do(t, "GET", "/v1/me", "env", nil)
		if want(t, r, 200, ""); r.obj["name"] != "env-ops" {
			t.Fatalf("env token named %v", r.obj["name"])
		}
	})

	if srv != nil {
		t.Run("store unavailable", func(t *testing.T) {
			k := e.createKey(t, sandboxInst, map[string]string{"name": "before the crash"})
			srv.Kill()
			start := time.Now()
			for _, c := range []struct {
				method, path string
				body         any
			}{
				{"POST", keysPath(sandboxInst), map[string]string{"name": "x"}},
				{"GET", keysPath(sandboxInst), nil},
				{"GET", keysPath(sandboxInst) + "/" + k.ID, nil},
				{"DELETE", keysPath(sandboxInst) + "/" + k.ID, nil},
				{"POST", keysPath(sandboxInst) + "/" + k.ID + "/roll", nil},
				{"GET", "/v1/instances/" + sandboxInst + "/events", nil},
				{"GET", "/v1/instances", nil},
				{"POST", "/v1/instances", map[string]string{"id": "down", "name": "x", "environment": "sandbox"}},
			} {
				r := e.do(t, c.method, c.path, "ops", c.body)
				want(t, r, 503, "store_unavailable")
				if r.header.Get("Retry-After") != "1" {
					t.Fatalf("%s %s: Retry-After %q", c.method, c.path, r.header.Get("Retry-After"))
				}
			}
			r := e.do(t, "GET", "/healthz", "", nil)
			want(t, r, 503, "")
			if r.obj["status"] == "ok" {
				t.Fatalf("healthz with the store down: %s", r)
			}
			// Refusals that need no store still come first.
			want(t, e.do(t, "POST", keysPath(sandboxInst), "", map[string]string{"name": "x"}), 401, "unauthorized")
			want(t, e.do(t, "POST", keysPath(sandboxInst), "reader", map[string]string{"name": "x"}), 403, "forbidden")
			want(t, e.do(t, "GET", "/v1/me", "ops", nil), 200, "")
			if d := time.Since(start); d > 15*time.Second {
				t.Fatalf("answering with the store down took %v", d)
			}
			// It recovers by itself.
			srv.Restart()
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := e.do(t, "GET", "/healthz", "", nil)
				if r.status == 200 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("healthz after restart: %s", r)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}

	t.Run("no token in answers or logs", func(t *testing.T) {
		var secrets []string
		for _, tok := range e.tok {
			secrets = append(secrets, tok)
		}
		e.mu.Lock()
		answers := bytes.Join(e.answers, []byte("\n"))
		keySecrets := append([]string(nil), e.secrets...)
		e.mu.Unlock()
		for _, s := range secrets {
			if bytes.Contains(answers, []byte(s)) {
				t.Fatal("an answer carries an admin token")
			}
		}
		if len(keySecrets) < 50 {
			t.Fatalf("only %d key secrets seen", len(keySecrets))
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
			// With the store down, the handler's own logger wrote: the capture covers it.
			if i == 0 && srv != nil && !bytes.Contains(logs, []byte(`"logger":"http.handlers.nora_admin"`)) {
				t.Fatalf("log %s holds nothing from nora_admin", f)
			}
			for _, s := range append(secrets, keySecrets...) {
				if bytes.Contains(logs, []byte(s)) {
					line := logs[:0]
					for _, l := range bytes.Split(logs, []byte("\n")) {
						if bytes.Contains(l, []byte(s)) {
							line = l
							break
						}
					}
					t.Fatalf("log %s carries a secret: %.300s", filepath.Base(f), bytes.ReplaceAll(line, []byte(s), []byte("<SECRET>")))
				}
			}
		}
	})
	t.Logf("%s: %v", storeLine, time.Since(start))
}

// events lists an instance's events through the store.
func (e *adminEnv) events(t *testing.T, instance string) []store.Event {
	t.Helper()
	evs, _, err := e.s.ListEvents(context.Background(), instance, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
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
		e := &adminEnv{base: fmt.Sprintf("http://127.0.0.1:%d", port), tok: map[string]string{}}
		for _, h := range []http.Header{{}, bearer("anything-at-all-0123456789"), bearer("")} {
			r := e.send(t, "GET", "/v1/me", nil, h)
			want(t, r, 503, "admin_disabled")
			if !strings.Contains(r.Error.Message, v) {
				t.Fatalf("message %q does not say what to set", r.Error.Message)
			}
		}
		want(t, e.send(t, "POST", keysPath(sandboxInst), `{"name":"x"}`, bearer("")), 503, "admin_disabled")
		want(t, e.send(t, "GET", "/healthz", nil, nil), 200, "")
	})

	t.Run("unset env token beside a set one", func(t *testing.T) {
		const v = "KEYGATE_TEST_UNSET_ADMIN_TOKEN2"
		t.Setenv(v, "")
		os.Unsetenv(v)
		tok := randomToken()
		port := redistest.FreePort(t)
		loadNoPersist(t, global(t)+fmt.Sprintf("http://127.0.0.1:%d {\n\tnora_admin {\n\t\ttoken {env.%s} apiKey.read\n\t\ttoken %s apiKey.read {\n\t\t\tname set\n\t\t}\n\t}\n}\n", port, v, tok))
		e := &adminEnv{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
		r := e.send(t, "GET", "/v1/me", nil, bearer(tok))
		if want(t, r, 200, ""); r.obj["name"] != "set" {
			t.Fatalf("me = %s", r)
		}
		want(t, e.send(t, "GET", "/v1/me", nil, http.Header{}), 401, "unauthorized")
	})
}

// TestAdminBeforeStoreOpens: Caddy starts its apps in map order, so the admin site can be
// serving before the nora app has opened the store. A request in that window waits for the
// app's start and is answered, and the endpoint works from then on.
func TestAdminBeforeStoreOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	tok := randomToken()
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
		var status int
		var body string
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if status, body = get("/v1/me"); status == http.StatusOK {
				break
			}
		}
		if status != http.StatusOK {
			t.Fatalf("attempt %d: answered %d before the store opened, and still %d %s after", attempt, early, status, body)
		}
		if status, body := get("/healthz"); status != http.StatusOK {
			t.Fatalf("healthz %d %s", status, body)
		}
		return
	}
	t.Skip("the admin site never started before the nora app")
}
