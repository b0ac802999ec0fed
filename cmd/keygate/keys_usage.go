package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/keygate/keygate/admin"
)

// maxUsageSince is the longest --since: usage is kept by hour for 90 days.
const maxUsageSince = 90 * 24 * time.Hour

// usageCmd is `keys usage`: a key's requests per bucket over a recent span, as a table.
func (c *keysCLI) usageCmd() *cobra.Command {
	var instance, since, granularity string
	cmd := c.subcommand(&cobra.Command{
		Use:   "usage --instance ID KEY_ID [--since 24h] [--granularity minute|hour|day]",
		Short: "Shows a key's requests over a recent span: let through and refused by code",
		Long: `Shows how many requests of a key the gateways let through and refused (by
error code) per minute, hour or day, and the totals. --since is how far back
(a Go duration like 90m or 48h, or days like 7d; default 24h; at most 90d).
Without --granularity: minutes up to 2h, hours up to 7d, days beyond (minutes
are kept 48 hours, hours 90 days). Counts reach the store within about 15
seconds. With --json: the API's usage object.`,
	}, &instance, func(cmd *cobra.Command, args []string) error {
		id, err := oneKeyID(args)
		if err != nil {
			return err
		}
		if err := required("instance", instance); err != nil {
			return err
		}
		span, err := parseSince(since)
		if err != nil {
			return err
		}
		g := granularity
		switch {
		case g == "":
			g = defaultGranularity(span)
		case g != "minute" && g != "hour" && g != "day":
			return fmt.Errorf("--granularity must be minute, hour or day, not %q", clip(g))
		}
		client, err := c.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		now := c.now()
		u, err := client.KeyUsage(ctx, instance, id, g, now.Add(-span), now)
		if err != nil {
			return c.apiProblem(err)
		}
		if c.json {
			return c.printJSON(u)
		}
		return writeUsage(c.stdout, u)
	})
	cmd.Flags().StringVar(&since, "since", "24h", "how far back: a duration (90m, 48h) or days (7d), at most 90d")
	cmd.Flags().StringVar(&granularity, "granularity", "", "minute, hour or day (default: by --since)")
	return cmd
}

// parseSince reads --since: a positive Go duration or a whole number of days ("7d").
func parseSince(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("--since %q is not a duration (90m, 48h) or a number of days (7d)", clip(s))
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, bad
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, bad
		}
	}
	if d <= 0 || d > maxUsageSince {
		return 0, fmt.Errorf("--since must be more than 0 and at most 90d (got %q)", clip(s))
	}
	return d, nil
}

func defaultGranularity(span time.Duration) string {
	switch {
	case span <= 2*time.Hour:
		return "minute"
	case span <= 7*24*time.Hour:
		return "hour"
	}
	return "day"
}

// writeUsage prints one row per bucket, then the totals.
func writeUsage(w io.Writer, u admin.Usage) error {
	layout := "2006-01-02 15:04Z"
	if u.Granularity == "day" {
		layout = "2006-01-02"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tOK\tREFUSED\tBY CODE")
	for _, b := range u.Data {
		n, by := refusedText(b.Refused)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Start.UTC().Format(layout), thousands(b.OK), thousands(n), by)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	n, by := refusedText(u.Total.Refused)
	line := fmt.Sprintf("total: %s let through, %s refused", thousands(u.Total.OK), thousands(n))
	if by != "-" {
		line += " (" + by + ")"
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// refusedText sums refusals and lists them by code ("-" when none), largest first.
func refusedText(m map[string]int64) (int64, string) {
	codes := make([]string, 0, len(m))
	var total int64
	for code, n := range m {
		if n > 0 {
			codes = append(codes, code)
			total += n
		}
	}
	if len(codes) == 0 {
		return 0, "-"
	}
	sort.Slice(codes, func(i, j int) bool {
		if m[codes[i]] != m[codes[j]] {
			return m[codes[i]] > m[codes[j]]
		}
		return codes[i] < codes[j]
	})
	parts := make([]string, len(codes))
	for i, code := range codes {
		parts[i] = clean(code) + " " + thousands(m[code])
	}
	return total, strings.Join(parts, ", ")
}

// thousands writes n with commas: 1,234,567.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
