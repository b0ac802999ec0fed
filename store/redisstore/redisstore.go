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
//	P {i:<id>}:k:<key id>       HASH   key record (replaced: the id of its roll's replacement;
//	                                   scopes, ips, meta, rl, quota: the restrictions and
//	                                   limits, see restrict.go)
//	P {i:<id>}:c:<key id>:<counter>  STRING  a limit counter of the key (see limits.go)
//	P h:<hex sha256>            HASH   lookup entry: id, instance, env, exp, rev, scopes, ips,
//	                                   meta, rl, quota
//	P inval                     STREAM invalidations: field h = hex hash ("*" = flush all)
//	P{fleet}:gateways           HASH   gateway id → "<last seen ms> <started ms> <hostname>"
//	P{fleet}:acks               HASH   gateway id → stream id its listener has delivered up to
//	P{webhooks}:registered      HASH   webhook id → registration time (see outbox.go)
//	P {i:<id>}:whcur            HASH   webhook id → last event sequence moved to its outbox
//	P {i:<id>}:wh:<webhook>     ZSET   the webhook's outbox: "<seq>:<event id>" by due time
//	P {i:<id>}:whd:<webhook>    HASH   the outbox items: event JSON, attempts, queued time
//
// Times are Unix milliseconds.
package redisstore

import (
	"cmp"
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
	// WaitReplicas, when above 0, makes CreateInstance, CreateKey, RevokeKey, RollKey,
	// UpdateKey and ExpireKey wait, after each of their writes, until that many replicas of the
	// master that took the write have acknowledged it (WAIT, on the connection that made the
	// write, to the master that holds the key: on Cluster each write is confirmed by its own
	// shard's replicas). If fewer acknowledge within WaitTimeout the call fails with
	// ErrNotReplicated: a create is undone, a revoke, expiry or update is completed (it is in force on
	// the master) but reported, and a roll's replacement is undone while the old key's new
	// expiry stays. TouchKey, TouchKeys, AddEvent and the limit counters (Lease, Release) do not wait.
	WaitReplicas int
	// WaitTimeout bounds each WAIT (default 5 s).
	WaitTimeout time.Duration
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
	store.EventWatchers

	webhooks sync.Map // webhook ids seen registered (outbox.go)

	mu      sync.Mutex
	healthy bool

	// The fleet's acknowledgements (fleet.go): ackMu guards ackID and published; acked
	// and ackedID, what the listener last wrote, are the listener's own.
	ackMu     sync.Mutex
	ackID     string
	published string
	acked     string
	ackedID   string

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
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 5 * time.Second
	}
	rdb.AddHook(noRetryHook{}) // see listen.go
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{rdb: rdb, opts: opts, p: opts.KeyPrefix, cancel: cancel, done: make(chan struct{})}
	go s.listen(ctx)
	return s
}

