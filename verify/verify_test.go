package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Every code Verify answers, and the counters behind them.

func TestVerifyCodes(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		for _, env := range []apikey.Environment{apikey.Sandbox, apikey.Production} {
			secret, k := f.createKey(env, time.Time{})
			for _, want := range []apikey.Environment{apikey.EnvUnknown, env} {
				r := f.expect(secret, want, OK)
				if r.KeyID != k.ID || r.Instance != k.Instance || r.Environment != env {
					t.Fatalf("Verify = %+v, want key %s instance %s environment %v", r, k.ID, k.Instance, env)
				}
			}
		}
		// A key that expires later is OK until then.
		secret, k := f.createKey(apikey.Production, base.Add(24*time.Hour))
		if r := f.expect(secret, apikey.Production, OK); r.KeyID != k.ID {
			t.Fatalf("KeyID = %q, want %q", r.KeyID, k.ID)
		}
	})

	t.Run("InvalidKey/malformed", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		good, _ := f.createKey(apikey.Sandbox, time.Time{})
		for _, key := range []string{
			"",
			"sk_test_",
			good[:len(good)-1],                        // too short
			good + "0",                                // too long
			"sk_prod_" + good[8:],                     // unknown prefix
			"SK_TEST_" + good[8:],                     // prefix is case-sensitive
			"Bearer " + good[7:],                      // not a key
			good[:20] + "-" + good[21:],               // not base62
			good[:20] + "é"[:1] + good[21:],           // not ASCII
			good[:apikey.Len-6] + "!!!!!!",            // checksum not base62
			strings.Repeat("x", apikey.Len),           // right length, nothing else
			"sk_test_" + strings.Repeat("0", 38),      // base62 all through, wrong checksum
			"sk_live_" + good[8:],                     // the checksum covers the prefix
			" " + good[:len(good)-1],                  // leading space
			good[:len(good)-1] + "\n",                 // trailing newline
			good[:len(good)-1] + "\x00",               // NUL
			good[:len(good)-6] + "\u00e9\u00e9\u00e9", // multibyte checksum, right byte length
		} {
			for _, want := range []apikey.Environment{apikey.EnvUnknown, apikey.Sandbox, apikey.Production} {
				if r := f.v.Verify(key, want); r.Code != InvalidKey || r.KeyID != "" || r.Instance != "" {
					t.Errorf("Verify(%q, %v) = %+v, want invalid_api_key with no key fields", key, want, r)
				}
			}
		}
		f.expectLookups(0)
		f.expect(good, apikey.EnvUnknown, OK)
	})

	t.Run("InvalidKey/bad checksum", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		good, _ := f.createKey(apikey.Production, time.Time{})
		// The stored key itself with its checksum changed, and with a body character changed.
		b := []byte(good)
		if b[apikey.Len-1] == '0' {
			b[apikey.Len-1] = '1'
		} else {
			b[apikey.Len-1] = '0'
		}
		bad1 := string(b)
		b = []byte(good)
		if b[10] == 'A' {
			b[10] = 'B'
		} else {
			b[10] = 'A'
		}
		bad2 := string(b)
		for _, key := range []string{bad1, bad2, badChecksum(t, apikey.Sandbox), badChecksum(t, apikey.Production)} {
			for _, want := range []apikey.Environment{apikey.EnvUnknown, apikey.Sandbox, apikey.Production} {
				// Format and checksum come before the environment: a bad checksum on a
				// route of the other environment is invalid_api_key.
				f.expect(key, want, InvalidKey)
			}
		}
		f.expectLookups(0)
	})

	t.Run("InvalidKey/unknown key", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		f.createKey(apikey.Sandbox, time.Time{})
		unknown, err := apikey.Generate(apikey.Sandbox)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := apikey.Parse(unknown); err != nil {
			t.Fatal(err)
		}
		r := f.expect(unknown, apikey.EnvUnknown, InvalidKey)
		if r.KeyID != "" || r.Instance != "" {
			t.Fatalf("unknown key answered with key fields: %+v", r)
		}
		f.expectLookups(1) // valid checksum: it reaches the store
	})

	t.Run("InvalidKey/prefix disagrees with the record", func(t *testing.T) {
		// A record whose environment is not the key's prefix: not a key we issued.
		f := newFixture(t, nil, Config{})
		secret, err := apikey.Generate(apikey.Sandbox)
		if err != nil {
			t.Fatal(err)
		}
		k := store.Key{ID: "key_mismatch", Instance: productionInstance, Environment: apikey.Production,
			Name: "odd", Prefix: apikey.DisplayPrefix(secret), Hash: f.hasher.Sum(secret), CreatedAt: base}
		if err := f.real.CreateKey(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		f.expect(secret, apikey.EnvUnknown, InvalidKey)
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, InvalidKey)
	})

	t.Run("Revoked", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		f.revoke(k)
		r := f.expect(secret, apikey.EnvUnknown, Revoked)
		// The key is named (its refusal counts in its usage), nothing else of it is given.
		if r.KeyID != k.ID || r.Instance != k.Instance || r.Scopes != "" || r.Metadata != nil {
			t.Fatalf("revoked key answered with other key fields than its id and instance: %+v", r)
		}
		f.waitCache()
		f.expect(secret, apikey.Sandbox, Revoked) // cached as revoked
		f.expectLookups(1)
	})

	t.Run("Expired/already at lookup", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		// expires_at not after now is expired: exactly now, and before.
		secret1, _ := f.createKey(apikey.Sandbox, base)
		secret2, _ := f.createKey(apikey.Production, base.Add(-time.Hour))
		f.expect(secret1, apikey.EnvUnknown, Expired)
		f.expect(secret2, apikey.Production, Expired)
	})

	t.Run("Expired/while cached", func(t *testing.T) {
		f := newFixture(t, nil, Config{TTL: 48 * time.Hour}) // the entry outlives the clock's moves
		exp := base.Add(time.Hour)
		secret, _ := f.createKey(apikey.Sandbox, exp)
		f.warm(secret)
		n := f.st.lookups.Load()
		f.clk.Set(exp.Add(-time.Millisecond))
		f.expect(secret, apikey.EnvUnknown, OK)
		f.clk.Set(exp.Add(-time.Nanosecond))
		f.expect(secret, apikey.EnvUnknown, OK)
		// The cache never extends a key's life: at expires_at, the cached entry says expired.
		f.clk.Set(exp)
		f.expect(secret, apikey.EnvUnknown, Expired)
		f.clk.Set(exp.Add(24 * time.Hour))
		f.expect(secret, apikey.Sandbox, Expired)
		f.expectLookups(n) // decided from the cache
		if hits := f.v.Stats.CacheHits.Load(); hits < 5 {
			t.Fatalf("cache hits = %d, want ≥ 5", hits)
		}
	})

	t.Run("Expired/shortened expiry propagates", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		secret, k := f.createKey(apikey.Sandbox, time.Time{})
		f.warm(secret)
		if _, err := f.real.ExpireKey(context.Background(), k.Instance, k.ID, f.clk.Now()); err != nil {
			t.Fatal(err)
		}
		f.expect(secret, apikey.EnvUnknown, Expired)
	})

	t.Run("Expired/roll with no grace", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		old, k := f.createKey(apikey.Production, time.Time{})
		f.warm(old)
		next, err := apikey.Generate(apikey.Production)
		if err != nil {
			t.Fatal(err)
		}
		nk := store.Key{ID: "key_rolled", Instance: k.Instance, Environment: k.Environment, Name: k.Name,
			Prefix: apikey.DisplayPrefix(next), Hash: f.hasher.Sum(next), CreatedAt: base}
		if _, err := f.real.RollKey(context.Background(), k.Instance, k.ID, nk, f.clk.Now(), nil); err != nil {
			t.Fatal(err)
		}
		f.expect(old, apikey.EnvUnknown, Expired)
		if r := f.expect(next, apikey.Production, OK); r.KeyID != "key_rolled" {
			t.Fatalf("rolled key id = %q", r.KeyID)
		}
	})

	t.Run("WrongEnvironment before any lookup", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		test, _ := f.createKey(apikey.Sandbox, time.Time{})
		live, _ := f.createKey(apikey.Production, time.Time{})
		unknownTest, _ := apikey.Generate(apikey.Sandbox)
		unknownLive, _ := apikey.Generate(apikey.Production)
		for i := 0; i < 3; i++ {
			f.expect(test, apikey.Production, WrongEnvironment)
			f.expect(live, apikey.Sandbox, WrongEnvironment)
			f.expect(unknownTest, apikey.Production, WrongEnvironment)
			f.expect(unknownLive, apikey.Sandbox, WrongEnvironment)
		}
		f.expectLookups(0)
		if n := f.v.Stats.StoreLookups.Load(); n != 0 {
			t.Fatalf("Stats.StoreLookups = %d, want 0", n)
		}
		// Cached keys too: the environment is decided from the prefix.
		f.warm(test)
		f.expect(test, apikey.Production, WrongEnvironment)
		// Revoked keys on the wrong route: still the environment first.
		revoked, k := f.createKey(apikey.Sandbox, time.Time{})
		f.revoke(k)
		n := f.st.lookups.Load()
		f.expect(revoked, apikey.Production, WrongEnvironment)
		f.expectLookups(n)
	})

	t.Run("Revoked and expired is Revoked", func(t *testing.T) {
		f := newFixture(t, nil, Config{})
		// Revoked while cached, then the clock passes its expiry.
		exp := base.Add(time.Hour)
		secret, k := f.createKey(apikey.Sandbox, exp)
		f.warm(secret)
		f.revoke(k)
		f.clk.Set(exp.Add(time.Minute))
		f.expect(secret, apikey.EnvUnknown, Revoked)
		f.waitCache()
		f.expect(secret, apikey.EnvUnknown, Revoked)
		// Both already at the first lookup.
		secret2, k2 := f.createKey(apikey.Production, base)
		f.revoke(k2)
		f.expect(secret2, apikey.Production, Revoked)
	})
}

