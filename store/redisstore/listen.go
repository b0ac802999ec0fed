package redisstore

import (
	"context"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// listen follows the invalidation stream and delivers it to the watchers. A stream, unlike
// pub/sub, has a cursor: after a dropped connection the listener reads on from the last entry
// it saw, so nothing published meanwhile is lost. When that is impossible (the stream was
// trimmed past the cursor, or Redis lost it) the watchers are flushed instead. Watchers are
// told the channel is unhealthy from the first error until the listener has caught up.
func (s *Store) listen(ctx context.Context) {
	defer close(s.done)
	const block = time.Second
	var (
		cursor  string // last entry seen; "" until the position is known
		backoff = 50 * time.Millisecond
		// caughtUp: a read since the last (re)connection returned everything up to the
		// stream's end. Until then reads do not block, so the listener turns healthy as
		// soon as it has delivered what it missed.
		caughtUp bool
		rt       = s.readTimeout()
	)
	for ctx.Err() == nil {
		if cursor == "" {
			id, err := s.streamTail(ctx)
			if err != nil {
				s.listenerError(ctx, err, &backoff)
				continue
			}
			// Nothing is cached before the first position is known, so nothing to replay.
			cursor = id
			caughtUp = false
			s.ack(ctx, cursor) // everything before it is applied: there was nothing to apply
		}
		wait := block
		if !caughtUp {
			wait = -1 // no BLOCK
		}
		rctx, cancel := readContext(ctx, wait, rt)
		res, err := s.rdb.XRead(rctx, &redis.XReadArgs{
			Streams: []string{s.kStream(), cursor}, Count: 1000, Block: wait,
		}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			caughtUp = true
			s.setHealthy(true)
			backoff = 50 * time.Millisecond
			s.ack(ctx, cursor) // idle: a gateway id set since the last batch is acknowledged now
			continue
		}
		if err != nil {
			caughtUp = false
			if s.listenerError(ctx, err, &backoff) {
				// Reconnected later: check that the stream still holds what follows the cursor.
				cursor = s.resume(ctx, cursor)
			}
			continue
		}
		for _, st := range res {
			hashes := make([]apikey.Hash, 0, len(st.Messages))
			flush := false
			for _, m := range st.Messages {
				v, _ := m.Values["h"].(string)
				var h apikey.Hash
				if v == "*" {
					flush = true
				} else if n, err := hex.Decode(h[:], []byte(v)); err == nil && n == len(h) {
					hashes = append(hashes, h)
				}
				cursor = m.ID
			}
			if s.opts.ObserveLag != nil && len(st.Messages) > 0 {
				// A stream id starts with the Redis server's clock in milliseconds.
				if ms, _ := splitID(st.Messages[len(st.Messages)-1].ID); ms > 0 {
					s.opts.ObserveLag(time.Since(time.UnixMilli(int64(ms))))
				}
			}
			if flush {
				s.Each(func(w store.Watcher) { w.Flush() })
			} else if len(hashes) > 0 {
				s.Invalidate(hashes...)
			}
		}
		if n := countMessages(res); n < 1000 {
			caughtUp = true
			s.setHealthy(true)
		}
		// The batch is delivered: acknowledge it (one write a batch, not an entry).
		s.ack(ctx, cursor)
		backoff = 50 * time.Millisecond
	}
	s.setHealthy(false)
}

func countMessages(res []redis.XStream) int {
	n := 0
	for _, st := range res {
		n += len(st.Messages)
	}
	return n
}

// readContext is the context of one XREAD: without retries, and, for a blocking read, with a
// deadline of the block time plus the client's read timeout rt. go-redis itself gives a
// blocking read its block time plus 10 s, so a Redis that stops answering (frozen, or cut off
// without a reset) would go unnoticed that long, the channel reported healthy and the cache
// trusted well past max_stale. The deadline reaches the socket on clients with
// ContextTimeoutEnabled.
func readContext(ctx context.Context, block, rt time.Duration) (context.Context, context.CancelFunc) {
	ctx = withoutRetry(ctx)
	if block < 0 || rt <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, block+rt)
}

