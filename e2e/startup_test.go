package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
)

const startupToken = "startup-admin-token-0123456789abcdef"

// startupCaddyfile: a gateway and an admin site on storeLine, declaring two instances.
func startupCaddyfile(storeLine string, gw, adm, admin int) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	nora {
		%s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
:%d {
	nora_auth
	respond "ok {http.auth.user.id}"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete instance.manage
	}
}
`, admin, storeLine, gw, adm, startupToken)
}

// mintIn creates instance "other" (not declared by the Caddyfile) in s and a key in it.
func mintIn(t *testing.T, s store.Store) string {
	t.Helper()
	ctx := context.Background()
	in := store.Instance{ID: "other", Name: "Other", Environment: apikey.Sandbox}
	if err := s.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	secret, k, err := store.Mint(apikey.Hasher{}, in, "startup", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	return secret
}

// startupRound starts a gateway process and, from before it listens, sends it requests
// with a valid key, and polls /healthz; the moment /healthz says 200 it creates a key in
// each declared instance. It returns what went wrong, if anything.
func startupRound(t *testing.T, caddyfile string, gw, adm int, key string) []string {
	t.Helper()
	var mu sync.Mutex
	var problems []string
	problem := func(f string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(f, args...))
		}
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served atomic.Int64
	// The key, from before the gateway listens: every answer must be 200.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/x", gw), nil)
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := hc.Do(req)
			if err != nil {
				time.Sleep(time.Millisecond) // not listening yet
				continue
			}
			resp.Body.Close()
			served.Add(1)
			if resp.StatusCode != 200 {
				problem("a valid key got %d (Retry-After %q)", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
	}()
	// /healthz, then at once a create in each declared instance: never 404.
	healthy := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", adm))
			if err != nil {
				time.Sleep(time.Millisecond)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				continue
			}
			for _, inst := range []string{"acme-sandbox", "acme-prod"} {
				req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/v1/instances/%s/keys", adm, inst),
					strings.NewReader(`{"name":"right after healthz"}`))
				req.Header.Set("Authorization", "Bearer "+startupToken)
				resp, err := hc.Do(req)
				if err != nil {
					problem("create in %s: %v", inst, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 201 {
					problem("create in %s right after /healthz said 200: %d", inst, resp.StatusCode)
				}
			}
			close(healthy)
			return
		}
	}()
	startGateway(t, caddyfile, gw) // stopped when the (sub)test ends
	select {
	case <-healthy:
	case <-time.After(15 * time.Second):
		problem("/healthz never said 200")
	}
	// Keep the key traffic going a little after start-up.
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	if served.Load() == 0 {
		problem("no request with the key was answered")
	}
	return problems
}

// After every start, no request gets 503 because the start is still under way, and no create
// in a declared instance gets 404 once /healthz has said 200: restarted many times, on Redis
// (a fresh key prefix each time, so the instances are new) and on the file store (a fresh
// file each time).
func TestRestartsServeNo503AndNo404(t *testing.T) {
	const rounds = 8
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		for i := range rounds {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				prefix := fmt.Sprintf("restart%d:", i)
				s, err := redisstore.Dial(redisstore.Config{Addrs: []string{srv.Addr}}, redisstore.Options{KeyPrefix: prefix})
				if err != nil {
					t.Fatal(err)
				}
				key := mintIn(t, s)
				s.Close()
				gw, adm, admin := freePort(t), freePort(t), freePort(t)
				cf := startupCaddyfile(fmt.Sprintf("store redis {\n\t\t\taddrs %s\n\t\t\tkey_prefix %s\n\t\t}", srv.Addr, prefix), gw, adm, admin)
				if p := startupRound(t, cf, gw, adm, key); len(p) > 0 {
					t.Fatal(strings.Join(p, "; "))
				}
			})
		}
	})
	t.Run("file", func(t *testing.T) {
		for i := range rounds {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "keys.db")
				s, err := filestore.Open(path, filestore.Options{})
				if err != nil {
					t.Fatal(err)
				}
				key := mintIn(t, s)
				s.Close()
				gw, adm, admin := freePort(t), freePort(t), freePort(t)
				if p := startupRound(t, startupCaddyfile("store file "+path, gw, adm, admin), gw, adm, key); len(p) > 0 {
					t.Fatal(strings.Join(p, "; "))
				}
			})
		}
	})
}

// A second gateway on a file store that another keygate holds does not start, and says why:
// the file, and that another keygate holds it.
func TestSecondGatewayOnAHeldFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	gw, adm, admin := freePort(t), freePort(t), freePort(t)
	startGateway(t, startupCaddyfile("store file "+path, gw, adm, admin), gw)

	dir := t.TempDir()
	cf := filepath.Join(dir, "Caddyfile")
	gw2, adm2, admin2 := freePort(t), freePort(t), freePort(t)
	if err := os.WriteFile(cf, []byte(startupCaddyfile("store file "+path, gw2, adm2, admin2)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "run", "--config", cf)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("the second gateway did not exit with an error (%v):\n%s", err, tail(string(out), 3000))
	}
	for _, want := range []string{path, "held by another keygate"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("its output does not say %q:\n%s", want, tail(string(out), 3000))
		}
	}
	t.Logf("refused after %v", time.Since(start).Round(time.Millisecond))
}

// Clients that send Basic credentials only once challenged get through: wget --user and
// Python's HTTPBasicAuthHandler. Each 401 carries both challenges.
func TestClientsThatWaitForABasicChallenge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := filestore.Open(path, filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := mintIn(t, s)
	s.Close()
	gw, adm, admin := freePort(t), freePort(t), freePort(t)
	g := startGateway(t, startupCaddyfile("store file "+path, gw, adm, admin), gw)

	a := get(t, g.url+"/x", "")
	if ch := a.header.Values("WWW-Authenticate"); a.status != 401 || len(ch) != 2 || ch[1] != `Basic realm="nora"` {
		t.Fatalf("no key: %d, challenges %q", a.status, ch)
	}
	t.Run("python HTTPBasicAuthHandler", func(t *testing.T) {
		py, err := exec.LookPath("python3")
		if err != nil {
			t.Skip("python3 is not installed (Debian package python3)")
		}
		script := `import sys, urllib.request
url, key = sys.argv[1], sys.argv[2]
pm = urllib.request.HTTPPasswordMgrWithDefaultRealm()
pm.add_password(None, url, key, "")
opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(pm))
print(opener.open(url, timeout=10).read().decode())`
		out, err := exec.Command(py, "-c", script, g.url+"/x", key).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "ok key_") {
			t.Fatalf("python: %v\n%s", err, out)
		}
	})
	t.Run("wget --user", func(t *testing.T) {
		wget, err := exec.LookPath("wget")
		if err != nil {
			t.Skip("wget is not installed (Debian package wget)")
		}
		out, err := exec.Command(wget, "-q", "-O", "-", "--user="+key, "--password=", g.url+"/x").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "ok key_") {
			t.Fatalf("wget: %v\n%s", err, out)
		}
	})
	// And curl -u sends it at once, as before.
	b64 := base64.StdEncoding.EncodeToString([]byte(key + ":"))
	req, _ := http.NewRequest("GET", g.url+"/x", nil)
	req.Header.Set("Authorization", "Basic "+b64)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("Basic at once: %d", resp.StatusCode)
	}
}
