package caddymodule_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
)

// hostileConfig is a gateway trusting X-Forwarded-For from loopback (so that tests can speak
// for many clients), with the nora block's extra lines.
func hostileConfig(t *testing.T, noraExtra, up string, port int) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}
	nora {
		store file %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
		%s
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy %s
}
`, filepath.Join(t.TempDir(), "keys.db"), noraExtra, port, up)
}

// callFrom sends a request as client `from` (X-Forwarded-For; "" for the connection's own
// address) with an Authorization header (none when auth is "").
func callFrom(t *testing.T, url, from, auth string) answer {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return send(t, req)
}

func inventedKey(t *testing.T) string {
	t.Helper()
	k, err := apikey.Generate(apikey.Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The failed-attempt limit's rows: invalid keys count, and past the limit every request of
// the client (a valid key included) gets 429 before any lookup, with a whole Retry-After,
// until the window has passed; missing keys, revoked and expired keys do not count; other
// clients are not affected.
func TestFailedAttemptLimit(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, hostileConfig(t, "failed_attempts {\n\t\t\tlimit 3\n\t\t\twindow 2s\n\t\t}", up.URL, port))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	valid, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	revoked, rk := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	if _, _, err := s.RevokeKey(context.Background(), rk.Instance, rk.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	expired, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Now().Add(-time.Minute))
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	const client = "198.51.100.20"

	// What does not count: no key, a revoked key, an expired key, many times over.
	for range 5 {
		for auth, code := range map[string]string{"": "missing_api_key", "Bearer " + revoked: "api_key_revoked", "Bearer " + expired: "api_key_expired"} {
			if a := callFrom(t, url, client, auth); a.status != 401 || a.Error.Code != code {
				t.Fatalf("%s: %d %s", code, a.status, a.body)
			}
		}
	}
	// Three kinds of invalid key count: malformed, bad checksum, unknown.
	bad := []string{"Bearer sk_test_short", "Bearer " + inventedKey(t)[:45] + "x", "Bearer " + inventedKey(t)}
	for i, auth := range bad {
		if a := callFrom(t, url, client, auth); a.status != 401 || a.Error.Code != "invalid_api_key" {
			t.Fatalf("failure %d: %d %s", i+1, a.status, a.body)
		}
	}
	lookups := noraApp(t).Verifier().Stats.StoreLookups.Load()
	start := time.Now()
	for _, auth := range []string{"Bearer " + valid, "", "Bearer " + inventedKey(t), "Bearer " + valid} {
		a := callFrom(t, url, client, auth)
		if a.status != 429 || a.Error.Code != "too_many_failed_attempts" || a.Error.Type != "rate_limit_error" {
			t.Fatalf("over the limit (%q): %d %s", auth, a.status, a.body)
		}
		ra, err := strconv.Atoi(a.header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 3 {
			t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
		}
		if a.header.Get("WWW-Authenticate") != "" {
			t.Fatal("a 429 carries a WWW-Authenticate challenge")
		}
	}
	if n := noraApp(t).Verifier().Stats.StoreLookups.Load(); n != lookups {
		t.Fatalf("a limited client caused %d store lookups", n-lookups)
	}
	// Another client is not limited; IPv6 clients are counted by /64.
	if a := callFrom(t, url, "198.51.100.21", "Bearer "+valid); a.status != 200 {
		t.Fatalf("another client: %d %s", a.status, a.body)
	}
	// Once the window has passed, the valid key works again.
	time.Sleep(2*time.Second + 2*time.Second/16 - time.Since(start) + 50*time.Millisecond)
	if a := callFrom(t, url, client, "Bearer "+valid); a.status != 200 {
		t.Fatalf("after the window: %d %s", a.status, a.body)
	}
	// The connection's own address is a client too (no X-Forwarded-For).
	for range 3 {
		callFrom(t, url, "", "Bearer "+inventedKey(t))
	}
	if a := callFrom(t, url, "", "Bearer "+valid); a.status != 429 {
		t.Fatalf("the loopback client after 3 failures: %d", a.status)
	}
}

// IPv6 clients are counted by their prefix (64 bits by default, ipv6_prefix sets it).
func TestFailedAttemptsIPv6Prefix(t *testing.T) {
	for _, tc := range []struct {
		prefix      string
		same, other string
	}{
		{"", "2001:db8:1:2:ffff::1", "2001:db8:1:3::1"},
		{"ipv6_prefix 48", "2001:db8:1:ffff::1", "2001:db8:2::1"},
		{"ipv6_prefix 128", "2001:db8:1:2::1", "2001:db8:1:2::3"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			up := newUpstream(t)
			port := redistest.FreePort(t)
			load(t, hostileConfig(t, "failed_attempts {\n\t\t\tlimit 2\n\t\t\t"+tc.prefix+"\n\t\t}", up.URL, port))
			s := noraApp(t).KeyStore()
			waitInstances(t, s, 2)
			valid, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
			url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
			first := "2001:db8:1:2::1"
			if tc.prefix == "ipv6_prefix 128" {
				first = "2001:db8:1:2::2"
			}
			callFrom(t, url, first, "Bearer "+inventedKey(t))
			callFrom(t, url, first, "Bearer "+inventedKey(t))
			want := map[string]int{first: 429, tc.other: 200}
			if tc.prefix != "ipv6_prefix 128" {
				want[tc.same] = 429
			}
			for from, status := range want {
				if a := callFrom(t, url, from, "Bearer "+valid); a.status != status {
					t.Errorf("%s: %d, want %d", from, a.status, status)
				}
			}
		})
	}
}

// X-Forwarded-For counts only from a trusted proxy: without trusted_proxies a client cannot
// escape the limit by inventing addresses.
func TestFailedAttemptsIgnoreUntrustedForwardedFor(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	cfg := hostileConfig(t, "failed_attempts {\n\t\t\tlimit 2\n\t\t}", up.URL, port)
	cfg = strings.Replace(cfg, "trusted_proxies static 127.0.0.1/32", "trusted_proxies static 192.0.2.1/32", 1)
	load(t, cfg)
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	valid, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	callFrom(t, url, "203.0.113.1", "Bearer "+inventedKey(t))
	callFrom(t, url, "203.0.113.2", "Bearer "+inventedKey(t))
	if a := callFrom(t, url, "203.0.113.3", "Bearer "+valid); a.status != 429 {
		t.Fatalf("rotating X-Forwarded-For from an untrusted peer escaped the limit: %d", a.status)
	}
}

// failed_attempts off: invalid keys are answered 401 however many.
func TestFailedAttemptsOff(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, hostileConfig(t, "failed_attempts off", up.URL, port))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	valid, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	for i := range 60 {
		if a := callFrom(t, url, "", "Bearer "+inventedKey(t)); a.status != 401 {
			t.Fatalf("invalid key %d: %d", i+1, a.status)
		}
	}
	if a := callFrom(t, url, "", "Bearer "+valid); a.status != 200 {
		t.Fatalf("valid key: %d", a.status)
	}
}

// The limit is on by default: 20 failures per minute.
func TestFailedAttemptsDefault(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, hostileConfig(t, "", up.URL, port))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	valid, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	for i := range 20 {
		if a := callFrom(t, url, "", "Bearer "+inventedKey(t)); a.status != 401 {
			t.Fatalf("invalid key %d: %d", i+1, a.status)
		}
	}
	a := callFrom(t, url, "", "Bearer "+valid)
	if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); a.status != 429 || ra < 55 || ra > 65 {
		t.Fatalf("after 20 failures: %d, Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
}

// Key signing with require: keys minted by the admin API are signed and work; invented keys
// with a valid checksum, and real unsigned keys, are refused without a store lookup. Without
// require (rollout) unsigned keys work and are counted.
func TestKeySigning(t *testing.T) {
	t.Setenv("KG_TEST_SIGNING", "caddymodule-signing-secret-0123")
	for _, require := range []bool{true, false} {
		t.Run(fmt.Sprintf("require=%v", require), func(t *testing.T) {
			up := newUpstream(t)
			port, adm := redistest.FreePort(t), redistest.FreePort(t)
			block := "failed_attempts off\n\t\tkey_signing {\n\t\t\tsecret {env.KG_TEST_SIGNING}\n"
			if require {
				block += "\t\t\trequire\n"
			}
			block += "\t\t}"
			cfg := hostileConfig(t, block, up.URL, port) + fmt.Sprintf(`
