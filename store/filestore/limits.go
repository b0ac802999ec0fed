package filestore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/store"
)

// The limit counters of keys (store.Leaser). The file store serves one process, so:
//
//   - Rate-limit counters (the names store.RateWindow makes, "rl:…") live in memory: a window
//     lasts at most a day, and after a restart the window in progress starts again at 0 (at
//     most one extra window's worth of requests, once per restart).
//   - Every other counter (the quotas, store.QuotaPeriod's "q:…") is in the file, bucket
//     counters, key "<instance>/<key id>/<counter>", value the count and the expiry (Unix ms, 0
//     for none), 8 bytes big-endian each: a quota survives restarts. Each Lease or Release is
//     one bbolt transaction (concurrent ones are batched into one).
//
// An expired counter reads as 0; it is deleted when next touched, and expired counters in the
// file are swept when the file is opened and at most once per sweepEvery while leasing.
var bCounters = []byte("counters")

// rateCounterPrefix starts the names of rate-limit counters (store.RateWindow).
const rateCounterPrefix = "rl:"

// sweepEvery is how often expired counters are swept.
const sweepEvery = time.Hour

// memSweepEvery is how often expired in-memory counters are swept.
const memSweepEvery = time.Minute

type counter struct {
	used     int64
	expireAt int64 // Unix ms, 0: never
}

func (c counter) expired(nowMs int64) bool { return c.expireAt != 0 && nowMs >= c.expireAt }

// counters are the in-memory counters and the bookkeeping of sweeps.
type counters struct {
	mu        sync.Mutex
	mem       map[string]counter
	memSwept  time.Time
	fileSwept time.Time
}

func counterKey(instance, keyID, name string) []byte {
	return []byte(instance + "/" + keyID + "/" + name)
}

func decodeCounter(v []byte) (counter, error) {
	if len(v) != 16 {
		return counter{}, errors.New("corrupt limit counter")
	}
	return counter{used: int64(binary.BigEndian.Uint64(v[:8])), expireAt: int64(binary.BigEndian.Uint64(v[8:]))}, nil
}

func encodeCounter(c counter) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(c.used))
	binary.BigEndian.PutUint64(b[8:], uint64(c.expireAt))
	return b[:]
}

func checkCounter(keyID, name string, n int64) error {
	switch {
	case keyID == "" || name == "":
		return errors.New("a counter needs a key id and a name")
	case n < 0:
		return fmt.Errorf("cannot lease or release %d units", n)
	}
	return nil
}

// lease applies a Lease to c (as read at nowMs; ok false: missing) and returns the counter to
// keep (keep false: none) and what to answer.
func lease(c counter, ok bool, nowMs, limit, n, expireAt int64) (next counter, keep bool, granted int64) {
	if !ok || c.expired(nowMs) {
		c, ok = counter{}, false
	}
	granted = max(0, min(n, limit-c.used))
	if granted == 0 && !ok {
		return c, false, 0
	}
	c.used += granted
	if expireAt != 0 {
		c.expireAt = expireAt
	}
	return c, !c.expired(nowMs), granted
}

// Lease implements store.Leaser.
func (s *Store) Lease(_ context.Context, instance, keyID, name string, limit, n int64, expireAt time.Time) (granted, used int64, err error) {
	if err := checkCounter(keyID, name, n); err != nil {
		return 0, 0, err
	}
	nowMs := time.Now().UnixMilli()
	exp := store.Millis(expireAt)
	k := counterKey(instance, keyID, name)
	if strings.HasPrefix(name, rateCounterPrefix) {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		s.sweepMem(nowMs)
		c, ok := s.c.mem[string(k)]
		next, keep, g := lease(c, ok, nowMs, limit, n, exp)
		if keep {
			s.c.mem[string(k)] = next
		} else if ok {
			delete(s.c.mem, string(k))
		}
		return g, next.used, nil
	}
	err = s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bCounters)
		var c counter
		v := b.Get(k)
		if v != nil {
			var err error
			if c, err = decodeCounter(v); err != nil {
				return err
			}
		}
		next, keep, g := lease(c, v != nil, nowMs, limit, n, exp)
		granted, used = g, next.used
		switch {
		case keep && (g > 0 || next != c):
			return b.Put(k, encodeCounter(next))
		case !keep && v != nil:
			return b.Delete(k)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("leasing from counter %s of key %s: %v", name, keyID, err)
	}
	s.maybeSweepFile()
	return granted, used, nil
}

// Release implements store.Leaser.
func (s *Store) Release(_ context.Context, instance, keyID, name string, n int64) error {
	if err := checkCounter(keyID, name, n); err != nil || n == 0 {
		return err
	}
	nowMs := time.Now().UnixMilli()
	k := counterKey(instance, keyID, name)
	if strings.HasPrefix(name, rateCounterPrefix) {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		if c, ok := s.c.mem[string(k)]; ok && !c.expired(nowMs) {
			c.used -= min(n, c.used)
			s.c.mem[string(k)] = c
		}
		return nil
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bCounters)
		v := b.Get(k)
		if v == nil {
			return nil
		}
		c, err := decodeCounter(v)
		if err != nil {
			return err
		}
		if c.expired(nowMs) {
			return b.Delete(k)
		}
		if c.used == 0 {
			return nil
		}
		c.used -= min(n, c.used)
		return b.Put(k, encodeCounter(c))
	})
	if err != nil {
		return fmt.Errorf("releasing to counter %s of key %s: %v", name, keyID, err)
	}
	return nil
}

// Used implements store.Leaser.
func (s *Store) Used(_ context.Context, instance, keyID, name string) (used int64, err error) {
	if err := checkCounter(keyID, name, 0); err != nil {
		return 0, err
	}
	nowMs := time.Now().UnixMilli()
	k := counterKey(instance, keyID, name)
	if strings.HasPrefix(name, rateCounterPrefix) {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		if c, ok := s.c.mem[string(k)]; ok && !c.expired(nowMs) {
			return c.used, nil
		}
		return 0, nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bCounters).Get(k)
		if v == nil {
			return nil
		}
		c, err := decodeCounter(v)
		if err == nil && !c.expired(nowMs) {
			used = c.used
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reading counter %s of key %s: %v", name, keyID, err)
	}
	return used, nil
}

// sweepMem drops the expired in-memory counters, at most once per memSweepEvery. It runs
// with s.c.mu held.
func (s *Store) sweepMem(nowMs int64) {
	now := time.UnixMilli(nowMs)
	if now.Sub(s.c.memSwept) < memSweepEvery {
		return
	}
	s.c.memSwept = now
	for k, c := range s.c.mem {
		if c.expired(nowMs) {
			delete(s.c.mem, k)
		}
	}
}

// maybeSweepFile sweeps the file's expired counters if the last sweep is sweepEvery ago.
func (s *Store) maybeSweepFile() {
	s.c.mu.Lock()
	due := time.Since(s.c.fileSwept) >= sweepEvery
	if due {
		s.c.fileSwept = time.Now()
	}
	s.c.mu.Unlock()
	if due {
		_ = s.sweepFile() // best effort: a failed sweep is tried again sweepEvery later
	}
}

// sweepFile deletes the expired counters of the file.
func (s *Store) sweepFile() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		nowMs := time.Now().UnixMilli()
		b := tx.Bucket(bCounters)
		var gone [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if c, err := decodeCounter(v); err == nil && c.expired(nowMs) {
				gone = append(gone, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Interface guards
var _ store.Leaser = (*Store)(nil)
