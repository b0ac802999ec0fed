package usage

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/store"
)

// memStore is a UsageStore that sums what it is given, and fails while failing is set. The
// stores' own behaviour is the contract suite's (store/storetest); this one only lets the
// counter and flusher be checked exactly.
type memStore struct {
	mu      sync.Mutex
	sums    map[[3]string]int64 // instance, key, minute+code → n
	calls   int
	failing atomic.Bool
}

func (m *memStore) AddUsage(_ context.Context, counts []store.UsageCount) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.failing.Load() {
		return errors.New("store down")
	}
	if m.sums == nil {
		m.sums = map[[3]string]int64{}
	}
	for _, c := range counts {
		min := c.Minute.Format("15:04")
		m.sums[[3]string{c.Instance, c.KeyID, min + " ok"}] += c.OK
		for code, n := range c.Refused {
			m.sums[[3]string{c.Instance, c.KeyID, min + " " + code}] += n
		}
	}
	return nil
}

func (m *memStore) Usage(context.Context, string, string, store.Granularity, time.Time, time.Time) ([]store.UsageBucket, error) {
	return nil, nil
}

func (m *memStore) get(instance, key, what string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sums[[3]string{instance, key, what}]
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time   { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func at(hh, mm, ss int) time.Time { return time.Date(2026, 12, 2, hh, mm, ss, 0, time.UTC) }
func sum(cs []store.UsageCount) (ok, refused int64) {
	for _, c := range cs {
		ok += c.OK
		for _, n := range c.Refused {
			refused += n
		}
	}
	return
}

func TestCounterConcurrentAddsLoseNothing(t *testing.T) {
	var clk clock
	clk.set(at(10, 0, 5))
	c := NewCounter(clk.now)
	var wg sync.WaitGroup
	var drained []store.UsageCount
	var dmu sync.Mutex
	stop, stopped := make(chan struct{}), make(chan struct{})
	// Drains run while the adds do, as the flusher's would.
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			d := c.Drain()
			dmu.Lock()
			drained = append(drained, d...)
			dmu.Unlock()
		}
	}()
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				key := []string{"key_a", "key_b", "key_c"}[(g+i)%3]
				if i%10 == 0 {
					c.Add("inst", key, "api_key_revoked")
				} else {
					c.Add("inst", key, "")
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-stopped
	dmu.Lock()
	drained = append(drained, c.Drain()...)
	dmu.Unlock()
	ok, refused := sum(drained)
	if ok != 8*4500 || refused != 8*500 {
		t.Fatalf("counted %d ok and %d refused, want %d and %d", ok, refused, 8*4500, 8*500)
	}
	if again := c.Drain(); len(again) != 0 {
		t.Fatalf("a second drain returned %d counts", len(again))
	}
}

func TestCounterSplitsMinutesKeysAndCodes(t *testing.T) {
	var clk clock
	c := NewCounter(clk.now)
	clk.set(at(10, 0, 59))
	c.Add("a", "key_1", "")
	c.Add("a", "key_1", "rate_limit_exceeded")
	c.Add("b", "key_1", "") // same key id in another instance: apart
	clk.set(at(10, 1, 0))
	c.Add("a", "key_1", "")
	c.Add("a", "key_1", "")
	c.Add("a", "key_2", "quota_exceeded")
	m := &memStore{}
	if err := m.AddUsage(context.Background(), c.Drain()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in, key, what string
		want          int64
	}{
		{"a", "key_1", "10:00 ok", 1}, {"a", "key_1", "10:00 rate_limit_exceeded", 1},
		{"b", "key_1", "10:00 ok", 1}, {"a", "key_1", "10:01 ok", 2},
		{"a", "key_2", "10:01 quota_exceeded", 1}, {"a", "key_2", "10:01 ok", 0},
	} {
		if got := m.get(tc.in, tc.key, tc.what); got != tc.want {
			t.Errorf("%s %s %s = %d, want %d", tc.in, tc.key, tc.what, got, tc.want)
		}
	}
}

func TestFlusherKeepsCountsWhileTheStoreFails(t *testing.T) {
	c := NewCounter(nil)
	m := &memStore{}
	m.failing.Store(true)
	var pending atomic.Int64
	f := StartFlusher(c, m, FlusherOptions{Interval: time.Hour, OnFlush: func(_, p int, _ error) { pending.Store(int64(p)) }})
	defer f.Close()
	now := time.Now().UTC().Truncate(time.Minute).Format("15:04")
	for range 3 {
		c.Add("i", "key_x", "")
	}
	if err := f.Flush(context.Background()); err == nil {
		t.Fatal("a flush to a failing store said nothing")
	}
	if pending.Load() != 1 {
		t.Fatalf("pending after a failed flush = %d, want 1", pending.Load())
	}
	c.Add("i", "key_x", "")
	m.failing.Store(false)
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := m.get("i", "key_x", now+" ok")
	if time.Now().UTC().Truncate(time.Minute).Format("15:04") != now {
		t.Skip("the minute turned during the test")
	}
	if got != 4 {
		t.Fatalf("after the store came back it holds %d, want 4", got)
	}
}

func TestFlusherFlushesOnItsOwnAndOnClose(t *testing.T) {
	c := NewCounter(nil)
	m := &memStore{}
	f := StartFlusher(c, m, FlusherOptions{Interval: 20 * time.Millisecond})
	c.Add("i", "key_y", "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		n := len(m.sums)
		m.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flusher wrote nothing within 5 s at a 20 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	f2 := StartFlusher(c, m, FlusherOptions{Interval: time.Hour})
	f.Close()
	c.Add("i", "key_z", "api_key_expired")
	f2.Close() // the last flush writes what is left
	var total int64
	m.mu.Lock()
	for k, n := range m.sums {
		if k[1] == "key_z" {
			total += n
		}
	}
	m.mu.Unlock()
	if total != 1 {
		t.Fatalf("Close left key_z's count unwritten (%d)", total)
	}
}

func BenchmarkCounterAdd(b *testing.B) {
	c := NewCounter(nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add("nora-prod", "key_0123456789abcdefghijklmn", "")
		}
	})
}
