package verify

import (
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
)

// SPEC §9 item 1: Verify on a cache hit (parse, checksum, hash, cache get, checks) in at most
// 1 µs and 2 allocations.

func benchFixture(b *testing.B, hasher apikey.Hasher) (*fixture, string) {
	// The production cache size (SPEC §3's default), not the tests' small one.
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
