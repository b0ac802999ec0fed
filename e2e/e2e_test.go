// Package e2e runs the built keygate binary as separate gateway processes, against a real
// redis-server, the way ops run it.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keygate-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "keygate")
	build := exec.Command("go", "build", "-o", binary, "../cmd/keygate")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building keygate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gateway is a running keygate process.
type gateway struct {
	url string
	log string
	cmd *exec.Cmd
}

func freePort(t *testing.T) int { return redistest.FreePort(t) }

// startGateway runs `keygate run --config <file>` on a Caddyfile and waits for addr to answer.
func startGateway(t *testing.T, caddyfile string, port int, env ...string) *gateway {
	t.Helper()
	dir := t.TempDir()
	cf := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cf, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{url: fmt.Sprintf("http://127.0.0.1:%d", port), log: filepath.Join(dir, "keygate.log")}
	logf, err := os.Create(g.log)
	if err != nil {
		t.Fatal(err)
	}
	g.cmd = exec.Command(binary, "run", "--config", cf)
	g.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	g.cmd.Env = append(g.cmd.Env, env...)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { g.cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			g.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(g.log)
			t.Logf("gateway log:\n%s", tail(string(b), 4000))
		}
	})
	testutil.WaitEvery(t, 30*time.Second, 20*time.Millisecond, "keygate to start listening", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(g.log)
			t.Fatalf("keygate exited:\n%s", tail(string(b), 4000))
		default:
		}
		return false
	})
	return g
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type answer struct {
	status int
	header http.Header
	body   string
	Error  struct {
		Type string `json:"type"`
		Code string `json:"code"`
	} `json:"error"`
}

var client = &http.Client{Timeout: 10 * time.Second}

func get(t *testing.T, url, key string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if a.status != 200 {
		json.Unmarshal(b, &a)
	}
	return a
}