func TestHasherPepper(t *testing.T) {
	h := apikey.NewHasher([]byte("pepper"))
	f := newFixture(t, nil, Config{Hasher: h})
	secret, k := f.createKey(apikey.Sandbox, time.Time{}) // stored with the peppered hash
	if r := f.expect(secret, apikey.EnvUnknown, OK); r.KeyID != k.ID {
		t.Fatalf("KeyID = %q", r.KeyID)
	}
	// The same secret stored under its plain SHA-256 is unknown to a peppered verifier.
	plain, err := apikey.Generate(apikey.Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	pk := store.Key{ID: "key_plain", Instance: sandboxInstance, Environment: apikey.Sandbox, Name: "plain",
		Prefix: apikey.DisplayPrefix(plain), Hash: apikey.Hasher{}.Sum(plain), CreatedAt: base}
	if err := f.real.CreateKey(context.Background(), pk); err != nil {
		t.Fatal(err)
	}
	f.expect(plain, apikey.EnvUnknown, InvalidKey)
}

// The cache is keyed by the full hash: a key is answered from its own entry only, and the
// entry says which key it is.
func TestCacheEntryIsTheKeys(t *testing.T) {
	f := newFixture(t, nil, Config{})
	a, ka := f.createKey(apikey.Sandbox, time.Time{})
	b, kb := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(a)
	f.warm(b)
	ea, oka := f.v.cache.GetIfPresent(f.hasher.Sum(a))
	eb, okb := f.v.cache.GetIfPresent(f.hasher.Sum(b))
	if !oka || !okb || ea == eb || ea.keyID() != ka.ID || eb.keyID() != kb.ID || f.v.instances.name(ea.instance) != ka.Instance {
		t.Fatalf("entries: a %v %v, b %v %v", oka, ea, okb, eb)
	}
	n := f.st.lookups.Load()
	if r := f.expect(b, apikey.EnvUnknown, OK); r.KeyID != kb.ID {
		t.Fatalf("b answered as %s, want %s", r.KeyID, kb.ID)
	}
	f.expectLookups(n) // a hit
	// A key whose hash differs from a's only after the first 8 bytes finds nothing.
	h := f.hasher.Sum(a)
	h[31] ^= 1
	if _, ok := f.v.cache.GetIfPresent(h); ok {
		t.Fatal("a hash differing in its last byte found a's entry")
	}
}

// An entry is 64 bytes, a size class of its own (the cache's memory per key rests on it):
// the id inline, the instance an index, the flags and epoch in one word, no policy for a
// plain key.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 64 {
		t.Fatalf("entry is %d bytes, want at most 64", n)
	}
}

