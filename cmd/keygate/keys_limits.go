package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/store"
)

// limitFlags are the flags that limit a key (create and update): --rate-limit N/DURATION
// and --quota N/PERIOD, checked with the API's own rules before anything is sent.
type limitFlags struct {
	rateLimit, quota     string
	noRateLimit, noQuota bool
	cmd                  *cobra.Command
}

// add declares the flags on cmd; withClear adds --no-rate-limit and --no-quota.
func (l *limitFlags) add(cmd *cobra.Command, withClear bool) {
	l.cmd = cmd
	f := cmd.Flags()
	f.StringVar(&l.rateLimit, "rate-limit", "", "at most N requests per DURATION across all gateways, e.g. 100/1s, 1000/1m or 50/s (1 to 1000000 per 1s to 24h)")
	f.StringVar(&l.quota, "quota", "", "at most N successful requests per UTC day, UTC month or in all: N/day, N/month or N/total (N up to 10^12)")
	if withClear {
		f.BoolVar(&l.noRateLimit, "no-rate-limit", false, "remove the key's rate limit")
		f.BoolVar(&l.noQuota, "no-quota", false, "remove the key's quota")
	}
}

func (l *limitFlags) changed(name string) bool { return l.cmd.Flags().Changed(name) }

// rate returns the --rate-limit value (nil when the flag is not given).
func (l *limitFlags) rate() (*admin.RateLimit, error) {
	if l.noRateLimit && l.changed("rate-limit") {
		return nil, errors.New("--rate-limit and --no-rate-limit cannot be used together")
	}
	if !l.changed("rate-limit") {
		return nil, nil
	}
	return parseRateLimitFlag(l.rateLimit)
}

// quotaValue returns the --quota value (nil when the flag is not given).
func (l *limitFlags) quotaValue() (*admin.Quota, error) {
	if l.noQuota && l.changed("quota") {
		return nil, errors.New("--quota and --no-quota cannot be used together")
	}
	if !l.changed("quota") {
		return nil, nil
	}
	return parseQuotaFlag(l.quota)
}

// unitWindows are the windows that may be written as a unit alone: 50/s, 1000/m.
var unitWindows = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"h": time.Hour, "hour": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour,
}

// parseRateLimitFlag reads N/DURATION: N from 1 to 1000000, DURATION a Go duration (1s,
// 90s, 1m, 24h) or a unit alone (s, m, h, day), a whole number of seconds from 1s to 24h.
func parseRateLimitFlag(s string) (*admin.RateLimit, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("--rate-limit %q is not N/DURATION (e.g. 100/1s, 1000/1m or 50/s)", clip(s))
	ns, ds, ok := strings.Cut(s, "/")
	if !ok {
		return nil, bad
	}
	n, err := strconv.ParseInt(strings.TrimSpace(ns), 10, 64)
	if err != nil {
		return nil, bad
	}
	ds = strings.TrimSpace(ds)
	d, ok := unitWindows[ds]
	if !ok {
		if d, err = time.ParseDuration(ds); err != nil {
			return nil, bad
		}
	}
	if n < 1 || n > store.MaxRateLimit {
		return nil, fmt.Errorf("--rate-limit: the number of requests must be from 1 to %d (got %s)", store.MaxRateLimit, clip(ns))
	}
	if d < time.Second || d > store.MaxRateLimitWindow || d%time.Second != 0 {
		return nil, fmt.Errorf("--rate-limit: the window must be a whole number of seconds from 1s to 24h (got %s)", clip(ds))
	}
	return &admin.RateLimit{Limit: n, WindowSeconds: int64(d / time.Second)}, nil
}

// parseQuotaFlag reads N/day, N/month or N/total.
func parseQuotaFlag(s string) (*admin.Quota, error) {
	s = strings.TrimSpace(s)
	ns, period, ok := strings.Cut(s, "/")
	n, err := strconv.ParseInt(strings.TrimSpace(ns), 10, 64)
	if !ok || err != nil {
		return nil, fmt.Errorf("--quota %q is not N/day, N/month or N/total", clip(s))
	}
	q := &store.Quota{Limit: n, Period: strings.ToLower(strings.TrimSpace(period))}
	if err := store.CheckQuota(q); err != nil {
		return nil, fmt.Errorf("--quota: %v", err)
	}
	return &admin.Quota{Limit: q.Limit, Period: q.Period}, nil
}

// fmtWindow writes a rate-limit window as a duration: 1s, 1m, 90s → 1m30s, 24h.
func fmtWindow(seconds int64) string { return fmtDuration(time.Duration(seconds) * time.Second) }

// periodWords says a quota period for people: "today", "this month", "in total".
func periodWords(period string) string {
	switch period {
	case store.QuotaDay:
		return "today"
	case store.QuotaMonth:
		return "this month"
	}
	return "in total"
}

// fmtLimits is the LIMITS column: "100/1s", "1234/10000 today", both, or "-".
func fmtLimits(k admin.Key) string {
	var parts []string
	if r := k.RateLimit; r != nil {
		parts = append(parts, fmt.Sprintf("%d/%s", r.Limit, fmtWindow(r.WindowSeconds)))
	}
	if q := k.Quota; q != nil {
		used := "?"
		if k.QuotaUsed != nil {
			used = strconv.FormatInt(*k.QuotaUsed, 10)
		}
		parts = append(parts, fmt.Sprintf("%s/%d %s", used, q.Limit, periodWords(q.Period)))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// limitDetails are the summary lines of a key's limits.
func limitDetails(k admin.Key) (rate, quota string) {
	rate, quota = "none", "none"
	if r := k.RateLimit; r != nil {
		rate = fmt.Sprintf("%d requests per %s", r.Limit, fmtWindow(r.WindowSeconds))
	}
	if q := k.Quota; q != nil {
		used := "?"
		if k.QuotaUsed != nil {
			used = strconv.FormatInt(*k.QuotaUsed, 10)
		}
		per := map[string]string{store.QuotaDay: "per UTC day", store.QuotaMonth: "per UTC month"}[q.Period]
		if per == "" {
			per = "in total"
		}
		quota = fmt.Sprintf("%d %s; %s used %s", q.Limit, per, used, periodWords(q.Period))
		if k.QuotaResetsAt != nil {
			quota += ", resets " + fmtInstant(*k.QuotaResetsAt)
		}
	}
	return rate, quota
}
