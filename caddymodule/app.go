// Package caddymodule is keygate's Caddy glue: the `nora` app (store, caches, invalidation
// listener, shared by every handler and kept across config reloads), the `nora_auth`
// handler and their Caddyfile syntax. The decisions themselves live in package verify.
package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/limit"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
	"github.com/keygate/keygate/verify"
)

func init() {
	caddy.RegisterModule(App{})
}

// redisLogger sends go-redis' own log lines (dial failures, pool events) through Caddy's
// logger instead of the standard library's. They carry addresses, never credentials.
// go-redis has one process-wide logger: it is set when the first Redis store opens, not at
// import, so a program that merely links keygate keeps its own.
type redisLogger struct{}

var setRedisLogger sync.Once

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	caddy.Log().Named("nora.redis").Debug(fmt.Sprintf(format, v...))
}

// App is the `nora` app: it owns the store connection, the key caches and the invalidation
// subscription of the whole process. nora_auth (and nora_admin) use it. Its state lives in
// a usage pool keyed by its effective config, so a reload that keeps the store and cache
// settings keeps the same connection and a warm cache.
type App struct {
	// Store is where keys live. Default: the embedded file store, at
	// <caddy data dir>/keygate/keys.db.
	Store *StoreConfig `json:"store,omitempty"`
	// Instances are created at start when missing.
	Instances []InstanceConfig `json:"instances,omitempty"`
	// Cache tunes the in-process caches.
	Cache *CacheConfig `json:"cache,omitempty"`
	// Pepper, when set, makes stored hashes HMAC-SHA-256 keyed with it instead of plain
	// SHA-256. Changing it makes every existing key unknown. Takes {env.*} placeholders.
	Pepper string `json:"pepper,omitempty"`
	// FailedAttempts tunes the failed-attempt limit (on by default: 20 per client per minute).
	FailedAttempts *FailedAttemptsConfig `json:"failed_attempts,omitempty"`
	// KeySigning, when set, signs new keys and checks presented keys' signature tags before
	// any lookup.
	KeySigning *KeySigningConfig `json:"key_signing,omitempty"`
	// Webhooks receive the audit events, signed, at least once (from an outbox in the store).
	Webhooks []WebhookConfig `json:"webhooks,omitempty"`
	// Usage tunes the per-key usage counts (on by default).
	Usage *UsageConfig `json:"usage,omitempty"`

	appUsage
	resolved storeSettings
	failed   *limit.FailedAttempts // nil: the limit is off
	failKey  string
	signer   *apikey.Signer // Store with placeholders and defaults applied
	storeRes *storeResource
	verRes   *verifierResource
	hasher   apikey.Hasher
	storeKey string
	verKey   string
	logger   *zap.Logger
	cancel   context.CancelFunc
	// started is closed once Start has opened the store and the verifier; instancesReady
	// once every configured instance exists in the store.
	started        chan struct{}
	instancesReady chan struct{}
}

// StoreConfig selects and configures the store. Every string takes {env.*} placeholders.
type StoreConfig struct {
	// Type is "file" (default) or "redis".
	Type string `json:"type,omitempty"`
	// Path is the file store's file.
	Path string `json:"path,omitempty"`
	// URL is a redis:// or rediss:// URL of a standalone Redis.
	URL string `json:"url,omitempty"`
	// Addrs are Redis addresses (host:port): one for standalone, the sentinels with
	// MasterName, or cluster nodes (several addresses without MasterName, or Cluster).
	Addrs []string `json:"addrs,omitempty"`
	// MasterName is the Sentinel master's name.
	MasterName string `json:"master_name,omitempty"`
	// Cluster forces Redis Cluster mode even with one address.
	Cluster bool `json:"cluster,omitempty"`
	// Username and Password authenticate to Redis; SentinelPassword to the sentinels.
	Username         string `json:"username,omitempty"`
	Password         string `json:"password,omitempty"`
	SentinelPassword string `json:"sentinel_password,omitempty"`
	// DB is the database number (standalone and Sentinel). Like every number here it is
	// a string in the Caddyfile's JSON, so it takes {env.*}; a JSON number is accepted too.
	DB EnvValue `json:"db,omitempty"`
	// TLS connects with TLS.
	TLS bool `json:"tls,omitempty"`
	// KeyPrefix starts every Redis key and the invalidation stream (default "nora:").
	KeyPrefix string `json:"key_prefix,omitempty"`
	// WaitReplicas makes create, roll and revoke wait for this many replica acknowledgements.
	WaitReplicas EnvValue `json:"wait_replicas,omitempty"`
	// Timeout bounds dialing and each Redis command (a duration such as "500ms"; default 1s).
	Timeout EnvValue `json:"timeout,omitempty"`
}

