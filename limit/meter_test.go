package limit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/store"
)

// memLeaser is an in-memory store.Leaser with the stores' semantics (the contract suite tests
// the real ones), counting its calls.
type memLeaser struct {
	mu       sync.Mutex
	counters map[string]int64
	calls    atomic.Int64
	fail     atomic.Bool
	delay    time.Duration
}

func newMemLeaser() *memLeaser { return &memLeaser{counters: map[string]int64{}} }

func (l *memLeaser) Lease(ctx context.Context, instance, keyID, counter string, limit, n int64, expireAt time.Time) (int64, int64, error) {
	l.calls.Add(1)
	if l.delay > 0 {
		time.Sleep(l.delay)
	}
	if l.fail.Load() {
		return 0, 0, errors.New("unreachable")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := instance + "/" + keyID + "/" + counter
	used := l.counters[k]
	grant := max(0, min(n, limit-used))
	l.counters[k] = used + grant
	return grant, used + grant, nil
}

func (l *memLeaser) Release(ctx context.Context, instance, keyID, counter string, n int64) error {
	l.calls.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	k := instance + "/" + keyID + "/" + counter
	l.counters[k] = max(0, l.counters[k]-n)
	return nil
}

func (l *memLeaser) Used(ctx context.Context, instance, keyID, counter string) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.counters[instance+"/"+keyID+"/"+counter], nil
}

func (l *memLeaser) used(counter string) int64 {
	v, _ := l.Used(context.Background(), "i", "k", counter)
	return v
}

