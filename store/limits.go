package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Per-key rate limits and quotas. A key's RateLimit bounds its requests per window across
// every gateway sharing the store; its Quota bounds its successful requests per UTC day,
// per UTC month or in all. The gateways count locally and lease units from counters kept
// in the store (Leaser), in the background: within its limits a key costs no store call on
// the request path, and a quota is never exceeded (a unit is used only once leased).

// RateLimit is at most Limit requests per Window.
type RateLimit struct {
	Limit  int64
	Window time.Duration
}

// Quota is at most Limit successful requests per Period.
type Quota struct {
	Limit  int64
	Period string // QuotaDay, QuotaMonth or QuotaTotal
}

// Quota periods (UTC calendar days and months).
const (
	QuotaDay   = "day"
	QuotaMonth = "month"
	QuotaTotal = "total"
)

// Limits of the values.
const (
	MaxRateLimit       = 1_000_000
	MaxRateLimitWindow = 24 * time.Hour
	MaxQuota           = 1_000_000_000_000
)

// Field names of the API for the limits, as api_key.updated lists them.
const (
	FieldRateLimit = "rate_limit"
	FieldQuota     = "quota"
)

// CheckRateLimit checks a rate limit: nil, or 1–1,000,000 requests per 1–86,400 whole
// seconds.
func CheckRateLimit(r *RateLimit) error {
	if r == nil {
		return nil
	}
	if r.Limit < 1 || r.Limit > MaxRateLimit {
		return fmt.Errorf("rate_limit.limit must be from 1 to %d", MaxRateLimit)
	}
	if r.Window < time.Second || r.Window > MaxRateLimitWindow || r.Window%time.Second != 0 {
		return errors.New("rate_limit.window_seconds must be a whole number from 1 to 86400")
	}
	return nil
}

// CheckQuota checks a quota: nil, or 1–10^12 successful requests per day, month or in all.
func CheckQuota(q *Quota) error {
	if q == nil {
		return nil
	}
	if q.Limit < 1 || q.Limit > MaxQuota {
		return fmt.Errorf("quota.limit must be from 1 to %d", int64(MaxQuota))
	}
	switch q.Period {
	case QuotaDay, QuotaMonth, QuotaTotal:
		return nil
	}
	return errors.New(`quota.period must be "day", "month" or "total"`)
}

// QuotaPeriod returns the period of q that holds t: its start (the zero time for total), its
// end (zero: never) and a name for its counter ("q:day:2026-12-01", "q:month:2026-12",
// "q:total").
func QuotaPeriod(q Quota, t time.Time) (start, end time.Time, counter string) {
	t = t.UTC()
	switch q.Period {
	case QuotaDay:
		start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1), "q:day:" + start.Format("2006-01-02")
	case QuotaMonth:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0), "q:month:" + start.Format("2006-01")
	}
	return time.Time{}, time.Time{}, "q:total"
}

// RateWindow returns the rate-limit window of r that holds t (windows are aligned to the
// Unix epoch), its end, and a name for its counter ("rl:60:29936064").
func RateWindow(r RateLimit, t time.Time) (start, end time.Time, counter string) {
	w := int64(r.Window / time.Second)
	if w < 1 {
		w = 1
	}
	n := t.Unix() / w
	start = time.Unix(n*w, 0).UTC()
	return start, start.Add(time.Duration(w) * time.Second), fmt.Sprintf("rl:%d:%d", w, n)
}

// Leaser keeps a key's limit counters, from which gateways lease units atomically. Every
// Store implements it.
type Leaser interface {
	// Lease takes up to n units from the named counter of the key, never letting it pass
	// limit, and returns how many were granted (0 to n) and the counter's value afterwards.
	// A counter that does not exist starts at 0; it is dropped after expireAt (zero: kept).
	Lease(ctx context.Context, instance, keyID, counter string, limit, n int64, expireAt time.Time) (granted, used int64, err error)
	// Release gives back n leased units that were not used (never taking the counter below 0).
	Release(ctx context.Context, instance, keyID, counter string, n int64) error
	// Used reads a counter (0 if it does not exist).
	Used(ctx context.Context, instance, keyID, counter string) (int64, error)
}

// CounterRef names one limit counter of a key of an instance.
type CounterRef struct {
	KeyID, Counter string
}

// UsedMany reads several counters of one instance's keys in one go when the store can
// (a Redis store: one MGET, the counters being on the instance's slot), else one Used each.
func UsedMany(ctx context.Context, l Leaser, instance string, refs []CounterRef) ([]int64, error) {
	if m, ok := l.(interface {
		UsedMany(ctx context.Context, instance string, refs []CounterRef) ([]int64, error)
	}); ok {
		return m.UsedMany(ctx, instance, refs)
	}
	out := make([]int64, len(refs))
	for i, r := range refs {
		n, err := l.Used(ctx, instance, r.KeyID, r.Counter)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}
