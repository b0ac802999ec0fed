// Package redisstore is the Redis Store, for one or many gateways sharing state. It works on
// standalone Redis, Sentinel and Cluster alike: the records of one instance share a hash tag,
// multi-key steps are Lua scripts on one slot, and the writes that span slots are ordered so
// that a failure half-way never leaves a key working that is not listed, or listed as revoked
// but still working.
//
// Layout, under the key prefix P (default "nora:"):
//
//	P instances                 SET    instance ids (index)
//	P {i:<id>}                  HASH   instance: name, env, seq (creation counter)
//	P {i:<id>}:order            ZSET   key ids scored by creation sequence
//	P {i:<id>}:k:<key id>       HASH   key record
//	P h:<hex sha256>            HASH   lookup entry: id, instance, env, exp, rev
//	P inval                     STREAM invalidations: field h = hex hash ("*" = flush all)
//
// Times are Unix milliseconds.
package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Options tune a Store.
type Options struct {
	// KeyPrefix starts every Redis key and the invalidation stream; deployments sharing one
	// Redis with different prefixes do not see each other. Default "nora:".
	KeyPrefix string
	// StreamMaxLen bounds the invalidation stream (approximately). Default 100000.
	StreamMaxLen int64
	// WaitReplicas, when above 0, makes each write wait for that many replica
	// acknowledgements (WAIT) before it returns.
	WaitReplicas int
	// MaxEvents is how many audit events are kept per instance (default store.MaxEvents).
	MaxEvents int
	// FailPoint, when set, is called at named points between the steps of a write; an error
	// it returns aborts the write there. It exists for tests of partial failures.
	FailPoint func(step string) error
	// OnError, when set, hears about errors of the invalidation listener (for logging).
	OnError func(error)
	// ObserveLag, when set, hears for each invalidation received from the stream how long
	// after its publication it was delivered (by the stream entry's time; for metrics).
	ObserveLag func(time.Duration)
}

// Store is a store.Store on Redis.
type Store struct {
	rdb  redis.UniversalClient
	opts Options
	p    string
	store.Watchers

	mu      sync.Mutex
	healthy bool

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Store using rdb, which it owns and closes. It starts the invalidation
// listener; it does not need Redis to be reachable yet.
func New(rdb redis.UniversalClient, opts Options) *Store {
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = "nora:"
	}
	if opts.StreamMaxLen == 0 {
		opts.StreamMaxLen = 100000
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = store.MaxEvents
	}
	rdb.AddHook(noRetryHook{}) // see listen.go
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{rdb: rdb, opts: opts, p: opts.KeyPrefix, cancel: cancel, done: make(chan struct{})}
	go s.listen(ctx)
	return s
}

func (s *Store) fail(step string) error {
	if s.opts.FailPoint == nil {
		return nil
	}
	return s.opts.FailPoint(step)
}

func (s *Store) kInstances() string               { return s.p + "instances" }
func (s *Store) kInstance(id string) string       { return s.p + "{i:" + id + "}" }
func (s *Store) kOrder(id string) string          { return s.p + "{i:" + id + "}:order" }
func (s *Store) kKey(inst, id string) string      { return s.p + "{i:" + inst + "}:k:" + id }
func (s *Store) kLookup(h apikey.Hash) string     { return s.p + "h:" + hex.EncodeToString(h[:]) }
func (s *Store) kStream() string                  { return s.p + "inval" }
func (s *Store) kLookupHex(hexHash string) string { return s.p + "h:" + hexHash }

// wait applies Options.WaitReplicas after a write.
func (s *Store) wait(ctx context.Context) error {
	if s.opts.WaitReplicas <= 0 {
		return nil
	}
	n, err := s.rdb.Do(ctx, "WAIT", s.opts.WaitReplicas, 5000).Int64()
	if err != nil {
		return fmt.Errorf("waiting for replicas: %w", err)
	}
	if n < int64(s.opts.WaitReplicas) {
		return fmt.Errorf("write reached %d replicas of the %d required", n, s.opts.WaitReplicas)
	}
	return nil
}

var createInstanceScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'env', ARGV[2], 'seq', 0)
return 1
`)

// CreateInstance implements store.Store. The index entry is written first: an instance whose
// record write failed is indexed but skipped, and creating it again succeeds.
func (s *Store) CreateInstance(ctx context.Context, in store.Instance) error {
	if err := s.rdb.SAdd(ctx, s.kInstances(), in.ID).Err(); err != nil {
		return err
	}
	n, err := createInstanceScript.Run(ctx, s.rdb, []string{s.kInstance(in.ID)}, in.Name, in.Environment.String()).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrInstanceExists
	}
	return s.wait(ctx)
}

func decodeInstance(id string, m []any) (store.Instance, bool, error) {
	if m[0] == nil {
		return store.Instance{}, false, nil
	}
	name, _ := m[0].(string)
	envs, _ := m[1].(string)
	env, err := apikey.ParseEnvironment(envs)
	if err != nil {
		return store.Instance{}, false, fmt.Errorf("decoding instance %q: %v", id, err)
	}
	return store.Instance{ID: id, Name: name, Environment: env}, true, nil
}

// Instance implements store.Store.
func (s *Store) Instance(ctx context.Context, id string) (store.Instance, error) {
	m, err := s.rdb.HMGet(ctx, s.kInstance(id), "name", "env").Result()
	if err != nil {
		return store.Instance{}, err
	}
	in, ok, err := decodeInstance(id, m)
	if err == nil && !ok {
		err = store.ErrInstanceNotFound
	}
	return in, err
}

// Instances implements store.Store.
func (s *Store) Instances(ctx context.Context) ([]store.Instance, error) {
	ids, err := s.rdb.SMembers(ctx, s.kInstances()).Result()
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, s.kInstance(id), "name", "env")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []store.Instance
	for i, id := range ids {
		in, ok, err := decodeInstance(id, cmds[i].Val())
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, in)
		}
	}
	return out, nil
}

var createKeyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOINSTANCE instance not found') end
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('KEYEXISTS key id already exists') end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'env', ARGV[2], 'name', ARGV[3], 'prefix', ARGV[4],
  'hash', ARGV[5], 'created', ARGV[6], 'exp', ARGV[7], 'rev', '0', 'last', '0', 'seq', seq)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
`)

// CreateKey implements store.Store: the listed record (one script on the instance's slot),
// then the lookup entry that makes the key work.
func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	hexHash := hex.EncodeToString(k.Hash[:])
	err := createKeyScript.Run(ctx, s.rdb,
		[]string{s.kInstance(k.Instance), s.kKey(k.Instance, k.ID), s.kOrder(k.Instance)},
		k.ID, k.Environment.String(), k.Name, k.Prefix, hexHash,
		store.Millis(k.CreatedAt), store.Millis(k.ExpiresAt)).Err()
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOINSTANCE") {
			return store.ErrInstanceNotFound
		}
		return err
	}
	err = s.fail("create:listed")
	if err == nil {
		err = s.rdb.HSet(ctx, s.kLookupHex(hexHash), "id", k.ID, "instance", k.Instance,
			"env", k.Environment.String(), "exp", store.Millis(k.ExpiresAt), "rev", 0).Err()
	}
	if err != nil {
		s.undoCreate(k, hexHash)
		return err
	}
	return s.wait(ctx)
}

// undoCreate removes what a failed create wrote, best effort: the lookup entry first (the
// failed write may have reached Redis after all), and the listed record only once the lookup
// entry is known to be gone, so that a key never works without being listed.
func (s *Store) undoCreate(k store.Key, hexHash string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.rdb.Del(ctx, s.kLookupHex(hexHash)).Err() != nil {
		return
	}
	s.rdb.ZRem(ctx, s.kOrder(k.Instance), k.ID)
	s.rdb.Del(ctx, s.kKey(k.Instance, k.ID))
}

var keyFields = []string{"id", "env", "name", "prefix", "hash", "created", "exp", "rev", "last"}