// quickStart returns the top-level Caddyfile on free ports, and the gateway and admin ports.
func quickStart(t *testing.T) (caddyfile string, gw, adm int) {
	src, err := os.ReadFile("../Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	gw, up, adm, admin := freePort(t), freePort(t), freePort(t), freePort(t)
	cf := string(src)
	for _, r := range [][2]string{{":8080", fmt.Sprintf(":%d", gw)}, {":9000", fmt.Sprintf(":%d", up)}, {":9180", fmt.Sprintf(":%d", adm)}} {
		if !strings.Contains(cf, r[0]) {
			t.Fatalf("the quick-start Caddyfile no longer mentions %s", r[0])
		}
		cf = strings.ReplaceAll(cf, r[0], r[1])
	}
	// Its own admin address, so that a keygate already running on this machine is no bother.
	cf = strings.Replace(cf, "{\n", fmt.Sprintf("{\n\tadmin localhost:%d\n", admin), 1)
	return cf, gw, adm
}

// The README's first command runs the top-level Caddyfile: with nothing else set up (no admin
// token either), a request without a key gets 401 missing_api_key from the gateway, and the
// admin endpoint says what to set.
func TestQuickStartCaddyfile(t *testing.T) {
	cf, gw, adm := quickStart(t)
	g := startGateway(t, cf, gw, "NORA_ADMIN_TOKEN=")
	a := get(t, g.url+"/v1/anything", "")
	if a.status != 401 || a.Error.Code != "missing_api_key" {
		t.Fatalf("got %d %s", a.status, a.body)
	}
	a = get(t, fmt.Sprintf("http://127.0.0.1:%d/v1/me", adm), "whatever")
	if a.status != 503 || a.Error.Code != "admin_disabled" || !strings.Contains(a.body, "NORA_ADMIN_TOKEN") {
		t.Fatalf("admin endpoint without a token: %d %s", a.status, a.body)
	}
}

// The README's walkthrough, with the built binary: set the admin token, create a key with the
// CLI, call the demo upstream through the gateway with it, revoke it, be refused.
func TestQuickStartWalkthrough(t *testing.T) {
	cf, gw, adm := quickStart(t)
	token := "walkthrough-admin-token-0123456789"
	g := startGateway(t, cf, gw, "NORA_ADMIN_TOKEN="+token)
	keys := func(args ...string) (string, string, error) {
		cmd := exec.Command(binary, append([]string{"keys", "--admin", fmt.Sprintf("http://127.0.0.1:%d", adm)}, args...)...)
		cmd.Env = append(os.Environ(), "NORA_ADMIN_TOKEN="+token)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	var secret, createErrOut string
	var createErr error
	defer func() {
		if createErr != nil { // the wait below timed out
			t.Logf("last keys create: %v: %s", createErr, createErrOut)
		}
	}()
	// The instances are created just after start.
	testutil.WaitEvery(t, 10*time.Second, 50*time.Millisecond, "keys create to succeed", func() bool {
		var out string
		out, createErrOut, createErr = keys("create", "--instance", "demo-sandbox", "--name", "My laptop")
		secret = strings.TrimSpace(out)
		return createErr == nil
	})
	if _, err := apikey.Parse(secret); err != nil {
		t.Fatalf("keys create printed %q, not a key", secret)
	}
	a := get(t, g.url+"/v1/charges", secret)
	if a.status != 200 || !strings.Contains(a.body, `"instance":"demo-sandbox"`) || !strings.Contains(a.body, "Nora API stand-in") {
		t.Fatalf("through the gateway: %d %s", a.status, a.body)
	}
	out, errOut, err := keys("list", "--instance", "demo-sandbox", "--json")
	if err != nil {
		t.Fatalf("keys list: %v: %s", err, errOut)
	}
	var list struct {
		Data []struct{ ID, Prefix string } `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Data) != 1 || list.Data[0].Prefix != secret[:14] {
		t.Fatalf("keys list --json: %v %s", err, out)
	}
	if strings.Contains(out, secret) {
		t.Fatal("keys list shows the secret")
	}
	if _, errOut, err := keys("revoke", "--instance", "demo-sandbox", list.Data[0].ID); err != nil {
		t.Fatalf("keys revoke: %v: %s", err, errOut)
	}
	a = get(t, g.url+"/v1/charges", secret)
	if a.status != 401 || a.Error.Code != "api_key_revoked" {
		t.Fatalf("after revoke: %d %s", a.status, a.body)
	}
	_, errOut, err = keys("revoke", "--instance", "nope", list.Data[0].ID)
	if err == nil || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "instance_not_found") {
		t.Fatalf("a refused revoke: %v, stderr %q", err, errOut)
	}
}

// twoGateways starts a redis-server, a recording upstream and two gateway processes on it.
type cluster struct {
	srv      *redistest.Server
	store    *redisstore.Store
	gateways []*gateway
	mu       sync.Mutex
	seen     []http.Header
}

func startCluster(t *testing.T, n int) *cluster {
	c := &cluster{srv: redistest.Start(t)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.seen = append(c.seen, r.Header.Clone())
		c.mu.Unlock()
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	for i := 0; i < n; i++ {
		port := freePort(t)
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	debug
	nora {
		store redis %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy %s
}
`, c.srv.URL(0), port, up.URL)
		c.gateways = append(c.gateways, startGateway(t, cf, port))
	}
	// The test's own store client plays the admin side: the same Redis, the same prefix.
	c.store = redisstore.New(redis.NewClient(&redis.Options{Addr: c.srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { c.store.Close() })
	testutil.WaitFor(t, 10*time.Second, "the gateways to create their instances", func() bool {
		ins, _ := c.store.Instances(context.Background())
		return len(ins) == 2
	})
	return c
}

func (c *cluster) mint(t *testing.T, instance string, env apikey.Environment, expires time.Time) (string, store.Key) {
	t.Helper()
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: instance, Environment: env}, "e2e", expires, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.store.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

func (c *cluster) lastSeen() http.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[len(c.seen)-1]
}

func (c *cluster) checkLogsHoldNoSecret(t *testing.T, secrets ...string) {
	for _, g := range c.gateways {
		b, err := os.ReadFile(g.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) || strings.Contains(string(b), s[8:]) {
				t.Errorf("a gateway log (debug level) contains a key secret")
			}
		}
	}
}

func TestRevocationReachesTheOtherGatewayProcess(t *testing.T) {
	c := startCluster(t, 2)
	a, b := c.gateways[0], c.gateways[1]
	key, k := c.mint(t, "acme-prod", apikey.Production, time.Time{})

	for _, g := range []*gateway{a, b} {
		if r := get(t, g.url+"/v1/charges", key); r.status != 200 {
			t.Fatalf("valid key refused: %d %s", r.status, r.body)
		}
		h := c.lastSeen()
		if h.Get("Nora-Key-Id") != k.ID || h.Get("Nora-Instance") != "acme-prod" || h.Get("Nora-Environment") != "production" || h.Get("Authorization") != "" {
			t.Fatalf("upstream headers: %v", h)
		}
	}
	// B has it cached: a second request costs Redis nothing.
	before := c.srv.CommandCalls("hmget")
	if r := get(t, b.url+"/v1/charges", key); r.status != 200 {
		t.Fatal(r.body)
	}
	if got := c.srv.CommandCalls("hmget"); got != before {
		t.Fatalf("a cached key cost %d store lookups", got-before)
	}

	if _, _, err := c.store.RevokeKey(context.Background(), "acme-prod", k.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	for _, g := range []*gateway{b, a} {
		for {
			r := get(t, g.url+"/v1/charges", key)
			if r.status == 401 && r.Error.Code == "api_key_revoked" {
				break
			}
			if r.status != 200 {
				t.Fatalf("unexpected answer %d %s", r.status, r.body)
			}
			if time.Since(revokedAt) > time.Second {
				t.Fatal("revocation did not reach the gateway within 1 s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Logf("both gateways refused the key %v after the revoke returned", time.Since(revokedAt))
	c.checkLogsHoldNoSecret(t, key)
}

func TestExpiredKeyIsRefusedEvenWhenCached(t *testing.T) {
	c := startCluster(t, 1)
	g := c.gateways[0]
	old, _ := c.mint(t, "acme-sandbox", apikey.Sandbox, time.Now().Add(-time.Minute))
	if r := get(t, g.url+"/", old); r.status != 401 || r.Error.Code != "api_key_expired" {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	expiry := time.Now().Add(1500 * time.Millisecond)
	soon, _ := c.mint(t, "acme-sandbox", apikey.Sandbox, expiry)
	if r := get(t, g.url+"/", soon); r.status != 200 {
		t.Fatalf("got %d %s", r.status, r.body)
	}
	time.Sleep(time.Until(expiry) + 50*time.Millisecond)
	before := c.srv.CommandCalls("hmget")
	if r := get(t, g.url+"/", soon); r.status != 401 || r.Error.Code != "api_key_expired" {
		t.Fatalf("after expiry: %d %s", r.status, r.body)
	}
	if got := c.srv.CommandCalls("hmget") - before; got != 0 {
		t.Fatalf("the expired answer cost %d store lookups: it should come from the cached expires_at", got)
	}
	c.checkLogsHoldNoSecret(t, old, soon)
}
