package caddymodule_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
)

// BenchmarkGatewayHandler measures what nora_auth adds to a request inside real Caddy: the
// server's whole handler chain (Caddy's request set-up, routing, the handlers, a `respond`
// in place of the upstream), called in-process with no network, for
//
//	plain — no nora_auth
//	nora  — nora_auth, a key with no restrictions (a warm cache; usage counted)
//	full  — every per-key feature at once: a route requiring a scope, a key with it, an
//	        allowed address range, metadata, a rate limit and a
//	        quota far above what the benchmark spends, usage counted
//
// The difference between nora (or full) and plain is keygate's cost per request, to be read
// against a whole proxied request's (bench/gateway.sh).
//
//	go test -run '^$' -bench GatewayHandler -benchmem ./caddymodule/
func BenchmarkGatewayHandler(b *testing.B) {
	port := redistest.FreePort(b)
	load(b, fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store file %s
		instance acme-sandbox sandbox "Acme (sandbox)"
	}
}
http://127.0.0.1:%d {
	route /plain {
		respond "ok"
	}
	route /nora {
		nora_auth
		respond "ok"
	}
	route /full {
		nora_auth {
			require_scope bench:read
		}
		respond "ok"
	}
}
`, filepath.Join(b.TempDir(), "keys.db"), port))
	s := noraApp(b).KeyStore()
	plainKey, _ := mintSandbox(b, s, func(*store.Key) {})
	fullKey, _ := mintSandbox(b, s, func(k *store.Key) {
		k.Scopes, k.Metadata = []string{"bench:*"}, map[string]string{"team": "bench"}
		var err error
		if k.AllowedIPs, err = store.ParseAllowedIPs([]string{"192.0.2.0/24"}); err != nil {
			b.Fatal(err)
		}
		k.RateLimit = &store.RateLimit{Limit: 1_000_000_000, Window: time.Second}
		k.Quota = &store.Quota{Limit: 1_000_000_000_000, Period: store.QuotaTotal}
	})
	h, err := caddy.ActiveContext().App("http")
	if err != nil {
		b.Fatal(err)
	}
	var srv *caddyhttp.Server
	for _, s := range h.(*caddyhttp.App).Servers {
		srv = s
	}
	for _, c := range []struct{ name, path, key string }{
		{"plain", "/plain", plainKey},
		{"nora", "/nora", plainKey},
		{"full", "/full", fullKey},
	} {
		b.Run(c.name, func(b *testing.B) {
			serve := func() *httptest.ResponseRecorder {
				r := httptest.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, c.path), nil)
				r.RemoteAddr = "192.0.2.7:40000"
				r.Header.Set("Authorization", "Bearer "+c.key)
				w := httptest.NewRecorder()
				srv.ServeHTTP(w, r)
				return w
			}
			if w := serve(); w.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", c.name, w.Code, w.Body)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				serve()
			}
		})
	}
}
