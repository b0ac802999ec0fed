package admin_test

// The admin API over httptest, against both stores: a file store in a temporary directory
// and a Redis store on a throwaway redis-server. Caddy is not involved (its nora_admin
// handler only builds this API from the Caddyfile's tokens; caddymodule tests that wiring).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
)

const (
	sandboxInst = "acme-sandbox"
	prodInst    = "acme-prod"
	ghostInst   = "no-such-instance" // a well-formed id that names no instance
)

var allPerms = []string{"apiKey.read", "apiKey.create", "apiKey.delete", "instance.manage"}

// adminRoles are the named tokens of the test API; the role is the token's name.
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

// apiEnv is one admin API behind an httptest server, over a real store holding the
// instances sandboxInst and prodInst.
type apiEnv struct {
	*admintest.Client // Tok: role (and "unnamed", "hashed", "env") → clear token
	s                 store.Store
	srv               *redistest.Server // nil for the file store
	logs              *syncBuffer       // the API's logger, as JSON lines
	instances         int               // counter for fresh instance ids
}

// eachStore runs test on an API over a file store, then on one over a Redis store.
func eachStore(t *testing.T, test func(t *testing.T, e *apiEnv)) {
	t.Run("file", func(t *testing.T) {
		s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		test(t, newAPIEnv(t, s, nil))
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
		t.Cleanup(func() { s.Close() })
		test(t, newAPIEnv(t, s, srv))
	})
}