// EnvValue is a config value that may be an {env.*} placeholder: a JSON string, or (for
// numbers) a JSON number, resolved when the config loads.
type EnvValue string

// UnmarshalJSON takes a JSON string or a JSON number.
func (v *EnvValue) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*v = EnvValue(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return errors.New("must be a string or a number")
	}
	*v = EnvValue(n.String())
	return nil
}

// storeSettings is a StoreConfig resolved: placeholders replaced, numbers parsed, defaults
// set. It is what the pooled store is keyed by (hashed: it holds the password).
type storeSettings struct {
	Type         string
	Path         string
	Redis        redisstore.Config
	KeyPrefix    string
	WaitReplicas int
}

// resolve replaces the placeholders of c and parses its numbers.
func (c StoreConfig) resolve(repl *caddy.Replacer) (storeSettings, error) {
	r := func(s string) string { return repl.ReplaceKnown(s, "") }
	st := storeSettings{Type: r(c.Type), Path: r(c.Path), KeyPrefix: r(c.KeyPrefix)}
	if st.Type == "" {
		st.Type = "file"
	}
	if st.Type == "file" && st.Path == "" {
		st.Path = filepath.Join(caddy.AppDataDir(), "keygate", "keys.db")
	}
	rc := redisstore.Config{URL: r(c.URL), MasterName: r(c.MasterName), Cluster: c.Cluster,
		Username: r(c.Username), Password: r(c.Password), SentinelPassword: r(c.SentinelPassword),
		TLS: c.TLS, Timeout: time.Second}
	for _, a := range c.Addrs {
		rc.Addrs = append(rc.Addrs, r(a))
	}
	var err error
	if rc.DB, err = nonNegative("db", r(string(c.DB))); err != nil {
		return st, err
	}
	if st.WaitReplicas, err = nonNegative("wait_replicas", r(string(c.WaitReplicas))); err != nil {
		return st, err
	}
	if t := r(string(c.Timeout)); t != "" {
		// A bare number is nanoseconds, as caddy.Duration reads one from JSON.
		d, perr := caddy.ParseDuration(t)
		if n, nerr := strconv.ParseInt(t, 10, 64); nerr == nil {
			d, perr = time.Duration(n), nil
		}
		if perr != nil || d <= 0 {
			return st, fmt.Errorf("timeout must be a positive duration, not %q", t)
		}
		rc.Timeout = d
	}
	if st.Type == "file" {
		// Only the path matters to a file store: a reload that changes Redis words keeps the
		// store open (a second open of the file would wait for the first to close).
		return storeSettings{Type: st.Type, Path: st.Path, Redis: redisstore.Config{Timeout: rc.Timeout}}, nil
	}
	st.Redis = rc
	return st, nil
}

func nonNegative(what, s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s must be a non-negative number, not %q", what, s)
	}
	return n, nil
}

// poolKey names a pooled resource by a hash of its settings, so that no password or pepper
// sits in clear in the pool's keys.
func poolKey(kind string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return kind + ":" + hex.EncodeToString(sum[:]), nil
}

