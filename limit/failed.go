// Package limit holds keygate's limits on request traffic. FailedAttempts is the
// failed-attempt limit: a client whose requests have ended in invalid_api_key too often
// within a window is refused before its key is even parsed, so that an attacker guessing keys
// costs the store nothing once limited.
package limit

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Config tunes a FailedAttempts. Zero fields take the defaults.
type Config struct {
	// Limit is how many failed attempts a client may make within Window (default 20).
	Limit int
	// Window is the span failed attempts are counted over (default 1m).
	Window time.Duration
	// MaxClients bounds how many clients are tracked (default 100,000): past it, the least
	// recently failing client is forgotten. Memory is allocated once, up front.
	MaxClients int
	// IPv6Prefix is how many leading bits of an IPv6 address make a client (default 64): a
	// host usually holds a whole /64, and could rotate through it.
	IPv6Prefix int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultLimit      = 20
	DefaultWindow     = time.Minute
	DefaultMaxClients = 100_000
	DefaultIPv6Prefix = 64
)

func (c *Config) defaults() error {
	if c.Limit == 0 {
		c.Limit = DefaultLimit
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Limit < 1 || c.Limit > 1_000_000:
		return errors.New("limit must be from 1 to 1000000")
	case c.Window < time.Second || c.Window > 24*time.Hour:
		return errors.New("window must be from 1s to 24h")
	case c.MaxClients < 1 || c.MaxClients > 10_000_000:
		return errors.New("max_clients must be from 1 to 10000000")
	case c.IPv6Prefix < 1 || c.IPv6Prefix > 128:
		return errors.New("ipv6_prefix must be from 1 to 128")
	}
	return nil
}

// The window is counted in subWindows parts: a failed attempt is counted from its part of
// the window until subWindows+1 parts later, so it is never forgotten before a whole window
// has passed, and at most one part (1/16 of the window) after.
const (
	subWindows = 16
	slots      = subWindows + 1
	shardCount = 64
)

type clientKey [16]byte

// client is a tracked client: its failed attempts per part of the window, in a ring, and
// its place in its shard's recency list.
type client struct {
	key        clientKey
	prev, next int32 // recency list (most recently failing first); -1: none
	last       int64 // the newest part written
	counts     [slots]uint16
	pending    uint16 // lookups admitted and not yet settled
}

type shard struct {
	mu      sync.Mutex
	index   map[clientKey]int32
	clients []client
	head    int32 // most recently failing
	tail    int32 // least recently failing: the one to forget
}

// FailedAttempts counts failed attempts per client. It is safe for concurrent use, and no
// method allocates.
type FailedAttempts struct {
	cfg    Config
	part   time.Duration // Window / subWindows
	v6bits int
	epoch  time.Time
	shards [shardCount]shard
}

// NewFailedAttempts returns a limiter, or an error for a config out of range.
func NewFailedAttempts(cfg Config) (*FailedAttempts, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	// The epoch lies two windows back, so that parts counted back from now are never negative.
	f := &FailedAttempts{cfg: cfg, part: cfg.Window / subWindows, v6bits: cfg.IPv6Prefix, epoch: cfg.Now().Add(-2 * cfg.Window)}
	per := (cfg.MaxClients + shardCount - 1) / shardCount
	for i := range f.shards {
		s := &f.shards[i]
		s.index = make(map[clientKey]int32, per)
		s.clients = make([]client, 0, per)
		s.head, s.tail = -1, -1
	}
	return f, nil
}

// Config returns the limiter's settings, defaults applied.
func (f *FailedAttempts) Config() Config { return f.cfg }

func (f *FailedAttempts) keyOf(a netip.Addr) clientKey {
	a = a.Unmap().WithZone("")
	if a.Is6() && f.v6bits < 128 {
		if p, err := a.Prefix(f.v6bits); err == nil {
			a = p.Addr()
		}
	}
	return a.As16()
}

// lock finds and locks the shard of the client at a; the caller unlocks it.
func (f *FailedAttempts) lock(a netip.Addr) (s *shard, k clientKey, cur int64, elapsed time.Duration) {
	k = f.keyOf(a)
	s = f.shardOf(&k)
	cur, elapsed = f.now()
	s.mu.Lock()
	return s, k, cur, elapsed
}

func (f *FailedAttempts) shardOf(k *clientKey) *shard {
	h := (binary.LittleEndian.Uint64(k[:8]) ^ binary.LittleEndian.Uint64(k[8:])) * 0x9E3779B97F4A7C15
	return &f.shards[h>>(64-6)]
}

// now returns the current part of the window (on the monotonic clock when Now is time.Now).
func (f *FailedAttempts) now() (part int64, elapsed time.Duration) {
	elapsed = f.cfg.Now().Sub(f.epoch)
	return int64(elapsed / f.part), elapsed
}

