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

var addEventScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOINSTANCE instance not found') end
local seq = redis.call('HINCRBY', KEYS[1], 'evseq', 1)
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  redis.call('HDEL', KEYS[3], unpack(old))
end
return seq
`)

// AddEvent implements store.Store: one script on the instance's slot, trimming as it goes.
func (s *Store) AddEvent(ctx context.Context, e store.Event) error {
	e.CreatedAt = store.FromMillis(store.Millis(e.CreatedAt))
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	err = addEventScript.Run(ctx, s.rdb,
		[]string{s.kInstance(e.Instance), s.kEvents(e.Instance), s.kEventData(e.Instance)},
		e.ID, v, s.opts.MaxEvents).Err()
	if err != nil && strings.HasPrefix(err.Error(), "NOINSTANCE") {
		return store.ErrInstanceNotFound
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
