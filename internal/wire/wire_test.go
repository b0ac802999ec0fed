package wire

import (
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

const keyLen = 46

func TestBearerOrBasic(t *testing.T) {
	key := "sk_test_" + strings.Repeat("a", 38)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name   string
		values []string
		key    string
		want   Problem
	}{
		{"none", nil, "", Missing},
		{"empty", []string{""}, "", Missing},
		{"spaces", []string{"   "}, "", Missing},
		{"bearer alone", []string{"Bearer"}, "", Missing},
		{"bearer spaces", []string{"Bearer   "}, "", Missing},
		{"basic alone", []string{"Basic"}, "", Missing},
		{"basic empty user", []string{"Basic " + b64(":")}, "", Missing},
		{"bearer", []string{"Bearer " + key}, key, OK},
		{"bearer lower", []string{"bearer " + key}, key, OK},
		{"bearer upper, two spaces", []string{"BEARER  " + key}, key, OK},
		{"basic", []string{"Basic " + b64(key+":")}, key, OK},
		{"basic lower", []string{"basic " + b64(key+":")}, key, OK},
		{"basic, user of the longest length", []string{"Basic " + b64(strings.Repeat("b", keyLen)+":")}, strings.Repeat("b", keyLen), OK},
		{"two headers", []string{"Bearer " + key, "Bearer " + key}, "", Invalid},
		{"extra words", []string{"Bearer " + key + " x"}, "", Invalid},
		{"tab inside", []string{"Bearer " + key + "\tx"}, "", Invalid},
		{"unknown scheme", []string{"Token " + key}, "", Invalid},
		{"no scheme", []string{key}, "", Invalid},
		{"basic password", []string{"Basic " + b64(key+":pw")}, "", Invalid},
		{"basic no colon", []string{"Basic " + b64(key)}, "", Invalid},
		{"basic bad base64", []string{"Basic %%%"}, "", Invalid},
		{"basic, user one too long", []string{"Basic " + b64(strings.Repeat("b", keyLen+1)+":")}, "", Invalid},
		{"basic too long", []string{"Basic " + b64(strings.Repeat("a", 200)+":")}, "", Invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, p := BearerOrBasic(tc.values, keyLen)
			if got != tc.key || p != tc.want {
				t.Fatalf("BearerOrBasic(%q) = %q, %d; want %q, %d", tc.values, got, p, tc.key, tc.want)
			}
		})
	}
}

// The admin API takes Bearer only: a Basic credential is Invalid there.
func TestBearerRefusesBasic(t *testing.T) {
	b := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"))
	if got, p := Bearer([]string{b}); p != Invalid || got != "" {
		t.Fatalf("Bearer(%q) = %q, %d", b, got, p)
	}
	if got, p := Bearer([]string{"Bearer tok"}); p != OK || got != "tok" {
		t.Fatalf("Bearer = %q, %d", got, p)
	}
}

// FuzzBearerOrBasic: no input panics, and whatever is accepted is a non-empty, space-free
// credential taken from the header.
func FuzzBearerOrBasic(f *testing.F) {
	key := "sk_live_" + strings.Repeat("Z", 38)
	for _, s := range []string{"", "Bearer", "Bearer " + key, "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")),
		"Basic =", "bearer  x y", "Basic " + strings.Repeat("A", 64), "\x00", "Basic\t" + key} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got, p := BearerOrBasic([]string{h}, keyLen)
		if p == OK {
			if got == "" || strings.ContainsAny(got, " \t") || len(got) > len(h) {
				t.Fatalf("accepted %q from %q", got, h)
			}
			if !strings.Contains(h, got) {
				_, enc, _ := strings.Cut(strings.TrimSpace(h), " ")
				dec, err := base64.StdEncoding.DecodeString(strings.TrimLeft(enc, " "))
				if err != nil || string(dec) != got+":" || len(got) > keyLen {
					t.Fatalf("accepted %q, which is not in %q", got, h)
				}
			}
		} else if got != "" {
			t.Fatalf("refused %q but returned %q", h, got)
		}
	})
}

// The parser sits on every request: it must not allocate for a Bearer key.
func TestBearerAllocs(t *testing.T) {
	v := []string{"Bearer sk_live_" + strings.Repeat("Z", 38)}
	if n := testing.AllocsPerRun(100, func() { BearerOrBasic(v, keyLen) }); n != 0 {
		t.Fatalf("BearerOrBasic allocates %v times per call", n)
	}
}

func TestWriteError(t *testing.T) {
	body := ErrorBody("authentication_error", "invalid_api_key", `Say "no" <here>.`)
	var got struct {
		Error struct{ Type, Code, Message string }
	}
	if err := json.Unmarshal(body, &got); err != nil || got.Error.Code != "invalid_api_key" ||
		got.Error.Type != "authentication_error" || got.Error.Message != `Say "no" <here>.` {
		t.Fatalf("ErrorBody = %s (%v)", body, err)
	}
	w := httptest.NewRecorder()
	w.Header().Set("Retry-After", "1")
	if err := WriteError(w, 503, body); err != nil {
		t.Fatal(err)
	}
	if w.Code != 503 || w.Header().Get("Content-Type") != "application/json" ||
		w.Header().Get("Cache-Control") != "no-store" || w.Header().Get("Retry-After") != "1" || w.Body.String() != string(body) {
		t.Fatalf("WriteError wrote %d %v %q", w.Code, w.Header(), w.Body)
	}
}
