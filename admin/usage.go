package admin

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/keygate/keygate/store"
)

// MaxUsageBuckets is the most buckets one usage answer holds (48 hours of minutes).
const MaxUsageBuckets = 2880

// Usage is the API's usage object: a key's (or an instance's) requests per bucket, every
// bucket of [from, to) present (zeros included), oldest first.
type Usage struct {
	Object      string        `json:"object"`
	Instance    string        `json:"instance"`
	KeyID       *string       `json:"key_id"` // null for an instance's usage
	Granularity string        `json:"granularity"`
	From        time.Time     `json:"from"`
	To          time.Time     `json:"to"`
	Data        []UsageBucket `json:"data"`
	// Total sums the data.
	Total UsageTotal `json:"total"`
}

// UsageBucket is one bucket: the requests let through (ok) and those refused, by error code
// ({} when none).
type UsageBucket struct {
	Start   time.Time        `json:"start"`
	OK      int64            `json:"ok"`
	Refused map[string]int64 `json:"refused"`
}

// UsageTotal sums a usage answer's buckets.
type UsageTotal struct {
	OK      int64            `json:"ok"`
	Refused map[string]int64 `json:"refused"`
}

// defaultUsageSpan is the span of an answer without `from`, per granularity.
var defaultUsageSpan = map[store.Granularity]time.Duration{
	store.Minute: time.Hour,
	store.Hour:   24 * time.Hour,
	store.Day:    30 * 24 * time.Hour,
}

// usageQuery reads granularity (default hour), to (default now) and from (default: a span
// before to that depends on the granularity). Times are RFC 3339 (any offset) or a date
// (YYYY-MM-DD, 00:00 UTC); from is rounded down and to up to the granularity. Anything
// else, from not before to, or more than MaxUsageBuckets buckets is refused.
func usageQuery(q url.Values, now time.Time) (g store.Granularity, from, to time.Time, err error) {
	for name := range q {
		switch name {
		case "from", "to", "granularity":
		default:
			return "", from, to, errInvalid("Unknown query parameter %q.", name)
		}
	}
	g = store.Hour
	if q.Has("granularity") {
		g = store.Granularity(q.Get("granularity"))
	}
	step, gerr := g.Duration()
	if gerr != nil {
		return "", from, to, errInvalid("granularity must be minute, hour or day.")
	}
	to = now.UTC()
	if q.Has("to") {
		if to, err = usageTime("to", q.Get("to")); err != nil {
			return "", from, to, err
		}
	}
	from = to.Add(-defaultUsageSpan[g])
	if q.Has("from") {
		if from, err = usageTime("from", q.Get("from")); err != nil {
			return "", from, to, err
		}
	}
	if !from.Before(to) {
		return "", from, to, errInvalid("from must be before to.")
	}
	from = g.Truncate(from)
	if t := g.Truncate(to); t.Before(to) {
		to = t.Add(step)
	}
	if n := to.Sub(from) / step; n > MaxUsageBuckets {
		return "", from, to, errInvalid("The range holds %d %s buckets; at most %d fit in one answer: narrow it or use a coarser granularity.", n, g, MaxUsageBuckets)
	}
	return g, from, to, nil
}

func usageTime(name, s string) (time.Time, error) {
	var t time.Time
	var err error
	if len(s) == len("2006-01-02") {
		t, err = time.Parse("2006-01-02", s)
	} else {
		t, err = time.Parse(time.RFC3339Nano, s)
	}
	if err != nil || t.Year() < 1970 || t.Year() > 9999 {
		return time.Time{}, errInvalid("%s must be an RFC 3339 time (2026-12-01T15:04:05Z) or a date (YYYY-MM-DD).", name)
	}
	return t.UTC(), nil
}

// usage answers GET /v1/instances/{instance}/keys/{id}/usage (one key: 404 if it does not
// exist) and GET /v1/instances/{instance}/usage (the instance's keys summed).
func (a *API) usage(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	g, from, to, err := usageQuery(r.URL.Query(), a.Now())
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if id != "" {
		_, err = a.Store.Key(ctx, instance, id)
	} else {
		_, err = a.Store.Instance(ctx, instance)
	}
	if err != nil {
		return err
	}
	return a.writeUsage(ctx, w, instance, id, g, from, to)
}

func (a *API) writeUsage(ctx context.Context, w http.ResponseWriter, instance, id string, g store.Granularity, from, to time.Time) error {
	buckets, err := a.Store.Usage(ctx, instance, id, g, from, to)
	if err != nil {
		return err
	}
	out := Usage{Object: "usage", Instance: instance, Granularity: string(g), From: from, To: to,
		Total: UsageTotal{Refused: map[string]int64{}}}
	if id != "" {
		out.KeyID = &id
	}
	step, _ := g.Duration()
	out.Data = make([]UsageBucket, 0, int(to.Sub(from)/step))
	next := 0
	for s := from; s.Before(to); s = s.Add(step) {
		b := UsageBucket{Start: s, Refused: map[string]int64{}}
		for next < len(buckets) && buckets[next].Start.Before(s) {
			next++ // not aligned: cannot happen with a store keeping the contract
		}
		if next < len(buckets) && buckets[next].Start.Equal(s) {
			b.OK = buckets[next].OK
			for code, n := range buckets[next].Refused {
				b.Refused[code] = n
				out.Total.Refused[code] += n
			}
			out.Total.OK += b.OK
			next++
		}
		out.Data = append(out.Data, b)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