// readTimeout is the client's read timeout (0 when unknown or disabled).
func (s *Store) readTimeout() time.Duration {
	switch c := s.rdb.(type) {
	case *redis.Client:
		return c.Options().ReadTimeout
	case *redis.ClusterClient:
		return c.Options().ReadTimeout
	}
	return 0
}

// go-redis retries a command that lost its connection on a new one, silently. For the
// listener's XREAD that would skip resume: a stream that was trimmed, lost or recreated while
// the connection was down would be read on from the old cursor, and the entries in the gap
// lost without a Flush (and the channel never reported unhealthy). So the listener's reads
// are marked, and noRetryHook turns the client's retries off for them: a dropped connection
// reaches the listener as an error.
type noRetryKey struct{}

func withoutRetry(ctx context.Context) context.Context {
	return context.WithValue(ctx, noRetryKey{}, true)
}

type noRetryHook struct{}

func (noRetryHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (noRetryHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(noRetryKey{}) != nil {
			return next(ctx, noRetryCmd{cmd})
		}
		return next(ctx, cmd)
	}
}

func (noRetryHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// noRetryCmd is a command that the client must not retry.
type noRetryCmd struct{ redis.Cmder }

func (noRetryCmd) NoRetry() bool { return true }

// listenerError marks the channel unhealthy and waits before the next try. It returns
// whether the listener should resume (false when shutting down).
func (s *Store) listenerError(ctx context.Context, err error, backoff *time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	s.setHealthy(false)
	if s.opts.OnError != nil {
		s.opts.OnError(err)
	}
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	if *backoff < time.Second {
		*backoff *= 2
	}
	return true
}

// streamTail returns the id of the stream's last entry, or "0-0".
func (s *Store) streamTail(ctx context.Context) (string, error) {
	info, err := s.rdb.XInfoStream(ctx, s.kStream()).Result()
	if err != nil {
		if isNoSuchKey(err) {
			return "0-0", nil
		}
		return "", err
	}
	return info.LastGeneratedID, nil
}

// resume returns the cursor to read on from after a dropped connection: the same cursor when
// the stream still holds every entry after it, else (after flushing every watcher) the tail.
// It returns "" when Redis cannot be asked yet (the caller starts over).
func (s *Store) resume(ctx context.Context, cursor string) string {
	info, err := s.rdb.XInfoStream(ctx, s.kStream()).Result()
	switch {
	case err != nil && isNoSuchKey(err):
		if cursor == "0-0" {
			return cursor
		}
		s.Each(func(w store.Watcher) { w.Flush() })
		return "0-0"
	case err != nil:
		return cursor // still down: XREAD will fail again and we come back here
	}
	gap := compareIDs(info.LastGeneratedID, cursor) < 0 // stream recreated: ids went back
	if info.Length > 0 && compareIDs(info.FirstEntry.ID, cursor) > 0 && cursor != "0-0" {
		gap = true // entries after the cursor may have been trimmed away
	}
	if info.Length == 0 && compareIDs(info.LastGeneratedID, cursor) > 0 {
		// Entries came after the cursor and are all gone: XTRIM does not move
		// max-deleted-entry-id, so an emptied stream shows only this way.
		gap = true
	}
	if info.MaxDeletedEntryID != "" && compareIDs(info.MaxDeletedEntryID, cursor) > 0 {
		gap = true
	}
	if gap {
		s.Each(func(w store.Watcher) { w.Flush() })
		return info.LastGeneratedID
	}
	return cursor
}

func isNoSuchKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such key")
}

// compareIDs orders two stream ids "ms-seq".
func compareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		if am < bm {
			return -1
		}
		return 1
	case as != bs:
		if as < bs {
			return -1
		}
		return 1
	}
	return 0
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	a, _ := strconv.ParseUint(ms, 10, 64)
	b, _ := strconv.ParseUint(seq, 10, 64)
	return a, b
}
