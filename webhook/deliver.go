package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/store"
)

// Store is what delivery needs of a store.
type Store interface {
	store.Outbox
	Instances(ctx context.Context) ([]store.Instance, error)
}

// Results of a delivery attempt, as Options.OnResult is told them.
const (
	ResultDelivered = "delivered" // a 2xx answer
	ResultFailed    = "failed"    // anything else: retried later
	ResultDropped   = "dropped"   // failed past GiveUpAfter: given up
)

// Options tune delivery; the zero value is the defaults.
type Options struct {
	// Client sends the deliveries (default: a client that follows no redirect). Timeout
	// bounds each delivery (default 10 s).
	Client  *http.Client
	Timeout time.Duration
	// Poll is how often the outbox is looked at for events recorded by other gateways and
	// for retries that came due (default 1 s). Events this process records are claimed at
	// once.
	Poll time.Duration
	// Lease is how long a claimed delivery is left to its claimer before another gateway
	// may take it (default 60 s; it must exceed Timeout).
	Lease time.Duration
	// Concurrency bounds the deliveries in flight per webhook (default 4), so a receiver
	// that hangs holds at most that many.
	Concurrency int
	// GiveUpAfter is how long an event is retried (default 72 h; at least 24 h is
	// recommended).
	GiveUpAfter time.Duration
	// StoreTimeout bounds each outbox call (default 5 s).
	StoreTimeout time.Duration
	Logger       *zap.Logger
	// OnResult is told each attempt's result (ResultDelivered, …) and how long it took.
	OnResult func(webhookID, result string, took time.Duration)
	// OnDepth is told each webhook's outbox depth, every 10 s.
	OnDepth func(webhookID string, depth int64)
	// UserAgent is sent with each delivery (default "keygate-webhook").
	UserAgent string
	// Backoff is the wait before retrying a failed attempt (default: Backoff).
	Backoff func(attempt int) time.Duration
}

func (o *Options) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Lease <= o.Timeout {
		o.Lease = max(60*time.Second, 2*o.Timeout)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = 72 * time.Hour
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.UserAgent == "" {
		o.UserAgent = "keygate-webhook"
	}
	if o.Backoff == nil {
		o.Backoff = Backoff
	}
}

