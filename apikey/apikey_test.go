package apikey

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// testAlphabet is the base62 alphabet built independently of the package constant.
var testAlphabet = func() string {
	var b strings.Builder
	for c := '0'; c <= '9'; c++ {
		b.WriteRune(c)
	}
	for c := 'A'; c <= 'Z'; c++ {
		b.WriteRune(c)
	}
	for c := 'a'; c <= 'z'; c++ {
		b.WriteRune(c)
	}
	return b.String()
}()

// refBase62 writes n in base62 (0-9A-Za-z), left-padded with '0' to width characters.
func refBase62(n uint64, width int) string {
	var digits []byte
	for n > 0 {
		digits = append(digits, testAlphabet[n%62])
		n /= 62
	}
	for i, j := 0, len(digits)-1; i < j; i, j = i+1, j-1 {
		digits[i], digits[j] = digits[j], digits[i]
	}
	if len(digits) < width {
		return strings.Repeat("0", width-len(digits)) + string(digits)
	}
	return string(digits)
}

// refChecksum computes a key checksum without using the package.
func refChecksum(body string) string {
	return refBase62(uint64(crc32.ChecksumIEEE([]byte(body))), 6)
}

// refKey appends the reference checksum to a 40-character body.
func refKey(body string) string { return body + refChecksum(body) }

func isRefBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(testAlphabet, s[i]) < 0 {
			return false
		}
	}
	return true
}

// Checksums computed once with Python (zlib.crc32 and a separate base62 routine), hard-coded
// so that a change in the alphabet, the digit order or the padding is caught.
var fixedChecksums = []struct {
	body string
	crc  uint32
	sum  string
}{
	{"sk_live_00000000000000000000000000000000", 2283820664, "2UYg5A"},
	{"sk_test_00000000000000000000000000000000", 947536637, "127lYz"},
	{"sk_live_abcdefghijklmnopqrstuvwxyzABCDEF", 1233524354, "1LTk26"},
	{"sk_test_0123456789ABCDEFGHIJKLMNOPQRSTUV", 3300608622, "3bN14w"},
	{"sk_live_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", 3731582434, "44XL3S"},
	// Small CRCs: the base62 form needs left-padding with '0'.
	{"sk_test_Eby6vK111fY0yuOhDRk1XEmSyVZEMEhE", 705952149, "0lm6Oz"},
	{"sk_test_mTyIx1QrwZxf6BektI7lLvkjWxzRWrwg", 83008851, "05cIOR"},
	{"sk_live_kWhb1dJSh894wb9huqDUrpsnLNuIA9so", 2447802, "00AGmg"},
}

func TestTestAlphabet(t *testing.T) {
	if len(testAlphabet) != 62 {
		t.Fatalf("test alphabet has %d characters", len(testAlphabet))
	}
	if alphabet != testAlphabet {
		t.Fatalf("package alphabet %q, want %q", alphabet, testAlphabet)
	}
	if Len != 46 || DisplayPrefixLen != 14 {
		t.Fatalf("Len = %d, DisplayPrefixLen = %d", Len, DisplayPrefixLen)
	}
}

