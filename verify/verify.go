// Package verify decides on one presented API key: format and checksum, environment, then the
// in-process cache or one store lookup, then revoked and expired. It owns the positive cache
// (otter, a W-TinyLFU cache), the negative cache (an LRU of unknown hashes) and the invalidation state, and
// keeps the cache and revocation guarantees (docs/design.md, "Guarantees"):
//
//   - a hit costs no store round trip, and expiry is checked on every request against the
//     cached expires_at, so the cache never extends a key's life;
//   - entries are keyed by the full 32-byte key hash: two keys never share an entry;
//   - once an invalidation has been delivered (Invalidate returns), no request is answered
//     from what was cached before it, and no lookup that started before it fills the cache
//     or is joined by a request that arrives after it;
//   - while the invalidation channel is unhealthy the cache is not trusted: keys are checked
//     at the store, and only if the store fails too does a cached entry answer, for at most
//     MaxStale after the channel dropped;
//   - bad checksums never reach the store; concurrent misses on one key make one store call.
package verify

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/maypok86/otter/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/limit"
	"github.com/keygate/keygate/store"
)

// Store is what a Verifier needs of the key store: a lookup by hash, last-use writes, and
// the invalidations. store.Store has these methods.
type Store interface {
	LookupHash(ctx context.Context, h apikey.Hash) (store.Lookup, error)
	TouchKeys(ctx context.Context, ts []store.Touch) error
	Subscribe(w store.Watcher) (unsubscribe func())
}

// Result is a verification's outcome; the key fields are set when Code is OK.
type Result struct {
	Code Code
	// KeyID and Instance name the key when it was found: with OK, and with the refusals
	// decided once the key was known (Revoked, Expired, IPNotAllowed, InsufficientScope,
	// RateLimitExceeded, QuotaExceeded), so that they can be counted for it.
	KeyID       string
	Instance    string
	Environment apikey.Environment
	// RetryAfter is set with TooManyFailedAttempts: how long until the client may retry.
	RetryAfter time.Duration
	// MissingScope is, with InsufficientScope, the index in Request.Scopes of the first
	// scope the key lacks.
	MissingScope int
	// Scopes are the key's scopes, comma-separated ("" when unrestricted), and Metadata its
	// metadata with the placeholders' names, when Code is OK. Both are shared: read only.
	Scopes   string
	Metadata []Meta
	// Limits is set for a key with a rate limit or a quota (Limited true): what the
	// RateLimit-* headers and Retry-After say.
	Limits  limit.Decision
	Limited bool
}

// Request is what Check decides on.
type Request struct {
	// Key is the presented key; Want the environment the route accepts (EnvUnknown: any).
	Key  string
	Want apikey.Environment
	// Client is the client's address: for the key's allowed addresses, and the failed-attempt
	// limit (an invalid Addr: none known; a key with allowed addresses then refuses).
	Client netip.Addr
	// Scopes are the route's required scopes: the key must have every one.
	Scopes []string
	// RateLimit is the route's default for keys without a rate limit of their own (nil:
	// none).
	RateLimit *store.RateLimit
}

// Attempts is the failed-attempt limit as a Verifier uses it (package limit implements it):
// every invalid_api_key is a failed attempt of the client, and a store lookup is admitted
// first, so that the lookups a client can cause stay within its limit even when its
// requests arrive all at once.
type Attempts interface {
	// Admit is asked before a store lookup; false refuses it (retry after the duration).
	Admit(client netip.Addr) (retryAfter time.Duration, ok bool)
	// Settle ends an admitted lookup; failed: it found no key.
	Settle(client netip.Addr, failed bool)
	// Fail records a failed attempt decided without a lookup.
	Fail(client netip.Addr)
}

