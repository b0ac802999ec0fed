package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
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
