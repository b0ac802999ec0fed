// Package caddymodule is keygate's Caddy glue: the `nora` app (store, caches, invalidation
// listener, shared by every handler and kept across config reloads), the `nora_auth`
// handler and their Caddyfile syntax. The decisions themselves live in package verify.
package caddymodule

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
	"github.com/keygate/keygate/verify"
)

func init() {
	caddy.RegisterModule(App{})
	redis.SetLogger(redisLogger{})
}

// redisLogger sends go-redis' own log lines (dial failures, pool events) through Caddy's
// logger instead of the standard library's. They carry addresses, never credentials.
type redisLogger struct{}

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

	resolved StoreConfig // Store with placeholders and defaults applied
	storeRes *storeResource
	verRes   *verifierResource
	hasher   apikey.Hasher
	storeKey string
	verKey   string
	logger   *zap.Logger
	cancel   context.CancelFunc
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
	// DB is the database number (standalone and Sentinel), a string so it takes {env.*}.
	DB string `json:"db,omitempty"`
	// TLS connects with TLS.
	TLS bool `json:"tls,omitempty"`
	// KeyPrefix starts every Redis key and the invalidation stream (default "nora:").
	KeyPrefix string `json:"key_prefix,omitempty"`
	// WaitReplicas makes create, roll and revoke wait for this many replica acknowledgements.
	WaitReplicas int `json:"wait_replicas,omitempty"`
	// Timeout bounds dialing and each Redis command (default 1s).
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// InstanceConfig is an instance to create at start.
type InstanceConfig struct {
	ID          string `json:"id"`
	Environment string `json:"environment"`
	Name        string `json:"name"`
}

