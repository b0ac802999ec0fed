package caddymodule

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/webhook"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("nora", parseGlobalNora)
}

// parseGlobalNora sets up the `nora` app from the global options block:
//
//	nora {
//		store file <path>
//		store redis <url>
//		store redis {
//			addrs <host:port>...
//			master_name <name>
//			sentinel_password <password>
//			cluster
//			username <user>
//			password <password>
//			db <n>
//			tls
//			key_prefix <prefix>
//			wait_replicas <n>
//			timeout <duration>
//		}
//
// (db, wait_replicas and timeout take {env.*} too: a literal is checked here, a placeholder
// once resolved when the config loads.)
//
//		instance <id> sandbox|production <name>
//		pepper <secret>
//		failed_attempts off
//		failed_attempts {
//			limit <n>
//			window <duration>
//			max_clients <n>
//			ipv6_prefix <bits>
//		}
//		key_signing {
//			secret <secret>
//			require
//		}
//		webhook <url> {
//			secret <secret>
//			events <type>...
//		}
//		usage off
//		usage {
//			flush_interval <duration>
//		}
//		cache {
//			size <keys>
//			ttl <duration>
//			negative_ttl <duration>
//			max_stale <duration>
//		}
//	}
//
// Every string takes {env.*} placeholders.
func parseGlobalNora(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	if existing != nil {
		return nil, d.Err("the nora global option may appear only once")
	}
	return httpcaddyfile.App{Name: "nora", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile fills the app from its Caddyfile block (see parseGlobalNora).
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "store":
			if a.Store != nil {
				return d.Err("store given twice")
			}
			sc, err := parseStore(d)
			if err != nil {
				return err
			}
			a.Store = sc
		case "instance":
			var in InstanceConfig
			if !d.Args(&in.ID, &in.Environment, &in.Name) {
				return d.Errf("instance: expected <id> sandbox|production <name>")
			}
			if d.NextArg() {
				return d.Errf("instance: too many arguments (quote a name with spaces)")
			}
			for _, other := range a.Instances {
				if other.ID == in.ID {
					return d.Errf("instance %q given twice", in.ID)
				}
			}
			if in.Environment != "sandbox" && in.Environment != "production" {
				return d.Errf("instance %s: environment must be sandbox or production, not %q", in.ID, in.Environment)
			}
			a.Instances = append(a.Instances, in)
		case "pepper":
			if !d.AllArgs(&a.Pepper) {
				return d.ArgErr()
			}
		case "failed_attempts":
			if a.FailedAttempts != nil {
				return d.Err("failed_attempts given twice")
			}
			fc, err := parseFailedAttempts(d)
			if err != nil {
				return err
			}
			a.FailedAttempts = fc
		case "key_signing":
			if a.KeySigning != nil {
				return d.Err("key_signing given twice")
			}
			ks, err := parseKeySigning(d)
			if err != nil {
				return err
			}
			a.KeySigning = ks
		case "webhook":
			wc, err := parseWebhook(d)
			if err != nil {
				return err
			}
			for _, other := range a.Webhooks {
				if other.URL == wc.URL {
					return d.Errf("webhook %s given twice", wc.URL)
				}
			}
			a.Webhooks = append(a.Webhooks, *wc)
		case "usage":
			if a.Usage != nil {
				return d.Err("usage given twice")
			}
			uc, err := parseUsage(d)
			if err != nil {
				return err
			}
			a.Usage = uc
		case "cache":
			if d.NextArg() {
				return d.ArgErr()
			}
			if a.Cache == nil {
				a.Cache = new(CacheConfig)
			}
			for n := d.Nesting(); d.NextBlock(n); {
				opt := d.Val()
				var arg string
				if !d.AllArgs(&arg) {
					return d.ArgErr()
				}
				switch opt {
				case "size":
					size, err := strconv.ParseInt(arg, 10, 64)
					if err != nil || size < 1 {
						return d.Errf("cache size must be a positive number of keys, not %q", arg)
					}
					a.Cache.Size = size
				case "ttl", "negative_ttl", "max_stale":
					dur, err := caddy.ParseDuration(arg)
					if err != nil || dur <= 0 {
						return d.Errf("cache %s must be a positive duration, not %q", opt, arg)
					}
					switch opt {
					case "ttl":
						a.Cache.TTL = caddy.Duration(dur)
					case "negative_ttl":
						a.Cache.NegativeTTL = caddy.Duration(dur)
					default:
						a.Cache.MaxStale = caddy.Duration(dur)
					}
				default:
					return d.Errf("unrecognized cache option '%s'", opt)
				}
			}
		default:
			return d.Errf("unrecognized nora option '%s'", d.Val())
		}
	}
	return nil
}

