package apikey

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, tc := range fixedChecksums {
		key := tc.body + tc.sum
		f.Add(key)
		f.Add(key[:45])                              // too short
		f.Add(key + "0")                             // too long
		f.Add(key[:45] + "0")                        // wrong checksum char
		f.Add(key[:10] + "-" + key[11:])             // non-base62 in random part
		f.Add("SK_LIVE_" + key[8:])                  // uppercase prefix
		f.Add("sk_prod_" + key[8:])                  // unknown environment
		f.Add("pk_live_" + key[8:])                  // publishable-style prefix
		f.Add(key[:20] + "…" + key[23:])             // multibyte, same length
		f.Add(key[:40] + "\x00\x00\x00\x00\x00\x00") // NUL checksum
	}
	for _, env := range []Environment{Production, Sandbox} {
		k, err := Generate(env)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(k)
	}
	f.Add("")
	f.Add("sk_live_")
	f.Add("sk_test_")
	f.Add(strings.Repeat("0", 46))

	f.Fuzz(func(t *testing.T, key string) {
		env, err := Parse(key)
		if err != nil {
			if env != EnvUnknown {
				t.Fatalf("Parse(%q) = %v with error %v; want EnvUnknown", key, env, err)
			}
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("Parse(%q): unexpected error %v", key, err)
			}
			if len(key) >= 12 && strings.Contains(err.Error(), key[8:]) {
				t.Fatalf("Parse(%q): error %q contains the key", key, err)
			}
			// A format-valid key whose checksum is wrong must be ErrChecksum, not ErrFormat.
			if len(key) == 46 && (strings.HasPrefix(key, "sk_live_") || strings.HasPrefix(key, "sk_test_")) &&
				isRefBase62(key[8:]) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("Parse(%q) = %v; want ErrChecksum", key, err)
			}
			return
		}
		if len(key) != 46 {
			t.Fatalf("Parse accepted %q of length %d", key, len(key))
		}
		var want Environment
		switch key[:8] {
		case "sk_live_":
			want = Production
		case "sk_test_":
			want = Sandbox
		default:
			t.Fatalf("Parse accepted %q with prefix %q", key, key[:8])
		}
		if env != want {
			t.Fatalf("Parse(%q) = %v, want %v", key, env, want)
		}
		if !isRefBase62(key[8:]) {
			t.Fatalf("Parse accepted %q with non-base62 characters", key)
		}
		if key[40:] != Checksum(key[:40]) {
			t.Fatalf("Parse accepted %q: checksum %q, want %q", key, key[40:], Checksum(key[:40]))
		}
		if key[40:] != refChecksum(key[:40]) {
			t.Fatalf("Parse accepted %q: checksum %q, reference %q", key, key[40:], refChecksum(key[:40]))
		}
		if DisplayPrefix(key) != key[:14] {
			t.Fatalf("DisplayPrefix(%q) = %q", key, DisplayPrefix(key))
		}
	})
}
