package redisstore

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/store"
)

// The fleet's keys share the hash tag {fleet} (or the prefix's own tag), so on Cluster they
// sit in one slot and a script may touch both:
//
//	P{fleet}:gateways  HASH  gateway id → "<last seen ms> <started ms> <hostname>"
//	P{fleet}:acks      HASH  gateway id → the stream id up to which its listener has
//	                         delivered invalidations to its watchers
func (s *Store) kGateways() string { return s.p + "{fleet}:gateways" }
func (s *Store) kAcks() string     { return s.p + "{fleet}:acks" }

// heartbeatScript stamps a gateway with the Redis server's clock (so that gateways on hosts
// whose clocks disagree judge liveness alike).
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ms .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return ms
`)

// gatewaysScript returns the gateways seen within ARGV[1] ms (id, value pairs) and forgets
// those not seen for ARGV[2] ms, with their acknowledgements.
var gatewaysScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local seen = tonumber(string.match(all[i+1], '^(%d+)') or '0')
  local age = now - seen
  if age <= tonumber(ARGV[1]) then
    out[#out+1] = all[i]
    out[#out+1] = all[i+1]
  elseif age > tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('HDEL', KEYS[2], all[i])
  end
end
return out
`)

// Heartbeat implements fleet.Registry.
func (s *Store) Heartbeat(ctx context.Context, g fleet.Gateway) error {
	return heartbeatScript.Run(ctx, s.rdb, []string{s.kGateways()}, g.ID,
		store.Millis(g.StartedAt), g.Hostname).Err()
}

// Leave implements fleet.Registry.
func (s *Store) Leave(ctx context.Context, id string) error {
	if _, err := s.rdb.HDel(ctx, s.kGateways(), id).Result(); err != nil {
		return err
	}
	return s.rdb.HDel(ctx, s.kAcks(), id).Err()
}

// Gateways implements fleet.Registry. Gateways gone for a minute (or ten timeouts, if
// longer) are forgotten.
func (s *Store) Gateways(ctx context.Context, timeout time.Duration) ([]fleet.Gateway, error) {
	forget := max(time.Minute, 10*timeout)
	v, err := gatewaysScript.Run(ctx, s.rdb, []string{s.kGateways(), s.kAcks()},
		timeout.Milliseconds(), forget.Milliseconds()).StringSlice()
	if err != nil {
		return nil, err
	}
	out := make([]fleet.Gateway, 0, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		f := strings.SplitN(v[i+1], " ", 3)
		if len(f) < 3 {
			continue
		}
		seen, _ := strconv.ParseInt(f[0], 10, 64)
		started, _ := strconv.ParseInt(f[1], 10, 64)
		out = append(out, fleet.Gateway{ID: v[i], Hostname: f[2],
			StartedAt: store.FromMillis(started), LastSeenAt: store.FromMillis(seen)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// AckAs implements fleet.Registry: the listener writes the acknowledgement after each
// batch it delivers (one HSET a batch, on the listener's goroutine), and within a block
// (a second) of AckAs when idle.
func (s *Store) AckAs(id string) {
	s.ackMu.Lock()
	s.ackID = id
	s.ackMu.Unlock()
}

// Published implements fleet.Registry: the newest stream id this process' writes appended.
func (s *Store) Published() fleet.Position {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	return fleet.Position(s.published)
}

// Acked implements fleet.Registry: one HMGET.
func (s *Store) Acked(ctx context.Context, ids []string, pos fleet.Position) ([]bool, error) {
	out := make([]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	v, err := s.rdb.HMGet(ctx, s.kAcks(), ids...).Result()
	if err != nil {
		return nil, err
	}
	for i, a := range v {
		str, _ := a.(string)
		out[i] = str != "" && compareIDs(str, string(pos)) >= 0
	}
	return out, nil
}

// published records the id of an entry this process appended to the stream.
func (s *Store) notePublished(id string) {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if s.published == "" || compareIDs(id, s.published) > 0 {
		s.published = id
	}
}

// ack writes the listener's acknowledgement, cursor, when it or the gateway id changed
// since the last one written. Called only by the listener, after delivering up to cursor.
func (s *Store) ack(ctx context.Context, cursor string) {
	s.ackMu.Lock()
	id := s.ackID
	s.ackMu.Unlock()
	if id == "" || cursor == "" || (id == s.ackedID && cursor == s.acked) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, max(s.readTimeout(), time.Second))
	defer cancel()
	if s.rdb.HSet(actx, s.kAcks(), id, cursor).Err() == nil {
		s.ackedID, s.acked = id, cursor
	}
}

// Interface guards
var _ fleet.Registry = (*Store)(nil)