// CheckKeyPrefix refuses a key prefix that would break the layout on Cluster: Redis hashes
// only what lies between a key's first "{" and the next "}", so a prefix whose first "{" is
// followed at once by "}" (an empty tag: the whole key is hashed) would spread an instance's
// records over several slots, and its scripts would fail with CROSSSLOT. (A prefix with a
// tag of its own, such as "{nora}:", is fine: everything then shares one slot.)
func CheckKeyPrefix(prefix string) error {
	if i := strings.IndexByte(prefix, '{'); i >= 0 && strings.HasPrefix(prefix[i:], "{}") {
		return fmt.Errorf("key_prefix %q: an empty hash tag \"{}\" would spread an instance's records over Redis Cluster slots", prefix)
	}
	return nil
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

// ErrNotReplicated is the error of a write that the master took but fewer than
// Options.WaitReplicas replicas acknowledged within Options.WaitTimeout (or WAIT itself
// failed).
var ErrNotReplicated = errors.New("write not acknowledged by enough replicas")

// write runs one write step, do, and applies Options.WaitReplicas to it. WAIT counts the
// replicas that acknowledged the last write of the connection it is sent on, and only that
// master's replicas: sent on another pooled connection it would confirm some older write (or
// none), and on Cluster a keyless WAIT would go to some other shard (or to all, each on a
// connection of its own). So with WaitReplicas set, do and WAIT run on one dedicated
// connection to the master that holds key.
func (s *Store) write(ctx context.Context, key string, do func(c redis.Cmdable) error) error {
	if s.opts.WaitReplicas <= 0 {
		return do(s.rdb)
	}
	for attempt := 0; ; attempt++ {
		var node *redis.Client
		switch c := s.rdb.(type) {
		case *redis.Client: // standalone, and Sentinel (the failover client dials the master)
			node = c
		case *redis.ClusterClient:
			var err error
			if node, err = c.MasterForKey(ctx, key); err != nil {
				return err
			}
		default:
			return fmt.Errorf("wait_replicas is not supported with a %T", s.rdb)
		}
		conn := node.Conn()
		err := do(conn)
		if err == nil {
			var n int64
			n, err = conn.Wait(ctx, s.opts.WaitReplicas, s.opts.WaitTimeout).Result()
			if err != nil { // the write was made; whether it is replicated is unknown
				err = fmt.Errorf("%w: waiting for replicas: %v", ErrNotReplicated, err)
			} else if n < int64(s.opts.WaitReplicas) {
				err = fmt.Errorf("%w: %d of the %d required within %v", ErrNotReplicated, n, s.opts.WaitReplicas, s.opts.WaitTimeout)
			}
		}
		conn.Close()
		// The slot moved (resharding): the write was not made. Learn the new owner, once.
		if cc, ok := s.rdb.(*redis.ClusterClient); ok && attempt == 0 && err != nil && strings.HasPrefix(err.Error(), "MOVED ") {
			cc.ReloadState(ctx)
			continue
		}
		return err
	}
}

var createInstanceScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'env', ARGV[2], 'seq', 0)
return 1
`)

// CreateInstance implements store.Store. The index entry is written first: an instance whose
// record write failed is indexed but skipped, and creating it again succeeds.
func (s *Store) CreateInstance(ctx context.Context, in store.Instance) error {
	err := s.write(ctx, s.kInstances(), func(c redis.Cmdable) error {
		return c.SAdd(ctx, s.kInstances(), in.ID).Err()
	})
	if err != nil {
		return err
	}
	return s.write(ctx, s.kInstance(in.ID), func(c redis.Cmdable) error {
		n, err := createInstanceScript.Run(ctx, c, []string{s.kInstance(in.ID)}, in.Name, in.Environment.String()).Int()
		if err == nil && n == 0 {
			return store.ErrInstanceExists // nothing written: no WAIT
		}
		return err
	})
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

var createKeyScript = redis.NewScript(restrictLua + `
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOINSTANCE instance not found') end
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.error_reply('KEYEXISTS key id already exists') end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'env', ARGV[2], 'name', ARGV[3], 'prefix', ARGV[4],
  'hash', ARGV[5], 'created', ARGV[6], 'exp', ARGV[7], 'rev', '0', 'last', '0', 'seq', seq)
