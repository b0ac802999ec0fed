package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

const restrictedToken = "restricted-admin-token-0123456789"

// twoRestrictedGateways runs two gateway processes on one Redis, each with a route that
// requires charges:write, trusting X-Forwarded-For from loopback, and an admin site.
func twoRestrictedGateways(t *testing.T) (srv *redistest.Server, gws []*gateway, admins []string) {
	t.Helper()
	srv = redistest.Start(t)
	for range 2 {
		port, adm, admin := freePort(t), freePort(t), freePort(t)
		cf := fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}
	nora {
		store redis %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		failed_attempts off
	}
}
http://127.0.0.1:%d {
	nora_auth {
		require_scope charges:write
	}
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete
	}
}
`, admin, srv.URL(0), port, adm, restrictedToken)
		gws = append(gws, startGateway(t, cf, port))
		admins = append(admins, fmt.Sprintf("http://127.0.0.1:%d", adm))
	}
	return srv, gws, admins
}

func statusFrom(t *testing.T, g *gateway, from, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", g.url+"/charges", nil)
	req.Header.Set("X-Forwarded-For", from)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A narrowing PATCH on one gateway's admin API is enforced by the other gateway process
// within the revocation bound (measured; 1 s at most), from its cache.
func TestNarrowingPatchReachesTheOtherGateway(t *testing.T) {
	_, gws, admins := twoRestrictedGateways(t)
	create := func(body string) (secret, id string) {
		req, _ := http.NewRequest("POST", admins[0]+"/v1/instances/acme-sandbox/keys", bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+restrictedToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var k struct{ ID, Secret string }
		json.NewDecoder(resp.Body).Decode(&k)
		if resp.StatusCode != 201 {
			t.Fatalf("create: %d", resp.StatusCode)
		}
		return k.Secret, k.ID
	}
	patch := func(id, body string) {
		req, _ := http.NewRequest("PATCH", admins[0]+"/v1/instances/acme-sandbox/keys/"+id, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+restrictedToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("patch: %d", resp.StatusCode)
		}
	}
	for _, tc := range []struct{ name, patch, from string }{
		{"scopes narrowed", `{"scopes":["charges:read"]}`, "203.0.113.9"},
		{"allowlist narrowed", `{"allowed_ips":["203.0.113.0/24"]}`, "198.51.100.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret, id := create(`{"name":"narrowed","scopes":["charges:write"]}`)
			for _, g := range gws {
				if s := statusFrom(t, g, tc.from, secret); s != 200 {
					t.Fatalf("before: %d", s)
				}
			}
			patch(id, tc.patch)
			t0 := time.Now()
			if s := statusFrom(t, gws[0], tc.from, secret); s != 403 {
				t.Fatalf("the gateway that served the PATCH: %d right after, want 403", s)
			}
			testutil.WaitEvery(t, time.Second, time.Millisecond, "the other gateway to enforce the PATCH",
				func() bool { return statusFrom(t, gws[1], tc.from, secret) == 403 })
			t.Logf("%s: the other gateway refused within %v of the PATCH returning (polled every 1 ms)", tc.name, time.Since(t0))
		})
	}
}

// With the other gateway's Redis connections killed right after a PATCH, the change still
// reaches it once it reconnects: updates travel the same no-loss path as revocations.
func TestPatchNotLostOnADroppedChannel(t *testing.T) {
	srv, gws, _ := twoRestrictedGateways(t)
	ctx := context.Background()
	rdb := srv.Client()
	if err := rdb.Do(ctx, "ACL", "SETUSER", "patch-admin", "on", ">patch-admin-pw", "~*", "&*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "patch-admin", Password: "patch-admin-pw"})
	defer admin.Close()
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr, Username: "patch-admin", Password: "patch-admin-pw"}), redisstore.Options{})
	defer s.Close()
	testutil.WaitFor(t, 10*time.Second, "the instance", func() bool {
		_, err := s.Instance(ctx, "acme-sandbox")
		return err == nil
	})
	for round := range 3 {
		secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "dropped", time.Time{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		k.Scopes = []string{"charges:write"}
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		for _, g := range gws {
			if st := statusFrom(t, g, "203.0.113.9", secret); st != 200 {
				t.Fatalf("round %d before: %d", round, st)
			}
		}
		ips := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		if _, err := s.UpdateKey(ctx, k.Instance, k.ID, store.KeyUpdate{AllowedIPs: &ips}, nil); err != nil {
			t.Fatal(err)
		}
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
			t.Fatalf("CLIENT KILL: %v", err)
		}
		for _, g := range gws {
			testutil.WaitEvery(t, 2*time.Second, 5*time.Millisecond, "the narrowed allowlist after the connections dropped",
				func() bool { return statusFrom(t, g, "203.0.113.9", secret) == 403 })
		}
	}
}