// Blocked reports whether the client at a has used up its failed attempts; if so, retryAfter
// is how long until one of them is forgotten. An invalid address is never blocked.
func (f *FailedAttempts) Blocked(a netip.Addr) (retryAfter time.Duration, blocked bool) {
	if !a.IsValid() {
		return 0, false
	}
	k := f.keyOf(a)
	s := f.shardOf(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[k]
	if !ok {
		return 0, false // a client with no failure: no clock read
	}
	cur, elapsed := f.now()
	return f.wait(&s.clients[i], cur, elapsed, 0)
}

// failures counts the client's failed attempts within the window.
func (f *FailedAttempts) failures(c *client, cur int64) int {
	n := 0
	for p := max(cur-subWindows, c.last-slots+1); p <= c.last; p++ {
		n += int(c.counts[p%slots])
	}
	return n
}

// wait is Blocked for a tracked client, with extra attempts (lookups in flight) counted.
func (f *FailedAttempts) wait(c *client, cur int64, elapsed time.Duration, extra int) (time.Duration, bool) {
	oldest := max(cur-subWindows, c.last-slots+1)
	total := extra + f.failures(c, cur)
	if total < f.cfg.Limit {
		return 0, false
	}
	// Forget the oldest parts one by one until an attempt frees up.
	for p := oldest; p <= c.last; p++ {
		total -= int(c.counts[p%slots])
		if total < f.cfg.Limit {
			return time.Duration(p+subWindows+1)*f.part - elapsed, true
		}
	}
	// Only lookups in flight hold the attempts: they settle within a lookup's time.
	return time.Second, true
}

// Admit is asked before a request costs a store lookup. A client over the limit is refused
// (429, as Blocked). A client that has failed within the window but is not over the limit
// may have at most as many lookups in flight as it has attempts left: a further lookup
// waits until one settles (a lookup takes a store round trip), so that a burst of concurrent
// requests cannot overshoot the limit, while no request is refused before the client has
// really failed `limit` times. A client with no failure in the window is admitted whatever
// its concurrency (a backend sending many customers' keys from one address, its cache cold);
// at most the lookups in flight when its first failure lands add to the limit, once per
// window. The wait is bounded by maxAdmitWait, after which the lookup goes ahead. A client
// seen for the first time is tracked from here, as the least recently failing.
func (f *FailedAttempts) Admit(a netip.Addr) (retryAfter time.Duration, ok bool) {
	if !a.IsValid() {
		return 0, true
	}
	for waited := time.Duration(0); ; waited += admitPoll {
		s, k, cur, elapsed := f.lock(a)
		i := s.find(k, cur, false)
		c := &s.clients[i]
		failures := f.failures(c, cur)
		if failures >= f.cfg.Limit {
			wait, _ := f.wait(c, cur, elapsed, 0)
			s.mu.Unlock()
			return wait, false
		}
		if failures == 0 || failures+int(c.pending) < f.cfg.Limit || waited >= maxAdmitWait {
			if c.pending < ^uint16(0) {
				c.pending++
			}
			s.mu.Unlock()
			return 0, true
		}
		s.mu.Unlock()
		time.Sleep(admitPoll)
	}
}

// How Admit waits for a lookup in flight to settle.
const (
	admitPoll    = time.Millisecond
	maxAdmitWait = 2 * time.Second
)

// Settle ends a lookup that Admit let through: failed says whether it found no key (a
// failed attempt).
func (f *FailedAttempts) Settle(a netip.Addr, failed bool) {
	if !a.IsValid() {
		return
	}
	s, k, cur, _ := f.lock(a)
	defer s.mu.Unlock()
	if i, ok := s.index[k]; ok && s.clients[i].pending > 0 {
		s.clients[i].pending--
	}
	if failed {
		f.fail(s, k, cur)
	}
}

// Fail records a failed attempt by the client at a. An invalid address is not tracked.
func (f *FailedAttempts) Fail(a netip.Addr) {
	if !a.IsValid() {
		return
	}
	s, k, cur, _ := f.lock(a)
	defer s.mu.Unlock()
	f.fail(s, k, cur)
}

func (f *FailedAttempts) fail(s *shard, k clientKey, cur int64) {
	i := s.find(k, cur, true)
	c := &s.clients[i]
	if cur > c.last {
		for p := max(c.last+1, cur-slots+1); p <= cur; p++ {
			c.counts[p%slots] = 0
		}
		c.last = cur
	}
	if n := &c.counts[cur%slots]; *n < ^uint16(0) {
		*n++
	}
	s.unlink(i)
	s.pushFront(i)
}

// find returns the client k, tracking it if need be: at the front of the recency list (a
// failure) or at the back (a lookup admitted), forgetting the least recently failing client
// when the shard is full.
func (s *shard) find(k clientKey, cur int64, front bool) int32 {
	i, ok := s.index[k]
	if ok {
		return i
	}
	if len(s.clients) < cap(s.clients) {
		i = int32(len(s.clients))
		s.clients = append(s.clients, client{})
	} else {
		i = s.tail
		s.unlink(i)
		delete(s.index, s.clients[i].key)
	}
	s.init(i, k, cur)
	if front {
		s.pushFront(i)
	} else {
		s.pushBack(i)
	}
	return i
}

func (s *shard) init(i int32, k clientKey, cur int64) {
	s.clients[i] = client{key: k, prev: -1, next: -1, last: cur}
	s.index[k] = i
}

func (s *shard) unlink(i int32) {
	c := &s.clients[i]
	if c.prev >= 0 {
		s.clients[c.prev].next = c.next
	} else if s.head == i {
		s.head = c.next
	}
	if c.next >= 0 {
		s.clients[c.next].prev = c.prev
	} else if s.tail == i {
		s.tail = c.prev
	}
	c.prev, c.next = -1, -1
}

func (s *shard) pushBack(i int32) {
	c := &s.clients[i]
	c.prev, c.next = s.tail, -1
	if s.tail >= 0 {
		s.clients[s.tail].next = i
	}
	s.tail = i
	if s.head < 0 {
		s.head = i
	}
}

func (s *shard) pushFront(i int32) {
	c := &s.clients[i]
	c.prev, c.next = -1, s.head
	if s.head >= 0 {
		s.clients[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}

// Tracked returns how many clients are tracked (for tests and metrics).
func (f *FailedAttempts) Tracked() int {
	n := 0
	for i := range f.shards {
		s := &f.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}