// FailedAttemptsConfig is the failed-attempt limit: once a client (Caddy's client IP, so
// trusted_proxies is honoured; IPv6 by prefix) has had Limit requests refused with
// invalid_api_key within Window, it gets 429 too_many_failed_attempts for every request,
// decided before the key is parsed, until attempts age out of the window. Each gateway
// process counts on its own.
type FailedAttemptsConfig struct {
	// Off disables the limit.
	Off bool `json:"off,omitempty"`
	// Limit is the failed attempts allowed per client per window (default 20).
	Limit int `json:"limit,omitempty"`
	// Window is the span they are counted over (default 1m).
	Window caddy.Duration `json:"window,omitempty"`
	// MaxClients bounds the clients tracked (default 100000); past it the least recently
	// failing are forgotten, so an address-rotating flood cannot grow the process.
	MaxClients int `json:"max_clients,omitempty"`
	// IPv6Prefix is the prefix length by which IPv6 clients are counted (default 64).
	IPv6Prefix int `json:"ipv6_prefix,omitempty"`
}

// KeySigningConfig signs keys: every key minted carries a tag (HMAC-SHA-256 under the first
// secret) in its last 8 random characters, so that an invented key is refused at the cost of
// a hash, without a store call.
type KeySigningConfig struct {
	// Secrets sign (the first) and verify (all of them: add a new one first to rotate). Each
	// takes {env.*}; one that resolves empty is ignored. At least 16 bytes each.
	Secrets []string `json:"secrets,omitempty"`
	// Require refuses keys whose tag verifies under no secret, without a lookup. Without it
	// they are still looked up, so keys minted before signing keep working.
	Require bool `json:"require,omitempty"`
}

// InstanceConfig is an instance to create at start.
type InstanceConfig struct {
	ID          string `json:"id"`
	Environment string `json:"environment"`
	Name        string `json:"name"`
}

// CacheConfig tunes the caches.
type CacheConfig struct {
	// Size is how many keys the positive cache holds (default 1000000).
	Size int64 `json:"size,omitempty"`
	// TTL is the longest life of a positive entry (default 5m).
	TTL caddy.Duration `json:"ttl,omitempty"`
	// NegativeTTL is how long unknown keys are remembered (default 10s).
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`
	// MaxStale is how long cached keys serve while the store is unreachable (default 30s).
	MaxStale caddy.Duration `json:"max_stale,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "nora", New: func() caddy.Module { return new(App) }}
}

var pool = caddy.NewUsagePool()

// Provision resolves placeholders and defaults and takes this config's shared resources
// from the pool. It opens nothing: that happens in Start, so `caddy validate` works while a
// server holds the store, and a Redis that is down does not fail config loading.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.started = make(chan struct{})
	a.instancesReady = make(chan struct{})
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	repl := caddy.NewReplacer()
	if a.Store == nil {
		a.Store = &StoreConfig{}
	}
	sc, err := a.Store.resolve(repl)
	if err != nil {
		return fmt.Errorf("nora store: %v", err)
	}
	if a.Cache == nil {
		a.Cache = &CacheConfig{}
	}
	pepper := repl.ReplaceKnown(a.Pepper, "")
	a.resolved = sc
	signing, err := a.provisionSigning(repl)
	if err != nil {
		return err
	}
	if err := a.provisionFailedAttempts(); err != nil {
		return err
	}

	if a.storeKey, err = poolKey("store", sc); err != nil {
		return err
	}
	v, _, err := pool.LoadOrNew(a.storeKey, func() (caddy.Destructor, error) {
		return &storeResource{cfg: sc, logger: a.logger}, nil
	})
	if err != nil {
		return err
	}
	a.storeRes = v.(*storeResource)
	if err := a.provisionUsageAndWebhooks(repl); err != nil {
		return err
	}

	if a.verKey, err = poolKey("verifier", struct {
		S string
		C *CacheConfig
		P string
		K []string
		R bool
		F string
	}{a.storeKey, a.Cache, pepper, signing, a.KeySigning != nil && a.KeySigning.Require, a.failKey}); err != nil {
		return err
	}
	a.hasher = apikey.NewHasher([]byte(pepper))
	// A lookup gets the store's timeout, retries included: an uncached key is answered (503
	// if need be) within it, and a longer configured timeout is not cut short.
	cfg := verify.Config{
		Size:          a.Cache.Size,
		TTL:           time.Duration(a.Cache.TTL),
		NegativeTTL:   time.Duration(a.Cache.NegativeTTL),
		MaxStale:      time.Duration(a.Cache.MaxStale),
		LookupTimeout: sc.Redis.Timeout,
		Hasher:        a.hasher,
		Signer:        a.signer,
		RequireSigned: a.KeySigning != nil && a.KeySigning.Require,
		Logger:        a.logger,
		ObserveLookup: func(d time.Duration) { storeLatency.Observe(d.Seconds()) },
	}
	if a.failed != nil {
		cfg.Attempts = a.failed
	}
	v, _, err = pool.LoadOrNew(a.verKey, func() (caddy.Destructor, error) {
		return &verifierResource{cfg: cfg}, nil
	})
	if err != nil {
		return err
	}
	a.verRes = v.(*verifierResource)
	return nil
}