func parseFailedAttempts(d *caddyfile.Dispenser) (*FailedAttemptsConfig, error) {
	fc := new(FailedAttemptsConfig)
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return nil, d.Errf("failed_attempts: expected off or a block, not %q", d.Val())
		}
		if d.NextBlock(d.Nesting()) {
			return nil, d.Err("failed_attempts off takes no block")
		}
		fc.Off = true
		return fc, nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		var arg string
		if !d.AllArgs(&arg) {
			return nil, d.ArgErr()
		}
		number := func(lo, hi int) (int, error) {
			n, err := strconv.Atoi(arg)
			if err != nil || n < lo || n > hi {
				return 0, d.Errf("failed_attempts %s must be a whole number from %d to %d, not %q", opt, lo, hi, arg)
			}
			return n, nil
		}
		var err error
		switch opt {
		case "limit":
			fc.Limit, err = number(1, 1_000_000)
		case "max_clients":
			fc.MaxClients, err = number(1, 10_000_000)
		case "ipv6_prefix":
			fc.IPv6Prefix, err = number(1, 128)
		case "window":
			dur, perr := caddy.ParseDuration(arg)
			if perr != nil || dur < time.Second || dur > 24*time.Hour {
				return nil, d.Errf("failed_attempts window must be a duration from 1s to 24h, not %q", arg)
			}
			fc.Window = caddy.Duration(dur)
		default:
			return nil, d.Errf("unrecognized failed_attempts option '%s'", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	return fc, nil
}

// parseWebhook reads `webhook <url> { secret <secret>; events <type>... }`. A literal URL,
// secret and event type are checked here (without echoing the secret), placeholders once
// resolved when the config loads.
func parseWebhook(d *caddyfile.Dispenser) (*WebhookConfig, error) {
	wc := new(WebhookConfig)
	if !d.NextArg() {
		return nil, d.Err("webhook: expected a URL, then a block with its secret")
	}
	wc.URL = d.Val()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	check := webhook.Webhook{URL: wc.URL, Secret: strings.Repeat("x", 16)}
	if !strings.Contains(wc.URL, "{") {
		if err := check.Check(); err != nil {
			return nil, d.Errf("webhook %s: %v", check.Redacted(), err)
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "secret":
			if wc.Secret != "" {
				return nil, d.Err("webhook: secret given twice")
			}
			if !d.AllArgs(&wc.Secret) {
				return nil, d.ArgErr()
			}
			if !strings.Contains(wc.Secret, "{") && len(wc.Secret) < 16 {
				return nil, d.Err("webhook secret is shorter than 16 characters (e.g. openssl rand -hex 32)")
			}
		case "events":
			types := d.RemainingArgs()
			if len(types) == 0 {
				return nil, d.Err("webhook events: expected one or more event types")
			}
			for _, t := range types {
				if !slices.Contains(webhook.EventTypes, t) {
					return nil, d.Errf("webhook events: unknown event type %q (known: %s)", t, strings.Join(webhook.EventTypes, " "))
				}
			}
			wc.Events = append(wc.Events, types...)
		default:
			return nil, d.Errf("unrecognized webhook option '%s'", d.Val())
		}
	}
	if wc.Secret == "" {
		return nil, d.Err("webhook: expected a secret line (e.g. secret {env.NORA_WEBHOOK_SECRET})")
	}
	return wc, nil
}

// parseUsage reads `usage off` or `usage { flush_interval <duration> }`.
func parseUsage(d *caddyfile.Dispenser) (*UsageConfig, error) {
	uc := new(UsageConfig)
	if d.NextArg() {
		if d.Val() != "off" || d.NextArg() {
			return nil, d.Errf("usage: expected off or a block, not %q", d.Val())
		}
		if d.NextBlock(d.Nesting()) {
			return nil, d.Err("usage off takes no block")
		}
		uc.Off = true
		return uc, nil
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "flush_interval":
			var arg string
			if !d.AllArgs(&arg) {
				return nil, d.ArgErr()
			}
			dur, err := caddy.ParseDuration(arg)
			if err != nil {
				return nil, d.Errf("usage flush_interval must be a duration, not %q", arg)
			}
			uc.FlushInterval = caddy.Duration(dur)
			if _, err := usageInterval(uc); err != nil {
				return nil, d.Err(err.Error())
			}
		default:
			return nil, d.Errf("unrecognized usage option '%s'", d.Val())
		}
	}
	return uc, nil
}