// Config tunes a Verifier. Zero fields take the defaults documented on each field.
type Config struct {
	// Size is how many keys the positive cache holds (default 1,000,000).
	Size int64
	// TTL is the longest life of a positive entry (default 5m).
	TTL time.Duration
	// NegativeTTL is how long unknown keys are remembered (default 10s); NegativeSize how
	// many (default 100,000).
	NegativeTTL  time.Duration
	NegativeSize int
	// MaxStale is how long cached keys keep serving once the store and its invalidation
	// channel are unreachable, counted from when the channel dropped (default 30s).
	MaxStale time.Duration
	// LookupTimeout bounds one store lookup (default 2s).
	LookupTimeout time.Duration
	// TouchInterval is the least time between two last_used_at writes for one key
	// (default 1m).
	TouchInterval time.Duration
	// Hasher hashes keys (default plain SHA-256).
	Hasher apikey.Hasher
	// Signer, when it has secrets, checks presented keys' signature tags before any lookup;
	// with RequireSigned a key whose tag verifies under no secret is invalid without a store
	// call, without it such a key is still looked up (keys minted before signing).
	Signer        *apikey.Signer
	RequireSigned bool
	// Attempts, when set, is told of the failed attempts of VerifyFrom's clients and admits
	// their store lookups.
	Attempts Attempts
	// Meter, when set, enforces the keys' rate limits and quotas (without it they are not
	// enforced).
	Meter *limit.Meter
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *zap.Logger
	// ObserveLookup, when set, hears how long each store lookup took (for metrics).
	ObserveLookup func(time.Duration)
}

func (c *Config) defaults() {
	if c.Size <= 0 {
		c.Size = 1_000_000
	}
	if c.TTL <= 0 {
		c.TTL = 5 * time.Minute
	}
	if c.NegativeTTL <= 0 {
		c.NegativeTTL = 10 * time.Second
	}
	if c.NegativeSize <= 0 {
		c.NegativeSize = 100_000
	}
	if c.MaxStale <= 0 {
		c.MaxStale = 30 * time.Second
	}
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = 2 * time.Second
	}
	if c.TouchInterval <= 0 {
		c.TouchInterval = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
}

// entry is a cached key. It is immutable but for lastTouch and policy (which a key without
// one gains when a route's default rate limit needs its meter). Its layout keeps it at 64
// bytes, the smallest size class it fits: the id inline, the instance an index into the
// verifier's table of names, the flags and the flush epoch in one word, the last touch in
// seconds, no policy for a plain key.
type entry struct {
	id        [idLen]byte            // the key id, when it has the usual form (else policy.id)
	meta      uint32                 // the flush epoch it was filled in (24 bits), the environment, revoked, signed
	expires   int64                  // unix nanoseconds; 0: never
	stale     int64                  // unix nanoseconds when it stops serving (the cache TTL)
	policy    atomic.Pointer[policy] // scopes, addresses, metadata, limits; nil: none
	instance  uint32                 // its instance's index in the verifier's names
	lastTouch atomic.Uint32          // when the last last_used_at write was queued (touchClock); 0: never
}

// The bits of entry.meta.
const (
	metaRevoked = 1 << 0
	metaSigned  = 1 << 1 // the key's signature tag verifies (always true without signing)
	metaEnvBits = 2      // the environment, 2 bits from here
	metaEpoch   = 8      // the flush epoch, modulo 2^24, from here
)

func packMeta(env apikey.Environment, revoked, signed bool, epoch uint64) uint32 {
	m := uint32(env&3)<<metaEnvBits | uint32(epoch)<<metaEpoch
	if revoked {
		m |= metaRevoked
	}
	if signed {
		m |= metaSigned
	}
	return m
}

func (e *entry) env() apikey.Environment { return apikey.Environment(e.meta>>metaEnvBits) & 3 }
func (e *entry) revoked() bool           { return e.meta&metaRevoked != 0 }
func (e *entry) signed() bool            { return e.meta&metaSigned != 0 }

// current reports whether the entry was filled in the flush epoch epoch.
func (e *entry) current(epoch uint64) bool { return e.meta>>metaEpoch == uint32(epoch)&(1<<24-1) }

// names interns the instance names of the cached entries: an entry holds its instance's
// index. Names are only added (an instance's keys keep its index for the verifier's life).
type names struct {
	mu    sync.Mutex
	index map[string]uint32
	list  atomic.Pointer[[]string] // appended in place: a published list's slots never change
}

