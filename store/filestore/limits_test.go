package filestore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/store"
)

// Quota counters are in the file and survive a restart (a quota is never exceeded across
// restarts); rate-limit counters are in memory and start again; expired counters are swept
// when the file is opened.
func TestCountersAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	q := store.Quota{Limit: 10, Period: store.QuotaDay}
	_, end, day := store.QuotaPeriod(q, now)
	_, wend, win := store.RateWindow(store.RateLimit{Limit: 10, Window: time.Hour}, now)
	for _, c := range []struct {
		name string
		exp  time.Time
	}{{day, end}, {"q:total", time.Time{}}, {win, wend}, {"q:day:2000-01-01", now.Add(100 * time.Millisecond)}} {
		if g, _, err := s.Lease(ctx, "acme", "key_1", c.name, 10, 7, c.exp); err != nil || g != 7 {
			t.Fatalf("Lease(%s) = %d, %v", c.name, g, err)
		}
	}
	s.Close()
	time.Sleep(150 * time.Millisecond) // the last counter expires meanwhile

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, want := range map[string]int64{day: 7, "q:total": 7, win: 0, "q:day:2000-01-01": 0} {
		if used, err := s.Used(ctx, "acme", "key_1", name); err != nil || used != want {
			t.Errorf("after reopen, Used(%s) = %d, %v; want %d", name, used, err, want)
		}
	}
	if g, used, err := s.Lease(ctx, "acme", "key_1", day, 10, 7, end); err != nil || g != 3 || used != 10 {
		t.Errorf("after reopen, Lease(%s) = %d granted, %d used, %v; want 3, 10", day, g, used, err)
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bCounters).Get(counterKey("acme", "key_1", "q:day:2000-01-01")); v != nil {
			t.Errorf("the expired counter is still in the file after reopen")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Which counters live in memory depends on their names: pin the names store makes.
func TestCounterNames(t *testing.T) {
	now := time.Now()
	if _, _, n := store.RateWindow(store.RateLimit{Limit: 1, Window: time.Second}, now); !strings.HasPrefix(n, rateCounterPrefix) {
		t.Errorf("rate window counter %q does not start with %q", n, rateCounterPrefix)
	}
	for _, p := range []string{store.QuotaDay, store.QuotaMonth, store.QuotaTotal} {
		if _, _, n := store.QuotaPeriod(store.Quota{Limit: 1, Period: p}, now); strings.HasPrefix(n, rateCounterPrefix) {
			t.Errorf("quota counter %q would be kept in memory", n)
		}
	}
}