// newAPIEnv serves the API over s with the tokens of adminRoles, plus an unnamed token
// (apiKey.read apiKey.create), one configured as "sha256:<hex>" (apiKey.read) and one named
// env-ops (every permission), built the way nora_admin builds them from its config. At the
// end of the test it checks that no answer carried an admin token and that the log holds
// no token and no key secret.
func newAPIEnv(t *testing.T, s store.Store, srv *redistest.Server) *apiEnv {
	t.Helper()
	ctx := context.Background()
	for _, in := range []store.Instance{
		{ID: sandboxInst, Name: "Acme (sandbox)", Environment: apikey.Sandbox},
		{ID: prodInst, Name: "Acme (production)", Environment: apikey.Production},
	} {
		if err := s.CreateInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	e := &apiEnv{Client: &admintest.Client{Tok: map[string]string{}}, s: s, srv: srv, logs: &syncBuffer{}}
	var tokens []admin.Token
	add := func(configured, name string, perms []string, scope []string) {
		t.Helper()
		h, err := admin.TokenHash(configured)
		if err != nil {
			t.Fatal(err)
		}
		if name == "" {
			name = admin.DefaultTokenName(h)
		}
		tk := admin.Token{Name: name, Hash: h, Instances: scope}
		for _, p := range perms {
			perm, err := admin.ParsePermission(p)
			if err != nil {
				t.Fatal(err)
			}
			tk.Permissions = append(tk.Permissions, perm)
		}
		tokens = append(tokens, tk)
	}
	for _, r := range adminRoles {
		e.Tok[r.role] = admintest.RandomToken()
		add(e.Tok[r.role], r.role, r.perms, r.scope)
	}
	e.Tok["unnamed"] = admintest.RandomToken()
	add(e.Tok["unnamed"], "", []string{"apiKey.read", "apiKey.create"}, nil)
	e.Tok["hashed"] = admintest.RandomToken()
	add("sha256:"+admintest.TokenSHA(e.Tok["hashed"]), "", []string{"apiKey.read"}, nil)
	e.Tok["env"] = admintest.RandomToken()
	add(e.Tok["env"], "env-ops", allPerms, nil)

	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(e.logs), zapcore.DebugLevel))
	api, err := admin.NewAPI(s, tokens, apikey.Hasher{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(api)
	t.Cleanup(hs.Close)
	e.Base = hs.URL
	t.Cleanup(func() { e.checkNoSecretLeaked(t) })
	return e
}

// checkNoSecretLeaked: no answer carries an admin token, and the log carries neither an
// admin token nor a key secret.
func (e *apiEnv) checkNoSecretLeaked(t *testing.T) {
	t.Helper()
	answers := e.Answers()
	tokens := e.Tokens()
	for _, tok := range tokens {
		if bytes.Contains(answers, []byte(tok)) {
			t.Error("an answer carries an admin token")
		}
	}
	logs := e.logs.Bytes()
	for _, s := range append(tokens, e.Secrets()...) {
		if line, ok := admintest.LineWith(logs, s); ok {
			t.Errorf("the log carries a secret: %.300s", line)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

// snapshot is everything the store holds that the admin API can change.
func (e *apiEnv) snapshot(t *testing.T) string {
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
				fmt.Fprintf(&b, "key %s %s %q %s %x %d %d %d %d %q %v %v %s\n", k.ID, k.Instance, k.Name, k.Prefix, k.Hash,
					store.Millis(k.CreatedAt), store.Millis(k.ExpiresAt), store.Millis(k.RevokedAt), store.Millis(k.LastUsedAt),
					k.Scopes, k.AllowedIPs, k.Metadata, limitsText(k.RateLimit, k.Quota))
				l, err := e.s.LookupHash(ctx, k.Hash)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&b, "  lookup %s %d %d %q %v %v %s\n", l.ID, store.Millis(l.ExpiresAt), store.Millis(l.RevokedAt), l.Scopes, l.AllowedIPs, l.Metadata,
					limitsText(l.RateLimit, l.Quota))
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
				fmt.Fprintf(&b, "event %s %s %s %s %q %s %d\n", ev.ID, ev.Type, ev.KeyID, ev.NewKeyID, ev.Fields, ev.Actor, store.Millis(ev.CreatedAt))
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
func (e *apiEnv) refusedH(t *testing.T, method, path string, body any, h http.Header, status int, code string) admintest.Reply {
	t.Helper()
	before := e.snapshot(t)
	r := e.Send(t, method, path, body, h)
	admintest.Want(t, r, status, code)
	if after := e.snapshot(t); after != before {
		t.Fatalf("%s %s refused with %d but the store changed:\nbefore:\n%s\nafter:\n%s", method, path, status, before, after)
	}
	return r
}

func (e *apiEnv) refused(t *testing.T, method, path, role string, body any, status int, code string) admintest.Reply {
	t.Helper()
	h := http.Header{}
	if role != "" {
		h = admintest.Bearer(e.Tok[role])
	}
	return e.refusedH(t, method, path, body, h, status, code)
}

// keyObj is the key object of the API.
type keyObj struct {
	Object      string            `json:"object"`
	ID          string            `json:"id"`
	Instance    string            `json:"instance"`
	Environment string            `json:"environment"`
	Name        string            `json:"name"`
	Prefix      string            `json:"prefix"`
	Status      string            `json:"status"`
	CreatedAt   *string           `json:"created_at"`
	ExpiresAt   *string           `json:"expires_at"`
	RevokedAt   *string           `json:"revoked_at"`
	LastUsedAt  *string           `json:"last_used_at"`
	Scopes      []string          `json:"scopes"`
	AllowedIPs  []string          `json:"allowed_ips"`
	Metadata    map[string]string `json:"metadata"`
	RateLimit   *admin.RateLimit  `json:"rate_limit"`
	Quota       *admin.Quota      `json:"quota"`
	QuotaUsed   *int64            `json:"quota_used"`
	QuotaResets *string           `json:"quota_resets_at"`
	Secret      string            `json:"secret"`
}

var keyFields = []string{"object", "id", "instance", "environment", "name", "prefix", "status",
	"created_at", "expires_at", "revoked_at", "last_used_at", "scopes", "allowed_ips", "metadata",
	"rate_limit", "quota", "quota_used", "quota_resets_at"}

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
	// Restrictions: null or a non-empty list; metadata always an object.
	for _, f := range []string{"scopes", "allowed_ips"} {
		switch v := obj[f].(type) {
		case nil:
		case []any:
			if len(v) == 0 {
				t.Fatalf("key %s is an empty list, want null or a list: %v", f, obj)
			}
			for _, s := range v {
				if _, ok := s.(string); !ok {
					t.Fatalf("key %s holds a %T: %v", f, s, obj)
				}
			}
		default:
			t.Fatalf("key %s is a %T, want null or a list", f, v)
		}
	}
	for _, ip := range k.AllowedIPs {
		if p, err := netip.ParsePrefix(ip); err == nil && p.Bits() == p.Addr().BitLen() {
			t.Fatalf("allowed address %q is shown with its full prefix length", ip)
		} else if _, err2 := netip.ParseAddr(ip); err != nil && err2 != nil {
			t.Fatalf("allowed address %q is neither an address nor a prefix", ip)
		}
	}
	if m, ok := obj["metadata"].(map[string]any); !ok {
		t.Fatalf("key metadata is %T, want an object: %v", obj["metadata"], obj)
	} else {
		for name, v := range m {
			if _, ok := v.(string); !ok {
				t.Fatalf("metadata %s is a %T", name, v)
			}
		}
	}
	checkLimitFields(t, obj, k)
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
func (e *apiEnv) createKey(t *testing.T, instance string, body any) keyObj {
	t.Helper()
	r := e.Do(t, "POST", keysPath(instance), "ops", body)
	admintest.Want(t, r, 201, "")
	k := checkKey(t, r.Obj, true)
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
func (e *apiEnv) mintKey(t *testing.T, instance string, expires time.Time) store.Key {
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
func (e *apiEnv) newInstance(t *testing.T, env string) string {
	t.Helper()
	e.instances++
	id := fmt.Sprintf("inst-%d", e.instances)
	r := e.Do(t, "POST", "/v1/instances", "ops", map[string]string{"id": id, "name": "Instance " + id, "environment": env})
	admintest.Want(t, r, 201, "")
	return id
}

func listIDs(t *testing.T, r admintest.Reply) (ids []string, more bool) {
	t.Helper()
	admintest.Want(t, r, 200, "")
	if r.Obj["object"] != "list" {
		t.Fatalf("list object %v", r.Obj["object"])
	}
	data, ok := r.Obj["data"].([]any)
	if !ok {
		t.Fatalf("list data is %T, want an array: %s", r.Obj["data"], r)
	}
	more, ok = r.Obj["has_more"].(bool)
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

// events lists an instance's events through the store.
func (e *apiEnv) events(t *testing.T, instance string) []store.Event {
	t.Helper()
	evs, _, err := e.s.ListEvents(context.Background(), instance, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}