func decodeKey(instance string, v []any) (store.Key, bool, error) {
	if v[0] == nil {
		return store.Key{}, false, nil
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	env, err := apikey.ParseEnvironment(str(1))
	if err != nil {
		return store.Key{}, false, fmt.Errorf("decoding key %s: %v", str(0), err)
	}
	k := store.Key{
		ID: str(0), Instance: instance, Environment: env, Name: str(2), Prefix: str(3),
		CreatedAt: store.FromMillis(num(5)), ExpiresAt: store.FromMillis(num(6)),
		RevokedAt: store.FromMillis(num(7)), LastUsedAt: store.FromMillis(num(8)),
	}
	if n, err := hex.Decode(k.Hash[:], []byte(str(4))); err != nil || n != len(k.Hash) {
		return store.Key{}, false, fmt.Errorf("decoding key %s: bad hash", k.ID)
	}
	return k, true, nil
}

// Key implements store.Store.
func (s *Store) Key(ctx context.Context, instance, id string) (store.Key, error) {
	v, err := s.rdb.HMGet(ctx, s.kKey(instance, id), keyFields...).Result()
	if err != nil {
		return store.Key{}, err
	}
	k, ok, err := decodeKey(instance, v)
	if err != nil {
		return store.Key{}, err
	}
	if !ok {
		if _, err := s.Instance(ctx, instance); err != nil {
			return store.Key{}, err
		}
		return store.Key{}, store.ErrKeyNotFound
	}
	return k, nil
}

// LookupHash implements store.Store: one round trip.
func (s *Store) LookupHash(ctx context.Context, h apikey.Hash) (store.Lookup, error) {
	v, err := s.rdb.HMGet(ctx, s.kLookup(h), "id", "instance", "env", "exp", "rev").Result()
	if err != nil {
		return store.Lookup{}, err
	}
	if v[0] == nil {
		return store.Lookup{}, store.ErrKeyNotFound
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	env, err := apikey.ParseEnvironment(str(2))
	if err != nil {
		return store.Lookup{}, fmt.Errorf("decoding lookup entry of key %s: %v", str(0), err)
	}
	return store.Lookup{ID: str(0), Instance: str(1), Environment: env,
		ExpiresAt: store.FromMillis(num(3)), RevokedAt: store.FromMillis(num(4))}, nil
}

// pageStart checks that the instance exists and returns the score bound a newest-first page
// of the sorted set starts from: all, or below the member startingAfter
// (store.ErrInvalidCursor when it is not there).
func (s *Store) pageStart(ctx context.Context, instance, zset, startingAfter string) (string, error) {
	if _, err := s.Instance(ctx, instance); err != nil {
		return "", err
	}
	if startingAfter == "" {
		return "+inf", nil
	}
	score, err := s.rdb.ZScore(ctx, zset, startingAfter).Result()
	if errors.Is(err, redis.Nil) {
		return "", store.ErrInvalidCursor
	} else if err != nil {
		return "", err
	}
	return "(" + strconv.FormatInt(int64(score), 10), nil
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(ctx context.Context, instance string, opt store.ListOptions) ([]store.Key, bool, error) {
	if opt.Limit < 1 {
		return nil, false, errors.New("limit must be at least 1")
	}
	max, err := s.pageStart(ctx, instance, s.kOrder(instance), opt.StartingAfter)
	if err != nil {
		return nil, false, err
	}
	batch := int64(opt.Limit + 1)
	if opt.Status != "" && batch < 200 {
		batch = 200
	}
	var out []store.Key
	for {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.kOrder(instance),
			&redis.ZRangeBy{Max: max, Min: "-inf", Count: batch}).Result()
		if err != nil {
			return nil, false, err
		}
		cmds := make([]*redis.SliceCmd, len(zs))
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, z := range zs {
				cmds[i] = p.HMGet(ctx, s.kKey(instance, z.Member.(string)), keyFields...)
			}
			return nil
		})
		if err != nil {
			return nil, false, err
		}
		for i := range zs {
			k, ok, err := decodeKey(instance, cmds[i].Val())
			if err != nil {
				return nil, false, err
			}
			if !ok || (opt.Status != "" && k.Status(opt.Now) != opt.Status) {
				continue
			}
			if len(out) == opt.Limit {
				return out, true, nil
			}
			out = append(out, k)
		}
		if int64(len(zs)) < batch {
			return out, false, nil
		}
		max = "(" + strconv.FormatInt(int64(zs[len(zs)-1].Score), 10)
	}
}