func parseKeySigning(d *caddyfile.Dispenser) (*KeySigningConfig, error) {
	ks := new(KeySigningConfig)
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "secret":
			var sec string
			if !d.AllArgs(&sec) {
				return nil, d.ArgErr()
			}
			// A literal secret is checked now (without being echoed); a placeholder when the
			// config loads.
			if !strings.Contains(sec, "{") && len(sec) < apikey.MinSecretLen {
				return nil, d.Errf("key_signing secret %d is shorter than %d bytes", len(ks.Secrets)+1, apikey.MinSecretLen)
			}
			ks.Secrets = append(ks.Secrets, sec)
		case "require":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			ks.Require = true
		default:
			return nil, d.Errf("unrecognized key_signing option '%s'", d.Val())
		}
	}
	if len(ks.Secrets) == 0 {
		return nil, d.Err("key_signing: expected at least one secret line")
	}
	return ks, nil
}

func parseStore(d *caddyfile.Dispenser) (*StoreConfig, error) {
	sc := new(StoreConfig)
	if !d.NextArg() {
		return nil, d.Err("store: expected file <path> or redis <url> or a redis block")
	}
	sc.Type = d.Val()
	switch sc.Type {
	case "file":
		if !d.AllArgs(&sc.Path) {
			return nil, d.Err("store file: expected one path")
		}
		return sc, nil
	case "redis":
	default:
		return nil, d.Errf("store: unknown type %q (file or redis)", sc.Type)
	}
	if d.NextArg() {
		sc.URL = d.Val()
		if d.NextArg() {
			return nil, d.ArgErr()
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		one := func(dst *string) error {
			if !d.AllArgs(dst) {
				return d.ArgErr()
			}
			return nil
		}
		var err error
		switch opt {
		case "addrs":
			sc.Addrs = append(sc.Addrs, d.RemainingArgs()...)
			if len(sc.Addrs) == 0 {
				return nil, d.ArgErr()
			}
		case "master_name":
			err = one(&sc.MasterName)
		case "sentinel_password":
			err = one(&sc.SentinelPassword)
		case "username":
			err = one(&sc.Username)
		case "password":
			err = one(&sc.Password)
		case "db", "wait_replicas", "timeout":
			var v string
			if err = one(&v); err != nil {
				break
			}
			// A placeholder is checked once resolved, when the config loads; a literal now.
			check := StoreConfig{}
			switch opt {
			case "db":
				sc.DB, check.DB = EnvValue(v), EnvValue(v)
			case "wait_replicas":
				sc.WaitReplicas, check.WaitReplicas = EnvValue(v), EnvValue(v)
			default:
				sc.Timeout, check.Timeout = EnvValue(v), EnvValue(v)
			}
			if !strings.Contains(v, "{") {
				if _, rerr := check.resolve(caddy.NewReplacer()); rerr != nil {
					return nil, d.Errf("store redis: %v", rerr)
				}
			}
		case "key_prefix":
			err = one(&sc.KeyPrefix)
		case "cluster", "tls":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			if opt == "cluster" {
				sc.Cluster = true
			} else {
				sc.TLS = true
			}
		default:
			return nil, d.Errf("unrecognized redis store option '%s'", opt)
		}
		if err != nil {
			return nil, err
		}
	}
	if sc.URL != "" && len(sc.Addrs) > 0 {
		return nil, d.Err("store redis: give either a URL or addrs, not both")
	}
	if sc.URL == "" && len(sc.Addrs) == 0 {
		return nil, d.Err("store redis: expected a URL or a block with addrs")
	}
	return sc, nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*App)(nil)
