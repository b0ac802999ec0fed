package redisstore

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
)

// The counters are strings in the instance's slot; a window's or a day's carries its end as
// its expiry, a total one none; a lease that grants nothing creates nothing.
func TestCounterLayout(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv, Options{})
	ctx := context.Background()
	now := time.Now()
	_, dayEnd, day := store.QuotaPeriod(store.Quota{Limit: 5, Period: store.QuotaDay}, now)
	_, winEnd, win := store.RateWindow(store.RateLimit{Limit: 5, Window: time.Minute}, now)
	for _, c := range []struct {
		name string
		exp  time.Time
	}{{day, dayEnd}, {win, winEnd}, {"q:total", time.Time{}}} {
		if _, _, err := s.Lease(ctx, "acme", "key_x", c.name, 5, 3, c.exp); err != nil {
			t.Fatal(err)
		}
		key := "nora:{i:acme}:c:key_x:" + c.name
		if got := s.kCounter("acme", "key_x", c.name); got != key {
			t.Errorf("counter key = %q, want %q", got, key)
		}
		if v, err := srv.Client().Get(ctx, key).Result(); err != nil || v != "3" {
			t.Errorf("%s = %q, %v; want 3", key, v, err)
		}
		at, err := srv.Client().PExpireTime(ctx, key).Result()
		switch {
		case err != nil:
			t.Errorf("PEXPIRETIME %s: %v", key, err)
		case c.exp.IsZero() && at != -1:
			t.Errorf("%s expires at %v, want never", key, at)
		case !c.exp.IsZero() && at != time.Duration(c.exp.UnixMilli())*time.Millisecond:
			t.Errorf("%s expires at %v, want %v", key, at, c.exp.UnixMilli())
		}
	}
	if !strings.HasPrefix(day, "q:day:") || !strings.HasPrefix(win, "rl:60:") {
		t.Errorf("counter names %q, %q", day, win)
	}
	if g, _, err := s.Lease(ctx, "acme", "key_none", "q:total", 0, 3, time.Time{}); err != nil || g != 0 {
		t.Fatalf("Lease with limit 0 = %d, %v", g, err)
	}
	if n, err := srv.Client().Exists(ctx, s.kCounter("acme", "key_none", "q:total")).Result(); err != nil || n != 0 {
		t.Errorf("a lease that granted nothing created the counter (%v)", err)
	}
}

// retryMarks records, for each script a client runs, whether the client may retry it.
type retryMarks struct {
	mu    sync.Mutex
	marks []bool
}

func (h *retryMarks) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *retryMarks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			h.mu.Lock()
			h.marks = append(h.marks, cmd.NoRetry())
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (h *retryMarks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Lease and Release reach the client marked not to be retried: sent again after a lost reply,
// a Lease would count its units twice (the gateway gets one grant: under-admission) and a
// Release give back twice what it was given, which would let more than the limit through.
func TestLeaseAndReleaseAreNotRetried(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv, Options{})
	h := &retryMarks{}
	s.Client().AddHook(h) // after the store's own hook: sees the commands as the client runs them
	ctx := context.Background()
	if _, _, err := s.Lease(ctx, "acme", "key_r", "q:total", 1000, 100, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "acme", "key_r", "q:total", 50); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.marks) < 2 {
		t.Fatalf("saw %d scripts, want a Lease and a Release", len(h.marks))
	}
	for i, noRetry := range h.marks {
		if !noRetry {
			t.Errorf("script %d of Lease and Release may be retried by the client", i)
		}
	}
}