// Validate checks the config.
func (a *App) Validate() error {
	switch a.resolved.Type {
	case "file", "redis":
	default:
		return fmt.Errorf("store type must be file or redis, not %q", a.resolved.Type)
	}
	if a.resolved.Type == "redis" {
		if err := a.resolved.Redis.Check(); err != nil {
			return fmt.Errorf("redis store: %v", err)
		}
		if err := redisstore.CheckKeyPrefix(a.resolved.KeyPrefix); err != nil {
			return fmt.Errorf("redis store: %v", err)
		}
	}
	for _, in := range a.Instances {
		if !store.ValidInstanceID(in.ID) {
			return fmt.Errorf("instance id %q: must match [a-z0-9][a-z0-9_-]{0,62}", in.ID)
		}
		if _, err := apikey.ParseEnvironment(in.Environment); err != nil {
			return fmt.Errorf("instance %s: %v", in.ID, err)
		}
	}
	if a.Cache.Size < 0 || a.Cache.TTL < 0 || a.Cache.NegativeTTL < 0 || a.Cache.MaxStale < 0 {
		return errors.New("cache settings must not be negative")
	}
	return nil
}

// Start opens the store and the verifier (once per pooled resource), then creates the
// configured instances before returning when the store answers, so that an instance named
// by an `instance` line exists by the time Caddy serves (or /healthz says 200). While the
// store is unreachable the instances are created in the background, retrying.
//
// Caddy starts its apps in no fixed order, so the http app may already serve while this
// runs: nora_auth and nora_admin wait for started (see awaitStart) rather than refuse.
func (a *App) Start() error {
	s, err := a.storeRes.open()
	if err != nil {
		return err
	}
	v, err := a.verRes.open(s, a.storeRes.meterOf())
	if err != nil {
		return err
	}
	if err := a.startUsageAndWebhooks(s); err != nil {
		return err
	}
	currentVerifier.Store(v)
	currentFailed.Store(a.failed)
	close(a.started)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	// One attempt now, bounded by the store's timeout; the rest in the background.
	if pending := a.createInstances(ctx, s, a.Instances); len(pending) > 0 {
		go a.ensureInstances(ctx, s, pending)
	} else {
		close(a.instancesReady)
	}
	return nil
}

// startWait bounds how long a request waits for the app to start (it is normally a matter
// of microseconds: the apps start one after the other).
const startWait = 10 * time.Second

// awaitStart waits until Start has opened the store and the verifier, or ctx ends, or
// startWait passes; it reports whether the app has started.
func (a *App) awaitStart(ctx context.Context) bool {
	select {
	case <-a.started:
		return true
	default:
	}
	t := time.NewTimer(startWait)
	defer t.Stop()
	select {
	case <-a.started:
		return true
	case <-ctx.Done():
	case <-t.C:
	}
	return false
}

// InstancesReady reports whether every instance of the config exists in the store.
func (a *App) InstancesReady() bool {
	select {
	case <-a.instancesReady:
		return true
	default:
		return false
	}
}

// Stop stops the app's own goroutines; the shared resources stay for the next config.
func (a *App) Stop() error {
	if a.cancel != nil {
		a.cancel()
	}
	return nil
}

