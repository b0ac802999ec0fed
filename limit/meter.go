package limit

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/store"
)

// Meter enforces per-key rate limits and quotas in one gateway process, against counters
// shared through the store. A gateway leases units from a key's counter (store.Leaser:
// atomic, never past the limit) and spends them locally: a request within the key's limits
// costs no store call, and since every unit is leased before it is spent, the gateways
// together never let more through than the limit (a quota is never exceeded). Leases are
// topped up in the background before they run out, and the next rate-limit window's units
// are leased ahead of its start; a request waits for the store only when its key has no
// unit left and no lease has come back yet (a key's first request in a period, or a burst
// faster than the top-up).
//
// What a gateway leases and does not spend is lost to the others until the window ends (a
// rate limit) or until the gateway returns it (a quota, on Close). Leases are kept small to
// bound that: at most 1/32 of the limit each, so with a few gateways the limit is reached
// within about 10 %.
type Meter struct {
	store   store.Leaser
	now     func() time.Time
	timeout time.Duration
	logger  *zap.Logger

	mu   sync.Mutex
	keys map[string]*KeyMeter // by instance + "\x00" + key id

	queue chan *counter
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// MeterConfig tunes a Meter.
type MeterConfig struct {
	// Timeout bounds one store call (default 1 s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *zap.Logger
}

// NewMeter returns a Meter leasing from s. Close it to return unspent quota.
func NewMeter(s store.Leaser, cfg MeterConfig) *Meter {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	m := &Meter{store: s, now: cfg.Now, timeout: cfg.Timeout, logger: cfg.Logger,
		keys: map[string]*KeyMeter{}, queue: make(chan *counter, 4096),
		stop: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	return m
}

// Key returns the meter of one key (the same one for the process' life): the cache keeps it
// with the key's entry, so that a request finds it without a lookup.
func (m *Meter) Key(instance, id string) *KeyMeter {
	k := instance + "\x00" + id
	m.mu.Lock()
	defer m.mu.Unlock()
	km, ok := m.keys[k]
	if !ok {
		km = &KeyMeter{}
		km.rate = counter{m: m, instance: instance, id: id}
		km.quota = counter{m: m, instance: instance, id: id, quota: true}
		m.keys[k] = km
	}
	return km
}

// KeyMeter is one key's limit state in this process.
type KeyMeter struct {
	rate  counter
	quota counter
}

// Outcome is what Take decided.
type Outcome uint8

const (
	// Allowed: the request may go on.
	Allowed Outcome = iota
	// RateLimited: the key is over its rate limit.
	RateLimited
	// QuotaExceeded: the key's quota for the period is spent.
	QuotaExceeded
	// Unreachable: the store could not be asked and no unit is left.
	Unreachable
)

// Decision is Take's answer, with what the RateLimit-* headers and Retry-After say.
type Decision struct {
	Outcome Outcome
	// For a key with a rate limit: its limit, an estimate of what is left in the window
	// (units no gateway has leased yet plus this gateway's unspent ones), and when the
	// window ends.
	Limit, Remaining int64
	Reset            time.Time
	// RetryAfter is set when refused.
	RetryAfter time.Duration
}

// Take decides one request of the key with these limits (either may be nil): the rate
// limit first, then the quota, each spending one unit; a request refused by its rate limit
// spends no quota.
func (km *KeyMeter) Take(rl *store.RateLimit, q *store.Quota) Decision {
	for range 3 {
		d, err := km.take(rl, q)
		if err != errRetry {
			return d
		}
	}
	return Decision{Outcome: Unreachable, RetryAfter: time.Second}
}

func (km *KeyMeter) take(rl *store.RateLimit, q *store.Quota) (Decision, error) {
	var d Decision
	now := km.rate.m.now()
	if rl != nil {
		ok, remaining, err := km.rate.take(now, rl.Limit, rateSpec{rl: *rl})
		d.Limit, d.Remaining, d.Reset = rl.Limit, remaining, km.rate.endOf()
		switch {
		case err == errRetry:
			return d, err
		case err != nil:
			d.Outcome, d.RetryAfter = Unreachable, time.Second
			return d, nil
		case !ok:
			d.Outcome, d.RetryAfter = RateLimited, d.Reset.Sub(now)
			return d, nil
		}
	}
	if q != nil {
		ok, _, err := km.quota.take(now, q.Limit, rateSpec{q: *q})
		switch {
		case err == errRetry:
			return d, err
		case err != nil:
			d.Outcome, d.RetryAfter = Unreachable, time.Second
		case !ok:
			d.Outcome = QuotaExceeded
			if end := km.quota.endOf(); end.IsZero() {
				d.RetryAfter = 24 * time.Hour // a total quota does not come back by itself
			} else {
				d.RetryAfter = end.Sub(now)
			}
		}
	}
	return d, nil
}

// rateSpec says which counter a take is about: a rate-limit window (rl) or a quota period (q).
type rateSpec struct {
	rl store.RateLimit
	q  store.Quota
}

// period returns the counter of spec holding t: its name and end.
func (sp rateSpec) period(t time.Time) (name string, end time.Time) {
	if sp.rl.Window > 0 {
		_, end, name = store.RateWindow(sp.rl, t)
		return name, end
	}
	_, end, name = store.QuotaPeriod(sp.q, t)
	return name, end
}

func (c *counter) endOf() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.end
}

// maxLeaseShare bounds a lease to 1/maxLeaseShare of the limit.
const maxLeaseShare = 32

// counter is one key's lease of one counter (its rate-limit window, or its quota period).
type counter struct {
	m           *Meter
	instance    string
	id          string
	quota       bool
	mu          sync.Mutex
	name        string    // the counter now leased from
	end         time.Time // when it stops counting (zero: never)
	limit       int64
	avail       int64     // leased, not spent
	used        int64     // the counter's value at the last lease (units leased by every gateway)
	spent       int64     // units spent since spentAt (for the lease size)
	spentAt     time.Time // the start of the current rate interval
	rate        float64   // units per second over the last rate interval
	lastSize    int64     // the last lease size computed
	exhausted   bool      // a lease came back short: nothing left in this counter
	exhaustedAt time.Time
	failedAt    time.Time     // the last lease that failed
	pending     bool          // a background top-up is queued or running
	inflight    chan struct{} // a lease a request waits for; closed when it returns
	// The next rate-limit window's lease, taken ahead of its start.
	nextName  string
	nextAvail int64
	nextUsed  int64
	nextFull  bool
	nextEnd   time.Time
	wantNext  bool     // a request asked for the next window's lease
	spec      rateSpec // what the counter is (its limit's settings)
}

// take spends one unit of the counter spec names for now, leasing when none is left. The
// counter's name is built only when a new window or period starts.
func (c *counter) take(now time.Time, limit int64, spec rateSpec) (ok bool, remaining int64, err error) {
	c.mu.Lock()
	c.limit = limit
	if c.name == "" || spec != c.spec || (!c.end.IsZero() && !now.Before(c.end)) {
		name, end := spec.period(now)
		if c.name != "" && spec == c.spec && !c.end.IsZero() && end.Before(c.end) {
			// Another request already moved on to a later window: this one is late.
			c.mu.Unlock()
			return false, 0, errRetry
		}
		c.spec = spec
		c.rollover(name, end)
	}
	name, end := c.name, c.end
	window := time.Duration(0)
	if spec.rl.Window > 0 {
		window = spec.rl.Window
	}
	for c.avail == 0 {
		if c.exhausted && c.quota && now.Sub(c.exhaustedAt) > time.Second {
			// Another gateway may have given quota back: look again, once a second.
			c.exhausted = false
		}
		if c.exhausted {
			rem := c.remaining()
			c.mu.Unlock()
			return false, rem, nil
		}
		// No unit: lease now and wait (only the first waiter asks; after a failure, not again
		// for a second, so that an unreachable store does not make every request wait).
		if c.inflight == nil && now.Sub(c.failedAt) < time.Second {
			c.mu.Unlock()
			return false, 0, errUnreachable
		}
		if c.inflight == nil {
			ch := make(chan struct{})
			c.inflight = ch
			n := c.size(now)
			c.mu.Unlock()
			granted, used, lerr := c.lease(name, limit, n, end)
			c.mu.Lock()
			c.inflight = nil
			close(ch)
			if lerr != nil {
				c.failedAt = c.m.now()
				c.mu.Unlock()
				return false, 0, lerr
			}
			if c.name == name {
				c.add(granted, used, n)
			}
			continue
		}
		ch := c.inflight
		c.mu.Unlock()
		<-ch
		c.mu.Lock()
		if c.name != name {
			c.mu.Unlock()
			return false, 0, errRetry
		}
	}
	c.avail--
	c.spent++
	// Top up in the background before running out; take the next window's units ahead.
	// (lastSize: the size at the last lease, so that a request needs no arithmetic.)
	if !c.pending && !c.exhausted && c.avail*2 < c.lastSize {
		c.pending = true
		c.m.enqueue(c)
	}
	if window > 0 && c.nextName == "" && end.Sub(now) < window/5 {
		c.wantNext = true
		if !c.pending {
			c.pending = true
			c.m.enqueue(c)
		}
	}
	rem := c.remaining()
	c.mu.Unlock()
	return true, rem, nil
}

var (
	errRetry       = &retryError{}
	errUnreachable = errors.New("the store could not be asked for units a moment ago")
)

type retryError struct{}

func (*retryError) Error() string { return "the counter moved on while waiting" }

// rollover moves to a new counter: the old lease is dropped (a rate-limit window's units
// are worth nothing once it has passed) or, for a quota, given back.
func (c *counter) rollover(name string, end time.Time) {
	if c.quota && c.avail > 0 && c.name != "" {
		c.m.release(c.instance, c.id, c.name, c.avail)
	}
	c.name, c.end, c.avail, c.used, c.exhausted, c.spent, c.spentAt = name, end, 0, 0, false, 0, time.Time{}
	if c.nextName == name {
		c.avail, c.used, c.exhausted = c.nextAvail, c.nextUsed, c.nextFull
	}
	c.nextName, c.nextAvail, c.nextUsed, c.nextFull, c.wantNext = "", 0, 0, false, false
}

// remaining estimates the units left in the counter: not yet leased by any gateway, plus
// this gateway's own.
func (c *counter) remaining() int64 {
	return max(0, c.limit-c.used) + c.avail
}

// size is the next lease's size: about what this process spends in a tenth of a second,
// at least 1, at most 1/32 of the limit.
func (c *counter) size(now time.Time) int64 {
	// The spending rate over the last quarter of a second, or over the part of the current
	// quarter gone by if it is faster (a key that was idle and turns busy).
	if c.spentAt.IsZero() {
		c.spentAt = now
	}
	el := now.Sub(c.spentAt)
	if el >= rateInterval {
		c.rate = float64(c.spent) / el.Seconds()
		c.spent, c.spentAt, el = 0, now, 0
	}
	// (Less than a millisecond counts as one: a brand-new busy key does not lease one unit
	// at a time for its first millisecond.)
	r := max(c.rate, float64(c.spent)/max(el, time.Millisecond).Seconds())
	n := max(1, min(int64(r*leaseSpan.Seconds()), c.limit/maxLeaseShare))
	c.lastSize = n
	return n
}

// A lease is about leaseSpan of the key's spending at this gateway, measured over
// rateInterval.
const (
	leaseSpan    = 100 * time.Millisecond
	rateInterval = 250 * time.Millisecond
)

// add books a lease's answer.
func (c *counter) add(granted, used, asked int64) {
	c.avail += granted
	c.used = used
	if granted < asked {
		c.exhausted, c.exhaustedAt = true, c.m.now()
	}
}

func (c *counter) lease(name string, limit, n int64, end time.Time) (granted, used int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.m.timeout)
	defer cancel()
	exp := end
	if !exp.IsZero() {
		exp = exp.Add(time.Minute) // kept a little past its end: late gateways still see it full
	}
	return c.m.store.Lease(ctx, c.instance, c.id, name, limit, n, exp)
}