// Backoff is the wait before retrying an event whose attempt number `attempt` (0: the
// first) failed: 10 s doubling, at most an hour, ±20 % jitter.
func Backoff(attempt int) time.Duration {
	d := time.Hour
	if attempt < 9 {
		d = 10 * time.Second << attempt
		d = min(d, time.Hour)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Deliverer delivers the events of a store to webhooks until Close.
type Deliverer struct {
	s      Store
	opt    Options
	hooks  []*hook
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stop   func()
}

type hook struct {
	Webhook
	id         string
	registered bool // RegisterWebhook succeeded (in Start; else run retries it)
	kick       chan struct{}
	slot       chan struct{} // one token per delivery in flight
	mu         sync.Mutex
	// dirty holds the instances this process recorded events in since the last round.
	dirty map[string]bool
}

// Start starts delivering to hooks (checked with Check first).
func Start(s Store, hooks []Webhook, opt Options) (*Deliverer, error) {
	opt.defaults()
	d := &Deliverer{s: s, opt: opt}
	seen := map[string]bool{}
	for _, w := range hooks {
		if err := w.Check(); err != nil {
			return nil, fmt.Errorf("webhook %s: %v", w.Redacted(), err)
		}
		h := &hook{Webhook: w, id: w.ID(), kick: make(chan struct{}, 1), slot: make(chan struct{}, opt.Concurrency), dirty: map[string]bool{}}
		if seen[h.id] {
			return nil, fmt.Errorf("webhook %s given twice", w.Redacted())
		}
		seen[h.id] = true
		d.hooks = append(d.hooks, h)
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	// One registration attempt now, so that the events recorded once the gateway serves are
	// delivered; if the store does not answer, run retries in the background.
	for _, h := range d.hooks {
		ctx, cancel := d.storeCtx()
		h.registered = d.s.RegisterWebhook(ctx, h.id) == nil
		cancel()
	}
	d.stop = s.WatchEvents(func(instance string) {
		for _, h := range d.hooks {
			h.mu.Lock()
			h.dirty[instance] = true
			h.mu.Unlock()
			select {
			case h.kick <- struct{}{}:
			default:
			}
		}
	})
	for _, h := range d.hooks {
		d.wg.Add(1)
		go d.run(h)
	}
	if opt.OnDepth != nil && len(d.hooks) > 0 {
		d.wg.Add(1)
		go d.depths()
	}
	return d, nil
}

// Close stops delivering. Deliveries in flight are cancelled and made due again at once,
// for the next gateway (or this one's successor) to send: a receiver may see those again.
func (d *Deliverer) Close() error {
	d.stop()
	d.cancel()
	d.wg.Wait()
	return nil
}

func (d *Deliverer) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.ctx, d.opt.StoreTimeout)
}

// run is one webhook's loop: register it, then claim and deliver on every kick and poll.
func (d *Deliverer) run(h *hook) {
	defer d.wg.Done()
	log := d.opt.Logger.With(zap.String("webhook", h.id), zap.String("url", h.Redacted()))
	for delay := 100 * time.Millisecond; !h.registered; {
		ctx, cancel := d.storeCtx()
		err := d.s.RegisterWebhook(ctx, h.id)
		cancel()
		if err == nil {
			break
		}
		log.Warn("registering the webhook in the store failed: events recorded until it succeeds are not delivered to it; retrying", zap.Error(err))
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
	poll := time.NewTicker(d.opt.Poll)
	defer poll.Stop()
	var instances []string
	var listedAt time.Time
	var lastWarn time.Time
	for {
		all := false
		select {
		case <-d.ctx.Done():
			return
		case <-h.kick:
		case <-poll.C:
			all = true
		}
		h.mu.Lock()
		dirty := h.dirty
		h.dirty = map[string]bool{}
		h.mu.Unlock()
		if all || len(instances) == 0 {
			if time.Since(listedAt) > 10*time.Second || len(instances) == 0 {
				if list, err := d.listInstances(); err == nil {
					instances, listedAt = list, time.Now()
				} else if time.Since(lastWarn) > time.Minute {
					lastWarn = time.Now()
					log.Warn("listing instances for webhook delivery failed", zap.Error(err))
				}
			}
		}
		targets := instances
		if !all {
			targets = targets[:0:0]
			for in := range dirty {
				targets = append(targets, in)
			}
		}
		for _, in := range targets {
			if err := d.drain(h, in); err != nil && d.ctx.Err() == nil && time.Since(lastWarn) > time.Minute {
				lastWarn = time.Now()
				log.Warn("claiming webhook deliveries failed", zap.String("instance", in), zap.Error(err))
			}
		}
	}
}

func (d *Deliverer) listInstances() ([]string, error) {
	ctx, cancel := d.storeCtx()
	defer cancel()
	ins, err := d.s.Instances(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.ID
	}
	return out, nil
}

// drain claims what is due in one instance's outbox, as many as there are free delivery
// slots, and sends each in its own goroutine; it claims again while claims come back full.
func (d *Deliverer) drain(h *hook, instance string) error {
	for {
		// Wait for at least one free slot, then take as many as are free.
		select {
		case h.slot <- struct{}{}:
		case <-d.ctx.Done():
			return nil
		}
		free := 1
	more:
		for free < cap(h.slot) {
			select {
			case h.slot <- struct{}{}:
				free++
			default:
				break more
			}
		}
		ctx, cancel := d.storeCtx()
		items, err := d.s.ClaimOutbox(ctx, h.id, instance, h.Events, free, d.opt.Lease)
		cancel()
		for range free - len(items) {
			<-h.slot
		}
		if err != nil {
			return err
		}
		for _, it := range items {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer func() { <-h.slot }()
				d.deliver(h, instance, it)
			}()
		}
		if len(items) < free {
			return nil
		}
	}
}

// deliver sends one claimed item and settles it.
func (d *Deliverer) deliver(h *hook, instance string, it store.OutboxItem) {
	start := time.Now()
	err := d.post(h, it.Event)
	took := time.Since(start)
	// Settling uses its own context: a Close during the POST still hands the item back.
	sctx, cancel := context.WithTimeout(context.Background(), d.opt.StoreTimeout)
	defer cancel()
	log := d.opt.Logger.With(zap.String("webhook", h.id), zap.String("event_id", it.Event.ID))
	result := ResultDelivered
	switch {
	case err == nil:
		if aerr := d.s.AckOutbox(sctx, h.id, instance, it.Event.ID); aerr != nil {
			log.Warn("a delivered event could not be removed from the outbox: it may be delivered again", zap.Error(aerr))
		}
	case d.ctx.Err() != nil:
		// Closing: hand it back at once.
		if rerr := d.s.RetryOutbox(sctx, h.id, instance, it.Event.ID, 0); rerr != nil {
			log.Debug("handing back a delivery on close failed; its lease will expire", zap.Error(rerr))
		}
		return
	case time.Since(it.QueuedAt) >= d.opt.GiveUpAfter:
		result = ResultDropped
		log.Error("webhook delivery given up", zap.String("url", h.Redacted()), zap.Int("attempts", it.Attempts+1),
			zap.Time("queued_at", it.QueuedAt), zap.Error(err))
		if aerr := d.s.AckOutbox(sctx, h.id, instance, it.Event.ID); aerr != nil {
			log.Warn("removing a given-up delivery failed", zap.Error(aerr))
		}
	default:
		result = ResultFailed
		wait := d.opt.Backoff(it.Attempts)
		log.Info("webhook delivery failed; will retry", zap.String("url", h.Redacted()), zap.Int("attempt", it.Attempts+1),
			zap.Duration("retry_in", wait), zap.Error(err))
		if rerr := d.s.RetryOutbox(sctx, h.id, instance, it.Event.ID, wait); rerr != nil {
			log.Warn("scheduling a webhook retry failed; its lease will expire", zap.Error(rerr))
		}
	}
	if d.opt.OnResult != nil {
		d.opt.OnResult(h.id, result, took)
	}
}

// errStatus is a delivery answered with a status other than 2xx.
type errStatus int

func (e errStatus) Error() string { return fmt.Sprintf("the receiver answered %d", int(e)) }

func (d *Deliverer) post(h *hook, e store.Event) error {
	body, err := Body(e)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("building the request failed")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", d.opt.UserAgent)
	req.Header.Set(HeaderEventID, e.ID)
	req.Header.Set(HeaderSignature, Sign(h.Secret, time.Now(), body))
	resp, err := d.opt.Client.Do(req)
	if err != nil {
		// The error names the URL, query included: say only what went wrong.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			if inner := ue.Unwrap(); inner != nil {
				return inner
			}
		}
		return errors.New("the request failed")
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return errStatus(resp.StatusCode)
	}
	return nil
}

func (d *Deliverer) depths() {
	defer d.wg.Done()
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		for _, h := range d.hooks {
			ctx, cancel := d.storeCtx()
			n, err := d.s.OutboxDepth(ctx, h.id)
			cancel()
			if err == nil {
				d.opt.OnDepth(h.id, n)
			}
		}
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
	}
}