set_optional(KEYS[2], RESTRICT_FIELDS, {unpack(ARGV, 8, 12)})
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
`)

// CreateKey implements store.Store: the listed record (one script on the instance's slot),
// then the lookup entry that makes the key work.
func (s *Store) CreateKey(ctx context.Context, k store.Key) error {
	hexHash := hex.EncodeToString(k.Hash[:])
	r, err := restrictions(k)
	if err != nil {
		return err
	}
	lookup, err := lookupValues(k)
	if err != nil {
		return err
	}
	listed := false // the script ran: there is a listed record to undo
	err = s.write(ctx, s.kKey(k.Instance, k.ID), func(c redis.Cmdable) error {
		err := createKeyScript.Run(ctx, c,
			[]string{s.kInstance(k.Instance), s.kKey(k.Instance, k.ID), s.kOrder(k.Instance)},
			append([]any{k.ID, k.Environment.String(), k.Name, k.Prefix, hexHash,
				store.Millis(k.CreatedAt), store.Millis(k.ExpiresAt)}, restrictArgs(r)...)...).Err()
		listed = err == nil
		return err
	})
	if err != nil {
		if !listed && strings.HasPrefix(err.Error(), "NOINSTANCE") {
			return store.ErrInstanceNotFound
		}
		if listed { // written, but not replicated as required
			s.undoCreate(k, hexHash)
		}
		return err
	}
	err = s.fail("create:listed")
	if err == nil {
		err = s.write(ctx, s.kLookupHex(hexHash), func(c redis.Cmdable) error {
			return c.HSet(ctx, s.kLookupHex(hexHash), lookup...).Err()
		})
	}
	if err != nil {
		s.undoCreate(k, hexHash)
		return err
	}
	return nil
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

// keyFields are the fields of a listed record that decodeKey reads, in its order.
var keyFields = append([]string{"id", "env", "name", "prefix", "hash", "created", "exp", "rev", "last", "replaced"}, restrictFields...)

// Positions in keyFields of the fields UpdateKey compares and sets.
const (
	fieldName   = 2
	fieldExp    = 6
	fieldRev    = 7
	fieldScopes = 10
)

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
		ReplacedBy: str(9),
	}
	if n, err := hex.Decode(k.Hash[:], []byte(str(4))); err != nil || n != len(k.Hash) {
		return store.Key{}, false, fmt.Errorf("decoding key %s: bad hash", k.ID)
	}
	r, err := decodeRestrictions(v[fieldScopes:])
	if err != nil {
		return store.Key{}, false, fmt.Errorf("decoding key %s: %v", k.ID, err)
	}
	setRestrictions(&k, r)
	return k, true, nil
}

// Key implements store.Store.
func (s *Store) Key(ctx context.Context, instance, id string) (store.Key, error) {
	k, _, err := s.readKey(ctx, instance, id)
	return k, err
}

// readKey returns a key and its record's fields as read (keyFields).
func (s *Store) readKey(ctx context.Context, instance, id string) (store.Key, []any, error) {
	v, err := s.rdb.HMGet(ctx, s.kKey(instance, id), keyFields...).Result()
	if err != nil {
		return store.Key{}, nil, err
	}
	k, ok, err := decodeKey(instance, v)
	if err != nil {
		return store.Key{}, nil, err
	}
	if !ok {
		if _, err := s.Instance(ctx, instance); err != nil {
			return store.Key{}, nil, err
		}
		return store.Key{}, nil, store.ErrKeyNotFound
	}
	return k, v, nil
}

// lookupFields are the fields of a lookup entry that LookupHash reads, in its order.
var lookupFields = append([]string{"id", "instance", "env", "exp", "rev"}, restrictFields...)

// LookupHash implements store.Store: one round trip.
func (s *Store) LookupHash(ctx context.Context, h apikey.Hash) (store.Lookup, error) {
	v, err := s.rdb.HMGet(ctx, s.kLookup(h), lookupFields...).Result()
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
	l := store.Lookup{ID: str(0), Instance: str(1), Environment: env,
		ExpiresAt: store.FromMillis(num(3)), RevokedAt: store.FromMillis(num(4))}
	r, err := decodeRestrictions(v[5:])
	if err != nil {
		return store.Lookup{}, fmt.Errorf("decoding lookup entry of key %s: %v", l.ID, err)
	}
	l.Scopes, l.AllowedIPs, l.Metadata, l.RateLimit, l.Quota = r.Scopes, r.AllowedIPs, r.Metadata, r.RateLimit, r.Quota
	return l, nil
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
// (0) or later than ARGV[2]; it returns the field's value afterwards (empty if no hash).
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

// touchScript records uses: for each existing hash KEYS[i], its field ARGV[1] becomes
// ARGV[i+1] if that is later. Every key of one call is on one slot (one instance's).
var touchScript = redis.NewScript(`
for i, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then
    local at = tonumber(ARGV[i + 1])
    if tonumber(redis.call('HGET', k, ARGV[1]) or '0') < at then redis.call('HSET', k, ARGV[1], ARGV[i + 1]) end
  end
