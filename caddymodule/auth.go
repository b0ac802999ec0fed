package caddymodule

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/wire"
	"github.com/keygate/keygate/limit"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/verify"
)

func init() {
	caddy.RegisterModule(Auth{})
}

// Auth is the `nora_auth` handler: it lets a request through only with a valid API key, and
// answers every other request itself with a JSON error (docs/design.md, "Error codes"). On
// success the request
// goes on with Nora-Key-Id, Nora-Instance and Nora-Environment set (client copies removed)
// and the placeholders {http.auth.user.id}, {http.auth.user.instance} and
// {http.auth.user.environment}.
type Auth struct {
	// Environment restricts the route to "production" (sk_live_ keys) or "sandbox"
	// (sk_test_ keys); "any" or empty accepts both.
	Environment string `json:"environment,omitempty"`
	// KeepAuthorization passes the Authorization header upstream; by default it is removed.
	KeepAuthorization bool `json:"keep_authorization,omitempty"`
	// RequireScope lists the scopes a key must have for this route (a key restricted to
	// scopes lacking one is refused with 403 api_key_insufficient_scope; an unrestricted key
	// has them all).
	RequireScope []string `json:"require_scope,omitempty"`
	// RateLimit is the default rate limit of keys that have none of their own.
	RateLimit *RateLimitConfig `json:"rate_limit,omitempty"`

	scopeRefusals [][]byte // per required scope, the 403 body naming it
	rateLimit     *store.RateLimit
	want          apikey.Environment
	app           *App
	logger        *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.nora_auth", New: func() caddy.Module { return new(Auth) }}
}

// Provision links the handler to the process' nora app.
func (a *Auth) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	switch a.Environment {
	case "", "any":
		a.want = apikey.EnvUnknown
	default:
		env, err := apikey.ParseEnvironment(a.Environment)
		if err != nil {
			return fmt.Errorf("nora_auth environment: %v (or any)", err)
		}
		a.want = env
	}
	for _, sc := range a.RequireScope {
		if !store.ValidRouteScope(sc) {
			return fmt.Errorf("nora_auth require_scope %q: a scope is [a-z0-9][a-z0-9_.:-]{0,63} (no * on a route)", sc)
		}
		c := verify.InsufficientScope
		a.scopeRefusals = append(a.scopeRefusals, wire.ErrorBody(c.Type(), c.String(), verify.ScopeMessage(sc)))
	}
	if a.RateLimit != nil {
		rl := &store.RateLimit{Limit: a.RateLimit.Limit, Window: time.Duration(a.RateLimit.Window)}
		if err := store.CheckRateLimit(rl); err != nil {
			return fmt.Errorf("nora_auth rate_limit: %v", err)
		}
		a.rateLimit = rl
	}
	app, err := ctx.App("nora")
	if err != nil {
		return fmt.Errorf("loading nora app: %v", err)
	}
	a.app = app.(*App)
	return nil
}

// RateLimitConfig is a rate limit: at most Limit requests per Window (whole seconds, 1s to
// 24h).
type RateLimitConfig struct {
	Limit  int64          `json:"limit"`
	Window caddy.Duration `json:"window"`
}

// The upstream headers nora_auth sets.
const (
	HeaderKeyID       = "Nora-Key-Id"
	HeaderInstance    = "Nora-Instance"
	HeaderEnvironment = "Nora-Environment"
)