// Several gateways (meters) on one store, each with a share of the offered load, never let
// more than the limit through in a window, and together let at least 90 % through when the
// load is twice the limit, however it is spread.
func TestRateLimitAcrossMeters(t *testing.T) {
	for _, spread := range [][]float64{{1, 1, 1}, {0.98, 0.01, 0.01}, {0.5, 0.5, 0}} {
		st := newMemLeaser()
		var meters []*KeyMeter
		for range spread {
			m := NewMeter(st, MeterConfig{})
			t.Cleanup(m.Close)
			meters = append(meters, m.Key("i", "k"))
		}
		rl := &store.RateLimit{Limit: 300, Window: time.Second}
		// Wait for the start of a window, then offer 600 requests spread over the window.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		start := time.Now()
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for g, share := range spread {
			n := int(600 * share)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					// Spread over 0.8 s of the window.
					time.Sleep(time.Until(start.Add(time.Duration(i) * 800 * time.Millisecond / time.Duration(max(n, 1)))))
					if meters[g].Take(rl, nil).Outcome == Allowed {
						allowed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if time.Since(start) > 950*time.Millisecond {
			t.Logf("spread %v: the offered load overran the window; skipping the bound", spread)
			continue
		}
		got := allowed.Load()
		t.Logf("spread %v: %d of 600 allowed (limit 300), %d store calls", spread, got, st.calls.Load())
		if got > 300 || got < 270 {
			t.Errorf("spread %v: %d allowed, want 270-300", spread, got)
		}
	}
}

// A quota is never exceeded, whatever the concurrency; unspent units are given back on
// Close and another meter can spend them.
func TestQuotaNeverExceeded(t *testing.T) {
	st := newMemLeaser()
	q := &store.Quota{Limit: 1000, Period: store.QuotaTotal}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	meters := make([]*Meter, 3)
	for i := range meters {
		meters[i] = NewMeter(st, MeterConfig{})
	}
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			km := meters[g%3].Key("i", "k")
			for range 200 {
				if km.Take(nil, q).Outcome == Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n > 1000 || n < 900 {
		t.Fatalf("%d allowed of a 1000 quota under 2400 requests", n)
	}
	held := st.used("q:total") - allowed.Load()
	for _, m := range meters {
		m.Close()
	}
	if after := st.used("q:total"); after != allowed.Load() {
		t.Fatalf("after Close the counter says %d, %d were spent (%d were held)", after, allowed.Load(), held)
	}
	fresh := NewMeter(st, MeterConfig{})
	defer fresh.Close()
	km := fresh.Key("i", "k")
	more := int64(0)
	for km.Take(nil, q).Outcome == Allowed {
		more++
	}
	if allowed.Load()+more != 1000 {
		t.Fatalf("%d + %d spent, want exactly the quota", allowed.Load(), more)
	}
	if d := km.Take(nil, q); d.Outcome != QuotaExceeded || d.RetryAfter <= 0 {
		t.Fatalf("spent quota: %+v", d)
	}
}

// Within its limits a key costs no store call per request: leases come in the background,
// far fewer than the requests.
func TestFewStoreCallsPerRequest(t *testing.T) {
	st := newMemLeaser()
	m := NewMeter(st, MeterConfig{})
	defer m.Close()
	km := m.Key("i", "k")
	rl := &store.RateLimit{Limit: 1_000_000, Window: time.Minute}
	q := &store.Quota{Limit: 1_000_000, Period: store.QuotaDay}
	for i := range 20000 {
		if d := km.Take(rl, q); d.Outcome != Allowed {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	if calls := st.calls.Load(); calls > 400 {
		t.Fatalf("20,000 requests made %d store calls", calls)
	} else {
		t.Logf("20,000 requests, %d store calls", calls)
	}
}

// The headers' figures: the limit, what is left, the window's end; a refusal says how long
// until the window ends; a request refused by the rate limit spends no quota.
func TestDecisionFigures(t *testing.T) {
	st := newMemLeaser()
	m := NewMeter(st, MeterConfig{})
	defer m.Close()
	km := m.Key("i", "k")
	rl := &store.RateLimit{Limit: 5, Window: time.Hour}
	q := &store.Quota{Limit: 100, Period: store.QuotaMonth}
	for i := range 5 {
		d := km.Take(rl, q)
		if d.Outcome != Allowed || d.Limit != 5 || d.Remaining != int64(4-i) || d.Reset.IsZero() {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := km.Take(rl, q)
	if d.Outcome != RateLimited || d.Remaining != 0 || d.RetryAfter <= 0 || d.RetryAfter > time.Hour {
		t.Fatalf("over the limit: %+v", d)
	}
	_, _, name := store.QuotaPeriod(*q, time.Now())
	m.Close()
	if used := st.used(name); used != 5 {
		t.Fatalf("quota used %d after 5 allowed and 1 refused request", used)
	}
}

// With the store unreachable and no unit held, a limited key is refused at once (not after a
// timeout per request).
func TestUnreachableStore(t *testing.T) {
	st := newMemLeaser()
	st.fail.Store(true)
	m := NewMeter(st, MeterConfig{})
	defer m.Close()
	km := m.Key("i", "k")
	q := &store.Quota{Limit: 10, Period: store.QuotaTotal}
	if d := km.Take(nil, q); d.Outcome != Unreachable {
		t.Fatalf("%+v", d)
	}
	before := st.calls.Load()
	for range 100 {
		km.Take(nil, q)
	}
	if st.calls.Load() != before {
		t.Fatal("every request asked the unreachable store again")
	}
}

// grantAll grants every lease in full: the benchmark's key never reaches its limits.
type grantAll struct{ memLeaser }

func (g *grantAll) Lease(ctx context.Context, instance, keyID, counter string, limit, n int64, expireAt time.Time) (int64, int64, error) {
	g.calls.Add(1)
	return n, 0, nil
}

// The per-request cost of a key with a rate limit and a quota, within both (target ≤ 150 ns,
// 0 allocations).
func BenchmarkTakeLimitedKey(b *testing.B) {
	st := &grantAll{memLeaser: *newMemLeaser()}
	m := NewMeter(st, MeterConfig{})
	defer m.Close()
	km := m.Key("i", "k")
	rl := &store.RateLimit{Limit: 1_000_000, Window: time.Hour}
	q := &store.Quota{Limit: 1_000_000_000_000, Period: store.QuotaTotal}
	b.ReportAllocs()
	for b.Loop() {
		if km.Take(rl, q).Outcome != Allowed {
			b.Fatal("refused")
		}
	}
}