// Cleanup releases this config's hold on the shared resources.
func (a *App) Cleanup() error {
	var errs []error
	// The flusher and the deliverer go before the store they use.
	for _, k := range []string{a.usageKey, a.webhookKey, a.verKey, a.storeKey, a.failKey} {
		if k == "" {
			continue
		}
		if _, err := pool.Delete(k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// createInstances creates the instances that are missing and returns those it could not
// (the store failed). After a first failure it stops trying: the store is down, and the
// rest is left to ensureInstances.
func (a *App) createInstances(ctx context.Context, s store.Store, ins []InstanceConfig) (pending []InstanceConfig) {
	timeout := a.resolved.Redis.Timeout + 5*time.Second
	for i, in := range ins {
		env, _ := apikey.ParseEnvironment(in.Environment)
		c, cancel := context.WithTimeout(ctx, timeout)
		err := s.CreateInstance(c, store.Instance{ID: in.ID, Name: in.Name, Environment: env})
		cancel()
		switch {
		case err == nil:
			a.logger.Info("created instance", zap.String("instance", in.ID))
		case errors.Is(err, store.ErrInstanceExists):
		default:
			a.logger.Warn("creating instance; will retry", zap.String("instance", in.ID), zap.Error(err))
			return ins[i:]
		}
	}
	return nil
}

// ensureInstances retries createInstances with backoff until every instance exists, then
// marks the instances ready.
func (a *App) ensureInstances(ctx context.Context, s store.Store, pending []InstanceConfig) {
	for delay := 100 * time.Millisecond; ; {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if delay < 10*time.Second {
			delay *= 2
		}
		if pending = a.createInstances(ctx, s, pending); len(pending) == 0 {
			close(a.instancesReady)
			return
		}
	}
}

// provisionSigning resolves the signing secrets and returns them (for the pool key, which
// hashes them).
func (a *App) provisionSigning(repl *caddy.Replacer) ([]string, error) {
	if a.KeySigning == nil {
		return nil, nil
	}
	var secrets []string
	var raw [][]byte
	for _, s := range a.KeySigning.Secrets {
		v := repl.ReplaceKnown(s, "")
		if v == "" {
			// Usually the old secret's variable, unset once a rotation is over.
			a.logger.Warn("key_signing secret resolved empty and is ignored", zap.String("secret", s))
			continue
		}
		secrets = append(secrets, v)
		raw = append(raw, []byte(v))
	}
	if len(raw) == 0 {
		return nil, errors.New("key_signing: no secret is set (every secret resolved empty); set one, e.g. export NORA_KEY_SIGNING_SECRET=$(openssl rand -hex 32)")
	}
	signer, err := apikey.NewSigner(raw...)
	if err != nil {
		return nil, fmt.Errorf("key_signing: %v", err)
	}
	a.signer = signer
	return secrets, nil
}

// provisionFailedAttempts takes the process' failed-attempt limiter from the pool: a reload
// with the same settings keeps what each client has spent.
func (a *App) provisionFailedAttempts() error {
	fc := FailedAttemptsConfig{}
	if a.FailedAttempts != nil {
		fc = *a.FailedAttempts
	}
	if fc.Off {
		return nil
	}
	cfg := limit.Config{Limit: fc.Limit, Window: time.Duration(fc.Window), MaxClients: fc.MaxClients, IPv6Prefix: fc.IPv6Prefix}
	key, err := poolKey("failed_attempts", fc)
	if err != nil {
		return err
	}
	v, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) {
		f, err := limit.NewFailedAttempts(cfg)
		if err != nil {
			return nil, err
		}
		return failedResource{f}, nil
	})
	if err != nil {
		return fmt.Errorf("failed_attempts: %v", err)
	}
	a.failKey = key
	a.failed = v.(failedResource).f
	return nil
}

// failedResource is the pooled failed-attempt limiter; it holds no goroutine or connection.
type failedResource struct{ f *limit.FailedAttempts }

// Destruct implements caddy.Destructor.
func (failedResource) Destruct() error { return nil }

// Verifier returns the process' verifier; it is set once the app has started.
func (a *App) Verifier() *verify.Verifier { return a.verRes.get() }

// KeyStore returns the process' store; it is set once the app has started.
func (a *App) KeyStore() store.Store { return a.storeRes.get() }

// Fleet returns this process' gateway in the store's fleet (nil before the app has started).
func (a *App) Fleet() *fleet.Member {
	a.storeRes.mu.Lock()
	defer a.storeRes.mu.Unlock()
	return a.storeRes.member
}

// storeResource is a pooled store, opened on first Start and closed when the last config
// using it is cleaned up.
type storeResource struct {
	meter  *limit.Meter
	member *fleet.Member // this process' gateway in the store's fleet
	cfg    storeSettings
	logger *zap.Logger
	mu     sync.Mutex
	s      store.Store
	cur    atomic.Pointer[store.Store] // s, for lock-free reads
}

func (r *storeResource) open() (store.Store, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s != nil {
		return r.s, nil
	}
	s, err := openStore(r.cfg, r.logger)
	if err != nil {
		return nil, err
	}
	r.s = s
	if l, ok := s.(store.Leaser); ok {
		// The keys' rate limits and quotas, leased from this store's counters.
		r.meter = limit.NewMeter(l, limit.MeterConfig{Timeout: r.cfg.Redis.Timeout, Logger: r.logger})
	}
	if reg, ok := s.(fleet.Registry); ok {
		// This process joins the store's fleet: it heartbeats, and its invalidation listener
		// acknowledges what it has applied, until the store closes.
		var last time.Time
		m, err := fleet.Join(reg, fleet.Options{
			ObserveConfirm: func(d time.Duration) { revocationConfirm.Observe(d.Seconds()) },
			OnError: func(err error) {
				if time.Since(last) > 10*time.Second {
					last = time.Now()
					r.logger.Warn("fleet heartbeat failed", zap.Error(err))
				}
			},
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("joining the fleet: %v", err)
		}
		r.member = m
	}
	r.cur.Store(&s)
	return s, nil
}

// meterOf returns the store's meter (nil when the store keeps no limit counters).
func (r *storeResource) meterOf() *limit.Meter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meter
}

func (r *storeResource) get() store.Store {
	if p := r.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// Destruct implements caddy.Destructor: the meter gives back its unspent quota, then the
// store closes.
func (r *storeResource) Destruct() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil
	}
	if r.meter != nil {
		r.meter.Close()
		r.meter = nil
	}
	if r.member != nil {
		r.member.Close() // leaves the fleet at once, rather than after its timeout
		r.member = nil
	}
	err := r.s.Close()
	r.s = nil
	r.cur.Store(nil)
	return err
}