// id returns name's index, adding it if need be.
func (n *names) id(name string) uint32 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i, ok := n.index[name]; ok {
		return i
	}
	if n.index == nil {
		n.index = map[string]uint32{}
	}
	var l []string
	if p := n.list.Load(); p != nil {
		l = *p
	}
	// Appending writes only past every published list's length (or copies): readers of an
	// older list never see the slot change.
	l = append(l, name)
	n.list.Store(&l)
	i := uint32(len(l) - 1)
	n.index[name] = i
	return i
}

// name returns the name at index i (one that id returned).
func (n *names) name(i uint32) string { return (*n.list.Load())[i] }

// idLen is the length of a key id of the usual form: key_ and 24 characters.
const idLen = 28

// keyID returns the entry's key id without allocating: a string over its bytes, which never
// change once filled.
func (e *entry) keyID() string {
	if p := e.policy.Load(); p != nil && p.id != "" {
		return p.id
	}
	return unsafe.String(&e.id[0], idLen)
}

// pol returns the entry's policy (the open policy for a key without one).
func (e *entry) pol() *policy {
	if p := e.policy.Load(); p != nil {
		return p
	}
	return &openPolicy
}

// Stats counts what a Verifier did; all fields only grow.
type Stats struct {
	Results      [NumCodes]atomic.Uint64
	CacheHits    atomic.Uint64
	CacheMisses  atomic.Uint64
	NegativeHits atomic.Uint64
	StoreLookups atomic.Uint64
	// UnsignedKeys counts keys accepted without a valid signature tag while signing is on
	// (keys minted before it was): when it stays at 0, requiring signed keys is safe.
	UnsignedKeys atomic.Uint64
}

// Verifier verifies keys against a store. It is safe for concurrent use; it must be
// subscribed to its store (New does it) to receive invalidations.
type Verifier struct {
	cfg   Config
	store Store
	cache *otter.Cache[apikey.Hash, *entry]
	neg   *lru.Cache[apikey.Hash, int64] // hash → expiry (unix nanoseconds)
	sf    singleflight.Group

	// gen counts invalidations. A lookup remembers gen when it starts; it fills the cache only
	// if gen has not moved, checked under fillMu, and requests join only a lookup of the
	// current gen. epoch counts flushes: entries of an older epoch are ignored.
	fillMu sync.Mutex
	gen    atomic.Uint64
	epoch  atomic.Uint64

	healthy   atomic.Bool
	downSince atomic.Int64 // unix nanoseconds when the channel dropped

	instances names     // the cached entries' instance names
	touchBase time.Time // touchClock's zero

	touches     chan store.Touch
	closeOnce   sync.Once
	unsubscribe func()
	stop        chan struct{}
	done        chan struct{}

	Stats Stats
}

// New returns a Verifier on s and subscribes it to s's invalidations. Close it when done.
func New(s Store, cfg Config) (*Verifier, error) {
	cfg.defaults()
	// Sets are synchronous (a Set is visible when it returns; a Get after an Invalidate
	// never sees the old entry), and the cache keeps no expiry of its own: an entry's stale
	// time is checked on every hit, which costs no memory per entry.
	cache, err := otter.New(&otter.Options[apikey.Hash, *entry]{MaximumSize: int(cfg.Size)})
	if err != nil {
		return nil, err
	}
	neg, err := lru.New[apikey.Hash, int64](cfg.NegativeSize)
	if err != nil {
		return nil, err
	}
	v := &Verifier{cfg: cfg, store: s, cache: cache, neg: neg,
		touches: make(chan store.Touch, touchQueue), stop: make(chan struct{}), done: make(chan struct{})}
	v.downSince.Store(cfg.Now().UnixNano())
	v.touchBase = cfg.Now()
	v.unsubscribe = s.Subscribe(v)
	go v.writeTouches()
	return v, nil
}

// Close unsubscribes and stops the Verifier's goroutines. It does not close the store.
// Closing twice is harmless.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		v.unsubscribe()
		close(v.stop)
		<-v.done
		v.cache.InvalidateAll()
		v.cache.StopAllGoroutines()
	})
}

