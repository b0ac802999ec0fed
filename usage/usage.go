// Package usage counts, in each gateway process, the requests of every key per minute — let
// through, or refused (by error code) once the key was known — and adds the counts to the
// store in the background. The request path only increments a counter in memory: it never
// waits for the store. A count reaches the store within one flush interval (5 s by default)
// while the store answers; counts that cannot be written are kept and added on a later
// flush (up to a bound, past which the oldest are dropped and said so in the log).
package usage

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/store"
)

// DefaultInterval is how often counts are added to the store.
const DefaultInterval = 5 * time.Second

// maxPending bounds the counts kept while the store does not answer (one per key and
// minute); past it the oldest minutes are dropped.
const maxPending = 200_000

const numShards = 64

// Counter counts requests per key and minute. Its methods are safe for concurrent use.
type Counter struct {
	shards [numShards]shard
	seed   maphash.Seed
	now    func() time.Time
}

type shard struct {
	mu sync.Mutex
	m  map[ident]*counts
	_  [40]byte // keeps shards' locks on separate cache lines
}

type ident struct {
	instance, key string
	minute        int64 // Unix minute
}

type counts struct {
	ok      int64
	refused map[string]int64
}

// NewCounter returns an empty counter; now is its clock (nil: time.Now).
func NewCounter(now func() time.Time) *Counter {
	if now == nil {
		now = time.Now
	}
	c := &Counter{seed: maphash.MakeSeed(), now: now}
	for i := range c.shards {
		c.shards[i].m = make(map[ident]*counts)
	}
	return c
}

// Add counts one request of a key, in the current minute: let through when refused is "",
// else refused with that error code.
func (c *Counter) Add(instance, keyID, refused string) {
	id := ident{instance: instance, key: keyID, minute: c.now().Unix() / 60}
	sh := &c.shards[maphash.String(c.seed, keyID)%numShards]
	sh.mu.Lock()
	n := sh.m[id]
	if n == nil {
		n = &counts{}
		sh.m[id] = n
	}
	if refused == "" {
		n.ok++
	} else {
		if n.refused == nil {
			n.refused = make(map[string]int64, 1)
		}
		n.refused[refused]++
	}
	sh.mu.Unlock()
}

// Drain returns what was counted since the last Drain and starts counting afresh.
func (c *Counter) Drain() []store.UsageCount {
	var out []store.UsageCount
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		m := sh.m
		if len(m) == 0 {
			sh.mu.Unlock()
			continue
		}
		sh.m = make(map[ident]*counts, len(m))
		sh.mu.Unlock()
		for id, n := range m {
			out = append(out, store.UsageCount{Instance: id.instance, KeyID: id.key,
				Minute: time.Unix(id.minute*60, 0).UTC(), OK: n.ok, Refused: n.refused})
		}
	}
	return out
}

// Flusher adds a Counter's counts to a store every interval, in the background.
type Flusher struct {
	c        *Counter
	s        store.UsageStore
	interval time.Duration
	timeout  time.Duration
	logger   *zap.Logger
	// OnFlush, when set, is told how each flush went (for metrics): how many counts it
	// wrote, how many are kept for later, and the store's error.
	onFlush func(written, pending int, err error)

	mu      sync.Mutex // serialises flushes
	pending []store.UsageCount
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// FlusherOptions configure a Flusher.
type FlusherOptions struct {
	Interval time.Duration // default DefaultInterval
	Timeout  time.Duration // per store call (default 5 s)
	Logger   *zap.Logger
	OnFlush  func(written, pending int, err error)
}

// StartFlusher starts adding c's counts to s every interval until Close.
func StartFlusher(c *Counter, s store.UsageStore, opt FlusherOptions) *Flusher {
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	f := &Flusher{c: c, s: s, interval: opt.Interval, timeout: opt.Timeout, logger: opt.Logger,
		onFlush: opt.OnFlush, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	return f
}

func (f *Flusher) run() {
	defer close(f.done)
	t := time.NewTicker(f.interval)
	defer t.Stop()
	var lastWarn time.Time
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		if err := f.Flush(context.Background()); err != nil && time.Since(lastWarn) > time.Minute {
			lastWarn = time.Now()
			f.logger.Warn("adding usage counts to the store failed; they are kept and retried", zap.Error(err))
		}
	}
}

// Flush adds what was counted (and what earlier flushes could not write) to the store now.
func (f *Flusher) Flush(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	batch := append(f.pending, f.c.Drain()...)
	f.pending = nil
	if len(batch) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	err := f.s.AddUsage(ctx, batch)
	if err != nil {
		// Kept for the next flush. A failed call may have written part of the batch: a
		// retry can count that part twice (rare: the store failed mid-write).
		if len(batch) > maxPending {
			dropped := len(batch) - maxPending
			batch = batch[dropped:]
			f.logger.Warn("usage counts dropped: the store has not answered for long", zap.Int("counts", dropped))
		}
		f.pending = batch
	}
	if f.onFlush != nil {
		written := len(batch)
		if err != nil {
			written = 0
		}
		f.onFlush(written, len(f.pending), err)
	}
	return err
}

// Close stops the flusher after a last flush (bounded by the store timeout).
func (f *Flusher) Close() error {
	var err error
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		err = f.Flush(context.Background())
	})
	return err
}
