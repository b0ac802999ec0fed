package caddymodule_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/caddymodule"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

// upstream records what reaches the "Nora API".
type upstream struct {
	*httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	last http.Header
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.mu.Unlock()
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// load adapts a Caddyfile and runs it in this process (real Caddy), stopping it at the end.
func load(t testing.TB, caddyfile string) {
	t.Helper()
	cfg, err := adapt(caddyfile)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
}

func adapt(caddyfile string) ([]byte, error) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	return cfg, err
}

func noraApp(t testing.TB) *caddymodule.App {
	t.Helper()
	a, err := caddy.ActiveContext().App("nora")
	if err != nil {
		t.Fatal(err)
	}
	return a.(*caddymodule.App)
}

// mint creates a key in the running app's store and returns its secret.
func mint(t *testing.T, s store.Store, instance string, env apikey.Environment, expires time.Time) (string, store.Key) {
	t.Helper()
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: instance, Environment: env}, "test key", expires, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

func waitInstances(t *testing.T, s store.Store, n int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("%d instances in the store", n), func() bool {
		ins, err := s.Instances(context.Background())
		return err == nil && len(ins) >= n
	})
}

type answer struct {
	status int
	header http.Header
	Error  struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	body string
}

func call(t *testing.T, url string, auth ...string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	return send(t, req)
}

// send sends req and reads the answer (the error body decoded when it is not a 200).
func send(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatalf("error body is not JSON: %q", b)
		}
	}
	return a
}

