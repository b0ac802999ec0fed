package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/store"
)

// The limits of a key (rate_limit, quota) as requests send them and key objects show them,
// and the quota use a key object reports.

// RateLimit is a key's rate limit: at most Limit requests per WindowSeconds, across every
// gateway sharing the store.
type RateLimit struct {
	Limit         int64 `json:"limit"`
	WindowSeconds int64 `json:"window_seconds"`
}

// Quota is a key's quota: at most Limit successful requests per UTC calendar day ("day"),
// per UTC calendar month ("month") or in all ("total").
type Quota struct {
	Limit  int64  `json:"limit"`
	Period string `json:"period"`
}

func rateLimitJSON(r *store.RateLimit) *RateLimit {
	if r == nil {
		return nil
	}
	return &RateLimit{Limit: r.Limit, WindowSeconds: int64(r.Window / time.Second)}
}

func quotaJSON(q *store.Quota) *Quota {
	if q == nil {
		return nil
	}
	return &Quota{Limit: q.Limit, Period: q.Period}
}

// limitObject reads a field that must be null (nil) or an object holding exactly the
// members named (no other, none missing).
func limitObject(field string, raw json.RawMessage, shape string, members ...string) (map[string]json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	bad := errInvalid("%s must be null or an object %s.", field, shape)
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return nil, bad
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(t, &m); err != nil {
		return nil, bad
	}
	for name := range m {
		if !slices.Contains(members, name) {
			return nil, errInvalid("%s has no member %q: it is an object %s.", field, clipName(name), shape)
		}
	}
	for _, name := range members {
		if _, ok := m[name]; !ok {
			return nil, errInvalid("%s.%s is required: %s is an object %s.", field, name, field, shape)
		}
	}
	return m, nil
}

// wholeNumber reads a JSON integer from min to max: a number written without a fraction or
// an exponent (not a string, not 1.5).
func wholeNumber(field string, raw json.RawMessage, min, max int64) (int64, error) {
	n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	if err != nil || n < min || n > max {
		return 0, errInvalid("%s must be a whole number from %d to %d.", field, min, max)
	}
	return n, nil
}

const (
	rateLimitShape = `{"limit": 1 to 1000000, "window_seconds": 1 to 86400}`
	quotaShape     = `{"limit": 1 to 1000000000000, "period": "day", "month" or "total"}`
)

// parseRateLimit reads rate_limit: null (no limit) or {"limit", "window_seconds"}.
func parseRateLimit(raw json.RawMessage) (*store.RateLimit, error) {
	m, err := limitObject("rate_limit", raw, rateLimitShape, "limit", "window_seconds")
	if err != nil || m == nil {
		return nil, err
	}
	limit, err := wholeNumber("rate_limit.limit", m["limit"], 1, store.MaxRateLimit)
	if err != nil {
		return nil, err
	}
	// Checked before it becomes a Duration, which a huge number would overflow.
	window, err := wholeNumber("rate_limit.window_seconds", m["window_seconds"], 1, int64(store.MaxRateLimitWindow/time.Second))
	if err != nil {
		return nil, err
	}
	r := &store.RateLimit{Limit: limit, Window: time.Duration(window) * time.Second}
	if err := store.CheckRateLimit(r); err != nil {
		return nil, errInvalid("%v.", err)
	}
	return r, nil
}

// parseQuota reads quota: null (no quota) or {"limit", "period"}.
func parseQuota(raw json.RawMessage) (*store.Quota, error) {
	m, err := limitObject("quota", raw, quotaShape, "limit", "period")
	if err != nil || m == nil {
		return nil, err
	}
	limit, err := wholeNumber("quota.limit", m["limit"], 1, store.MaxQuota)
	if err != nil {
		return nil, err
	}
	var period string
	if json.Unmarshal(m["period"], &period) != nil {
		return nil, errInvalid(`quota.period must be "day", "month" or "total".`)
	}
	q := &store.Quota{Limit: limit, Period: period}
	if err := store.CheckQuota(q); err != nil {
		return nil, errInvalid("%v.", err)
	}
	return q, nil
}

func clipName(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// quotaUse fills out's quota_used and quota_resets_at for a key with a quota (a key
// without one keeps null for both). quota_used is the counter of the current period
// (store.QuotaPeriod at now), which counts the units gateways have leased: it may run a
// little ahead of the requests actually served. quota_resets_at is the end of the period
// (null for "total").
func (a *API) quotaUse(ctx context.Context, out *Key, k store.Key, now time.Time) error {
	if k.Quota == nil {
		return nil
	}
	_, end, counter := store.QuotaPeriod(*k.Quota, now)
	out.QuotaResetsAt = timePtr(end)
	used, err := a.Store.Used(ctx, k.Instance, k.ID, counter)
	if err != nil {
		return err
	}
	out.QuotaUsed = &used
	return nil
}

// keyWithUse is the key object of k with its quota use. A failure to read the use is an
// error (the caller answers 503), except after a write (afterWrite), whose answer must not
// say it failed: there the failure is logged and quota_used stays null.
func (a *API) keyWithUse(ctx context.Context, k store.Key, now time.Time, afterWrite bool) (Key, error) {
	out := keyJSON(k, now)
	if err := a.quotaUse(ctx, &out, k, now); err != nil {
		if !afterWrite {
			return Key{}, err
		}
		a.Logger.Warn("reading a key's quota use", zap.String("key_id", k.ID), zap.Error(err))
	}
	return out, nil
}
