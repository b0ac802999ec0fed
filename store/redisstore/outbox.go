package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/store"
)

// The webhooks' outboxes (store.Outbox). The registrations are one hash for the deployment;
// everything else of a webhook lives with each instance, on its slot, so that a claim is one
// script there:
//
//	P{webhooks}:registered       HASH  webhook id → when it was registered (ms, Redis' clock)
//	P {i:<id>}:whcur             HASH  webhook id → the last trail sequence (evseq) moved
//	P {i:<id>}:wh:<webhook>      ZSET  "<seq, 16 digits>:<event id>" → when it is due (ms)
//	P {i:<id>}:whd:<webhook>     HASH  per event id: e:<id> the event JSON, n:<id> its
//	                                   attempts, q:<id> when it was queued (ms), m:<id> its
//	                                   member of the ZSET
//
// The ZSET's members start with the event's sequence so that items due at the same
// millisecond (all those one claim moved) are claimed in the trail's order.

func (s *Store) kWebhooks() string                 { return s.p + "{webhooks}:registered" }
func (s *Store) kCursors(id string) string         { return s.p + "{i:" + id + "}:whcur" }
func (s *Store) kOutbox(id, webhook string) string { return s.p + "{i:" + id + "}:wh:" + webhook }
func (s *Store) kOutboxData(id, webhook string) string {
	return s.p + "{i:" + id + "}:whd:" + webhook
}

// outboxMoveBatch bounds how many events of the trail one claim moves into an outbox; the
// rest are moved by the next claims.
const outboxMoveBatch = 500

// nowLua sets now to Redis' clock in milliseconds.
const nowLua = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

var registerWebhookScript = redis.NewScript(nowLua + `
return redis.call('HSETNX', KEYS[1], ARGV[1], now)
`)

// markTrailScript sets the cursor of webhook ARGV[1] in an instance's trail at its end,
// unless it is set already or the instance does not exist.
var markTrailScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[2], ARGV[1], redis.call('HGET', KEYS[1], 'evseq') or '0')
`)

// claimOutboxScript moves the events recorded after the cursor into the outbox (up to
// ARGV[4] of them; those whose type is not among ARGV[5..], when given, are passed over),
// then claims up to ARGV[2] due items, each due again ARGV[3] ms later. It returns, per item,
// the event JSON, the attempts before this one and the queued time.
//
// KEYS: instance, events, evdata, cursors, outbox, outbox data.
// ARGV: webhook, max, lease ms, move batch, types...
var claimOutboxScript = redis.NewScript(nowLua + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local cur = redis.call('HGET', KEYS[4], ARGV[1]) or '0'
local any = #ARGV < 5
local types = {}
for i = 5, #ARGV do types[ARGV[i]] = true end
local trail = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. cur, '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))
local last = cur
for i = 1, #trail, 2 do
  local id, seq = trail[i], trail[i + 1]
  last = seq
  local json = redis.call('HGET', KEYS[3], id)
  local keep = json ~= false
  if keep and not any then
    local ok, e = pcall(cjson.decode, json)
    keep = ok and type(e) == 'table' and types[e.type] == true
  end
  if keep and redis.call('HEXISTS', KEYS[6], 'm:' .. id) == 0 then
    local m = string.rep('0', 16 - #seq) .. seq .. ':' .. id
    redis.call('ZADD', KEYS[5], now, m)
    redis.call('HSET', KEYS[6], 'e:' .. id, json, 'n:' .. id, 0, 'q:' .. id, now, 'm:' .. id, m)
  end
end
if last ~= cur then redis.call('HSET', KEYS[4], ARGV[1], last) end
local out = {}
if tonumber(ARGV[2]) < 1 then return out end
local due = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local id = string.match(m, '^%d+:(.*)$')
  local v = id and redis.call('HMGET', KEYS[6], 'e:' .. id, 'n:' .. id, 'q:' .. id)
  if v and v[1] then
    redis.call('ZADD', KEYS[5], now + tonumber(ARGV[3]), m)
    redis.call('HINCRBY', KEYS[6], 'n:' .. id, 1)
    out[#out + 1] = v[1]
    out[#out + 1] = v[2] or '0'
    out[#out + 1] = v[3] or '0'
  else
    redis.call('ZREM', KEYS[5], m) -- no data: not an item
  end
end
return out
`)

// KEYS: outbox, outbox data. ARGV: event id.
var ackOutboxScript = redis.NewScript(`
local id = ARGV[1]
local m = redis.call('HGET', KEYS[2], 'm:' .. id)
if m then redis.call('ZREM', KEYS[1], m) end
redis.call('HDEL', KEYS[2], 'e:' .. id, 'n:' .. id, 'q:' .. id, 'm:' .. id)
return 1
`)