func (m *Meter) enqueue(c *counter) {
	select {
	case m.queue <- c:
	default:
		c.pending = false // dropped: the next request asks again
	}
}

// run tops leases up in the background.
func (m *Meter) run() {
	defer close(m.done)
	for {
		select {
		case <-m.stop:
			return
		case c := <-m.queue:
			c.topUp()
		}
	}
}

// topUp leases ahead: more of the current counter, and the next window's first units.
func (c *counter) topUp() {
	c.mu.Lock()
	name, end, limit := c.name, c.end, c.limit
	now := c.m.now()
	n := c.size(now)
	// One lease of a counter at a time: a request that finds no unit waits for this one.
	// Top up to one lease: a gateway never holds more than one lease's worth of a counter.
	ask := n - c.avail
	needNow := !c.exhausted && c.avail*2 < n && ask > 0 && c.inflight == nil
	var ch chan struct{}
	if needNow {
		ch = make(chan struct{})
		c.inflight = ch
	}
	wantNext, spec := c.wantNext, c.spec
	c.mu.Unlock()
	if needNow {
		granted, used, err := c.lease(name, limit, ask, end)
		c.mu.Lock()
		if err == nil && c.name == name {
			c.add(granted, used, ask)
		} else if err != nil {
			c.m.logger.Debug("leasing a key's units", zap.String("key_id", c.id), zap.Error(err))
		}
		c.inflight = nil
		close(ch)
		c.mu.Unlock()
	}
	if wantNext && !end.IsZero() {
		nname, nend := spec.period(end)
		granted, used, err := c.lease(nname, limit, n, nend)
		c.mu.Lock()
		if err == nil && c.nextName == "" && c.name != nname {
			c.nextName, c.nextAvail, c.nextUsed, c.nextFull, c.nextEnd = nname, granted, used, granted < n, nend
		}
		c.wantNext = false
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.pending = false
	c.mu.Unlock()
}

func (m *Meter) release(instance, id, name string, n int64) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
		defer cancel()
		if err := m.store.Release(ctx, instance, id, name, n); err != nil {
			m.logger.Debug("returning unspent quota", zap.String("key_id", id), zap.Error(err))
		}
	}()
}

// Close stops the background work and gives back the quota units leased and not spent.
func (m *Meter) Close() {
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		m.mu.Lock()
		keys := make([]*KeyMeter, 0, len(m.keys))
		for _, km := range m.keys {
			keys = append(keys, km)
		}
		m.mu.Unlock()
		var wg sync.WaitGroup
		for _, km := range keys {
			c := &km.quota
			c.mu.Lock()
			n, name := c.avail, c.name
			c.avail = 0
			c.mu.Unlock()
			if n > 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
					defer cancel()
					if err := m.store.Release(ctx, c.instance, c.id, name, n); err != nil {
						m.logger.Warn("returning unspent quota on close", zap.String("key_id", c.id), zap.Error(err))
					}
				}()
			}
		}
		wg.Wait()
	})
}
