package store

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// What the stores share of usage (usage.go), so that they agree to the minute: which buckets
// a batch of counts adds to, when a bucket is dropped, which buckets a query covers, and how
// buckets are summed.

// UsageInstanceKey is the key id under which the stores keep an instance's sum of its keys
// (key ids never look like it).
const UsageInstanceKey = "_"

// MaxUsageBuckets bounds the buckets one Usage query may cover. It is a guard against a
// runaway range; the admin API asks for far fewer.
const MaxUsageBuckets = 100000

// ErrUsageRange: a Usage query covering more than MaxUsageBuckets buckets.
var ErrUsageRange = fmt.Errorf("a usage query covers at most %d buckets", MaxUsageBuckets)

// UsageAdd is what a batch of counts adds to one stored bucket: a minute or an hour of a key,
// or of its instance's sum (KeyID UsageInstanceKey).
type UsageAdd struct {
	Instance string
	KeyID    string
	G        Granularity // Minute or Hour
	Bucket   UsageBucket
}

// SumUsageCounts checks counts and sums them into the buckets they add to: each count to its
// key's minute and hour and to its instance's, the counts of one bucket summed, zero counts
// left out. The result is sorted by instance, key id, granularity and start. It refuses the
// whole batch if one count is invalid (no instance or key id, the key id UsageInstanceKey, a
// minute before 1970, a negative count), so that a store writes nothing of it.
func SumUsageCounts(counts []UsageCount) ([]UsageAdd, error) {
	type id struct {
		instance, keyID string
		g               Granularity
		start           int64
	}
	sums := make(map[id]*UsageBucket)
	add := func(c UsageCount, keyID string, g Granularity, code string, n int64) {
		start := g.Truncate(c.Minute)
		k := id{c.Instance, keyID, g, start.Unix()}
		b := sums[k]
		if b == nil {
			b = &UsageBucket{Start: start}
			sums[k] = b
		}
		if code == "" {
			b.OK += n
			return
		}
		if b.Refused == nil {
			b.Refused = make(map[string]int64)
		}
		b.Refused[code] += n
	}
	for _, c := range counts {
		if err := checkUsageCount(c); err != nil {
			return nil, err
		}
		for _, keyID := range []string{c.KeyID, UsageInstanceKey} {
			for _, g := range []Granularity{Minute, Hour} {
				if c.OK > 0 {
					add(c, keyID, g, "", c.OK)
				}
				for code, n := range c.Refused {
					if n > 0 {
						add(c, keyID, g, code, n)
					}
				}
			}
		}
	}
	out := make([]UsageAdd, 0, len(sums))
	for k, b := range sums {
		out = append(out, UsageAdd{Instance: k.instance, KeyID: k.keyID, G: k.g, Bucket: *b})
	}
	slices.SortFunc(out, func(a, b UsageAdd) int {
		return cmp.Or(strings.Compare(a.Instance, b.Instance), strings.Compare(a.KeyID, b.KeyID),
			strings.Compare(string(a.G), string(b.G)), a.Bucket.Start.Compare(b.Bucket.Start))
	})
	return out, nil
}

func checkUsageCount(c UsageCount) error {
	switch {
	case c.Instance == "" || c.KeyID == "":
		return errors.New("a usage count needs an instance and a key id")
	case c.KeyID == UsageInstanceKey:
		return fmt.Errorf("%q is not a key id", c.KeyID)
	case c.Minute.Unix() < 0:
		return fmt.Errorf("usage count of key %s: minute %v is before 1970", c.KeyID, c.Minute)
	case c.OK < 0:
		return fmt.Errorf("usage count of key %s: negative count %d", c.KeyID, c.OK)
	}
	for code, n := range c.Refused {
		if n < 0 {
			return fmt.Errorf("usage count of key %s: negative count %d of %s", c.KeyID, n, code)
		}
	}
	return nil
}

// UsageExpiry is when the bucket of g that holds t is dropped: a minute MinuteRetention after
// the end of its UTC hour, an hour (and a day, its sum) HourRetention after the end of its
// UTC day. (The Redis store keeps an hour's minutes, and a day's hours, in one hash with one
// expiry; the file store drops and hides buckets at the same times.)
func UsageExpiry(g Granularity, t time.Time) time.Time {
	if g == Minute {
		return Hour.Truncate(t).Add(time.Hour + MinuteRetention)
	}
	return Day.Truncate(t).Add(24*time.Hour + HourRetention)
}

// UsageRange checks a Usage query and returns the start of its first bucket (from truncated
// to g) and the length of a bucket. A bad granularity is ErrGranularity, and a range of more
// than MaxUsageBuckets buckets ErrUsageRange; an empty range is none of these.
func UsageRange(g Granularity, from, to time.Time) (first time.Time, d time.Duration, err error) {
	if d, err = g.Duration(); err != nil {
		return time.Time{}, 0, err
	}
	first = g.Truncate(from)
	// The buckets starting in [first, to) are ceil(span/d). (Sub saturates at 292 years,
	// which is still more than MaxUsageBuckets days.)
	if span := to.Sub(first); span > 0 && (span-1)/d >= MaxUsageBuckets {
		return time.Time{}, 0, ErrUsageRange
	}
	return first, d, nil
}

// UsageSum sums counts into buckets of one granularity.
type UsageSum struct {
	g Granularity
	m map[int64]*UsageBucket
}

// NewUsageSum returns an empty sum of buckets of g.
func NewUsageSum(g Granularity) *UsageSum {
	return &UsageSum{g: g, m: make(map[int64]*UsageBucket)}
}

// Add adds n requests let through (code "") or refused with code to the bucket holding t.
func (s *UsageSum) Add(t time.Time, code string, n int64) {
	if n == 0 {
		return
	}
	start := s.g.Truncate(t)
	b := s.m[start.Unix()]
	if b == nil {
		b = &UsageBucket{Start: start}
		s.m[start.Unix()] = b
	}
	if code == "" {
		b.OK += n
		return
	}
	if b.Refused == nil {
		b.Refused = make(map[string]int64)
	}
	b.Refused[code] += n
}

// Buckets returns the non-empty buckets, oldest first.
func (s *UsageSum) Buckets() []UsageBucket {
	var out []UsageBucket
	for _, k := range slices.Sorted(maps.Keys(s.m)) {
		if b := s.m[k]; b.OK != 0 || len(b.Refused) != 0 {
			out = append(out, *b)
		}
	}
	return out
}