func TestRefBase62(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{
		{0, "000000"},
		{1, "000001"},
		{61, "00000z"},
		{62, "000010"},
		{62*62 - 1, "0000zz"},
		{1<<32 - 1, "4gfFC3"},
	} {
		if got := refBase62(tc.n, 6); got != tc.want {
			t.Errorf("refBase62(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestChecksumFixed(t *testing.T) {
	for _, tc := range fixedChecksums {
		if len(tc.body) != 40 {
			t.Fatalf("bad test body %q", tc.body)
		}
		if got := crc32.ChecksumIEEE([]byte(tc.body)); got != tc.crc {
			t.Errorf("crc32(%q) = %d, want %d", tc.body, got, tc.crc)
		}
		if got := refChecksum(tc.body); got != tc.sum {
			t.Errorf("refChecksum(%q) = %q, want %q", tc.body, got, tc.sum)
		}
		if got := Checksum(tc.body); got != tc.sum {
			t.Errorf("Checksum(%q) = %q, want %q", tc.body, got, tc.sum)
		}
		key := tc.body + tc.sum
		env, err := Parse(key)
		wantEnv := Sandbox
		if strings.HasPrefix(key, "sk_live_") {
			wantEnv = Production
		}
		if err != nil || env != wantEnv {
			t.Errorf("Parse(%q) = %v, %v; want %v, nil", key, env, err, wantEnv)
		}
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	for i := 0; i < 200; i++ {
		env := Sandbox
		if i%2 == 0 {
			env = Production
		}
		key, err := Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := Checksum(key[:40]), refChecksum(key[:40]); got != want {
			t.Fatalf("Checksum(%q) = %q, reference %q", key[:40], got, want)
		}
		if key[40:] != refChecksum(key[:40]) {
			t.Fatalf("generated key %q has checksum %q, reference %q", key, key[40:], refChecksum(key[:40]))
		}
	}
}

func TestParse(t *testing.T) {
	live := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	test := refKey("sk_test_0123456789ABCDEFGHIJKLMNOPQRSTUV")
	padded := refKey("sk_live_kWhb1dJSh894wb9huqDUrpsnLNuIA9so")

	// replace returns key with key[i] replaced by s (s may be longer than one byte).
	replace := func(key string, i int, s string) string { return key[:i] + s + key[i+1:] }
	// replaceN overwrites len(s) bytes at i, so the length stays 46.
	replaceN := func(key string, i int, s string) string { return key[:i] + s + key[i+len(s):] }

	tests := []struct {
		name    string
		key     string
		wantEnv Environment
		wantErr error
	}{
		{"valid live", live, Production, nil},
		{"valid test", test, Sandbox, nil},
		{"valid padded checksum", padded, Production, nil},
		{"fixed live zeros", "sk_live_000000000000000000000000000000002UYg5A", Production, nil},
		{"fixed test zeros", "sk_test_00000000000000000000000000000000127lYz", Sandbox, nil},

		{"empty", "", EnvUnknown, ErrFormat},
		{"prefix only", "sk_live_", EnvUnknown, ErrFormat},
		{"too short by one", live[:45], EnvUnknown, ErrFormat},
		{"too long by one", live + "0", EnvUnknown, ErrFormat},
		{"trailing newline", live + "\n", EnvUnknown, ErrFormat},
		{"leading space", " " + live, EnvUnknown, ErrFormat},
		{"body only", live[:40], EnvUnknown, ErrFormat},
		{"very long", strings.Repeat(live, 10), EnvUnknown, ErrFormat},

		{"prefix sk_prod_", refKey("sk_prod_abcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"prefix pk_live_", refKey("pk_live_abcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"prefix SK_LIVE_", refKey("SK_LIVE_abcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"prefix SK_TEST_", refKey("SK_TEST_0123456789ABCDEFGHIJKLMNOPQRSTUV"), EnvUnknown, ErrFormat},
		{"prefix sk_Live_", refKey("sk_Live_abcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"prefix sk-live-", refKey("sk-live-abcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"prefix sk_live without underscore", refKey("sk_livexabcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"prefix rk_test_", refKey("rk_test_0123456789ABCDEFGHIJKLMNOPQRSTUV"), EnvUnknown, ErrFormat},

		// Non-base62 bytes with a checksum that matches, so only the format check can refuse them.
		{"dash in random", refKey("sk_live_abcdefghijklmnop-rstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"underscore in random", refKey("sk_live__bcdefghijklmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"space in random", refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDE "), EnvUnknown, ErrFormat},
		{"NUL in random", refKey("sk_live_abcdefghij\x00lmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"0xff in random", refKey("sk_live_abcdefghij\xfflmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"plus in random", refKey("sk_live_abcdefghij+lmnopqrstuvwxyzABCDEF"), EnvUnknown, ErrFormat},
		{"ellipsis in random, length kept", refKey(replaceN("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF", 20, "…")), EnvUnknown, ErrFormat},
		{"ellipsis in random, length changed", replace(live, 20, "…"), EnvUnknown, ErrFormat},
		{"non-ASCII letter in random", refKey(replaceN("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF", 10, "é")), EnvUnknown, ErrFormat},

		{"dash in checksum", replace(live, 42, "-"), EnvUnknown, ErrFormat},
		{"underscore in checksum", replace(live, 45, "_"), EnvUnknown, ErrFormat},
		{"space in checksum", replace(live, 40, " "), EnvUnknown, ErrFormat},
		{"NUL in checksum", replace(live, 43, "\x00"), EnvUnknown, ErrFormat},
		{"ellipsis in checksum, length kept", replaceN(live, 43, "…"), EnvUnknown, ErrFormat},

		{"changed random char", replace(live, 8, "b"), EnvUnknown, ErrChecksum},
		{"changed last random char", replace(live, 39, "G"), EnvUnknown, ErrChecksum},
		{"changed random char test", replace(test, 20, "z"), EnvUnknown, ErrChecksum},
		{"changed checksum char", replace(live, 45, "7"), EnvUnknown, ErrChecksum}, // live ends in "1LTk26"
		{"changed first checksum char", replace(padded, 40, "1"), EnvUnknown, ErrChecksum},
		{"checksum of other env", "sk_test_" + live[8:], EnvUnknown, ErrChecksum},
		{"swapped adjacent random chars", live[:8] + string(live[9]) + string(live[8]) + live[10:], EnvUnknown, ErrChecksum},
		{"checksum all zeros", live[:40] + "000000", EnvUnknown, ErrChecksum},
		{"checksum unpadded form", "sk_live_kWhb1dJSh894wb9huqDUrpsnLNuIA9so" + "AGmg00", EnvUnknown, ErrChecksum},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Parse(tc.key)
			if env != tc.wantEnv {
				t.Errorf("Parse(%q) env = %v, want %v", tc.key, env, tc.wantEnv)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Errorf("Parse(%q) error = %v, want nil", tc.key, err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Parse(%q) error = %v, want %v", tc.key, err, tc.wantErr)
			}
			if tc.key != "" && len(tc.key) > 8 && strings.Contains(err.Error(), tc.key[8:]) {
				t.Errorf("error %q contains the key", err)
			}
		})
	}
}

// Every single-character change of the random part is refused with ErrChecksum (CRC-32 detects
// all single-byte errors, and the base62 form is injective on 32-bit values).
func TestParseEverySingleChange(t *testing.T) {
	for _, key := range []string{
		refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF"),
		refKey("sk_test_kWhb1dJSh894wb9huqDUrpsnLNuIA9so"),
	} {
		for i := 8; i < Len; i++ {
			for j := 0; j < len(testAlphabet); j++ {
				c := testAlphabet[j]
				if c == key[i] {
					continue
				}
				mutated := key[:i] + string(c) + key[i+1:]
				env, err := Parse(mutated)
				if !errors.Is(err, ErrChecksum) || env != EnvUnknown {
					t.Fatalf("Parse(%q) (position %d changed) = %v, %v; want ErrChecksum", mutated, i, env, err)
				}
			}
		}
		// Any change in the prefix is a format error.
		for i := 0; i < 8; i++ {
			mutated := key[:i] + "x" + key[i+1:]
			if _, err := Parse(mutated); !errors.Is(err, ErrFormat) {
				t.Fatalf("Parse(%q) = %v; want ErrFormat", mutated, err)
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, 2*n)
	counts := make(map[byte]int)
	total := 0
	for _, env := range []Environment{Production, Sandbox} {
		for i := 0; i < n; i++ {
			key, err := Generate(env)
			if err != nil {
				t.Fatalf("Generate(%v): %v", env, err)
			}
			if len(key) != 46 {
				t.Fatalf("Generate(%v) = %q: length %d, want 46", env, key, len(key))
			}
			if !strings.HasPrefix(key, env.KeyPrefix()) {
				t.Fatalf("Generate(%v) = %q: wrong prefix", env, key)
			}
			if !isRefBase62(key[8:]) {
				t.Fatalf("Generate(%v) = %q: not base62 after prefix", env, key)
			}
			got, err := Parse(key)
			if err != nil || got != env {
				t.Fatalf("Parse(Generate(%v)) = %v, %v", env, got, err)
			}
			if key[40:] != refChecksum(key[:40]) {
				t.Fatalf("Generate(%v) = %q: checksum differs from reference %q", env, key, refChecksum(key[:40]))
			}
			if seen[key] {
				t.Fatalf("Generate returned %q twice", key)
			}
			seen[key] = true
			for j := 8; j < 40; j++ {
				counts[key[j]]++
				total++
			}
		}
	}
	// 64000 samples over 62 characters: about 1032 each with a standard deviation near 32,
	// so the bounds below are far beyond any plausible fluctuation.
	expected := float64(total) / 62
	if len(counts) != 62 {
		t.Errorf("only %d distinct characters in random parts, want 62", len(counts))
	}
	for i := 0; i < len(testAlphabet); i++ {
		c := testAlphabet[i]
		got := float64(counts[c])
		if got == 0 || got > 2*expected || got < expected/2 {
			t.Errorf("character %q appears %v times, expected about %.0f", c, got, expected)
		}
	}
}

func TestGenerateUnknownEnvironment(t *testing.T) {
	for _, env := range []Environment{EnvUnknown, Environment(3), Environment(255)} {
		key, err := Generate(env)
		if err == nil || key != "" {
			t.Errorf("Generate(%d) = %q, %v; want error", env, key, err)
		}
	}
}

func TestHasherSHA256(t *testing.T) {
	key := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	inputs := []string{key, "", "short", strings.Repeat("x", 100), key + "x", key[:45]}
	for _, h := range []Hasher{{}, NewHasher(nil), NewHasher([]byte{})} {
		for _, in := range inputs {
			if got, want := h.Sum(in), sha256.Sum256([]byte(in)); got != Hash(want) {
				t.Errorf("Sum(%q) = %x, want sha256 %x", in, got, want)
			}
		}
	}
}

func refHMAC(pepper []byte, key string) Hash {
	m := hmac.New(sha256.New, pepper)
	m.Write([]byte(key))
	var out Hash
	copy(out[:], m.Sum(nil))
	return out
}

func TestHasherHMAC(t *testing.T) {
	key := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	inputs := []string{key, "", "short", strings.Repeat("x", 100), key + "x", key[:45]}
	pepper := []byte("pepper-0123456789")
	h := NewHasher(pepper)
	for round := 0; round < 3; round++ { // repeated calls reuse pooled state; results must not drift
		for _, in := range inputs {
			if got, want := h.Sum(in), refHMAC([]byte("pepper-0123456789"), in); got != want {
				t.Errorf("Sum(%q) = %x, want HMAC %x", in, got, want)
			}
		}
	}
	if h.Sum(key) == Hash(sha256.Sum256([]byte(key))) {
		t.Error("HMAC hash equals plain SHA-256")
	}
	// The pepper is copied: changing the caller's slice changes nothing.
	before := h.Sum(key)
	pepper[0] ^= 0xff
	if h.Sum(key) != before {
		t.Error("Hasher depends on the caller's pepper slice after NewHasher")
	}
	// Different peppers give different hashes.
	h2 := NewHasher([]byte("pepper-0123456788"))
	if h.Sum(key) == h2.Sum(key) {
		t.Error("different peppers give the same hash")
	}
	// A long pepper (longer than the SHA-256 block) still matches crypto/hmac.
	long := []byte(strings.Repeat("p", 200))
	if got, want := NewHasher(long).Sum(key), refHMAC(long, key); got != want {
		t.Errorf("long pepper: %x, want %x", got, want)
	}
}

func TestHasherConcurrent(t *testing.T) {
	var keys []string
	for i := 0; i < 32; i++ {
		env := Production
		if i%2 == 1 {
			env = Sandbox
		}
		k, err := Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	keys = append(keys, "", "not-a-key")
	pepper := []byte("concurrent pepper")
	hashers := []Hasher{{}, NewHasher(pepper)}
	want := make([][]Hash, len(hashers))
	for i := range hashers {
		for _, k := range keys {
			if i == 0 {
				want[i] = append(want[i], sha256.Sum256([]byte(k)))
			} else {
				want[i] = append(want[i], refHMAC(pepper, k))
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for round := 0; round < 50; round++ {
				for i, h := range hashers {
					for j := range keys {
						idx := (j + g) % len(keys)
						if got := h.Sum(keys[idx]); got != want[i][idx] {
							select {
							case errs <- "hash mismatch under concurrency":
							default:
							}
							return
						}
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestDisplayPrefixAndMask(t *testing.T) {
	key := refKey("sk_live_abc123defghijklmnopqrstuvwxyzABC")
	p := DisplayPrefix(key)
	if p != "sk_live_abc123" {
		t.Errorf("DisplayPrefix = %q, want %q", p, "sk_live_abc123")
	}
	if len(p) != 14 {
		t.Errorf("len(DisplayPrefix) = %d, want 14", len(p))
	}
	m := Mask(p)
	if m != "sk_live_abc123…" {
		t.Errorf("Mask = %q, want %q", m, "sk_live_abc123…")
	}
	if utf8.RuneCountInString(m) != 15 || !strings.HasSuffix(m, "\u2026") {
		t.Errorf("Mask = %q: want 14 characters plus U+2026", m)
	}
	for _, env := range []Environment{Production, Sandbox} {
		k, err := Generate(env)
		if err != nil {
			t.Fatal(err)
		}
		p := DisplayPrefix(k)
		if p != k[:14] || !strings.HasPrefix(p, env.KeyPrefix()) {
			t.Errorf("DisplayPrefix(%q) = %q", k, p)
		}
		if strings.Contains(Mask(p), k[14:]) {
			t.Errorf("Mask reveals the rest of the key")
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		id, err := NewID("key_", 24)
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 28 || !strings.HasPrefix(id, "key_") || !isRefBase62(id[4:]) {
			t.Fatalf("NewID = %q: want key_ + 24 base62 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID returned %q twice", id)
		}
		seen[id] = true
	}
	if id, err := NewID("evt_", 0); err != nil || id != "evt_" {
		t.Errorf("NewID(evt_, 0) = %q, %v", id, err)
	}
	if id, err := NewID("", 100); err != nil || len(id) != 100 || !isRefBase62(id) {
		t.Errorf("NewID(\"\", 100) = %q, %v", id, err)
	}
}

func TestEnvironment(t *testing.T) {
	for _, tc := range []struct {
		env    Environment
		name   string
		prefix string
	}{
		{Sandbox, "sandbox", "sk_test_"},
		{Production, "production", "sk_live_"},
	} {
		if got := tc.env.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", tc.env, got, tc.name)
		}
		if got := tc.env.KeyPrefix(); got != tc.prefix {
			t.Errorf("%v.KeyPrefix() = %q, want %q", tc.env, got, tc.prefix)
		}
		got, err := ParseEnvironment(tc.env.String())
		if err != nil || got != tc.env {
			t.Errorf("ParseEnvironment(%q) = %v, %v", tc.name, got, err)
		}
		k, err := Generate(tc.env)
		if err != nil {
			t.Fatal(err)
		}
		if env, err := Parse(k); err != nil || env.KeyPrefix() != k[:8] || env.String() != tc.name {
			t.Errorf("Parse(Generate(%v)) = %v, %v", tc.env, env, err)
		}
	}
	for _, e := range []Environment{EnvUnknown, Environment(3), Environment(255)} {
		if e.String() != "unknown" || e.KeyPrefix() != "" {
			t.Errorf("Environment(%d): String %q, KeyPrefix %q", e, e.String(), e.KeyPrefix())
		}
	}
	for _, s := range []string{"", "unknown", "Sandbox", "PRODUCTION", "test", "live", "prod", " sandbox", "sandbox\n", "sk_test_"} {
		env, err := ParseEnvironment(s)
		if err == nil || env != EnvUnknown {
			t.Errorf("ParseEnvironment(%q) = %v, %v; want error", s, env, err)
		}
	}
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func TestAllocs(t *testing.T) {
	key := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	bad := refKey("sk_live_abcdefghijklmnop-rstuvwxyzABCDEF")
	wrongSum := key[:40] + "000000"
	var sink Hash
	var envSink Environment
	checks := []struct {
		name string
		f    func()
	}{
		{"Parse valid", func() { envSink, _ = Parse(key) }},
		{"Parse bad format", func() { envSink, _ = Parse(bad) }},
		{"Parse bad checksum", func() { envSink, _ = Parse(wrongSum) }},
		{"Hasher{}.Sum", func() { sink = Hasher{}.Sum(key) }},
	}
	hm := NewHasher([]byte("pepper"))
	hm.Sum(key) // warm up the pool
	// Under the race detector sync.Pool drops items at random, so a pooled Hasher
	// reallocates now and then: only check it in a normal build.
	if !raceEnabled() {
		checks = append(checks, struct {
			name string
			f    func()
		}{"NewHasher(pepper).Sum", func() { sink = hm.Sum(key) }})
	}
	for _, c := range checks {
		c.f()
		if n := testing.AllocsPerRun(200, c.f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", c.name, n)
		}
	}
	_, _ = sink, envSink
}

var (
	benchEnv  Environment
	benchHash Hash
)

func BenchmarkParse(b *testing.B) {
	key := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	b.ReportAllocs()
	for b.Loop() {
		benchEnv, _ = Parse(key)
	}
}

func BenchmarkHashSHA256(b *testing.B) {
	key := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	h := Hasher{}
	b.ReportAllocs()
	for b.Loop() {
		benchHash = h.Sum(key)
	}
}

func BenchmarkHashHMAC(b *testing.B) {
	key := refKey("sk_live_abcdefghijklmnopqrstuvwxyzABCDEF")
	h := NewHasher([]byte("benchmark pepper"))
	b.ReportAllocs()
	for b.Loop() {
		benchHash = h.Sum(key)
	}
}

func TestKeyID(t *testing.T) {
	id, err := NewKeyID()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != KeyIDLen || !ValidKeyID(id) {
		t.Fatalf("NewKeyID() = %q, not valid", id)
	}
	for _, bad := range []string{"", "key_", id[:KeyIDLen-1], id + "x", "kez_" + id[4:], id[:10] + "-" + id[11:], "evt_" + id[4:]} {
		if ValidKeyID(bad) {
			t.Errorf("ValidKeyID(%q) = true", bad)
		}
	}
}