// Retire is Close for a verifier that requests may still be using (a config being replaced):
// it unsubscribes and stops trusting the cache at once — every Verify from now on asks the
// store — and closes after delay, so that no request inside Verify meets a closed cache.
func (v *Verifier) Retire(delay time.Duration) {
	v.unsubscribe()
	v.SetHealthy(false)
	time.AfterFunc(delay, v.Close)
}

// Verify decides on key for a route that accepts want (EnvUnknown: any environment).
func (v *Verifier) Verify(key string, want apikey.Environment) Result {
	return v.Check(Request{Key: key, Want: want})
}

// Check decides on a request: Verify with the client's address and the route's scopes.
func (v *Verifier) Check(req Request) Result {
	r, counted := v.verify(&req)
	if r.Code == InvalidKey && !counted && v.cfg.Attempts != nil {
		v.cfg.Attempts.Fail(req.Client)
	}
	v.Stats.Results[r.Code].Add(1)
	return r
}

// verify decides; counted says that an invalid key was already counted as a failed attempt
// (by settling its lookup).
func (v *Verifier) verify(req *Request) (_ Result, counted bool) {
	key, want, client := req.Key, req.Want, req.Client
	env, err := apikey.Parse(key)
	if err != nil {
		return Result{Code: InvalidKey}, false
	}
	h := v.cfg.Hasher.Sum(key)
	now := v.cfg.Now()

	e, hit := v.cache.GetIfPresent(h)
	if hit && (!e.current(v.epoch.Load()) || now.UnixNano() >= e.stale) {
		hit = false
	}
	// The signature tag, before the environment and any lookup. A cached entry knows whether
	// its key is signed: a hit costs no HMAC.
	signed := true
	if v.cfg.Signer.Enabled() {
		if hit {
			signed = e.signed()
		} else {
			signed = v.cfg.Signer.Verify(key)
		}
		if !signed && v.cfg.RequireSigned {
			return Result{Code: InvalidKey}, false
		}
	}
	if want != apikey.EnvUnknown && env != want {
		return Result{Code: WrongEnvironment}, false
	}
	if hit && v.healthy.Load() {
		v.Stats.CacheHits.Add(1)
		return v.decideEntry(e, env, now, req), false
	}
	if !hit {
		v.Stats.CacheMisses.Add(1)
		if exp, ok := v.neg.Get(h); ok && exp > now.UnixNano() {
			v.Stats.NegativeHits.Add(1)
			return Result{Code: InvalidKey}, false
		}
	}

	if v.cfg.Attempts != nil {
		wait, ok := v.cfg.Attempts.Admit(client)
		if !ok {
			return Result{Code: TooManyFailedAttempts, RetryAfter: wait}, false
		}
	}
	gen := v.gen.Load()
	l, err := v.lookup(h, gen)
	if v.cfg.Attempts != nil {
		v.cfg.Attempts.Settle(client, errors.Is(err, store.ErrKeyNotFound))
	}
	switch {
	case errors.Is(err, store.ErrKeyNotFound):
		v.neg.Add(h, now.Add(v.cfg.NegativeTTL).UnixNano())
		return Result{Code: InvalidKey}, true
	case err != nil:
		// The store failed. A cached entry may answer while the channel has been down for
		// less than MaxStale (it dropped at the latest when this lookup failed).
		if hit && !v.healthy.Load() && now.UnixNano()-v.downSince.Load() <= int64(v.cfg.MaxStale) {
			return v.decideEntry(e, env, now, req), false
		}
		return Result{Code: Unavailable}, false
	}
	e = v.fill(h, l, gen, signed)
	return v.decideEntry(e, env, now, req), false
}

// lookup asks the store, sharing the call with concurrent lookups of the same key that
// started in the same invalidation generation.
func (v *Verifier) lookup(h apikey.Hash, gen uint64) (store.Lookup, error) {
	var buf [len(h) + 20]byte
	k := strconv.AppendUint(append(buf[:0], h[:]...), gen, 10)
	r, err, _ := v.sf.Do(string(k), func() (any, error) {
		v.Stats.StoreLookups.Add(1)
		ctx, cancel := context.WithTimeout(context.Background(), v.cfg.LookupTimeout)
		defer cancel()
		start := time.Now()
		l, err := v.store.LookupHash(ctx, h)
		if v.cfg.ObserveLookup != nil {
			v.cfg.ObserveLookup(time.Since(start))
		}
		return l, err
	})
	if err != nil {
		return store.Lookup{}, err
	}
	return r.(store.Lookup), nil
}

