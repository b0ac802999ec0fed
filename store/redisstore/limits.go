package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/store"
)

// The limit counters of a key (store.Leaser) are plain integers, one Redis string each:
//
//	P {i:<instance>}:c:<key id>:<counter>
//
// the counter named by store.RateWindow or store.QuotaPeriod (rl:60:29936064,
// q:day:2026-12-01, q:month:2026-12, q:total). They share the instance's hash tag, so on
// Cluster they sit in the slot of the instance's other keys, and every script below touches
// one key. A counter with an expiry (a rate window, a day or a month) carries it as a
// PEXPIREAT; a total counter has none.
//
// Gateways call these in the background, often: each is one round trip (EVALSHA, or GET),
// with the client's usual timeouts, and none waits for replicas (Options.WaitReplicas does not
// apply). So on Sentinel a failover can drop the last increments the old master had not yet
// passed on, and a counter can then read lower than what was leased (by what the lost
// increments held); a quota survives a restart of Redis as far as Redis' own persistence
// (appendonly) keeps it.
//
// Lease and Release are never retried by the client (see withoutRetry). A Lease whose reply
// is lost (a timeout, a dropped connection) may have been applied: its units are counted as
// used and nobody spends them, so a lost reply only under-admits, by at most that Lease's n.
// (Even a blind retry could not over-admit, as every grant is counted; it would waste a second
// n.) A Release retried after a lost reply could give back units twice, which would let more
// than the limit through; not retried, a lost Release leaves at most n units counted that were
// not used.

func (s *Store) kCounter(instance, keyID, counter string) string {
	return s.p + "{i:" + instance + "}:c:" + keyID + ":" + counter
}

// leaseScript grants min(n, limit - used) units (0 when the counter is at or past the limit),
// adds them to the counter, sets its expiry when ARGV[3] (Unix ms) is not 0, and returns
// {granted, used afterwards}.
//
// KEYS: the counter. ARGV: n, limit, expire at.
var leaseScript = redis.NewScript(`
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = tonumber(ARGV[2]) - used
local n = tonumber(ARGV[1])
if grant > n then grant = n end
if grant < 0 then grant = 0 end
if grant > 0 then used = redis.call('INCRBY', KEYS[1], grant) end
if ARGV[3] ~= '0' and redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return {grant, used}
`)

// releaseScript takes min(n, the counter's value) off the counter (keeping its expiry) and
// returns how much it took. A missing counter stays missing.
//
// KEYS: the counter. ARGV: n.
var releaseScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if n > cur then n = cur end
if n > 0 then redis.call('DECRBY', KEYS[1], n) end
return n
`)

func checkCounter(keyID, counter string, n int64) error {
	switch {
	case keyID == "" || counter == "":
		return errors.New("a counter needs a key id and a name")
	case n < 0:
		return fmt.Errorf("cannot lease or release %d units", n)
	}
	return nil
}

// Lease implements store.Leaser: one script on the instance's slot.
func (s *Store) Lease(ctx context.Context, instance, keyID, counter string, limit, n int64, expireAt time.Time) (granted, used int64, err error) {
	if err := checkCounter(keyID, counter, n); err != nil {
		return 0, 0, err
	}
	res, err := leaseScript.Run(withoutRetry(ctx), s.rdb, []string{s.kCounter(instance, keyID, counter)},
		n, limit, store.Millis(expireAt)).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("leasing from counter %s of key %s: %w", counter, keyID, err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("leasing from counter %s of key %s: unexpected reply %v", counter, keyID, res)
	}
	return res[0], res[1], nil
}

// Release implements store.Leaser: one script on the instance's slot.
func (s *Store) Release(ctx context.Context, instance, keyID, counter string, n int64) error {
	if err := checkCounter(keyID, counter, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	err := releaseScript.Run(withoutRetry(ctx), s.rdb, []string{s.kCounter(instance, keyID, counter)}, n).Err()
	if err != nil {
		return fmt.Errorf("releasing to counter %s of key %s: %w", counter, keyID, err)
	}
	return nil
}

// Used implements store.Leaser: one GET.
func (s *Store) Used(ctx context.Context, instance, keyID, counter string) (int64, error) {
	if err := checkCounter(keyID, counter, 0); err != nil {
		return 0, err
	}
	n, err := s.rdb.Get(ctx, s.kCounter(instance, keyID, counter)).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading counter %s of key %s: %w", counter, keyID, err)
	}
	return n, nil
}

// UsedMany reads counters of one instance's keys with one MGET (they share the instance's
// slot); store.UsedMany uses it.
func (s *Store) UsedMany(ctx context.Context, instance string, refs []store.CounterRef) ([]int64, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	keys := make([]string, len(refs))
	for i, r := range refs {
		if err := checkCounter(r.KeyID, r.Counter, 0); err != nil {
			return nil, err
		}
		keys[i] = s.kCounter(instance, r.KeyID, r.Counter)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("reading %d counters of %s: %w", len(refs), instance, err)
	}
	out := make([]int64, len(refs))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // no counter yet: 0
		}
		if out[i], err = strconv.ParseInt(str, 10, 64); err != nil {
			return nil, fmt.Errorf("counter %s of key %s is not a number", refs[i].Counter, refs[i].KeyID)
		}
	}
	return out, nil
}

// Interface guards
var _ store.Leaser = (*Store)(nil)
