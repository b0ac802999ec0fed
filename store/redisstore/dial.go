package redisstore

import (
	"crypto/tls"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config says how to reach Redis: a URL of a standalone server, or addresses of a
// standalone server, of Sentinels (with MasterName) or of Cluster nodes (several addresses
// without MasterName, or Cluster set).
type Config struct {
	// URL is a redis:// or rediss:// URL; it excludes Addrs, MasterName and Cluster.
	URL string
	// Addrs are host:port addresses.
	Addrs []string
	// MasterName is the Sentinel master's name.
	MasterName string
	// Cluster forces Cluster mode, even with one address.
	Cluster bool
	// Username and Password authenticate to Redis; SentinelPassword to the Sentinels.
	Username, Password, SentinelPassword string
	// DB is the database (standalone and Sentinel; Cluster has only 0).
	DB int
	// TLS connects with TLS 1.2 or later.
	TLS bool
	// Timeout bounds dialing and each command (default 1 s).
	Timeout time.Duration
}

// Check reports what makes c unusable, without connecting.
func (c Config) Check() error {
	_, err := c.client()
	return err
}

// Client builds a go-redis client for c (it connects lazily, on first use).
func (c Config) Client() (redis.UniversalClient, error) {
	mk, err := c.client()
	if err != nil {
		return nil, err
	}
	return mk(), nil
}

// Dial returns a Store on a new client for c; closing the Store closes the client.
func Dial(c Config, opts Options) (*Store, error) {
	if err := CheckKeyPrefix(opts.KeyPrefix); err != nil {
		return nil, err
	}
	rdb, err := c.Client()
	if err != nil {
		return nil, err
	}
	return New(rdb, opts), nil
}

// client checks c and returns how to make its client (making one is cheap but it must be
// closed, so Check only checks).
func (c Config) client() (func() redis.UniversalClient, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	if c.DB < 0 {
		return nil, errors.New("db must not be negative")
	}
	if c.URL != "" {
		if len(c.Addrs) > 0 || c.MasterName != "" || c.Cluster {
			return nil, errors.New("give either a URL or addrs, not both")
		}
		opt, err := redis.ParseURL(c.URL)
		if err != nil {
			// The URL may hold a password: never echo it.
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
	var tlsCfg *tls.Config
	if c.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	opt := &redis.UniversalOptions{
		Addrs: c.Addrs, MasterName: c.MasterName, Username: c.Username, Password: c.Password,
		SentinelPassword: c.SentinelPassword, DB: c.DB, TLSConfig: tlsCfg,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		MaxRetries: 1, DialerRetries: 1, ContextTimeoutEnabled: true,
	}
	if c.Cluster || (c.MasterName == "" && len(c.Addrs) > 1) {
		if c.DB != 0 {
			return nil, errors.New("redis cluster has no databases: remove db")
		}
		return func() redis.UniversalClient { return redis.NewClusterClient(opt.Cluster()) }, nil
	}
	if c.MasterName != "" {
		return func() redis.UniversalClient { return redis.NewFailoverClient(opt.Failover()) }, nil
	}
	return func() redis.UniversalClient { return redis.NewClient(opt.Simple()) }, nil
}
