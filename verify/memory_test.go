package verify

import (
	"context"
	"flag"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

var memoryKeys = flag.Int("memory-keys", 200_000, "keys BenchmarkCacheMemory fills the cache with (1000000 for the target's figure)")

// synthStore answers every hash with a fresh record, decoded the way a store decodes one
// (new strings for the id and the instance), as Redis answers a gateway's lookups.
type synthStore struct{ n int }

func (s *synthStore) LookupHash(_ context.Context, h apikey.Hash) (store.Lookup, error) {
	s.n++
	id := "key_" + strings.Repeat("x", 20) + string(rune('a'+s.n%26)) + "abc" // key_ and 24 characters
	return store.Lookup{ID: strings.Clone(id), Instance: strings.Clone("acme-production"), Environment: apikey.Production}, nil
}
func (s *synthStore) TouchKeys(context.Context, []store.Touch) error { return nil }
func (s *synthStore) Subscribe(w store.Watcher) func() {
	w.SetHealthy(true) // a store with no invalidations to miss
	return func() {}
}

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCacheMemory fills a verifier of the production cache size with -memory-keys
// distinct valid keys (plain, unrestricted: the common case) and reports the heap they and the
// cache hold, per 1,000,000 keys. Run once: go test -run '^$' -bench CacheMemory -benchtime 1x
// -memory-keys 1000000 ./verify/
func BenchmarkCacheMemory(b *testing.B) {
	n := *memoryKeys
	for b.Loop() {
		before := heapNow()
		st := &synthStore{}
		v, err := New(st, Config{Size: 1_000_000, TTL: time.Hour, Now: time.Now, LookupTimeout: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		empty := heapNow()
		for range n {
			secret, err := apikey.Generate(apikey.Production)
			if err != nil {
				b.Fatal(err)
			}
			if v.Verify(secret, apikey.Production).Code != OK {
				b.Fatal("a synthesized key was refused")
			}
		}
		v.cache.CleanUp()
		full := heapNow()
		if path := os.Getenv("KEYGATE_MEMPROFILE"); path != "" {
			// The heap as the full cache holds it (go test -memprofile writes it after Close).
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		if st.n != n {
			b.Fatalf("%d lookups for %d keys", st.n, n)
		}
		perMillion := func(x uint64) float64 { return float64(x) / float64(n) * 1e6 / (1 << 20) }
		b.ReportMetric(float64(empty-before)/(1<<20), "MiB-empty-cache")
		b.ReportMetric(perMillion(full-empty), "MiB-per-1M-keys")
		b.ReportMetric(float64(full-empty)/float64(n), "B/key")
		runtime.KeepAlive(v)
		v.Close()
	}
}
