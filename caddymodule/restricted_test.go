package caddymodule_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
)

// restrictedConfig: routes requiring scopes, a trusted X-Forwarded-For from loopback, and
// the scopes and metadata placeholders passed upstream.
func restrictedConfig(t *testing.T, up string, port int) string {
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
		failed_attempts off
	}
}
http://127.0.0.1:%d {
	route /charges* {
		nora_auth {
			require_scope charges:write
		}
		reverse_proxy %s {
			header_up X-Scopes {http.auth.user.scopes}
			header_up X-Team {http.auth.user.metadata.team}
		}
	}
	route /both* {
		nora_auth {
			require_scope charges:read
			require_scope customers:read
		}
		reverse_proxy %s
	}
	route /* {
		nora_auth
		reverse_proxy %s {
			header_up X-Scopes {http.auth.user.scopes}
		}
	}
}
`, filepath.Join(t.TempDir(), "keys.db"), port, up, up, up)
}

// mintSandbox stores a new key of acme-sandbox, set up by with, and returns its secret.
func mintSandbox(t testing.TB, s store.Store, with func(*store.Key)) (string, store.Key) {
	t.Helper()
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "test key", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	with(&k)
	if err := s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

func mintRestricted(t *testing.T, s store.Store, scopes []string, ips []string, meta map[string]string) (string, store.Key) {
	t.Helper()
	return mintSandbox(t, s, func(k *store.Key) {
		k.Scopes, k.Metadata = scopes, meta
		if ips != nil {
			var err error
			if k.AllowedIPs, err = store.ParseAllowedIPs(ips); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// Every row of a restricted key, in real Caddy: allowed addresses, required scopes (one,
// several, wildcards), the 403s' bodies, the order after revoked, and the placeholders.
func TestRestrictedKeys(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, restrictedConfig(t, up.URL, port))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	key, _ := mintRestricted(t, s, []string{"charges:write", "customers:*"}, []string{"203.0.113.0/24", "2001:db8::1"}, map[string]string{"team": "billing"})
	open, _ := mintRestricted(t, s, nil, nil, nil)
	revoked, rk := mintRestricted(t, s, []string{"charges:write"}, []string{"203.0.113.0/24"}, nil)
	if _, _, err := s.RevokeKey(context.Background(), rk.Instance, rk.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, tc := range []struct {
		name, path, from, key string
		status                int
		code                  string
	}{
		{"allowed address, scope held", "/charges/1", "203.0.113.9", key, 200, ""},
		{"single allowed IPv6 address", "/charges/1", "2001:db8::1", key, 200, ""},
		{"a wildcard does not cover another scope", "/both/1", "203.0.113.9", key, 403, "api_key_insufficient_scope"}, // customers:* covers customers:read, but charges:read is missing
		{"address outside", "/charges/1", "198.51.100.1", key, 403, "api_key_ip_not_allowed"},
		{"next IPv6 address", "/charges/1", "2001:db8::2", key, 403, "api_key_ip_not_allowed"},
		{"address before scope", "/both/1", "198.51.100.1", key, 403, "api_key_ip_not_allowed"},
		{"no scope required", "/other", "203.0.113.9", key, 200, ""},
		{"unrestricted key, any scope, any address", "/both/1", "198.51.100.1", open, 200, ""},
		{"revoked before address and scope", "/both/1", "198.51.100.1", revoked, 401, "api_key_revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			a := callFrom(t, base+tc.path, tc.from, "Bearer "+tc.key)
			if a.status != tc.status || a.Error.Code != tc.code {
				t.Fatalf("%d %s, want %d %s", a.status, a.body, tc.status, tc.code)
			}
			if tc.status != 200 && up.hits.Load() != before {
				t.Fatal("a refused request reached the upstream")
			}
			if tc.status == 403 {
				if a.Error.Type != "permission_error" || a.header.Get("WWW-Authenticate") != "" {
					t.Fatalf("403: type %q, challenge %q", a.Error.Type, a.header.Get("WWW-Authenticate"))
				}
				if tc.code == "api_key_insufficient_scope" && !strings.Contains(a.Error.Message, "charges:read") {
					t.Fatalf("the message does not name the missing scope: %q", a.Error.Message)
				}
			}
		})
	}
	// The placeholders reach the upstream.
	if a := callFrom(t, base+"/charges/1", "203.0.113.9", "Bearer "+key); a.status != 200 {
		t.Fatal(a.body)
	}
	h := up.lastHeader()
	if h.Get("X-Scopes") != "charges:write,customers:*" || h.Get("X-Team") != "billing" {
		t.Fatalf("upstream got X-Scopes %q, X-Team %q", h.Get("X-Scopes"), h.Get("X-Team"))
	}
	if a := callFrom(t, base+"/other", "", "Bearer "+open); a.status != 200 || up.lastHeader().Get("X-Scopes") != "" {
		t.Fatalf("unrestricted key: %d, X-Scopes %q", a.status, up.lastHeader().Get("X-Scopes"))
	}
	// A metadata name the key lacks is empty upstream, not the placeholder's text.
	if a := callFrom(t, base+"/charges/1", "", "Bearer "+open); a.status != 200 {
		t.Fatal(a.body)
	}
	if got := up.lastHeader().Values("X-Team"); len(got) != 0 && got[0] != "" {
		t.Fatalf("a key without metadata sent X-Team %q upstream", got)
	}
	// The customers:* wildcard covers customers:read, but the route needs charges:read too.
	both, _ := mintRestricted(t, s, []string{"charges:read", "customers:*"}, nil, nil)
	if a := callFrom(t, base+"/both/1", "198.51.100.1", "Bearer "+both); a.status != 200 {
		t.Fatalf("charges:read and customers:* on a route needing charges:read and customers:read: %d %s", a.status, a.body)
	}
}

// A narrowing update reaches the gateway at once (the cache is invalidated like a revoke).
func TestRestrictedKeyUpdateTakesEffect(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, restrictedConfig(t, up.URL, port))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	key, k := mintRestricted(t, s, nil, nil, nil)
	url := fmt.Sprintf("http://127.0.0.1:%d/charges/1", port)
	if a := callFrom(t, url, "203.0.113.9", "Bearer "+key); a.status != 200 {
		t.Fatal(a.body)
	}
	scopes := []string{"charges:read"}
	ips := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	if _, err := s.UpdateKey(context.Background(), k.Instance, k.ID, store.KeyUpdate{Scopes: &scopes, AllowedIPs: &ips}, nil); err != nil {
		t.Fatal(err)
	}
	if a := callFrom(t, url, "203.0.113.9", "Bearer "+key); a.status != 403 || a.Error.Code != "api_key_insufficient_scope" {
		t.Fatalf("after narrowing the scopes: %d %s", a.status, a.body)
	}
	if a := callFrom(t, url, "198.51.100.1", "Bearer "+key); a.status != 403 || a.Error.Code != "api_key_ip_not_allowed" {
		t.Fatalf("after narrowing the addresses: %d %s", a.status, a.body)
	}
	// And widening again.
	var none []string
	if _, err := s.UpdateKey(context.Background(), k.Instance, k.ID, store.KeyUpdate{Scopes: &none}, nil); err != nil {
		t.Fatal(err)
	}
	if a := callFrom(t, url, "203.0.113.9", "Bearer "+key); a.status != 200 {
		t.Fatalf("after widening: %d %s", a.status, a.body)
	}
}

func TestRequireScopeRefused(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"require_scope", "argument"},
		{"require_scope charges:*", "no * on a route"},
		{"require_scope Charges", "a scope is"},
	} {
		cf := fmt.Sprintf("{\n\tadmin off\n}\n:%d {\n\tnora_auth {\n\t\t%s\n\t}\n}\n", redistest.FreePort(t), tc.line)
		_, err := adapt(cf)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: %v, want an error saying %q with the line", tc.line, err, tc.want)
		}
	}
}