// The packed fields read back as they were written, every environment and flag, and the
// epoch compares modulo 2^24.
func TestEntryMeta(t *testing.T) {
	for _, env := range []apikey.Environment{apikey.EnvUnknown, apikey.Sandbox, apikey.Production} {
		for _, revoked := range []bool{false, true} {
			for _, signed := range []bool{false, true} {
				for _, epoch := range []uint64{0, 1, 1<<24 - 1, 1 << 24, 1<<40 + 7} {
					e := &entry{meta: packMeta(env, revoked, signed, epoch)}
					if e.env() != env || e.revoked() != revoked || e.signed() != signed {
						t.Errorf("packMeta(%v, %v, %v, %d) reads back %v, %v, %v", env, revoked, signed, epoch, e.env(), e.revoked(), e.signed())
					}
					if !e.current(epoch) || e.current(epoch+1) {
						t.Errorf("epoch %d: current(%d) = %v, current(%d) = %v", epoch, epoch, e.current(epoch), epoch+1, e.current(epoch+1))
					}
				}
			}
		}
	}
}

// Instance names: one index per name, stable, each name read back.
func TestInstanceNames(t *testing.T) {
	var n names
	ids := map[string]uint32{}
	for i := range 1000 {
		name := fmt.Sprintf("inst-%d", i%300)
		id := n.id(name)
		if prev, ok := ids[name]; ok && prev != id {
			t.Fatalf("%s: index %d, then %d", name, prev, id)
		}
		ids[name] = id
	}
	for name, id := range ids {
		if got := n.name(id); got != name {
			t.Fatalf("name(%d) = %q, want %q", id, got, name)
		}
	}
}

