package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/store"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("nora_auth", parseAuth)
	// Early, with the other authentication handlers: no `order` or `route` needed.
	httpcaddyfile.RegisterDirectiveOrder("nora_auth", httpcaddyfile.After, "basic_auth")
}

func parseAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(Auth)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile sets up the handler:
//
//	nora_auth {
//		environment any|production|sandbox
//		keep_authorization
//		require_scope <scope>...
//		rate_limit <requests> <window>
//	}
//
// require_scope may be given several times; the key must have every scope listed.
func (a *Auth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "environment":
			if !d.AllArgs(&a.Environment) {
				return d.ArgErr()
			}
			switch a.Environment {
			case "any", "production", "sandbox":
			default:
				return d.Errf("environment must be any, production or sandbox, not %q", a.Environment)
			}
		case "require_scope":
			scopes := d.RemainingArgs()
			if len(scopes) == 0 {
				return d.ArgErr()
			}
			for _, sc := range scopes {
				if !store.ValidRouteScope(sc) {
					return d.Errf("require_scope %q: a scope is [a-z0-9][a-z0-9_.:-]{0,63} (no * on a route)", sc)
				}
				a.RequireScope = append(a.RequireScope, sc)
			}
		case "rate_limit":
			var n, win string
			if !d.AllArgs(&n, &win) {
				return d.Errf("rate_limit: expected <requests> <window>, e.g. rate_limit 100 1s")
			}
			limit, err := strconv.ParseInt(n, 10, 64)
			dur, derr := caddy.ParseDuration(win)
			rl := &store.RateLimit{Limit: limit, Window: dur}
			if err != nil || derr != nil {
				return d.Errf("rate_limit %s %s: expected a whole number of requests and a duration", n, win)
			}
			if cerr := store.CheckRateLimit(rl); cerr != nil {
				return d.Errf("rate_limit %s %s: %v", n, win, cerr)
			}
			a.RateLimit = &RateLimitConfig{Limit: limit, Window: caddy.Duration(dur)}
		case "keep_authorization":
			if d.NextArg() {
				return d.ArgErr()
			}
			a.KeepAuthorization = true
		default:
			return d.Errf("unrecognized nora_auth option '%s'", d.Val())
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Auth)(nil)
