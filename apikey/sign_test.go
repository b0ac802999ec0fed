package apikey

import (
	"strings"
	"testing"
)

var (
	secretA = []byte("signing-secret-A-0123456789")
	secretB = []byte("signing-secret-B-0123456789")
)

func TestSignedKeys(t *testing.T) {
	s, err := NewSigner(secretA)
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range []Environment{Sandbox, Production} {
		key, err := s.Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Parse(key); err != nil || got != env {
			t.Fatalf("signed key %s…: Parse = %v, %v", key[:12], got, err)
		}
		if !s.Verify(key) {
			t.Fatal("a signed key does not verify")
		}
		// Any change to the tagged part, or to the tag, breaks it (the checksum made valid
		// again, as an attacker would).
		for _, i := range []int{8, 20, 31, 32, 39} {
			b := []byte(key)
			b[i] = map[bool]byte{true: 'A', false: 'B'}[b[i] != 'A']
			forged := string(b[:40]) + Checksum(string(b[:40]))
			if _, err := Parse(forged); err != nil {
				t.Fatal(err)
			}
			if s.Verify(forged) {
				t.Errorf("changed character %d: the tag still verifies", i)
			}
		}
	}
	plain, _ := Generate(Sandbox)
	if s.Verify(plain) {
		t.Error("an unsigned key verifies (1 in 2^47 chance: rerun if you are that lucky)")
	}
}

// Rotation: a key signed under the old secret verifies while the old secret is listed after
// the new one, and new keys are signed under the new one.
func TestSigningRotation(t *testing.T) {
	old, _ := NewSigner(secretA)
	oldKey, _ := old.Generate(Production)
	both, _ := NewSigner(secretB, secretA)
	newKey, _ := both.Generate(Production)
	if !both.Verify(oldKey) || !both.Verify(newKey) {
		t.Fatal("rotation: a key does not verify under both secrets")
	}
	onlyNew, _ := NewSigner(secretB)
	if onlyNew.Verify(oldKey) || !onlyNew.Verify(newKey) {
		t.Fatal("after removing the old secret: old key verifies or new one does not")
	}
	if old.Verify(newKey) {
		t.Fatal("the new key verifies under the old secret alone")
	}
}

func TestSignerRefusesShortSecrets(t *testing.T) {
	if _, err := NewSigner(); err == nil {
		t.Fatal("no secret accepted")
	}
	_, err := NewSigner(secretA, []byte("short-secret"))
	if err == nil || !strings.Contains(err.Error(), "secret 2") || strings.Contains(err.Error(), "short-secret") {
		t.Fatalf("short secret: %v", err)
	}
	var none *Signer
	if none.Enabled() || none.Verify("x") {
		t.Fatal("a nil signer signs or verifies")
	}
	if k, err := none.Generate(Sandbox); err != nil || len(k) != Len {
		t.Fatalf("nil signer Generate = %q, %v", k, err)
	}
}

func TestVerifyAllocs(t *testing.T) {
	if raceEnabled() {
		t.Skip("under the race detector sync.Pool drops items at random; CI runs this test without -race")
	}
	s, _ := NewSigner(secretA, secretB)
	key, _ := s.Generate(Sandbox)
	if n := testing.AllocsPerRun(200, func() { s.Verify(key) }); n != 0 {
		t.Fatalf("Verify allocates %v times", n)
	}
}

// FuzzVerify: no input panics, and what verifies is a key the signer could have made: of
// the right length, with its tag recomputable.
func FuzzVerify(f *testing.F) {
	s, _ := NewSigner(secretA, secretB)
	key, _ := s.Generate(Production)
	f.Add(key)
	f.Add(key[:45])
	f.Add(strings.Repeat("\xff", Len))
	f.Add("")
	f.Fuzz(func(t *testing.T, k string) {
		if s.Verify(k) {
			if len(k) != Len {
				t.Fatalf("verified a key of length %d", len(k))
			}
			var tag [TagLen]byte
			okA, okB := false, false
			s.putTag(tag[:], 0, k[:taggedLen])
			okA = string(tag[:]) == k[taggedLen:prefixLen+randomLen]
			s.putTag(tag[:], 1, k[:taggedLen])
			okB = string(tag[:]) == k[taggedLen:prefixLen+randomLen]
			if !okA && !okB {
				t.Fatalf("verified %q without a matching tag", k)
			}
		}
	})
}

func BenchmarkSignedVerify(b *testing.B) {
	s, _ := NewSigner(secretA)
	key, _ := s.Generate(Sandbox)
	b.ReportAllocs()
	for b.Loop() {
		s.Verify(key)
	}
}