// KEYS: outbox, outbox data. ARGV: event id, delay ms.
var retryOutboxScript = redis.NewScript(nowLua + `
local m = redis.call('HGET', KEYS[2], 'm:' .. ARGV[1])
if not m then return 0 end
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), m)
`)

// RegisterWebhook implements store.Outbox. The trails are marked before the webhook is
// registered: until then claims move nothing, so none can start an instance's cursor at 0
// (which registration means only for instances created after it). A call that fails half-way
// leaves the marks it made; the next call keeps them.
func (s *Store) RegisterWebhook(ctx context.Context, webhook string) error {
	if ok, err := s.webhookRegistered(ctx, webhook); err != nil || ok {
		return err
	}
	ins, err := s.Instances(ctx)
	if err != nil {
		return err
	}
	if len(ins) > 0 {
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, in := range ins {
				markTrailScript.Eval(ctx, p, []string{s.kInstance(in.ID), s.kCursors(in.ID)}, webhook)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("marking the trails for webhook %s: %v", webhook, err)
		}
	}
	if err := registerWebhookScript.Run(ctx, s.rdb, []string{s.kWebhooks()}, webhook).Err(); err != nil {
		return err
	}
	s.webhooks.Store(webhook, true)
	return nil
}

// webhookRegistered reports whether webhook is registered. A registration is never undone,
// so once seen it is remembered, and claims take one round trip.
func (s *Store) webhookRegistered(ctx context.Context, webhook string) (bool, error) {
	if _, ok := s.webhooks.Load(webhook); ok {
		return true, nil
	}
	ok, err := s.rdb.HExists(ctx, s.kWebhooks(), webhook).Result()
	if ok {
		s.webhooks.Store(webhook, true)
	}
	return ok, err
}

// ClaimOutbox implements store.Outbox: one script on the instance's slot (after a check of
// the registration, the first time).
func (s *Store) ClaimOutbox(ctx context.Context, webhook, instance string, types []string, max int, lease time.Duration) ([]store.OutboxItem, error) {
	if ok, err := s.webhookRegistered(ctx, webhook); err != nil || !ok {
		return nil, err
	}
	keys := []string{s.kInstance(instance), s.kEvents(instance), s.kEventData(instance),
		s.kCursors(instance), s.kOutbox(instance, webhook), s.kOutboxData(instance, webhook)}
	args := []any{webhook, max, lease.Milliseconds(), outboxMoveBatch}
	for _, t := range types {
		args = append(args, t)
	}
	v, err := claimOutboxScript.Run(ctx, s.rdb, keys, args...).StringSlice()
	if err != nil {
		return nil, err
	}
	var out []store.OutboxItem
	for i := 0; i+2 < len(v); i += 3 {
		var it store.OutboxItem
		if err := json.Unmarshal([]byte(v[i]), &it.Event); err != nil {
			return nil, fmt.Errorf("decoding an outbox item of instance %s: %v", instance, err)
		}
		n, _ := strconv.Atoi(v[i+1])
		q, _ := strconv.ParseInt(v[i+2], 10, 64)
		it.Attempts, it.QueuedAt = n, store.FromMillis(q)
		out = append(out, it)
	}
	return out, nil
}

// AckOutbox implements store.Outbox.
func (s *Store) AckOutbox(ctx context.Context, webhook, instance, eventID string) error {
	return ackOutboxScript.Run(ctx, s.rdb, []string{s.kOutbox(instance, webhook), s.kOutboxData(instance, webhook)}, eventID).Err()
}

// RetryOutbox implements store.Outbox.
func (s *Store) RetryOutbox(ctx context.Context, webhook, instance, eventID string, delay time.Duration) error {
	return retryOutboxScript.Run(ctx, s.rdb, []string{s.kOutbox(instance, webhook), s.kOutboxData(instance, webhook)},
		eventID, max(delay, 0).Milliseconds()).Err()
}

// OutboxDepth implements store.Outbox: one ZCARD per instance, pipelined.
func (s *Store) OutboxDepth(ctx context.Context, webhook string) (int64, error) {
	ins, err := s.Instances(ctx)
	if err != nil || len(ins) == 0 {
		return 0, err
	}
	cmds := make([]*redis.IntCmd, len(ins))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, in := range ins {
			cmds[i] = p.ZCard(ctx, s.kOutbox(in.ID, webhook))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n, nil
}

// Interface guards
var _ store.Outbox = (*Store)(nil)
