package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// updateLookupScript writes the fields an update sets on a lookup entry, and only those (a
// concurrent expiry of a key whose scopes are updated is not overwritten): exp when ARGV[1]
// is not empty, then the field-value pairs that follow (an empty value deletes the field). A
// missing entry is not created: a key whose create failed half-way must not start working
// because it was updated. The entry's rev is never touched, so an update racing with a revoke
// cannot undo it.
var updateLookupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'exp', ARGV[1]) end
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
`)

// updateScript is the update of a listed record, on the instance's slot: a compare-and-set.
// If the record's name, exp, rev or restrictions and limits are no longer what the caller
// read (ARGV[1..8], "" for an absent field), it writes nothing and returns 0: the caller
// reads again. Otherwise it sets name, exp and the restrictFields (ARGV[9..15]) and, when
// ARGV[16] is an event id, adds the event in the same step, and returns 1.
//
// KEYS: key record, instance, events, evdata.
// ARGV: the eight fields as read, the seven new ones, event id, JSON, max.
var updateScript = redis.NewScript(addEventLua + restrictLua + `
local cur = redis.call('HMGET', KEYS[1], 'id', 'name', 'exp', 'rev', unpack(RESTRICT_FIELDS))
if not cur[1] then return redis.error_reply('NOKEY api key not found') end
for i = 1, 8 do
  if (cur[i + 1] or '') ~= ARGV[i] then return 0 end
end
redis.call('HSET', KEYS[1], 'name', ARGV[9], 'exp', ARGV[10])
set_optional(KEYS[1], RESTRICT_FIELDS, {unpack(ARGV, 11, 15)})
if ARGV[16] ~= '' then add_event(KEYS[2], KEYS[3], KEYS[4], ARGV[16], ARGV[17], ARGV[18]) end
return 1
`)

// maxUpdateAttempts bounds how often UpdateKey reads again after a concurrent change of the
// record came between its read and its write.
const maxUpdateAttempts = 32

// UpdateKey implements store.Store. It reads the record and, if the update changes it, writes
// the fields the update sets on the lookup entry first (a failure half-way leaves the gateways
// enforcing what was asked: a narrowed key is narrow at once), then the record with the
// event, one compare-and-set script on the instance's slot, then delivers the invalidation of
// the key's hash as a revocation does. When the record changed since it was read (a
// concurrent update, revoke or expiry), it starts again from the read: of concurrent updates
// the last to write the record wins, and its lookup entry agrees with it.
func (s *Store) UpdateKey(ctx context.Context, instance, id string, u store.KeyUpdate, ev *store.Event) (store.Key, error) {
	if err := store.CheckEvent(ev, instance); err != nil {
		return store.Key{}, err
	}
	w := &writes{s: s}
	var h apikey.Hash
	// wrote: a lookup entry write was sent. From then on the caches are told, whatever
	// follows, and a retry writes the lookup entry again even if it has nothing to change.
	wrote := false
	finish := func(k store.Key, err error) (store.Key, error) {
		if !wrote {
			return k, err
		}
		if err := w.invalidate(ctx, h, err); err != nil {
			return store.Key{}, err
		}
		return k, nil
	}
	for attempt := 0; ; attempt++ {
		if attempt == maxUpdateAttempts {
			return finish(store.Key{}, fmt.Errorf("updating key %s: %d concurrent changes came first", id, attempt))
		}
		old, raw, err := s.readKey(ctx, instance, id)
		if err == nil && !old.RevokedAt.IsZero() {
			err = store.ErrKeyRevoked
		}
		if err == nil && old.ReplacedBy != "" {
			err = store.ErrAlreadyRolled
		}
		if err != nil {
			return finish(store.Key{}, err)
		}
		h = old.Hash
		k, fields := u.Apply(old)
		if len(fields) == 0 && !wrote {
			return old, nil
		}
		r, err := restrictions(k)
		if err != nil {
			return finish(store.Key{}, err)
		}
		var e *store.Event
		if ev != nil && len(fields) > 0 {
			c := *ev
			c.Fields = fields
			e = &c
		}
		evKeys, evArgs, err := s.eventArgs(instance, e)
		if err != nil {
			return finish(store.Key{}, err)
		}

		lookup := []any{""}
		if u.ExpiresAt != nil {
			lookup[0] = store.Millis(k.ExpiresAt)
		}
		for i, set := range []bool{u.Scopes != nil, u.AllowedIPs != nil, u.Metadata != nil, u.RateLimit != nil, u.Quota != nil} {
			if set {
				lookup = append(lookup, restrictFields[i], r[i])
			}
		}
		wrote = true
		err = w.run(ctx, s.kLookup(h), func(c redis.Cmdable) error {
			return updateLookupScript.Run(ctx, c, []string{s.kLookup(h)}, lookup...).Err()
		})
		if err == nil {
			err = s.fail("update:lookup")
		}
		if err != nil {
			return finish(store.Key{}, err)
		}

		str := func(i int) string { v, _ := raw[i].(string); return v }
		args := []any{str(fieldName), str(fieldExp), str(fieldRev)}
		for i := range restrictFields {
			args = append(args, str(fieldScopes+i))
		}
		args = append(args, k.Name, store.Millis(k.ExpiresAt))
		args = append(args, restrictArgs(r)...)
		var set int64
		err = w.run(ctx, s.kKey(instance, id), func(c redis.Cmdable) error {
			var err error
			set, err = updateScript.Run(ctx, c, append([]string{s.kKey(instance, id)}, evKeys...), append(args, evArgs...)...).Int64()
			return err
		})
		if err != nil && strings.HasPrefix(err.Error(), "NOKEY") {
			err = store.ErrKeyNotFound
		}
		if err != nil {
			return finish(store.Key{}, err)
		}
		if set == 0 {
			continue // the record changed since it was read
		}
		if e == nil {
			return finish(k, nil)
		}
		ev.Fields = fields
		k, err = finish(k, nil)
		s.Recorded(instance) // the event is in the trail even if the invalidation failed
		return k, err
	}
}