// fill builds the entry for a lookup and caches it, unless an invalidation or a flush came
// since the lookup started or the channel is down.
func (v *Verifier) fill(h apikey.Hash, l store.Lookup, gen uint64, signed bool) *entry {
	e := &entry{instance: v.instances.id(l.Instance), expires: unixNano(l.ExpiresAt),
		stale: v.cfg.Now().Add(v.cfg.TTL).UnixNano()}
	p := policyOf(l)
	if len(l.ID) == idLen {
		copy(e.id[:], l.ID)
	} else {
		if p == nil {
			p = new(policy)
		}
		p.id = l.ID
	}
	e.policy.Store(p)
	v.fillMu.Lock()
	defer v.fillMu.Unlock()
	e.meta = packMeta(l.Environment, !l.RevokedAt.IsZero(), signed, v.epoch.Load())
	if v.gen.Load() == gen && v.healthy.Load() {
		v.cache.Set(h, e)
	}
	return e
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (v *Verifier) decideEntry(e *entry, env apikey.Environment, now time.Time, req *Request) Result {
	p := e.pol()
	id, instance := e.keyID(), v.instances.name(e.instance)
	switch {
	case e.env() != env:
		// The prefix and the record disagree: not a key we issued.
		return Result{Code: InvalidKey}
	case e.revoked():
		return Result{Code: Revoked, KeyID: id, Instance: instance}
	case e.expires != 0 && e.expires <= now.UnixNano():
		return Result{Code: Expired, KeyID: id, Instance: instance}
	case p.ips != nil && !p.ips.contains(req.Client):
		return Result{Code: IPNotAllowed, KeyID: id, Instance: instance}
	}
	for i, s := range req.Scopes {
		if !p.allows(s) {
			return Result{Code: InsufficientScope, MissingScope: i, KeyID: id, Instance: instance}
		}
	}
	var limits limit.Decision
	limited := false
	if rl, q := p.rateLimit(req), p.quota; (rl != nil || q != nil) && v.cfg.Meter != nil {
		km := v.meterOf(e, p, id, instance)
		limits, limited = km.Take(rl, q), true
		switch limits.Outcome {
		case limit.RateLimited:
			return Result{Code: RateLimitExceeded, Limits: limits, Limited: true, KeyID: id, Instance: instance}
		case limit.QuotaExceeded:
			return Result{Code: QuotaExceeded, Limits: limits, Limited: true, KeyID: id, Instance: instance}
		case limit.Unreachable:
			return Result{Code: Unavailable}
		}
	}
	if !e.signed() {
		v.Stats.UnsignedKeys.Add(1)
	}
	v.touch(e, id, instance, now)
	return Result{Code: OK, KeyID: id, Instance: instance, Environment: e.env(),
		Scopes: p.joined, Metadata: p.meta, Limits: limits, Limited: limited}
}

// touch queues a last_used_at write at most once per TouchInterval (to the second) per
// cached key; the writes happen off the request path and are dropped when the queue is full.
func (v *Verifier) touch(e *entry, id, instance string, now time.Time) {
	n := v.touchClock(now)
	last := e.lastTouch.Load()
	if last != 0 && int64(n)-int64(last) < max(int64(v.cfg.TouchInterval/time.Second), 1) || !e.lastTouch.CompareAndSwap(last, n) {
		return
	}
	select {
	case v.touches <- store.Touch{Instance: instance, ID: id, At: now}:
	default:
	}
}

// touchClock is now in whole seconds since the verifier started, from 1 (136 years fit).
func (v *Verifier) touchClock(now time.Time) uint32 {
	return uint32(max(now.Sub(v.touchBase)/time.Second, 0)) + 1
}

// touchQueue is how many last_used_at writes wait at most (more are dropped),
// maxTouchBatch how many of them one store call records, and touchGather how long a batch
// waits for more after its first use.
const (
	touchQueue    = 1024
	maxTouchBatch = 256
	touchGather   = 50 * time.Millisecond
)

// writeTouches records the queued last uses until Close. It waits for one, then collects
// the uses that come within touchGather of it (up to maxTouchBatch), and records them all
// in one store call: keys seen one after another (cache misses, each a lookup) cost the
// store one write per batch, not a second round trip each. A use is written at most
// touchGather late, far within last_used_at's precision of a minute.
func (v *Verifier) writeTouches() {
	defer close(v.done)
	batch := make([]store.Touch, 0, maxTouchBatch)
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	for {
		select {
		case <-v.stop:
			return
		case t := <-v.touches:
			batch = append(batch[:0], t)
			gather.Reset(touchGather)
		collect:
			for len(batch) < maxTouchBatch {
				select {
				case t := <-v.touches:
					batch = append(batch, t)
				case <-gather.C:
					break collect
				case <-v.stop:
					return
				}
			}
			gather.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), v.cfg.LookupTimeout)
			if err := v.store.TouchKeys(ctx, batch); err != nil {
				v.cfg.Logger.Debug("recording last use", zap.Int("keys", len(batch)),
					zap.String("first_key_id", batch[0].ID), zap.Error(err))
			}
			cancel()
		}
	}
}

