// Package fleet is the gateways' roll call. Each gateway registers in the store it shares
// with the others and heartbeats; a gateway that stops heartbeating for Timeout is gone. Each
// gateway also acknowledges, after applying them, the invalidations it has received, so that a
// write that can refuse a key (a revoke, a roll with no grace, an update) can wait, briefly,
// until every live gateway has applied it, and say how many did.
//
// The package knows nothing of Caddy or of Redis: it asks the store for what it needs
// through Registry, which both stores implement.
package fleet

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/keygate/keygate/apikey"
)

// Defaults of Options.
const (
	// DefaultTimeout: a gateway that has not heartbeated for this long is gone.
	DefaultTimeout = 10 * time.Second
	// DefaultInterval is how often a gateway heartbeats.
	DefaultInterval = time.Second
	// DefaultWait bounds how long Confirm waits for the other gateways.
	DefaultWait = time.Second
)

// Gateway is a gateway process of the fleet.
type Gateway struct {
	ID       string
	Hostname string
	// StartedAt is when it joined; LastSeenAt its last heartbeat (by the store's clock).
	StartedAt  time.Time
	LastSeenAt time.Time
}

// Position is a place in a store's invalidation channel, in the store's own terms (on Redis,
// a stream entry id). "" is "nothing to wait for".
type Position string

// Registry is what the fleet needs from a store.
type Registry interface {
	// Heartbeat registers g, or refreshes it: the store stamps its LastSeenAt by its own
	// clock, so gateways on hosts whose clocks disagree still judge each other alike.
	Heartbeat(ctx context.Context, g Gateway) error
	// Leave removes a gateway and its acknowledgement.
	Leave(ctx context.Context, id string) error
	// Gateways returns the gateways that heartbeated within timeout, ordered by id; the
	// store may forget those long gone.
	Gateways(ctx context.Context, timeout time.Duration) ([]Gateway, error)
	// AckAs makes this process' invalidation listener acknowledge, under the gateway id,
	// the position up to which it has delivered invalidations to the watchers ("" stops
	// it).
	AckAs(id string)
	// Published is the position of the last invalidation this process published: once a
	// write has returned, Published covers its invalidation.
	Published() Position
	// Acked says, for each of ids, whether that gateway has acknowledged pos.
	Acked(ctx context.Context, ids []string, pos Position) ([]bool, error)
}

// Options tune a Member.
type Options struct {
	// Hostname names the gateway's host (default os.Hostname).
	Hostname string
	// Interval is how often it heartbeats (default DefaultInterval).
	Interval time.Duration
	// Timeout is how long a gateway may go without heartbeating before it is gone (default
	// DefaultTimeout). Every gateway of a fleet should use the same.
	Timeout time.Duration
	// OnError hears about failed heartbeats (for logging).
	OnError func(error)
	// ObserveConfirm hears how long each Confirm took (for metrics).
	ObserveConfirm func(time.Duration)
}

// Member is this process' gateway in the fleet: it heartbeats in the background until Close.
type Member struct {
	r      Registry
	g      Gateway
	opts   Options
	cancel context.CancelFunc
	done   chan struct{}
}

var now = time.Now

// NewID returns a fresh gateway id, "gw_" and 20 random characters.
func NewID() (string, error) { return apikey.NewID("gw_", 20) }

// Join registers a new gateway in r and starts its heartbeat. It does not need the store to
// answer yet: the first heartbeat is sent in the background, at once, and retried each
// Interval.
func Join(r Registry, opts Options) (*Member, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Hostname == "" {
		opts.Hostname, _ = os.Hostname()
	}
	id, err := NewID()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Member{r: r, opts: opts, cancel: cancel, done: make(chan struct{}),
		g: Gateway{ID: id, Hostname: opts.Hostname, StartedAt: now().UTC().Truncate(time.Millisecond)}}
	r.AckAs(id)
	go m.heartbeat(ctx)
	return m, nil
}

func (m *Member) heartbeat(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, m.opts.Interval)
		err := m.r.Heartbeat(hctx, m.g)
		cancel()
		if err != nil && ctx.Err() == nil && m.opts.OnError != nil {
			m.opts.OnError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ID is the gateway's id.
func (m *Member) ID() string { return m.g.ID }

// Close stops the heartbeat and removes the gateway from the fleet at once (rather than
// after Timeout).
func (m *Member) Close() error {
	m.cancel()
	<-m.done
	m.r.AckAs("")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return m.r.Leave(ctx, m.g.ID)
}

// Gateways returns the live gateways of the fleet.
func (m *Member) Gateways(ctx context.Context) ([]Gateway, error) {
	return m.r.Gateways(ctx, m.opts.Timeout)
}

// Propagation is how far a write's invalidation has gone.
type Propagation struct {
	// Gateways is how many gateways were live; Confirmed how many of them had applied the
	// invalidation when Confirm returned.
	Gateways  int
	Confirmed int
	Elapsed   time.Duration
	// Missing are the live gateways that had not confirmed.
	Missing []Gateway
}

// ErrNoGateways is Confirm's error when the live gateways cannot be read.
var ErrNoGateways = errors.New("reading the live gateways")

// pollEvery is how often Confirm reads the acknowledgements.
const pollEvery = time.Millisecond

// Confirm waits, at most wait, until every live gateway has acknowledged the last
// invalidation this process published (call it right after the write), and says how many
// did. This gateway counts as confirmed at once: its own watchers were told before the write
// returned. A gateway that is frozen, or cut off from the store, is reported missing after
// wait; Confirm never waits longer (nor past ctx).
func (m *Member) Confirm(ctx context.Context, wait time.Duration) (Propagation, error) {
	start := time.Now()
	pos := m.r.Published()
	gws, err := m.Gateways(ctx)
	if err != nil {
		return Propagation{}, errors.Join(ErrNoGateways, err)
	}
	p := Propagation{Confirmed: 1}
	var pending []Gateway
	for _, g := range gws {
		if g.ID == m.g.ID {
			continue
		}
		pending = append(pending, g)
	}
	// This gateway counts even before its first heartbeat has been stored: it is live.
	p.Gateways = len(pending) + 1
	if pos != "" && len(pending) > 0 {
		deadline := start.Add(wait)
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for len(pending) > 0 {
			ids := make([]string, len(pending))
			for i, g := range pending {
				ids[i] = g.ID
			}
			actx, cancel := context.WithDeadline(ctx, deadline)
			ok, err := m.r.Acked(actx, ids, pos)
			cancel()
			if err == nil {
				left := pending[:0]
				for i, g := range pending {
					if ok[i] {
						p.Confirmed++
					} else {
						left = append(left, g)
					}
				}
				pending = left
			}
			if len(pending) == 0 || !time.Now().Before(deadline) {
				break
			}
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			if ctx.Err() != nil {
				break
			}
		}
	} else {
		p.Confirmed += len(pending)
		pending = nil
	}
	p.Missing = pending
	p.Elapsed = time.Since(start)
	if m.opts.ObserveConfirm != nil {
		m.opts.ObserveConfirm(p.Elapsed)
	}
	return p, nil
}