// CacheConfig tunes the caches (SPEC §3).
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
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	repl := caddy.NewReplacer()
	if a.Store == nil {
		a.Store = &StoreConfig{}
	}
	sc := *a.Store
	for _, p := range []*string{&sc.Type, &sc.Path, &sc.URL, &sc.MasterName, &sc.Username,
		&sc.Password, &sc.SentinelPassword, &sc.DB, &sc.KeyPrefix} {
		*p = repl.ReplaceKnown(*p, "")
	}
	sc.Addrs = append([]string(nil), sc.Addrs...)
	for i := range sc.Addrs {
		sc.Addrs[i] = repl.ReplaceKnown(sc.Addrs[i], "")
	}
	if sc.Type == "" {
		sc.Type = "file"
	}
	if sc.Type == "file" && sc.Path == "" {
		sc.Path = filepath.Join(caddy.AppDataDir(), "keygate", "keys.db")
	}
	if sc.Timeout == 0 {
		sc.Timeout = caddy.Duration(time.Second)
	}
	if a.Cache == nil {
		a.Cache = &CacheConfig{}
	}
	pepper := repl.ReplaceKnown(a.Pepper, "")
	a.resolved = sc

	sk, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	a.storeKey = "store:" + string(sk)
	v, _, err := pool.LoadOrNew(a.storeKey, func() (caddy.Destructor, error) {
		return &storeResource{cfg: sc, logger: a.logger}, nil
	})
	if err != nil {
		return err
	}
	a.storeRes = v.(*storeResource)

	ck, err := json.Marshal(struct {
		C *CacheConfig
		P string
	}{a.Cache, pepper})
	if err != nil {
		return err
	}
	a.verKey = "verifier:" + a.storeKey + string(ck)
	a.hasher = apikey.NewHasher([]byte(pepper))
	// A lookup gets the store's timeout, retries included: an uncached key is answered (503
	// if need be) within it, and a longer configured timeout is not cut short.
	cfg := verify.Config{
		Size:          a.Cache.Size,
		TTL:           time.Duration(a.Cache.TTL),
		NegativeTTL:   time.Duration(a.Cache.NegativeTTL),
		MaxStale:      time.Duration(a.Cache.MaxStale),
		LookupTimeout: time.Duration(sc.Timeout),
		Hasher:        a.hasher,
		Logger:        a.logger,
		ObserveLookup: func(d time.Duration) { storeLatency.Observe(d.Seconds()) },
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
		if _, err := redisClientFunc(a.resolved); err != nil {
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

// Start opens the store and the verifier (once per pooled resource) and creates the
// configured instances, retrying in the background while the store is unreachable.
func (a *App) Start() error {
	s, err := a.storeRes.open()
	if err != nil {
		return err
	}
	v, err := a.verRes.open(s)
	if err != nil {
		return err
	}
	currentVerifier.Store(v)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go a.ensureInstances(ctx, s)
	return nil
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
	if a.verKey != "" {
		if _, err := pool.Delete(a.verKey); err != nil {
			errs = append(errs, err)
		}
	}
	if a.storeKey != "" {
		if _, err := pool.Delete(a.storeKey); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *App) ensureInstances(ctx context.Context, s store.Store) {
	pending := a.Instances
	for delay := 100 * time.Millisecond; len(pending) > 0; {
		var failed []InstanceConfig
		for _, in := range pending {
			env, _ := apikey.ParseEnvironment(in.Environment)
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.CreateInstance(c, store.Instance{ID: in.ID, Name: in.Name, Environment: env})
			cancel()
			switch {
			case err == nil:
				a.logger.Info("created instance", zap.String("instance", in.ID))
			case errors.Is(err, store.ErrInstanceExists):
			default:
				failed = append(failed, in)
				a.logger.Warn("creating instance; will retry", zap.String("instance", in.ID), zap.Error(err))
			}
		}
		pending = failed
		if len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if delay < 10*time.Second {
			delay *= 2
		}
	}
}

// Verifier returns the process' verifier; it is set once the app has started.
func (a *App) Verifier() *verify.Verifier { return a.verRes.get() }

// KeyStore returns the process' store; it is set once the app has started.
func (a *App) KeyStore() store.Store { return a.storeRes.get() }

// storeResource is a pooled store, opened on first Start and closed when the last config
// using it is cleaned up.
type storeResource struct {
	cfg    StoreConfig
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
	r.cur.Store(&s)
	return s, nil
}

func (r *storeResource) get() store.Store {
	if p := r.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// Destruct implements caddy.Destructor.
func (r *storeResource) Destruct() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.s == nil {
		return nil
	}
	err := r.s.Close()
	r.s = nil
	r.cur.Store(nil)
	return err
}

func openStore(c StoreConfig, logger *zap.Logger) (store.Store, error) {
	if c.Type == "file" {
		return filestore.Open(c.Path, filestore.Options{})
	}
	newClient, err := redisClientFunc(c)
	if err != nil {
		return nil, fmt.Errorf("configuring redis store: %v", err)
	}
	rdb := newClient()
	var last time.Time
	return redisstore.New(rdb, redisstore.Options{
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
	}), nil
}

// redisClientFunc checks a Redis store config and returns how to make its client (making
// one is cheap but must be closed, so Validate only checks).
func redisClientFunc(c StoreConfig) (func() redis.UniversalClient, error) {
	timeout := time.Duration(c.Timeout)
	if err := redisstore.CheckKeyPrefix(c.KeyPrefix); err != nil {
		return nil, err
	}
	if c.URL != "" {
		if len(c.Addrs) > 0 || c.MasterName != "" || c.Cluster {
			return nil, errors.New("give either a URL or addrs, not both")
		}
		opt, err := redis.ParseURL(c.URL)
		if err != nil {
			return nil, errors.New("invalid redis URL (expected redis://[user:password@]host:port/db)")
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = timeout, timeout, timeout
		// Fail fast: a gateway answers 503 rather than hang while Redis is down.
		opt.MaxRetries, opt.DialerRetries = 1, 1
		// Context deadlines reach the socket: the invalidation listener bounds its blocking
		// reads this way (go-redis alone would wait block + 10 s on a frozen Redis).
		opt.ContextTimeoutEnabled = true
		return func() redis.UniversalClient { return redis.NewClient(opt) }, nil
	}
	if len(c.Addrs) == 0 {
		return nil, errors.New("redis store needs a URL or addrs")
	}
	db := 0
	if c.DB != "" {
		n, err := strconv.Atoi(c.DB)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("db must be a non-negative number, not %q", c.DB)
		}
		db = n
	}
	var tlsCfg *tls.Config
	if c.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	opt := &redis.UniversalOptions{
		Addrs: c.Addrs, MasterName: c.MasterName, Username: c.Username, Password: c.Password,
		SentinelPassword: c.SentinelPassword, DB: db, TLSConfig: tlsCfg,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		MaxRetries: 1, DialerRetries: 1, ContextTimeoutEnabled: true,
	}
	if c.Cluster || (c.MasterName == "" && len(c.Addrs) > 1) {
		if db != 0 {
			return nil, errors.New("redis cluster has no databases: remove db")
		}
		return func() redis.UniversalClient { return redis.NewClusterClient(opt.Cluster()) }, nil
	}
	if c.MasterName != "" {
		return func() redis.UniversalClient { return redis.NewFailoverClient(opt.Failover()) }, nil
	}
	return func() redis.UniversalClient { return redis.NewClient(opt.Simple()) }, nil
}

// verifierResource is a pooled verifier (the caches), created on first Start.
type verifierResource struct {
	cfg verify.Config
	mu  sync.Mutex
	v   atomic.Pointer[verify.Verifier]
}

func (r *verifierResource) open(s store.Store) (*verify.Verifier, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.v.Load(); v != nil {
		return v, nil
	}
	v, err := verify.New(s, r.cfg)
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