func openStore(c storeSettings, logger *zap.Logger) (store.Store, error) {
	if c.Type == "file" {
		return filestore.Open(c.Path, filestore.Options{})
	}
	setRedisLogger.Do(func() { redis.SetLogger(redisLogger{}) })
	var last time.Time
	s, err := redisstore.Dial(c.Redis, redisstore.Options{
		KeyPrefix:    c.KeyPrefix,
		WaitReplicas: c.WaitReplicas,
		ObserveLag:   func(d time.Duration) { invalidationLag.Observe(d.Seconds()) },
		OnError: func(err error) {
			// At most one warning a second while Redis is down.
			if time.Since(last) > time.Second {
				last = time.Now()
				logger.Warn("invalidation listener: redis unreachable; cache not trusted", zap.Error(err))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("configuring redis store: %v", err)
	}
	return s, nil
}

// verifierResource is a pooled verifier (the caches), created on first Start.
type verifierResource struct {
	cfg verify.Config
	mu  sync.Mutex
	v   atomic.Pointer[verify.Verifier]
}

func (r *verifierResource) open(s store.Store, meter *limit.Meter) (*verify.Verifier, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.v.Load(); v != nil {
		return v, nil
	}
	cfg := r.cfg
	cfg.Meter = meter
	v, err := verify.New(s, cfg)
	if err != nil {
		return nil, err
	}
	r.v.Store(v)
	return v, nil
}

func (r *verifierResource) get() *verify.Verifier { return r.v.Load() }

// Destruct implements caddy.Destructor.
func (r *verifierResource) Destruct() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.v.Swap(nil); v != nil {
		// A request of the old config may still be inside Verify: close later.
		v.Retire(time.Minute)
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