http://127.0.0.1:%d {
	nora_admin {
		token admin-token-for-signing-test apiKey.create
	}
}
`, adm)
			load(t, cfg)
			s := noraApp(t).KeyStore()
			waitInstances(t, s, 2)
			unsigned, _ := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
			req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/v1/instances/acme-sandbox/keys", adm), strings.NewReader(`{"name":"signed"}`))
			req.Header.Set("Authorization", "Bearer admin-token-for-signing-test")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var created struct{ Secret string }
			json.NewDecoder(resp.Body).Decode(&created)
			resp.Body.Close()
			signer, _ := apikey.NewSigner([]byte("caddymodule-signing-secret-0123"))
			if resp.StatusCode != 201 || !signer.Verify(created.Secret) {
				t.Fatalf("the admin API minted %d, a key that is not signed", resp.StatusCode)
			}
			url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
			if a := callFrom(t, url, "", "Bearer "+created.Secret); a.status != 200 {
				t.Fatalf("signed key: %d %s", a.status, a.body)
			}
			st := &noraApp(t).Verifier().Stats
			lookups := st.StoreLookups.Load()
			for range 50 {
				if a := callFrom(t, url, "", "Bearer "+inventedKey(t)); a.status != 401 || a.Error.Code != "invalid_api_key" {
					t.Fatalf("invented key: %d %s", a.status, a.body)
				}
			}
			wantUnsigned := 200
			if require {
				wantUnsigned = 401
				if n := st.StoreLookups.Load() - lookups; n != 0 {
					t.Fatalf("with require, 50 invented keys made %d store lookups", n)
				}
			} else if n := st.StoreLookups.Load() - lookups; n != 50 {
				t.Fatalf("without require, 50 invented keys made %d store lookups, want 50", n)
			}
			if a := callFrom(t, url, "", "Bearer "+unsigned); a.status != wantUnsigned {
				t.Fatalf("unsigned real key: %d, want %d", a.status, wantUnsigned)
			}
			if got, want := st.UnsignedKeys.Load(), map[bool]uint64{true: 0, false: 1}[require]; got != want {
				t.Fatalf("unsigned keys counted: %d, want %d", got, want)
			}
		})
	}
}

// key_signing refuses to load with no usable secret, or a short one, and never echoes it.
func TestKeySigningRefused(t *testing.T) {
	for _, tc := range []struct{ block, want string }{
		{"key_signing {\n\t\t\trequire\n\t\t}", "at least one secret"},
		{"key_signing {\n\t\t\tsecret too-short-1\n\t\t}", "shorter than 16"},
		{"failed_attempts {\n\t\t\tlimit 0\n\t\t}", "limit must be"},
		{"failed_attempts {\n\t\t\twindow 10ms\n\t\t}", "window must be"},
		{"failed_attempts {\n\t\t\tipv6_prefix 129\n\t\t}", "ipv6_prefix must be"},
		{"failed_attempts {\n\t\t\tburst 3\n\t\t}", "unrecognized failed_attempts option"},
		{"failed_attempts on", "expected off or a block"},
	} {
		_, err := adapt(hostileConfig(t, tc.block, "http://127.0.0.1:1", 1))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: %v, want an error saying %q with the line", tc.block, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "too-short-1") {
			t.Errorf("the error echoes the secret: %v", err)
		}
	}
	t.Setenv("KG_TEST_EMPTY", "")
	cfg, err := adapt(hostileConfig(t, "key_signing {\n\t\t\tsecret {env.KG_TEST_EMPTY}\n\t\t}", "http://127.0.0.1:1", redistest.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfg, true)
	if err == nil {
		caddy.Stop()
	}
	if err == nil || !strings.Contains(err.Error(), "no secret is set") {
		t.Fatalf("every secret empty: %v", err)
	}
}
