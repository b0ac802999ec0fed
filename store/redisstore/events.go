package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/store"
)

// Events of an instance, on its slot: {i:<id>}:events (ZSET event id by sequence) and
// {i:<id>}:evdata (HASH event id → JSON). The instance hash's field evseq counts them.

func (s *Store) kEvents(id string) string    { return s.p + "{i:" + id + "}:events" }
func (s *Store) kEventData(id string) string { return s.p + "{i:" + id + "}:evdata" }

// addEventLua defines add_event(inst, events, evdata, id, json, max), which appends an event
// to an instance's trail and trims it to max; the scripts that record an event in the same
// step as the change it records (revoke, roll) include it.
const addEventLua = `
local function add_event(inst, events, evdata, id, json, max)
  local seq = redis.call('HINCRBY', inst, 'evseq', 1)
  redis.call('ZADD', events, seq, id)
  redis.call('HSET', evdata, id, json)
  local excess = redis.call('ZCARD', events) - tonumber(max)
  if excess > 0 then
    local old = redis.call('ZRANGE', events, 0, excess - 1)
    redis.call('ZREMRANGEBYRANK', events, 0, excess - 1)
    redis.call('HDEL', evdata, unpack(old))
  end
  return seq
end
`

var addEventScript = redis.NewScript(addEventLua + `
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOINSTANCE instance not found') end
return add_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
`)

// eventArgs are the keys and arguments of an optional event for the scripts that include
// add_event: the instance hash, the trail's two keys, then id ("" for none), JSON and the
// trail's bound.
func (s *Store) eventArgs(instance string, ev *store.Event) (keys []string, args []any, err error) {
	keys = []string{s.kInstance(instance), s.kEvents(instance), s.kEventData(instance)}
	if ev == nil {
		return keys, []any{"", "", s.opts.MaxEvents}, nil
	}
	e := *ev
	e.CreatedAt = store.FromMillis(store.Millis(e.CreatedAt))
	v, err := json.Marshal(e)
	if err != nil {
		return nil, nil, err
	}
	return keys, []any{e.ID, v, s.opts.MaxEvents}, nil
}

// AddEvent implements store.Store: one script on the instance's slot, trimming as it goes.
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
	keys, args, err := s.eventArgs(e.Instance, &e)
	if err != nil {
		return err
	}
	err = addEventScript.Run(ctx, s.rdb, keys, args...).Err()
	if err != nil && strings.HasPrefix(err.Error(), "NOINSTANCE") {
		return store.ErrInstanceNotFound
	}
	if err == nil {
		s.Recorded(e.Instance)
	}
	return err
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, instance string, opt store.ListOptions) ([]store.Event, bool, error) {
	if opt.Limit < 1 {
		return nil, false, errors.New("limit must be at least 1")
	}
	max, err := s.pageStart(ctx, instance, s.kEvents(instance), opt.StartingAfter)
	if err != nil {
		return nil, false, err
	}
	ids, err := s.rdb.ZRevRangeByScore(ctx, s.kEvents(instance),
		&redis.ZRangeBy{Max: max, Min: "-inf", Count: int64(opt.Limit + 1)}).Result()
	if err != nil {
		return nil, false, err
	}
	more := len(ids) > opt.Limit
	if more {
		ids = ids[:opt.Limit]
	}
	if len(ids) == 0 {
		return nil, false, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.kEventData(instance), ids...).Result()
	if err != nil {
		return nil, false, err
	}
	out := make([]store.Event, 0, len(ids))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // trimmed between the two reads
		}
		var e store.Event
		if err := json.Unmarshal([]byte(str), &e); err != nil {
			return nil, false, fmt.Errorf("decoding event %s: %v", ids[i], err)
		}
		out = append(out, e)
	}
	return out, more, nil
}
