package verify

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

var (
	signingSecret    = []byte("verify-signing-secret-0123456789")
	oldSigningSecret = []byte("verify-old-signing-secret-012345")
)

func signer(t testing.TB, secrets ...[]byte) *apikey.Signer {
	t.Helper()
	s, err := apikey.NewSigner(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mintSigned stores a key minted by m in the sandbox instance.
func (f *fixture) mintWith(m store.Minter) string {
	f.t.Helper()
	secret, k, err := m.Mint(store.Instance{ID: sandboxInstance, Environment: apikey.Sandbox}, "signed", time.Time{}, f.clk.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.real.CreateKey(context.Background(), k); err != nil {
		f.t.Fatal(err)
	}
	return secret
}

// With require, an invented key with a valid checksum (or a real unsigned one) is refused
// without a store call; a signed key is looked up once and then served from the cache.
func TestRequireSignedKeys(t *testing.T) {
	sg := signer(t, signingSecret)
	f := newFixture(t, nil, Config{Signer: sg, RequireSigned: true})
	signed := f.mintWith(store.Minter{Hasher: f.hasher, Signer: sg})
	unsigned, _ := f.createKey(apikey.Sandbox, time.Time{})
	for range 100 {
		invented, _ := apikey.Generate(apikey.Sandbox)
		f.expect(invented, apikey.EnvUnknown, InvalidKey)
	}
	f.expect(unsigned, apikey.EnvUnknown, InvalidKey)
	// Even on the wrong route: the tag is checked before the environment.
	f.expect(unsigned, apikey.Production, InvalidKey)
	f.expectLookups(0)
	f.warm(signed)
	f.expectLookups(1)
	f.expect(signed, apikey.Production, WrongEnvironment)
	if n := f.v.Stats.UnsignedKeys.Load(); n != 0 {
		t.Fatalf("UnsignedKeys = %d with require", n)
	}
}

// Without require (rollout), unsigned keys are still looked up and work, and each
// acceptance is counted, from the cache too; invented keys are looked up and refused.
func TestSigningRollout(t *testing.T) {
	sg := signer(t, signingSecret)
	f := newFixture(t, nil, Config{Signer: sg})
	signed := f.mintWith(store.Minter{Hasher: f.hasher, Signer: sg})
	unsigned, _ := f.createKey(apikey.Sandbox, time.Time{})
	f.warm(signed)
	if n := f.v.Stats.UnsignedKeys.Load(); n != 0 {
		t.Fatalf("UnsignedKeys = %d after signed keys", n)
	}
	f.warm(unsigned)
	f.expect(unsigned, apikey.EnvUnknown, OK)
	if n := f.v.Stats.UnsignedKeys.Load(); n != 3 {
		t.Fatalf("UnsignedKeys = %d after 3 accepted unsigned verifications", n)
	}
	before := f.st.lookups.Load()
	invented, _ := apikey.Generate(apikey.Sandbox)
	f.expect(invented, apikey.EnvUnknown, InvalidKey)
	if f.st.lookups.Load() != before+1 {
		t.Fatal("without require, an unsigned unknown key was not looked up")
	}
}

// Rotation: keys signed under the old secret work while it is listed after the new one.
func TestSigningRotationInVerify(t *testing.T) {
	oldKeys := store.Minter{Signer: signer(t, oldSigningSecret)}
	f := newFixture(t, nil, Config{Signer: signer(t, signingSecret, oldSigningSecret), RequireSigned: true})
	oldKeys.Hasher = f.hasher
	old := f.mintWith(oldKeys)
	fresh := f.mintWith(store.Minter{Hasher: f.hasher, Signer: signer(t, signingSecret)})
	f.warm(old)
	f.warm(fresh)

	g := newFixture(t, f.real, Config{Signer: signer(t, signingSecret), RequireSigned: true})
	g.expect(old, apikey.EnvUnknown, InvalidKey)
	g.expect(fresh, apikey.EnvUnknown, OK)
}

// A signed key on a cache hit, with require: the tag is read from the entry, not recomputed.
func BenchmarkVerifyCacheHitSigned(b *testing.B) {
	sg := signer(b, signingSecret, oldSigningSecret)
	f := newFixture(b, nil, Config{Now: time.Now, Size: 1_000_000, Signer: sg, RequireSigned: true})
	secret := f.mintWith(store.Minter{Hasher: f.hasher, Signer: sg})
	f.warm(secret)
	b.ReportAllocs()
	for b.Loop() {
		if f.v.Verify(secret, apikey.EnvUnknown).Code != OK {
			b.Fatal("not ok")
		}
	}
}

// An invented key with require: refused at the cost of the tag's HMACs (two secrets).
func BenchmarkVerifyInventedKeySigned(b *testing.B) {
	f := newFixture(b, nil, Config{Now: time.Now, Signer: signer(b, signingSecret, oldSigningSecret), RequireSigned: true})
	invented, _ := apikey.Generate(apikey.Sandbox)
	b.ReportAllocs()
	for b.Loop() {
		if f.v.Verify(invented, apikey.EnvUnknown).Code != InvalidKey {
			b.Fatal("not refused")
		}
	}
	if n := f.st.lookups.Load(); n != 0 {
		b.Fatalf("%d lookups", n)
	}
}