end
return 1
`)

// touchChunk bounds the keys of one touchScript call: about 0.1–0.3 ms of Redis.
const touchChunk = 32

// revokeScript revokes a listed record at ARGV[1] unless it is revoked already (the first
// revocation's time stays) and, when this call revoked it and ARGV[2] is an event id, adds
// the event in the same step. It returns {revoked_at, changed}; with no record, an empty revoked_at.
var revokeScript = redis.NewScript(addEventLua + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', 0} end
local cur = redis.call('HGET', KEYS[1], 'rev') or '0'
if tonumber(cur) ~= 0 then return {cur, 0} end
redis.call('HSET', KEYS[1], 'rev', ARGV[1])
if ARGV[2] ~= '' then add_event(KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4]) end
return {ARGV[1], 1}
`)

// setRevokedScript brings a revoked lookup entry's time in line with its listed record's
// (two concurrent revokes may have marked it with different times; the record's first one
// stands). An entry that is not revoked, or gone, is left alone.
var setRevokedScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'rev') or '0') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'rev', ARGV[1])
return 1
`)

// RevokeKey implements store.Store: the lookup entry is marked first (the key stops
// working), then the listed record together with the event (one script on the instance's
// slot, which decides which of concurrent revokes revoked the key), then the invalidation
// is published.
func (s *Store) RevokeKey(ctx context.Context, instance, id string, at time.Time, ev *store.Event) (store.Key, bool, error) {
	if err := store.CheckEvent(ev, instance); err != nil {
		return store.Key{}, false, err
	}
	k, changed, err := s.refuse(ctx, instance, id, "rev", at, "revoke:lookup", ev)
	if changed && ev != nil {
		s.Recorded(instance)
	}
	return k, changed, err
}

// ExpireKey implements store.Store, in the same order as RevokeKey.
func (s *Store) ExpireKey(ctx context.Context, instance, id string, at time.Time) (store.Key, error) {
	if at.IsZero() {
		return store.Key{}, store.ErrNoExpiry
	}
	k, _, err := s.refuse(ctx, instance, id, "exp", at, "expire:lookup", nil)
	return k, err
}

// refuse revokes (field rev) or shortens the expiry of (field exp) a key: the lookup entry,
// then the listed record, then the invalidations. For a revoke it reports whether this call
// revoked the key.
func (s *Store) refuse(ctx context.Context, instance, id, field string, at time.Time, step string, ev *store.Event) (store.Key, bool, error) {
	k, err := s.Key(ctx, instance, id)
	if err != nil {
		return store.Key{}, false, err
	}
	if field == "rev" && !k.RevokedAt.IsZero() {
		at = k.RevokedAt // a repeated revoke keeps the first time
	}
	ms := store.Millis(at)
	w := &writes{s: s}
	run := func(key string, do func(c redis.Cmdable) error) error { return w.run(ctx, key, do) }
	mark := func(key string) (v string, err error) {
		err = run(key, func(c redis.Cmdable) error {
			v, err = setEarliestScript.Run(ctx, c, []string{key}, field, ms).Text()
			return err
		})
		return v, err
	}
	lookupMs := ms
	v, err := mark(s.kLookup(k.Hash))
	if err != nil {
		return store.Key{}, false, err
	}
	if v != "" {
		if lookupMs, err = strconv.ParseInt(v, 10, 64); err != nil {
			return store.Key{}, false, fmt.Errorf("reading lookup entry of key %s: %v", id, err)
		}
	}
	// From here on the lookup entry refuses the key: whatever fails next, the caches are
	// still told, here and (best effort) on the other gateways.
	changed := false
	err = s.fail(step)
	if err == nil && field == "rev" {
		var evKeys []string
		var evArgs []any
		if evKeys, evArgs, err = s.eventArgs(instance, ev); err == nil {
			err = run(s.kKey(instance, id), func(c redis.Cmdable) error {
				res, err := revokeScript.Run(ctx, c, append([]string{s.kKey(instance, id)}, evKeys...),
					append([]any{lookupMs}, evArgs...)...).Slice()
				if err != nil {
					return err
				}
				v, _ = res[0].(string)
				n, _ := res[1].(int64)
				changed = n == 1
				return nil
			})
		}
	} else if err == nil {
		v, err = mark(s.kKey(instance, id))
	}
	if err == nil && v == "" {
		err = store.ErrKeyNotFound
	}
	if err == nil {
		ms, _ = strconv.ParseInt(v, 10, 64)
		if field == "rev" {
			k.RevokedAt = store.FromMillis(ms)
			if ms != lookupMs { // a concurrent revoke came first with another time
				err = run(s.kLookup(k.Hash), func(c redis.Cmdable) error {
					return setRevokedScript.Run(ctx, c, []string{s.kLookup(k.Hash)}, ms).Err()
				})
			}
		} else {
			k.ExpiresAt = store.FromMillis(ms)
		}
	}
	if err = w.invalidate(ctx, k.Hash, err); err != nil {
		return store.Key{}, false, err
	}
	return k, changed, nil
}

// writes are the steps of one write that spans slots: each step is s.write, but a step the
// master took that too few replicas acknowledged goes on to the end (what it wrote is in
// force on the master) and the whole write reports it then.
type writes struct {
	s             *Store
	notReplicated error
}

func (w *writes) run(ctx context.Context, key string, do func(c redis.Cmdable) error) error {
	err := w.s.write(ctx, key, do)
	if errors.Is(err, ErrNotReplicated) {
		w.notReplicated, err = cmp.Or(w.notReplicated, err), nil
	}
	return err
}

// invalidate is the last step of a write that changed a key's lookup entry (and err what
// failed before it, if anything): the watchers of this process first (once the write returns,
// this process no longer serves the key from its cache), then the stream for every other
// process, also after a failure. It returns the write's error.
func (w *writes) invalidate(ctx context.Context, h apikey.Hash, err error) error {
	w.s.Invalidate(h)
	perr := w.run(ctx, w.s.kStream(), func(c redis.Cmdable) error { return w.s.publish(ctx, c, h) })
	switch {
	case err != nil:
		return err
	case perr != nil:
		return fmt.Errorf("publishing invalidation: %w", perr)
	}
	return w.notReplicated
}

func (s *Store) publish(ctx context.Context, c redis.Cmdable, h apikey.Hash) error {
	id, err := c.XAdd(ctx, &redis.XAddArgs{
		Stream: s.kStream(), MaxLen: s.opts.StreamMaxLen, Approx: true,
		Values: []string{"h", hex.EncodeToString(h[:])},
	}).Result()
	if err == nil {
		s.notePublished(id) // the position a writer waits for (fleet.Registry.Published)
	}
	return err
}

// TouchKey implements store.Store.
func (s *Store) TouchKey(ctx context.Context, instance, id string, at time.Time) error {
	return s.TouchKeys(ctx, []store.Touch{{Instance: instance, ID: id, At: at}})
}

// TouchKeys implements store.Store: one touchScript call per instance and touchChunk keys,
// one after another (each call holds Redis for its run, and a pipeline of them would hold
// it for all of theirs: lookups from other connections wait meanwhile). On a Redis without
// the script in its cache (a fresh server, a failover, SCRIPT FLUSH) a call is sent again
// with the script itself, which puts it back. Every call is made; the first error is returned.
func (s *Store) TouchKeys(ctx context.Context, ts []store.Touch) error {
	type call struct {
		keys []string
		args []any
	}
	var calls []call
	open := map[string]int{} // instance → its call still taking keys
	for _, t := range ts {
		i, ok := open[t.Instance]
		if !ok || len(calls[i].keys) == touchChunk {
			i = len(calls)
			open[t.Instance] = i
			calls = append(calls, call{args: []any{"last"}})
		}
		c := &calls[i]
		c.keys = append(c.keys, s.kKey(t.Instance, t.ID))
		c.args = append(c.args, store.Millis(t.At))
	}
	var first error
	for _, c := range calls {
		if err := touchScript.Run(ctx, s.rdb, c.keys, c.args...).Err(); err != nil && first == nil {
			first = err
		}
	}
	return first
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
	// Closing the client also closes the connection of the listener's blocking XREAD, which
	// a cancelled context does not interrupt: Close need not wait out the block.
	err := s.rdb.Close()
	<-s.done
	return err
}

// Client returns the underlying Redis client (for tests and health checks).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Interface guards
var _ store.Store = (*Store)(nil)