func gatewayConfig(t *testing.T, storeLine string, up string, port int, extra string) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		%s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	route /any/* {
		nora_auth
		reverse_proxy %s {
			header_up X-Auth-User {http.auth.user.id}
			header_up X-Auth-Instance {http.auth.user.instance}
			header_up X-Auth-Env {http.auth.user.environment}
		}
	}
	route /prod/* {
		nora_auth {
			environment production
		}
		reverse_proxy %s
	}
	route /sandbox/* {
		nora_auth {
			environment sandbox
		}
		reverse_proxy %s
	}
	route /keep/* {
		nora_auth {
			keep_authorization
		}
		reverse_proxy %s
	}
	%s
}
`, storeLine, port, up, up, up, up, extra)
}

func TestAuthAnswersEveryRow(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, gatewayConfig(t, "store file "+filepath.Join(t.TempDir(), "keys.db"), up.URL, port, ""))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	live, _ := mint(t, s, "acme-prod", apikey.Production, time.Time{})
	test, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	revoked, rk := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	if _, _, err := s.RevokeKey(context.Background(), "acme-sandbox", rk.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	expired, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Now().Add(-time.Hour))
	revokedExpired, rek := mint(t, s, "acme-prod", apikey.Production, time.Now().Add(-time.Hour))
	if _, _, err := s.RevokeKey(context.Background(), "acme-prod", rek.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	unknown, _ := apikey.Generate(apikey.Sandbox) // right checksum, never stored
	badSum := test[:len(test)-1] + string("0123456789"[(strings.IndexByte("0123456789", test[len(test)-1])+1)%10])
	if test[len(test)-1] < '0' || test[len(test)-1] > '9' {
		badSum = test[:len(test)-1] + "0"
		if badSum == test {
			badSum = test[:len(test)-1] + "1"
		}
	}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}

	for _, tc := range []struct {
		name   string
		path   string
		auth   []string
		status int
		code   string
	}{
		{"no header", "/any/x", nil, 401, "missing_api_key"},
		{"empty bearer", "/any/x", []string{"Bearer"}, 401, "missing_api_key"},
		{"bearer and spaces", "/any/x", []string{"Bearer    "}, 401, "missing_api_key"},
		{"empty basic user", "/any/x", []string{basic("", "")}, 401, "missing_api_key"},
		{"garbage", "/any/x", []string{"Bearer hello"}, 401, "invalid_api_key"},
		{"bad checksum", "/any/x", []string{"Bearer " + badSum}, 401, "invalid_api_key"},
		{"unknown key", "/any/x", []string{"Bearer " + unknown}, 401, "invalid_api_key"},
		{"two headers", "/any/x", []string{"Bearer " + test, "Bearer " + test}, 401, "invalid_api_key"},
		{"unknown scheme", "/any/x", []string{"Token " + test}, 401, "invalid_api_key"},
		{"extra words", "/any/x", []string{"Bearer " + test + " please"}, 401, "invalid_api_key"},
		{"basic with password", "/any/x", []string{basic(test, "secret")}, 401, "invalid_api_key"},
		{"basic bad base64", "/any/x", []string{"Basic !!!"}, 401, "invalid_api_key"},
		{"basic without colon", "/any/x", []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(test))}, 401, "invalid_api_key"},
		{"revoked", "/any/x", []string{"Bearer " + revoked}, 401, "api_key_revoked"},
		{"expired", "/any/x", []string{"Bearer " + expired}, 401, "api_key_expired"},
		{"revoked and expired", "/any/x", []string{"Bearer " + revokedExpired}, 401, "api_key_revoked"},
		{"test key on production route", "/prod/x", []string{"Bearer " + test}, 401, "api_key_wrong_environment"},
		{"live key on sandbox route", "/sandbox/x", []string{"Bearer " + live}, 401, "api_key_wrong_environment"},
		{"bad key on production route", "/prod/x", []string{"Bearer " + badSum}, 401, "invalid_api_key"},
		{"live bearer", "/any/x", []string{"Bearer " + live}, 200, ""},
		{"test bearer lower-case scheme", "/any/x", []string{"bearer " + test}, 200, ""},
		{"test basic as curl -u", "/any/x", []string{basic(test, "")}, 200, ""},
		{"live on production route", "/prod/x", []string{"Bearer " + live}, 200, ""},
		{"test on sandbox route", "/sandbox/x", []string{"BEARER " + test}, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			a := call(t, base+tc.path, tc.auth...)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d (%s)", a.status, tc.status, a.body)
			}
			if tc.status == 200 {
				if up.hits.Load() != before+1 {
					t.Fatal("accepted request did not reach the upstream")
				}
				return
			}
			if up.hits.Load() != before {
				t.Fatal("refused request reached the upstream")
			}
			if a.Error.Code != tc.code || a.Error.Type != "authentication_error" || a.Error.Message == "" {
				t.Fatalf("error %+v, want code %s", a.Error, tc.code)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			want := `Bearer realm="nora", error="invalid_token"`
			if tc.code == "missing_api_key" {
				want = `Bearer realm="nora"`
			}
			// Both challenges, Bearer first: clients that send Basic credentials only once
			// challenged (wget --user, Python's HTTPBasicAuthHandler) need the second.
			if got := a.header.Values("WWW-Authenticate"); len(got) != 2 || got[0] != want || got[1] != `Basic realm="nora"` {
				t.Fatalf("WWW-Authenticate %q, want [%q %q]", got, want, `Basic realm="nora"`)
			}
			for _, secret := range []string{live, test, revoked, expired, unknown} {
				if strings.Contains(a.body, secret) {
					t.Fatal("the answer echoes a key")
				}
			}
		})
	}
}

func TestAuthSetsUpstreamHeadersAndPlaceholders(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, gatewayConfig(t, "store file "+filepath.Join(t.TempDir(), "keys.db"), up.URL, port, ""))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	live, k := mint(t, s, "acme-prod", apikey.Production, time.Time{})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	req, _ := http.NewRequest("GET", base+"/any/x", nil)
	req.Header.Set("Authorization", "Bearer "+live)
	req.Header.Set("Nora-Key-Id", "key_spoofed")
	req.Header.Add("Nora-Instance", "someone-else")
	req.Header.Set("Nora-Environment", "sandbox")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h := up.lastHeader()
	for name, want := range map[string]string{
		"Nora-Key-Id": k.ID, "Nora-Instance": "acme-prod", "Nora-Environment": "production",
		"X-Auth-User": k.ID, "X-Auth-Instance": "acme-prod", "X-Auth-Env": "production",
	} {
		if got := h.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("upstream %s = %q, want %q", name, got, want)
		}
	}
	if h.Get("Authorization") != "" {
		t.Error("Authorization reached the upstream without keep_authorization")
	}

	// A refused request with spoofed headers: nothing reaches the upstream at all.
	req, _ = http.NewRequest("GET", base+"/keep/x", nil)
	req.Header.Set("Authorization", "Bearer "+live)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := up.lastHeader().Get("Authorization"); got != "Bearer "+live {
		t.Errorf("keep_authorization: upstream Authorization = %q", got)
	}
}

func TestStoreUnreachableIs503(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	dead := redistest.FreePort(t) // nothing listens there
	load(t, gatewayConfig(t, fmt.Sprintf("store redis redis://127.0.0.1:%d/0 {\n\t\t\ttimeout 200ms\n\t\t}", dead), up.URL, port, ""))
	key, _ := apikey.Generate(apikey.Sandbox)
	start := time.Now()
	a := call(t, fmt.Sprintf("http://127.0.0.1:%d/any/x", port), "Bearer "+key)
	if a.status != 503 || a.Error.Code != "auth_unavailable" || a.Error.Type != "api_error" {
		t.Fatalf("got %d %+v", a.status, a.Error)
	}
	if a.header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
	}
	t.Logf("answered in %v", time.Since(start))
	if up.hits.Load() != 0 {
		t.Fatal("reached the upstream")
	}
}

func TestReloadKeepsCacheWarmAndLeaksNothing(t *testing.T) {
	srv := redistest.Start(t)
	up := newUpstream(t)
	port := redistest.FreePort(t)
	storeLine := "store redis " + srv.URL(0)
	load(t, gatewayConfig(t, storeLine, up.URL, port, ""))
	app := noraApp(t)
	s := app.KeyStore()
	waitInstances(t, s, 2)
	key, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	url := fmt.Sprintf("http://127.0.0.1:%d/any/x", port)
	if a := call(t, url, "Bearer "+key); a.status != 200 {
		t.Fatalf("status %d", a.status)
	}
	v := app.Verifier()
	lookups := v.Stats.StoreLookups.Load()
	hmget := srv.CommandCalls("hmget")

	reload := func(i int) {
		cfg, err := adapt(gatewayConfig(t, storeLine, up.URL, port, fmt.Sprintf("header X-Reload %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := caddy.Load(cfg, true); err != nil {
			t.Fatalf("reload: %v", err)
		}
	}
	reload(0)
	baseline := ourGoroutines()
	for i := 1; i <= 20; i++ {
		reload(i)
		if a := call(t, url, "Bearer "+key); a.status != 200 || a.header.Get("X-Reload") != fmt.Sprint(i) {
			t.Fatalf("after reload %d: status %d, X-Reload %q", i, a.status, a.header.Get("X-Reload"))
		}
	}
	if got := noraApp(t).Verifier(); got != v {
		t.Fatal("reload replaced the verifier: the cache went cold")
	}
	if got := v.Stats.StoreLookups.Load(); got != lookups {
		t.Fatalf("store lookups went from %d to %d across reloads: the cache went cold", lookups, got)
	}
	if got := srv.CommandCalls("hmget"); got != hmget {
		t.Fatalf("redis saw %d more HMGET across reloads", got-hmget)
	}
	n, waiting := 0, true
	defer func() {
		if waiting { // WaitEvery timed out: show who is left
			buf := make([]byte, 1<<20)
			t.Logf("keygate goroutines grew from %d to %d over 20 reloads:\n%s", baseline, n, buf[:runtime.Stack(buf, true)])
		}
	}()
	testutil.WaitEvery(t, 5*time.Second, 50*time.Millisecond, "keygate's goroutines to fall back to the baseline after 20 reloads", func() bool {
		n = ourGoroutines()
		return n <= baseline
	})
	waiting = false
	// Redis connections: the same client serves every config.
	clients, err := srv.Client().ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(clients, "\n"); c > 12 {
		t.Fatalf("%d redis connections after 20 reloads", c)
	}
}

// ourGoroutines counts the goroutines started by keygate and the libraries it owns (the
// store client, the caches). Caddy's own reverse proxy keeps per-config goroutines for a
// while after a reload; those are not ours to count.
func ourGoroutines() int {
	buf := make([]byte, 4<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		i := strings.LastIndex(g, "created by ")
		if i < 0 {
			continue
		}
		site := g[i:]
		for _, mark := range []string{"keygate/keygate/", "otter", "go-redis", "golang-lru", "bbolt"} {
			if strings.Contains(site, mark) && !strings.Contains(site, "redistest") {
				n++
				break
			}
		}
	}
	return n
}

func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"unknown nora option", "{\n\tnora {\n\t\tbogus 1\n\t}\n}\n:80 {\n}\n", "Caddyfile:3"},
		{"bad instance environment", "{\n\tnora {\n\t\tinstance a staging A\n\t}\n}\n", "Caddyfile:3"},
		{"instance twice", "{\n\tnora {\n\t\tinstance a sandbox A\n\t\tinstance a sandbox B\n\t}\n}\n", "Caddyfile:4"},
		{"bad cache size", "{\n\tnora {\n\t\tcache {\n\t\t\tsize lots\n\t\t}\n\t}\n}\n", "Caddyfile:4"},
		{"bad ttl", "{\n\tnora {\n\t\tcache {\n\t\t\tttl -5s\n\t\t}\n\t}\n}\n", "Caddyfile:4"},
		{"unknown store", "{\n\tnora {\n\t\tstore s3 bucket\n\t}\n}\n", "Caddyfile:3"},
		{"redis url and addrs", "{\n\tnora {\n\t\tstore redis redis://x:1 {\n\t\t\taddrs a:1\n\t\t}\n\t}\n}\n", "Caddyfile:"},
		{"unknown auth option", ":80 {\n\tnora_auth {\n\t\tscope all\n\t}\n}\n", "Caddyfile:3"},
		{"bad auth environment", ":80 {\n\tnora_auth {\n\t\tenvironment staging\n\t}\n}\n", "Caddyfile:3"},
		{"auth argument", ":80 {\n\tnora_auth now\n}\n", "Caddyfile:2"},
		{"webhook without url", "{\n\tnora {\n\t\twebhook {\n\t\t\tsecret whsec_0123456789abcdef\n\t\t}\n\t}\n}\n", "Caddyfile:3"},
		{"webhook bad url", "{\n\tnora {\n\t\twebhook ftp://x/ {\n\t\t\tsecret whsec_0123456789abcdef\n\t\t}\n\t}\n}\n", "Caddyfile:3"},
		{"webhook without secret", "{\n\tnora {\n\t\twebhook https://x/h {\n\t\t}\n\t}\n}\n", "Caddyfile:"},
		{"webhook short secret", "{\n\tnora {\n\t\twebhook https://x/h {\n\t\t\tsecret short\n\t\t}\n\t}\n}\n", "Caddyfile:4"},
		{"webhook unknown event", "{\n\tnora {\n\t\twebhook https://x/h {\n\t\t\tsecret whsec_0123456789abcdef\n\t\t\tevents api_key.deleted\n\t\t}\n\t}\n}\n", "Caddyfile:5"},
		{"webhook twice", "{\n\tnora {\n\t\twebhook https://x/h {\n\t\t\tsecret whsec_0123456789abcdef\n\t\t}\n\t\twebhook https://x/h {\n\t\t\tsecret whsec_0123456789abcdef\n\t\t}\n\t}\n}\n", "Caddyfile:"},
		{"usage bad word", "{\n\tnora {\n\t\tusage on\n\t}\n}\n", "Caddyfile:3"},
		{"usage flush too long", "{\n\tnora {\n\t\tusage {\n\t\t\tflush_interval 1m\n\t\t}\n\t}\n}\n", "Caddyfile:4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := adapt(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestBadConfigRefusedAtLoad(t *testing.T) {
	for _, tc := range []struct{ name, json string }{
		{"bad instance id", `{"admin":{"disabled":true},"apps":{"nora":{"instances":[{"id":"Bad Id","environment":"sandbox","name":"x"}]},"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"nora_auth"}]}]}}}}}`},
		{"bad store type", `{"admin":{"disabled":true},"apps":{"nora":{"store":{"type":"s3"}},"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"nora_auth"}]}]}}}}}`},
		{"bad redis url", `{"admin":{"disabled":true},"apps":{"nora":{"store":{"type":"redis","url":"http://x"}},"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"nora_auth"}]}]}}}}}`},
		{"webhook secret resolves empty", `{"admin":{"disabled":true},"apps":{"nora":{"webhooks":[{"url":"https://x/h","secret":"{env.KEYGATE_TEST_UNSET_SECRET}"}]},"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"nora_auth"}]}]}}}}}`},
		{"webhook bad url", `{"admin":{"disabled":true},"apps":{"nora":{"webhooks":[{"url":"not a url","secret":"whsec_0123456789abcdef"}]},"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"nora_auth"}]}]}}}}}`},
		{"bad auth environment", `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"nora_auth","environment":"staging"}]}]}}}}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := caddy.Load([]byte(tc.json), true); err == nil {
				caddy.Stop()
				t.Fatal("config loaded")
			}
		})
	}
}
