package caddymodule

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestCredential(t *testing.T) {
	key := "sk_test_" + strings.Repeat("a", 38)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name   string
		values []string
		key    string
		want   credProblem
	}{
		{"none", nil, "", credMissing},
		{"empty", []string{""}, "", credMissing},
		{"spaces", []string{"   "}, "", credMissing},
		{"bearer alone", []string{"Bearer"}, "", credMissing},
		{"bearer spaces", []string{"Bearer   "}, "", credMissing},
		{"basic alone", []string{"Basic"}, "", credMissing},
		{"basic empty user", []string{"Basic " + b64(":")}, "", credMissing},
		{"bearer", []string{"Bearer " + key}, key, credOK},
		{"bearer lower", []string{"bearer " + key}, key, credOK},
		{"bearer upper, two spaces", []string{"BEARER  " + key}, key, credOK},
		{"basic", []string{"Basic " + b64(key+":")}, key, credOK},
		{"basic lower", []string{"basic " + b64(key+":")}, key, credOK},
		{"two headers", []string{"Bearer " + key, "Bearer " + key}, "", credInvalid},
		{"extra words", []string{"Bearer " + key + " x"}, "", credInvalid},
		{"tab inside", []string{"Bearer " + key + "\tx"}, "", credInvalid},
		{"unknown scheme", []string{"Token " + key}, "", credInvalid},
		{"no scheme", []string{key}, "", credInvalid},
		{"basic password", []string{"Basic " + b64(key+":pw")}, "", credInvalid},
		{"basic no colon", []string{"Basic " + b64(key)}, "", credInvalid},
		{"basic bad base64", []string{"Basic %%%"}, "", credInvalid},
		{"basic too long", []string{"Basic " + b64(strings.Repeat("a", 200)+":")}, "", credInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, p := credential(tc.values)
			if got != tc.key || p != tc.want {
				t.Fatalf("credential(%q) = %q, %d; want %q, %d", tc.values, got, p, tc.key, tc.want)
			}
		})
	}
}

// FuzzCredential: no input panics, and whatever is accepted is a non-empty, space-free
// credential taken from the header.
func FuzzCredential(f *testing.F) {
	key := "sk_live_" + strings.Repeat("Z", 38)
	for _, s := range []string{"", "Bearer", "Bearer " + key, "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")),
		"Basic =", "bearer  x y", "Basic " + strings.Repeat("A", 64), "\x00", "Basic\t" + key} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got, p := credential([]string{h})
		if p == credOK {
			if got == "" || strings.ContainsAny(got, " \t") {
				t.Fatalf("accepted %q from %q", got, h)
			}
			if !strings.Contains(h, got) {
				dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h)[6:])
				if err != nil || string(dec) != got+":" {
					t.Fatalf("accepted %q, which is not in %q", got, h)
				}
			}
		} else if got != "" {
			t.Fatalf("refused %q but returned %q", h, got)
		}
	})
}

// The credential parser sits on every request: it must not allocate for a Bearer key.
func TestCredentialAllocs(t *testing.T) {
	v := []string{"Bearer sk_live_" + strings.Repeat("Z", 38)}
	if n := testing.AllocsPerRun(100, func() { credential(v) }); n != 0 {
		t.Fatalf("credential allocates %v times per call", n)
	}
}
