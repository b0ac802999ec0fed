package redisstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/store"
)

// claimScript is the atomic step of a roll, on the instance's slot: it refuses an old key
// that is revoked, expired at ARGV[1] or rolled already (an error reply NOTACTIVE or ROLLED,
// writing nothing); otherwise it records the replacement's id on the old key (field
// replaced), writes the replacement's listed record as createKeyScript does, and adds the
// event when ARGV[9] is an event id.
//
// KEYS: old key record, instance, replacement record, order, events, evdata.
// ARGV: roll time, replacement id, env, name, prefix, hash, created, exp, event id, JSON, max,
// then the replacement's restrictFields.
var claimScript = redis.NewScript(addEventLua + restrictLua + `
if redis.call('EXISTS', KEYS[2]) == 0 then return redis.error_reply('NOINSTANCE instance not found') end
local old = redis.call('HMGET', KEYS[1], 'id', 'rev', 'exp', 'replaced')
if not old[1] then return redis.error_reply('NOKEY api key not found') end
local exp = tonumber(old[3] or '0')
if tonumber(old[2] or '0') ~= 0 or (exp ~= 0 and exp <= tonumber(ARGV[1])) then
  return redis.error_reply('NOTACTIVE the key is not active')
end
if old[4] and old[4] ~= '' then return redis.error_reply('ROLLED the key has already been rolled') end
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('KEYEXISTS key id already exists') end
redis.call('HSET', KEYS[1], 'replaced', ARGV[2])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('HSET', KEYS[3], 'id', ARGV[2], 'env', ARGV[3], 'name', ARGV[4], 'prefix', ARGV[5],
  'hash', ARGV[6], 'created', ARGV[7], 'exp', ARGV[8], 'rev', '0', 'last', '0', 'seq', seq)
set_optional(KEYS[3], RESTRICT_FIELDS, {unpack(ARGV, 12, 16)})
redis.call('ZADD', KEYS[4], seq, ARGV[2])
if ARGV[9] ~= '' then add_event(KEYS[2], KEYS[5], KEYS[6], ARGV[9], ARGV[10], ARGV[11]) end
return seq
`)

// unclaimScript undoes a claim that the rest of its roll did not follow: the old key is
// unclaimed if this roll claimed it, and the replacement's record and the event go.
//
// KEYS: old key record, replacement record, order, events, evdata.
// ARGV: replacement id, event id ("" for none).
var unclaimScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'replaced') == ARGV[1] then redis.call('HDEL', KEYS[1], 'replaced') end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('HDEL', KEYS[5], ARGV[2])
end
return 1
`)

// RollKey implements store.Store. The claim (with the replacement's listed record and the
// event) is one script on the instance's slot, so of concurrent rolls exactly one gets past
// it. Then, across slots and in this order: the replacement's lookup entry (it works), the
// old key's lookup entry and listed record take the new expiry, and the old key's hash is
// published as an invalidation. If anything after the claim fails, the replacement and the
// claim are undone (best effort, the lookup entry first); an expiry already written stays.
func (s *Store) RollKey(ctx context.Context, instance, id string, next store.Key, oldExpiresAt time.Time, ev *store.Event) (store.Key, error) {
	if next.Instance != instance {
		return store.Key{}, fmt.Errorf("%w: replacement of instance %q for a key of %q", store.ErrWrongInstance, next.Instance, instance)
	}
	if err := store.CheckEvent(ev, instance); err != nil {
		return store.Key{}, err
	}
	if oldExpiresAt.IsZero() {
		return store.Key{}, store.ErrNoExpiry
	}
	evKeys, evArgs, err := s.eventArgs(instance, ev)
	if err != nil {
		return store.Key{}, err
	}
	r, err := restrictions(next)
	if err != nil {
		return store.Key{}, err
	}
	lookup, err := lookupValues(next)
	if err != nil {
		return store.Key{}, err
	}
	hexHash := hex.EncodeToString(next.Hash[:])
	undo := func() { s.undoRoll(instance, id, next, hexHash, ev) }

	err = s.write(ctx, s.kKey(instance, id), func(c redis.Cmdable) error {
		keys := append([]string{s.kKey(instance, id), s.kInstance(instance), s.kKey(instance, next.ID), s.kOrder(instance)}, evKeys[1:]...)
		args := append([]any{store.Millis(next.CreatedAt), next.ID, next.Environment.String(), next.Name, next.Prefix,
			hexHash, store.Millis(next.CreatedAt), store.Millis(next.ExpiresAt)}, evArgs...)
		args = append(args, restrictArgs(r)...)
		return claimScript.Run(ctx, c, keys, args...).Err()
	})
	if err != nil {
		msg := err.Error()
		switch {
		case strings.HasPrefix(msg, "NOINSTANCE"):
			return store.Key{}, store.ErrInstanceNotFound
		case strings.HasPrefix(msg, "NOKEY"):
			return store.Key{}, store.ErrKeyNotFound
		case strings.HasPrefix(msg, "NOTACTIVE"), strings.HasPrefix(msg, "ROLLED"):
			return s.refusedRoll(ctx, instance, id, next.CreatedAt, msg)
		case strings.HasPrefix(msg, "KEYEXISTS"):
			return store.Key{}, fmt.Errorf("key id %s already exists", next.ID)
		}
		// Not replicated, or no answer: the claim may stand.
		undo()
		return store.Key{}, err
	}
	err = s.fail("roll:claimed")
	if err == nil {
		err = s.write(ctx, s.kLookupHex(hexHash), func(c redis.Cmdable) error {
			return c.HSet(ctx, s.kLookupHex(hexHash), lookup...).Err()
		})
	}
	if err != nil {
		undo()
		return store.Key{}, err
	}
	old, _, err := s.refuse(ctx, instance, id, "exp", oldExpiresAt, "roll:expire", nil)
	if err != nil {
		// The replacement's secret is never shown: it must not work, and the old key must
		// be rollable again. (The old key's new expiry, if written, stays in force.)
		undo()
		return store.Key{}, err
	}
	if ev != nil {
		s.Recorded(instance)
	}
	return old, nil
}

// refusedRoll returns the old key of a roll the claim refused, with the error that says why.
func (s *Store) refusedRoll(ctx context.Context, instance, id string, at time.Time, reply string) (store.Key, error) {
	old, err := s.Key(ctx, instance, id)
	if err != nil {
		return store.Key{}, err
	}
	if err := store.CheckRoll(old, at); err != nil {
		return old, err
	}
	// The state changed since the claim (a failed roll was undone meanwhile): say what the
	// claim saw.
	if strings.HasPrefix(reply, "ROLLED") {
		return old, store.ErrAlreadyRolled
	}
	return old, store.ErrNotActive
}

// undoRoll removes what a failed roll wrote, best effort: the replacement's lookup entry
// first, and only once it is known gone the claim, the listed record and the event, so that
// the replacement never works without being listed.
func (s *Store) undoRoll(instance, id string, next store.Key, hexHash string, ev *store.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.rdb.Del(ctx, s.kLookupHex(hexHash)).Err() != nil {
		return
	}
	evID := ""
	if ev != nil {
		evID = ev.ID
	}
	err := unclaimScript.Run(ctx, s.rdb,
		[]string{s.kKey(instance, id), s.kKey(instance, next.ID), s.kOrder(instance), s.kEvents(instance), s.kEventData(instance)},
		next.ID, evID).Err()
	if err != nil && s.opts.OnError != nil {
		s.opts.OnError(fmt.Errorf("undoing a failed roll of key %s: %v", id, err))
	}
}
