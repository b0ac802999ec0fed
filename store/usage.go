package store

import (
	"context"
	"errors"
	"time"
)

// Usage: every gateway counts, per key and per minute, the requests it let through and those
// it refused (by error code) once the key was known, and adds them to the store in the
// background (package usage). The store keeps minutes for MinuteRetention and hours for
// HourRetention, per key and summed per instance; days are summed from hours.

// Granularity of a usage series.
type Granularity string

// The granularities.
const (
	Minute Granularity = "minute"
	Hour   Granularity = "hour"
	Day    Granularity = "day"
)

// How long usage is kept at each granularity (days are summed from hours).
const (
	MinuteRetention = 48 * time.Hour
	HourRetention   = 90 * 24 * time.Hour
)

// ErrGranularity: a granularity other than minute, hour or day.
var ErrGranularity = errors.New(`granularity must be "minute", "hour" or "day"`)

// Duration is the length of one bucket (a day is 24 hours: buckets are UTC days).
func (g Granularity) Duration() (time.Duration, error) {
	switch g {
	case Minute:
		return time.Minute, nil
	case Hour:
		return time.Hour, nil
	case Day:
		return 24 * time.Hour, nil
	}
	return 0, ErrGranularity
}

// Truncate returns the start of the bucket of g that holds t, in UTC.
func (g Granularity) Truncate(t time.Time) time.Time {
	d, err := g.Duration()
	if err != nil {
		d = time.Minute
	}
	return t.UTC().Truncate(d)
}

// UsageCount is what one gateway counted for one key in one minute.
type UsageCount struct {
	Instance string
	KeyID    string
	Minute   time.Time // the minute's start, UTC
	OK       int64
	// Refused counts the refusals by error code ("api_key_revoked", …); nil when none.
	Refused map[string]int64
}

// UsageBucket is one bucket of a usage series.
type UsageBucket struct {
	Start   time.Time // UTC, aligned to the granularity
	OK      int64
	Refused map[string]int64 // nil when none
}

// UsageStore keeps the usage counts. Every Store implements it.
type UsageStore interface {
	// AddUsage adds counts (any number of keys, instances and minutes) to the key's minute
	// and hour buckets and to its instance's, and drops buckets past their retention.
	// Counts of minutes older than MinuteRetention still count in their hour. A failed call
	// may have added part of counts.
	AddUsage(ctx context.Context, counts []UsageCount) error
	// Usage returns the non-empty buckets of g that start in [from, to), oldest first, of
	// one key (keyID) or of every key of the instance summed (keyID ""). Buckets past their
	// retention are gone. It does not check that the key or the instance exists.
	Usage(ctx context.Context, instance, keyID string, g Granularity, from, to time.Time) ([]UsageBucket, error)
}
