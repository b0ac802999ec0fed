package scanning

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Store is what scanning needs of the key store.
type Store interface {
	LookupHash(ctx context.Context, h apikey.Hash) (store.Lookup, error)
	RevokeKey(ctx context.Context, instance, id string, at time.Time, ev *store.Event) (store.Key, bool, error)
	AddEvent(ctx context.Context, e store.Event) error
}

// Actor is the actor of the api_key.leaked events.
const Actor = "github-secret-scanning"

// SandboxMode says what a leaked sk_test_ key gets. A leaked sk_live_ key is always revoked.
type SandboxMode uint8

const (
	// SandboxRevoke revokes it, like a live key (the default).
	SandboxRevoke SandboxMode = iota
	// SandboxReport records the api_key.leaked event and leaves the key active.
	SandboxReport
)

// ParseSandboxMode reads "revoke" or "report".
func ParseSandboxMode(s string) (SandboxMode, error) {
	switch s {
	case "", "revoke":
		return SandboxRevoke, nil
	case "report":
		return SandboxReport, nil
	}
	return 0, fmt.Errorf(`sandbox must be "revoke" or "report", not %q`, s)
}

// Defaults of a Scanner.
const (
	// DefaultConcurrency store calls at a time: a full batch of ~10,000 unknown tokens is
	// ~10,000 lookups, well under a second at this width even at a few ms each.
	DefaultConcurrency = 32
	// DefaultTimeout leaves, of GitHub's 10 s, room to read the body and write the answer.
	DefaultTimeout = 8 * time.Second
)

// ErrIncomplete: the batch could not be fully processed (the store failed or was too slow).
// The caller answers 503 so that GitHub sends the batch again: what was revoked meanwhile
// stays revoked and is then answered true_positive, so a partial answer is never needed and
// no token of ours is ever labelled false_positive for want of time.
var ErrIncomplete = errors.New("the batch could not be processed")

// Scanner processes alert batches against a store.
type Scanner struct {
	Store Store
	// Hasher is the store's key hasher (its pepper).
	Hasher  apikey.Hasher
	Sandbox SandboxMode
	// Concurrency bounds the store calls in flight (0: DefaultConcurrency).
	Concurrency int
	// Timeout bounds a batch (0: DefaultTimeout).
	Timeout time.Duration
	// Logger gets one line per key found and one per batch; never a token, only its hash
	// (nil: no logs).
	Logger *zap.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// outcome of one distinct token.
type outcome struct {
	ours bool
	done bool
}

// Process answers a batch, in its order. Tokens that cannot be ours (not our format, or a
// bad checksum) cost no store call. Each distinct token of our format is looked up by its
// hash (the whole secret must match); a key found is revoked (sandbox keys per Sandbox) with
// an api_key.leaked event, or found already revoked (no new event). The error is
// ErrIncomplete (wrapping the cause) when any token could not be settled.
func (s *Scanner) Process(ctx context.Context, alerts []Alert) ([]Result, error) {
	timeout, width := s.Timeout, s.Concurrency
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if width <= 0 {
		width = DefaultConcurrency
	}
	log := s.Logger
	if log == nil {
		log = zap.NewNop()
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// The distinct tokens of our format, each with its first alert.
	first := make(map[string]int)
	var work []int
	for i, a := range alerts {
		if _, err := apikey.Parse(a.Token); err != nil {
			continue
		}
		if _, seen := first[a.Token]; !seen {
			first[a.Token] = i
			work = append(work, i)
		}
	}
	outs := make([]outcome, len(alerts))

	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		failed  error
		next    = make(chan int)
	)
	fail := func(err error) {
		errOnce.Do(func() { failed = err; cancel() })
	}
	for w := 0; w < min(width, len(work)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ours, err := s.one(ctx, alerts[i], now, log)
				if err != nil {
					fail(err)
					continue
				}
				outs[i] = outcome{ours: ours, done: true}
			}
		}()
	}
feed:
	for _, i := range work {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()

	results := make([]Result, len(alerts))
	settled, ours := 0, 0
	for i, a := range alerts {
		results[i] = Result{TokenHash: TokenHash(a.Token), TokenType: a.Type, Label: FalsePositive}
		o := outs[i]
		if j, ok := first[a.Token]; ok {
			o = outs[j]
			if !o.done {
				continue
			}
		}
		settled++
		if o.ours {
			ours++
			results[i].Label = TruePositive
		}
	}
	elapsed := time.Since(start)
	if settled < len(alerts) {
		if failed == nil {
			failed = ctx.Err()
		}
		log.Error("secret scanning batch not fully processed: answering 503 so that GitHub sends it again",
			zap.Int("tokens", len(alerts)), zap.Int("settled", settled), zap.Duration("elapsed", elapsed), zap.Error(failed))
		return nil, fmt.Errorf("%w: %d of %d tokens settled: %v", ErrIncomplete, settled, len(alerts), failed)
	}
	log.Info("secret scanning batch processed",
		zap.Int("tokens", len(alerts)), zap.Int("ours", ours), zap.Int("store_lookups", len(work)), zap.Duration("elapsed", elapsed))
	return results, nil
}

// one settles one token of our format: whether it is one of our keys, acting on it.
func (s *Scanner) one(ctx context.Context, a Alert, now func() time.Time, log *zap.Logger) (bool, error) {
	l, err := s.Store.LookupHash(ctx, s.Hasher.Sum(a.Token))
	if errors.Is(err, store.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up a token: %w", err)
	}
	fields := []zap.Field{zap.String("token_hash", TokenHash(a.Token)), zap.String("key_id", l.ID),
		zap.String("instance", l.Instance), zap.String("url", a.URL), zap.String("source", a.Source)}
	if !l.RevokedAt.IsZero() {
		log.Info("leaked key reported, already revoked", fields...)
		return true, nil
	}
	at := now()
	id, err := apikey.NewID("evt_", 24)
	if err != nil {
		return false, err
	}
	ev := store.Event{ID: id, Type: store.EventKeyLeaked, Instance: l.Instance, KeyID: l.ID,
		URL: a.URL, Source: a.Source, Actor: Actor, CreatedAt: at}
	if l.Environment == apikey.Sandbox && s.Sandbox == SandboxReport {
		if err := s.Store.AddEvent(ctx, ev); err != nil {
			return false, fmt.Errorf("recording a leak: %w", err)
		}
		log.Warn("leaked sandbox key reported, left active (sandbox report)", fields...)
		return true, nil
	}
	_, changed, err := s.Store.RevokeKey(ctx, l.Instance, l.ID, at, &ev)
	if errors.Is(err, store.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("revoking a leaked key: %w", err)
	}
	if changed {
		log.Warn("leaked key revoked", fields...)
	} else {
		log.Info("leaked key reported, already revoked", fields...)
	}
	return true, nil
}