// setEarliestScript sets a time field of a hash if the hash exists and the field is unset
// (0) or later than ARGV[2]; it returns the field's value afterwards (” if no hash).
// Used for revocation (field rev, first time wins) and expiry (field exp, earliest wins).
var setEarliestScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return '' end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local at = tonumber(ARGV[2])
if cur == 0 or cur > at then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return tostring(cur)
`)

// setLatestScript sets a time field of an existing hash if it is earlier than ARGV[2].
var setLatestScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if cur < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
`)

// RevokeKey implements store.Store: the lookup entry is marked first (the key stops
// working), then the listed record, then the invalidation is published.
func (s *Store) RevokeKey(ctx context.Context, instance, id string, at time.Time) (store.Key, error) {
	return s.refuse(ctx, instance, id, "rev", at, "revoke:lookup")
}

// ExpireKey implements store.Store, in the same order as RevokeKey.
func (s *Store) ExpireKey(ctx context.Context, instance, id string, at time.Time) (store.Key, error) {
	if at.IsZero() {
		return store.Key{}, store.ErrNoExpiry
	}
	return s.refuse(ctx, instance, id, "exp", at, "expire:lookup")
}

func (s *Store) refuse(ctx context.Context, instance, id, field string, at time.Time, step string) (store.Key, error) {
	k, err := s.Key(ctx, instance, id)
	if err != nil {
		return store.Key{}, err
	}
	if field == "rev" && !k.RevokedAt.IsZero() {
		at = k.RevokedAt // a repeated revoke keeps the first time
	}
	ms := store.Millis(at)
	v, err := setEarliestScript.Run(ctx, s.rdb, []string{s.kLookup(k.Hash)}, field, ms).Text()
	if err != nil {
		return store.Key{}, err
	}
	if v != "" {
		if ms, err = strconv.ParseInt(v, 10, 64); err != nil {
			return store.Key{}, fmt.Errorf("reading lookup entry of key %s: %v", id, err)
		}
	}
	if err := s.fail(step); err != nil {
		return store.Key{}, err
	}
	v, err = setEarliestScript.Run(ctx, s.rdb, []string{s.kKey(instance, id)}, field, ms).Text()
	if err != nil {
		return store.Key{}, err
	}
	if v == "" {
		return store.Key{}, store.ErrKeyNotFound
	}
	ms, _ = strconv.ParseInt(v, 10, 64)
	if field == "rev" {
		k.RevokedAt = store.FromMillis(ms)
	} else {
		k.ExpiresAt = store.FromMillis(ms)
	}
	// Local watchers first: once this returns, this process refuses the key.
	s.Invalidate(k.Hash)
	if err := s.publish(ctx, k.Hash); err != nil {
		return store.Key{}, fmt.Errorf("publishing invalidation: %w", err)
	}
	return k, s.wait(ctx)
}

func (s *Store) publish(ctx context.Context, h apikey.Hash) error {
	return s.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: s.kStream(), MaxLen: s.opts.StreamMaxLen, Approx: true,
		Values: []string{"h", hex.EncodeToString(h[:])},
	}).Err()
}

// TouchKey implements store.Store.
func (s *Store) TouchKey(ctx context.Context, instance, id string, at time.Time) error {
	return setLatestScript.Run(ctx, s.rdb, []string{s.kKey(instance, id)}, "last", store.Millis(at)).Err()
}

// Subscribe implements store.Store.
func (s *Store) Subscribe(w store.Watcher) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.SetHealthy(s.healthy)
	return s.Watchers.Subscribe(w)
}

// Healthy reports whether the invalidation listener is up to date with the stream.
func (s *Store) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.healthy
}

func (s *Store) setHealthy(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.healthy == ok {
		return
	}
	s.healthy = ok
	s.Each(func(w store.Watcher) { w.SetHealthy(ok) })
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Close implements store.Store.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	return s.rdb.Close()
}

// Client returns the underlying Redis client (for tests and health checks).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Interface guards
var _ store.Store = (*Store)(nil)
