package caddymodule_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
)

func limitsConfig(t *testing.T, up string, port int) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store file %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
		failed_attempts off
	}
}
http://127.0.0.1:%d {
	handle /default* {
		nora_auth {
			rate_limit 3 1h
		}
		reverse_proxy %s
	}
	handle {
		nora_auth
		reverse_proxy %s
	}
}
`, filepath.Join(t.TempDir(), "keys.db"), port, up, up)
}

func mintLimited(t *testing.T, s store.Store, rl *store.RateLimit, q *store.Quota) (string, store.Key) {
	t.Helper()
	return mintSandbox(t, s, func(k *store.Key) { k.RateLimit, k.Quota = rl, q })
}

// A key's rate limit and quota in real Caddy: the RateLimit-* headers on every answer for a
// rate-limited key, 429 rate_limit_exceeded then quota_exceeded with Retry-After, refused
// requests spending no quota, the route's default for keys without a limit, and a PATCH of
// a limit taking effect at once.
func TestKeyLimits(t *testing.T) {
	up := newUpstream(t)
	port := redistest.FreePort(t)
	load(t, limitsConfig(t, up.URL, port))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	t.Run("rate limit", func(t *testing.T) {
		key, _ := mintLimited(t, s, &store.RateLimit{Limit: 4, Window: time.Hour}, nil)
		for i := range 4 {
			a := callFrom(t, base+"/x", "", "Bearer "+key)
			if a.status != 200 {
				t.Fatalf("request %d: %d %s", i+1, a.status, a.body)
			}
			if a.header.Get("RateLimit-Limit") != "4" || a.header.Get("RateLimit-Remaining") != strconv.Itoa(3-i) {
				t.Fatalf("request %d: RateLimit-Limit %q, -Remaining %q", i+1, a.header.Get("RateLimit-Limit"), a.header.Get("RateLimit-Remaining"))
			}
			if reset, err := strconv.Atoi(a.header.Get("RateLimit-Reset")); err != nil || reset < 1 || reset > 3600 {
				t.Fatalf("RateLimit-Reset %q", a.header.Get("RateLimit-Reset"))
			}
		}
		a := callFrom(t, base+"/x", "", "Bearer "+key)
		if a.status != 429 || a.Error.Code != "rate_limit_exceeded" || a.Error.Type != "rate_limit_error" {
			t.Fatalf("over the limit: %d %s", a.status, a.body)
		}
		if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 3600 {
			t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
		}
		if a.header.Get("RateLimit-Remaining") != "0" || a.header.Get("WWW-Authenticate") != "" {
			t.Fatalf("429 headers: %v", a.header)
		}
	})

	t.Run("quota", func(t *testing.T) {
		key, k := mintLimited(t, s, nil, &store.Quota{Limit: 3, Period: store.QuotaTotal})
		for i := range 3 {
			if a := callFrom(t, base+"/x", "", "Bearer "+key); a.status != 200 || a.header.Get("RateLimit-Limit") != "" {
				t.Fatalf("request %d: %d, RateLimit-Limit %q (a quota alone has no rate-limit headers)", i+1, a.status, a.header.Get("RateLimit-Limit"))
			}
		}
		a := callFrom(t, base+"/x", "", "Bearer "+key)
		if a.status != 429 || a.Error.Code != "quota_exceeded" || a.header.Get("Retry-After") == "" {
			t.Fatalf("quota spent: %d %s, Retry-After %q", a.status, a.body, a.header.Get("Retry-After"))
		}
		// Raising the quota takes effect at once.
		q := &store.Quota{Limit: 5, Period: store.QuotaTotal}
		if _, err := s.UpdateKey(context.Background(), k.Instance, k.ID, store.KeyUpdate{Quota: &q}, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if a := callFrom(t, base+"/x", "", "Bearer "+key); a.status != 200 {
				t.Fatalf("after raising the quota, request %d: %d %s", i+1, a.status, a.body)
			}
		}
		if a := callFrom(t, base+"/x", "", "Bearer "+key); a.status != 429 || a.Error.Code != "quota_exceeded" {
			t.Fatalf("raised quota spent: %d %s", a.status, a.body)
		}
	})

	t.Run("rate limit refusals spend no quota", func(t *testing.T) {
		key, k := mintLimited(t, s, &store.RateLimit{Limit: 2, Window: time.Hour}, &store.Quota{Limit: 10, Period: store.QuotaMonth})
		got := map[int]int{}
		for range 6 {
			got[callFrom(t, base+"/x", "", "Bearer "+key).status]++
		}
		if got[200] != 2 || got[429] != 4 {
			t.Fatalf("answers %v, want 2 × 200 and 4 × 429", got)
		}
		// Lift the rate limit: the quota has exactly 10 − 2 requests left.
		none := (*store.RateLimit)(nil)
		if _, err := s.UpdateKey(context.Background(), k.Instance, k.ID, store.KeyUpdate{RateLimit: &none}, nil); err != nil {
			t.Fatal(err)
		}
		more := 0
		for ; more < 20; more++ {
			if a := callFrom(t, base+"/x", "", "Bearer "+key); a.status != 200 {
				if a.Error.Code != "quota_exceeded" {
					t.Fatalf("%d %s", a.status, a.body)
				}
				break
			}
		}
		if more != 8 {
			t.Fatalf("%d more requests before the quota ran out, want 8: the 4 rate-limited ones spent quota", more)
		}
	})

	t.Run("route default", func(t *testing.T) {
		key, _ := mintLimited(t, s, nil, nil)
		for i := range 3 {
			if a := callFrom(t, base+"/default", "", "Bearer "+key); a.status != 200 || a.header.Get("RateLimit-Limit") != "3" {
				t.Fatalf("request %d: %d, RateLimit-Limit %q", i+1, a.status, a.header.Get("RateLimit-Limit"))
			}
		}
		if a := callFrom(t, base+"/default", "", "Bearer "+key); a.status != 429 || a.Error.Code != "rate_limit_exceeded" {
			t.Fatalf("over the default: %d %s", a.status, a.body)
		}
		// Its own limit wins over the default.
		own, _ := mintLimited(t, s, &store.RateLimit{Limit: 10, Window: time.Hour}, nil)
		if a := callFrom(t, base+"/default", "", "Bearer "+own); a.header.Get("RateLimit-Limit") != "10" {
			t.Fatalf("a key's own limit on a route with a default: RateLimit-Limit %q", a.header.Get("RateLimit-Limit"))
		}
		// No limit at all: no headers.
		if a := callFrom(t, base+"/x", "", "Bearer "+key); a.status != 200 || a.header.Get("RateLimit-Limit") != "" {
			t.Fatalf("unlimited route: %d, RateLimit-Limit %q", a.status, a.header.Get("RateLimit-Limit"))
		}
	})
}

func TestRateLimitDirectiveRefused(t *testing.T) {
	for _, line := range []string{"rate_limit", "rate_limit 10", "rate_limit ten 1s", "rate_limit 0 1s", "rate_limit 10 500ms", "rate_limit 10 48h", "rate_limit 2000000 1s"} {
		cf := fmt.Sprintf("{\n\tadmin off\n}\n:%d {\n\tnora_auth {\n\t\t%s\n\t}\n}\n", redistest.FreePort(t), line)
		if _, err := adapt(cf); err == nil {
			t.Errorf("%q adapted", line)
		}
	}
}