// Invalidate implements store.Watcher: the keys are dropped from the cache, and no lookup
// that started before this call will fill it. When Invalidate returns, no request is answered
// from the old entries.
func (v *Verifier) Invalidate(hashes ...apikey.Hash) {
	v.fillMu.Lock()
	v.gen.Add(1)
	v.fillMu.Unlock()
	// A fill checks gen and sets under fillMu, and Set is synchronous: after this, no fill
	// of an older gen can bring an entry back.
	for i := range hashes {
		v.cache.Invalidate(hashes[i])
	}
}

// Flush implements store.Watcher: every cached entry stops counting.
func (v *Verifier) Flush() {
	v.fillMu.Lock()
	v.gen.Add(1)
	v.epoch.Add(1)
	v.fillMu.Unlock()
	v.neg.Purge()
}

// SetHealthy implements store.Watcher.
func (v *Verifier) SetHealthy(ok bool) {
	v.fillMu.Lock()
	defer v.fillMu.Unlock()
	if ok {
		if !v.healthy.Swap(true) {
			// Lookups that started while the channel was down must not fill the cache (nor be
			// joined): a change they missed need not be among what the store delivered on
			// the way back (a Redis store's listener takes its first position at the stream's
			// tail, after writes that such a lookup may have read around).
			v.gen.Add(1)
		}
		return
	}
	if v.healthy.Swap(false) {
		v.downSince.Store(v.cfg.Now().UnixNano())
	}
}

// Healthy reports whether the cache is trusted (the invalidation channel is up).
func (v *Verifier) Healthy() bool { return v.healthy.Load() }

// rateLimit is the key's own rate limit, or the route's default.
func (p *policy) rateLimit(req *Request) *store.RateLimit {
	if p.rl != nil {
		return p.rl
	}
	return req.RateLimit
}

// meterOf returns the key's limit state, found in the meter on first need and kept in its
// policy (a key without a policy, limited only by a route's default, gains an empty one).
func (v *Verifier) meterOf(e *entry, p *policy, id, instance string) *limit.KeyMeter {
	if km := p.meter.Load(); km != nil {
		return km
	}
	km := v.cfg.Meter.Key(instance, id)
	if p == &openPolicy {
		np := new(policy)
		np.meter.Store(km)
		if !e.policy.CompareAndSwap(nil, np) {
			p = e.policy.Load() // another request gave it one first
		} else {
			return km
		}
	}
	p.meter.CompareAndSwap(nil, km)
	return p.meter.Load()
}

// Interface guards
var (
	_ store.Watcher = (*Verifier)(nil)
	_ Store         = store.Store(nil)
)
