package verify

import (
	"runtime/debug"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
)

// The hit path's budget: Verify on a cache hit (parse, checksum, hash, cache
// get, checks) in at most 1 µs and 2 allocations. The benchmarks measure the time; the
// allocation test below enforces the count, and CI runs it without -race too (the race
// detector changes allocation counts, so it skips there).

func benchFixture(b *testing.B, hasher apikey.Hasher) (*fixture, string) {
	// The production cache size (Config.Size's default), not the tests' small one.
	f := newFixture(b, nil, Config{Hasher: hasher, Now: time.Now, Size: 1_000_000})
	secret, _ := f.createKey(apikey.Production, time.Time{})
	f.warm(secret)
	return f, secret
}

func benchmarkHit(b *testing.B, hasher apikey.Hasher) {
	f, secret := benchFixture(b, hasher)
	n := f.st.lookups.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if f.v.Verify(secret, apikey.Production).Code != OK {
			b.Fatal("not ok")
		}
	}
	b.StopTimer()
	if got := f.st.lookups.Load(); got != n {
		b.Fatalf("%d store calls during the benchmark: not all hits", got-n)
	}
}

func BenchmarkVerifyCacheHit(b *testing.B) { benchmarkHit(b, apikey.Hasher{}) }

// With a pepper (HMAC-SHA-256).
func BenchmarkVerifyCacheHitHMAC(b *testing.B) { benchmarkHit(b, apikey.NewHasher([]byte("pepper"))) }

func BenchmarkVerifyCacheHitParallel(b *testing.B) {
	f, secret := benchFixture(b, apikey.Hasher{})
	n := f.st.lookups.Load()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if f.v.Verify(secret, apikey.Production).Code != OK {
				b.Error("not ok")
				return
			}
		}
	})
	b.StopTimer()
	if got := f.st.lookups.Load(); got != n {
		b.Fatalf("%d store calls during the benchmark: not all hits", got-n)
	}
}

func BenchmarkVerifyBadChecksum(b *testing.B) {
	f, _ := benchFixture(b, apikey.Hasher{})
	bad := badChecksum(b, apikey.Production)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if f.v.Verify(bad, apikey.Production).Code != InvalidKey {
			b.Fatal("not invalid")
		}
	}
	b.StopTimer()
	if got := f.st.lookups.Load(); got != 1 {
		b.Fatalf("store calls = %d, want only the warm-up's", got)
	}
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

func TestVerifyCacheHitAllocs(t *testing.T) {
	if raceEnabled() {
		t.Skip("the race detector changes allocation counts")
	}
	for _, tc := range []struct {
		name   string
		hasher apikey.Hasher
	}{
		{"sha256", apikey.Hasher{}},
		{"hmac", apikey.NewHasher([]byte("pepper"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, Config{Hasher: tc.hasher, Now: time.Now})
			secret, _ := f.createKey(apikey.Production, time.Time{})
			f.warm(secret)
			n := f.st.lookups.Load()
			allocs := testing.AllocsPerRun(10_000, func() {
				if f.v.Verify(secret, apikey.Production).Code != OK {
					panic("not ok")
				}
			})
			f.expectLookups(n)
			t.Logf("allocations per cache hit: %v", allocs)
			if allocs > 2 {
				t.Fatalf("cache hit allocates %v times, want ≤ 2", allocs)
			}
			bad := badChecksum(t, apikey.Production)
			if a := testing.AllocsPerRun(10_000, func() { f.v.Verify(bad, apikey.EnvUnknown) }); a > 0 {
				t.Fatalf("bad checksum allocates %v times, want 0", a)
			}
		})
	}
}