func TestCodeString(t *testing.T) {
	for c, want := range map[Code]string{
		OK:               "ok",
		InvalidKey:       "invalid_api_key",
		Revoked:          "api_key_revoked",
		Expired:          "api_key_expired",
		WrongEnvironment: "api_key_wrong_environment",
		Unavailable:      "auth_unavailable",
		NumCodes:         "unknown",
		Code(200):        "unknown",
	} {
		if got := c.String(); got != want {
			t.Errorf("Code(%d).String() = %q, want %q", c, got, want)
		}
	}
}

func TestStats(t *testing.T) {
	f := newFixture(t, nil, Config{TTL: 2 * time.Hour}) // the clock moves an hour below
	secret, k := f.createKey(apikey.Sandbox, time.Time{})
	expiring, _ := f.createKey(apikey.Sandbox, base.Add(time.Hour))
	unknown, _ := apikey.Generate(apikey.Sandbox)
	s := &f.v.Stats

	check := func(what string, got uint64, want uint64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", what, got, want)
		}
	}
	f.expect("nope", apikey.EnvUnknown, InvalidKey)       // no lookup, no cache
	f.expect(secret, apikey.Production, WrongEnvironment) // no lookup, no cache
	f.expect(secret, apikey.EnvUnknown, OK)               // miss, lookup
	f.waitCache()                                         //
	f.expect(secret, apikey.EnvUnknown, OK)               // hit
	f.expect(secret, apikey.Sandbox, OK)                  // hit
	f.expect(unknown, apikey.EnvUnknown, InvalidKey)      // miss, lookup
	f.expect(unknown, apikey.EnvUnknown, InvalidKey)      // miss, negative hit
	f.expect(expiring, apikey.EnvUnknown, OK)             // miss, lookup
	f.waitCache()                                         //
	f.clk.Advance(time.Hour)                              //
	f.expect(expiring, apikey.EnvUnknown, Expired)        // hit
	f.revoke(k)                                           //
	f.expect(secret, apikey.EnvUnknown, Revoked)          // miss, lookup
	f.st.fail.Store(true)                                 //
	other, _ := apikey.Generate(apikey.Sandbox)           //
	f.expect(other, apikey.EnvUnknown, Unavailable)       // miss, lookup (failed)

	check("Results[OK]", s.Results[OK].Load(), 4)
	check("Results[InvalidKey]", s.Results[InvalidKey].Load(), 3)
	check("Results[Revoked]", s.Results[Revoked].Load(), 1)
	check("Results[Expired]", s.Results[Expired].Load(), 1)
	check("Results[WrongEnvironment]", s.Results[WrongEnvironment].Load(), 1)
	check("Results[Unavailable]", s.Results[Unavailable].Load(), 1)
	check("CacheHits", s.CacheHits.Load(), 3)
	check("CacheMisses", s.CacheMisses.Load(), 6)
	check("NegativeHits", s.NegativeHits.Load(), 1)
	check("StoreLookups", s.StoreLookups.Load(), 5)
	f.expectLookups(5)
	var total uint64
	for i := range s.Results {
		total += s.Results[i].Load()
	}
	check("sum of Results", total, 11)
}