// ServeHTTP implements caddyhttp.MiddlewareHandler.
func (a *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	// Client copies of our headers never reach the upstream, whatever the outcome.
	// (The names are canonical: deleted as they are, with no canonicalising.)
	delete(r.Header, HeaderKeyID)
	delete(r.Header, HeaderInstance)
	delete(r.Header, HeaderEnvironment)

	// The failed-attempt limit comes first: a limited client costs no parsing and no lookup.
	client := clientAddr(r)
	if lim := a.app.failed; lim != nil {
		if wait, blocked := lim.Blocked(client); blocked {
			verifications[verify.TooManyFailedAttempts].Inc()
			return writeRefusalRetry(w, verify.TooManyFailedAttempts, wait)
		}
	}
	key, problem := wire.BearerOrBasic(r.Header.Values("Authorization"), apikey.Len)
	switch problem {
	case wire.Missing:
		return a.refuse(w, verify.Missing)
	case wire.Invalid:
		if a.app.failed != nil {
			a.app.failed.Fail(client)
		}
		return a.refuse(w, verify.InvalidKey)
	}
	v := a.app.Verifier()
	if v == nil && a.app.awaitStart(r.Context()) {
		// Caddy started the http app before the nora app: wait for it rather than refuse.
		v = a.app.Verifier()
	}
	if v == nil {
		return a.refuse(w, verify.Unavailable)
	}
	// verify counts the client's failed attempts, and admits its store lookups.
	res := v.Check(verify.Request{Key: key, Want: a.want, Client: client, Scopes: a.RequireScope, RateLimit: a.rateLimit})
	if res.KeyID != "" {
		// Counted for the key: let through, or refused once the key was known.
		if c := a.app.usageCounter(); c != nil {
			refused := ""
			if res.Code != verify.OK {
				refused = res.Code.String()
			}
			c.Add(res.Instance, res.KeyID, refused)
		}
	}
	if res.Limited && res.Limits.Limit > 0 {
		setRateLimitHeaders(w.Header(), &res.Limits)
	}
	switch res.Code {
	case verify.OK:
	case verify.RateLimitExceeded, verify.QuotaExceeded:
		verifications[res.Code].Inc()
		return writeRefusalRetry(w, res.Code, res.Limits.RetryAfter)
	case verify.TooManyFailedAttempts:
		verifications[res.Code].Inc()
		return writeRefusalRetry(w, res.Code, res.RetryAfter)
	case verify.InsufficientScope:
		verifications[res.Code].Inc()
		return wire.WriteError(w, res.Code.Status(), a.scopeRefusals[res.MissingScope])
	default:
		return a.refuse(w, res.Code)
	}
	verifications[verify.OK].Inc()
	// One allocation holds the upstream headers' values and the placeholders' answers.
	u := &userVars{id: res.KeyID, instance: res.Instance, env: res.Environment.String(),
		scopes: res.Scopes, meta: res.Metadata}
	u.hdr = [3]string{u.id, u.instance, u.env}
	r.Header[HeaderKeyID] = u.hdr[0:1:1]
	r.Header[HeaderInstance] = u.hdr[1:2:2]
	r.Header[HeaderEnvironment] = u.hdr[2:3:3]
	if !a.KeepAuthorization {
		delete(r.Header, "Authorization")
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Map(u.get)
	return next.ServeHTTP(w, r)
}

// refuse counts and answers a refusal.
func (a *Auth) refuse(w http.ResponseWriter, c verify.Code) error {
	verifications[c].Inc()
	if ce := a.logger.Check(zap.DebugLevel, "api key refused"); ce != nil {
		ce.Write(zap.Stringer("code", c))
	}
	return writeRefusal(w, c)
}

// userVars answers the {http.auth.user.*} placeholders of a request let through: id,
// instance, environment, scopes (comma-separated, "" for an unrestricted key) and
// metadata.NAME ("" for a name the key does not have). Values set on the replacer by
// another handler come first.
type userVars struct {
	id, instance, env, scopes string
	meta                      []verify.Meta
	hdr                       [3]string // the upstream headers' values
}

const userPlaceholder = "http.auth.user."

func (u *userVars) get(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, userPlaceholder)
	if !ok {
		return nil, false
	}
	switch name {
	case "id":
		return u.id, true
	case "instance":
		return u.instance, true
	case "environment":
		return u.env, true
	case "scopes":
		return u.scopes, true
	}
	if !strings.HasPrefix(key, verify.MetadataPlaceholder) {
		return nil, false
	}
	for _, m := range u.meta {
		if m.Placeholder == key {
			return m.Value, true
		}
	}
	return "", true
}

// setRateLimitHeaders writes RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (whole
// seconds until the window ends), in two allocations.
func setRateLimitHeaders(h http.Header, d *limit.Decision) {
	reset := int64(time.Until(d.Reset)+time.Second-1) / int64(time.Second)
	var buf [3 * 20]byte
	b := strconv.AppendInt(buf[:0], d.Limit, 10)
	n1 := len(b)
	b = strconv.AppendInt(b, d.Remaining, 10)
	n2 := len(b)
	b = strconv.AppendInt(b, max(reset, 0), 10)
	s := string(b)
	v := []string{s[:n1], s[n1:n2], s[n2:]}
	h["Ratelimit-Limit"] = v[0:1:1]
	h["Ratelimit-Remaining"] = v[1:2:2]
	h["Ratelimit-Reset"] = v[2:3:3]
}

// clientAddr is the request's client address as Caddy determined it (trusted_proxies
// honoured); the zero Addr when it has none (a Unix socket), which no limit tracks.
func clientAddr(r *http.Request) netip.Addr {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	a, _ := netip.ParseAddr(ip)
	return a
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
)
