package verify

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func TestPolicyAllows(t *testing.T) {
	p := newPolicy([]string{"charges:read", "customers:*", "refunds*"}, nil, nil)
	for scope, want := range map[string]bool{
		"charges:read": true, "charges:write": false, "charges": false,
		"customers:read": true, "customers:": false, "customers": false,
		"refunds": false, "refunds:read": true, "refundsx": true, "": false,
	} {
		if got := p.allows(scope); got != want {
			t.Errorf("allows(%q) = %v, want %v", scope, got, want)
		}
	}
	if p.joined != "charges:read,customers:*,refunds*" {
		t.Errorf("joined %q", p.joined)
	}
	var open policy
	if !open.allows("anything") || open.joined != "" || open.ips != nil {
		t.Error("the zero policy restricts")
	}
}

// A restricted key's decisions, in their order: revoked, expired, then the client's address,
// then the route's scopes; an unrestricted key passes both.
func TestRestrictedKeyDecisions(t *testing.T) {
	f := newFixture(t, nil, Config{})
	now := f.clk.Now()
	ok := netip.MustParseAddr("203.0.113.7")
	other := netip.MustParseAddr("198.51.100.1")
	restricted := func(revoked bool, expires int64) *entry {
		e := &entry{meta: packMeta(apikey.Sandbox, revoked, true, f.v.epoch.Load()), instance: f.v.instances.id(sandboxInstance),
			expires: expires, stale: math.MaxInt64}
		p := newPolicy([]string{"charges:read", "customers:*"},
			[]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8::/32")},
			map[string]string{"team": "billing"})
		p.id = "key_x"
		e.policy.Store(p)
		return e
	}
	for _, tc := range []struct {
		name    string
		e       *entry
		client  netip.Addr
		scopes  []string
		want    Code
		missing int
	}{
		{"allowed address, no scope required", restricted(false, 0), ok, nil, OK, 0},
		{"allowed address, scopes held", restricted(false, 0), ok, []string{"charges:read", "customers:write"}, OK, 0},
		{"IPv6 in the allowlist", restricted(false, 0), netip.MustParseAddr("2001:db8::9"), nil, OK, 0},
		{"address outside", restricted(false, 0), other, nil, IPNotAllowed, 0},
		{"no address known", restricted(false, 0), netip.Addr{}, nil, IPNotAllowed, 0},
		{"address before scope", restricted(false, 0), other, []string{"refunds:write"}, IPNotAllowed, 0},
		{"second scope missing", restricted(false, 0), ok, []string{"charges:read", "refunds:write"}, InsufficientScope, 1},
		{"revoked before address", restricted(true, 0), other, []string{"refunds:write"}, Revoked, 0},
		{"expired before address", restricted(false, now.Add(-time.Second).UnixNano()), other, nil, Expired, 0},
		{"unrestricted key", &entry{meta: packMeta(apikey.Sandbox, false, true, f.v.epoch.Load()), instance: f.v.instances.id(sandboxInstance)}, other, []string{"refunds:write"}, OK, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.v.decideEntry(tc.e, apikey.Sandbox, now, &Request{Client: tc.client, Scopes: tc.scopes})
			if r.Code != tc.want || (r.Code == InsufficientScope && r.MissingScope != tc.missing) {
				t.Fatalf("got %v (missing %d), want %v (missing %d)", r.Code, r.MissingScope, tc.want, tc.missing)
			}
			if r.Code == OK && tc.e.pol().scoped {
				if r.Scopes != "charges:read,customers:*" || len(r.Metadata) != 1 ||
					r.Metadata[0] != (Meta{Placeholder: "http.auth.user.metadata.team", Value: "billing"}) {
					t.Fatalf("placeholders: %q %v", r.Scopes, r.Metadata)
				}
			}
		})
	}
}

// fillRestricted puts a restricted key in the cache as a lookup would, and returns its
// secret.
func fillRestricted(f *fixture) string {
	f.t.Helper()
	secret, k := f.createKey(apikey.Production, time.Time{})
	h := f.hasher.Sum(secret)
	f.v.fill(h, store.Lookup{ID: k.ID, Instance: k.Instance, Environment: k.Environment,
		Scopes:     []string{"charges:read", "charges:write", "customers:*"},
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("2001:db8::/32")},
		Metadata:   map[string]string{"team": "billing", "plan": "pro"},
	}, f.v.gen.Load(), true)
	f.waitCache()
	return secret
}

// The hit path of a key with scopes and an allowlist: budget ≤ 1 µs, ≤ 2 allocations.
func BenchmarkVerifyCacheHitRestricted(b *testing.B) {
	f := newFixture(b, nil, Config{Now: time.Now, Size: 1_000_000})
	secret := fillRestricted(f)
	req := Request{Key: secret, Want: apikey.Production, Client: netip.MustParseAddr("10.1.2.3"), Scopes: []string{"charges:write"}}
	n := f.st.lookups.Load()
	b.ReportAllocs()
	for b.Loop() {
		if r := f.v.Check(req); r.Code != OK {
			b.Fatalf("not ok: %v", r.Code)
		}
	}
	if f.st.lookups.Load() != n {
		b.Fatal("not all hits")
	}
}

func TestVerifyCacheHitRestrictedAllocs(t *testing.T) {
	if raceEnabled() {
		t.Skip("the race detector changes allocation counts; CI runs this without -race")
	}
	f := newFixture(t, nil, Config{Now: time.Now})
	secret := fillRestricted(f)
	req := Request{Key: secret, Want: apikey.Production, Client: netip.MustParseAddr("203.0.113.7"), Scopes: []string{"customers:read"}}
	if r := f.v.Check(req); r.Code != OK {
		t.Fatalf("warm: %v", r.Code)
	}
	if n := testing.AllocsPerRun(200, func() { f.v.Check(req) }); n > 2 {
		t.Fatalf("a restricted cache hit allocates %v times, budget 2", n)
	}
}
