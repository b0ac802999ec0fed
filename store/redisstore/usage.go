package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/keygate/keygate/store"
)

// Usage counts (store.UsageStore), on the instance's slot, one HASH per key (and per instance,
// under the key id "_", store.UsageInstanceKey) and UTC hour or day:
//
//	P {i:<instance>}:u:<key id>:m:<Unix hour number>  HASH  the hour's minutes: "<minute 0-59>" →
//	                                                  requests let through, "<minute>:<code>" →
//	                                                  refused with code; EXPIREAT the hour's end
//	                                                  + store.MinuteRetention
//	P {i:<instance>}:u:<key id>:h:<Unix day number>   HASH  the day's hours: "<hour 0-23>",
//	                                                  "<hour>:<code>"; EXPIREAT the day's end
//	                                                  + store.HourRetention
//
// Days are summed from the day's hash of hours. Redis 7.0 has no expiry per hash field, hence
// a hash per hour (or day) with one expiry: minutes live 48 to 49 hours, hours 90 to 91 days
// (store.UsageExpiry, which the file store follows too).
//
// AddUsage is one transaction (MULTI/EXEC) per instance and chunk of about 64 commands (a
// key's buckets always in one), on the instance's slot: HINCRBY on each hash, then EXPIREAT
// on each; transactions run side by side, at most 8 at once (go-redis refuses a transaction
// across slots). Small transactions keep Redis answering the gateways' lookups between them.
// Buckets already past their expiry are not written. After a lost reply the client may send
// a transaction again, as the caller does after an error (package usage keeps a failed batch
// and adds it again): either way a key's part of a batch may count twice, never half.

func (s *Store) kUsage(instance, keyID, kind string, n int64) string {
	return s.p + "{i:" + instance + "}:u:" + keyID + ":" + kind + ":" + strconv.FormatInt(n, 10)
}

// usageHash returns the hash and the field base (minute or hour number) that hold the bucket
// of g (Minute or Hour) starting at start.
func (s *Store) usageHash(instance, keyID string, g store.Granularity, start time.Time) (key, field string) {
	u := start.Unix()
	if g == store.Minute {
		return s.kUsage(instance, keyID, "m", u/3600), strconv.FormatInt(u%3600/60, 10)
	}
	return s.kUsage(instance, keyID, "h", u/86400), strconv.FormatInt(u%86400/3600, 10)
}

// AddUsage implements store.UsageStore: one transaction per instance (at most
// usageParallel at once).
func (s *Store) AddUsage(ctx context.Context, counts []store.UsageCount) error {
	adds, err := store.SumUsageCounts(counts)
	if err != nil {
		return err
	}
	now := time.Now()
	var g errgroup.Group
	g.SetLimit(usageParallel)
	for i := 0; i < len(adds); {
		// One transaction per instance and chunk of keys: a key's buckets stay together, and
		// a chunk closes past usageChunk commands, so that no transaction holds Redis (and the
		// gateways' lookups behind it) for more than about a millisecond.
		j, cmds := i+1, 2+len(adds[i].Bucket.Refused)
		for j < len(adds) && adds[j].Instance == adds[i].Instance &&
			(cmds < usageChunk || adds[j].KeyID == adds[j-1].KeyID) {
			cmds += 2 + len(adds[j].Bucket.Refused) // HINCRBYs, and at most one EXPIREAT
			j++
		}
		batch := adds[i:j]
		g.Go(func() error { return s.addUsage(ctx, batch, now) })
		i = j
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("adding usage counts: %v", err)
	}
	return nil
}

// usageParallel bounds the transactions of one AddUsage in flight.
const usageParallel = 8

// usageChunk is about how many commands one usage transaction holds (more only to keep a
// key's buckets in one).
const usageChunk = 64

// addUsage adds one instance's buckets in one transaction.
func (s *Store) addUsage(ctx context.Context, adds []store.UsageAdd, now time.Time) error {
	pipe := s.rdb.TxPipeline()
	expire := make(map[string]time.Time)
	var order []string
	for _, a := range adds {
		exp := store.UsageExpiry(a.G, a.Bucket.Start)
		if !exp.After(now) {
			continue
		}
		key, field := s.usageHash(a.Instance, a.KeyID, a.G, a.Bucket.Start)
		if a.Bucket.OK > 0 {
			pipe.HIncrBy(ctx, key, field, a.Bucket.OK)
		}
		for code, n := range a.Bucket.Refused {
			pipe.HIncrBy(ctx, key, field+":"+code, n)
		}
		if _, ok := expire[key]; !ok {
			order = append(order, key)
		}
		expire[key] = exp
	}
	if len(order) == 0 {
		return nil
	}
	for _, key := range order {
		pipe.ExpireAt(ctx, key, expire[key])
	}
	_, err := pipe.Exec(ctx)
	return err
}

// Usage implements store.UsageStore: one pipelined HGETALL per hash covering the range (of
// hours for minutes, of days for hours and days), leaving out those already expired.
func (s *Store) Usage(ctx context.Context, instance, keyID string, g store.Granularity, from, to time.Time) ([]store.UsageBucket, error) {
	first, _, err := store.UsageRange(g, from, to)
	if err != nil {
		return nil, err
	}
	if keyID == "" {
		keyID = store.UsageInstanceKey
	} else if keyID == store.UsageInstanceKey {
		return nil, fmt.Errorf("%q is not a key id", keyID)
	}
	// A hash holds the minutes of an hour, or the hours of a day.
	held, span, kind := store.Hour, time.Hour, "m"
	if g != store.Minute {
		held, span, kind = store.Day, 24*time.Hour, "h"
	}
	now := time.Now()
	type hash struct {
		start time.Time
		cmd   *redis.MapStringStringCmd
	}
	var hashes []hash
	pipe := s.rdb.Pipeline()
	for h := held.Truncate(first); h.Before(to); h = h.Add(span) {
		if !store.UsageExpiry(g, h).After(now) {
			continue // expired, or about to be
		}
		cmd := pipe.HGetAll(ctx, s.kUsage(instance, keyID, kind, h.Unix()/int64(span/time.Second)))
		hashes = append(hashes, hash{h, cmd})
	}
	if len(hashes) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("reading usage of %s: %v", keyID, err)
	}
	// Each field's unit within its hash: a minute or an hour.
	unit := time.Minute
	if held == store.Day {
		unit = time.Hour
	}
	sum := store.NewUsageSum(g)
	for _, h := range hashes {
		for field, v := range h.cmd.Val() {
			num, code, _ := strings.Cut(field, ":")
			i, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("reading usage of %s: bad field %q", keyID, field)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("reading usage of %s: bad count %q", keyID, v)
			}
			start := h.start.Add(time.Duration(i) * unit)
			if b := g.Truncate(start); b.Before(first) || !b.Before(to) {
				continue
			}
			sum.Add(start, code, n)
		}
	}
	return sum.Buckets(), nil
}

// Interface guards
var _ store.UsageStore = (*Store)(nil)
