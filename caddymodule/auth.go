package caddymodule

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/verify"
)

func init() {
	caddy.RegisterModule(Auth{})
}

// Auth is the `nora_auth` handler: it lets a request through only with a valid API key, and
// answers every other request itself with a JSON error (SPEC §2). On success the request
// goes on with Nora-Key-Id, Nora-Instance and Nora-Environment set (client copies removed)
// and the placeholders {http.auth.user.id}, {http.auth.user.instance} and
// {http.auth.user.environment}.
type Auth struct {
	// Environment restricts the route to "production" (sk_live_ keys) or "sandbox"
	// (sk_test_ keys); "any" or empty accepts both.
	Environment string `json:"environment,omitempty"`
	// KeepAuthorization passes the Authorization header upstream; by default it is removed.
	KeepAuthorization bool `json:"keep_authorization,omitempty"`

	want   apikey.Environment
	app    *App
	logger *zap.Logger
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
	app, err := ctx.App("nora")
	if err != nil {
		return fmt.Errorf("loading nora app: %v", err)
	}
	a.app = app.(*App)
	return nil
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
	r.Header.Del(HeaderKeyID)
	r.Header.Del(HeaderInstance)
	r.Header.Del(HeaderEnvironment)

	key, problem := credential(r.Header.Values("Authorization"))
	if problem != credOK {
		code := codeMissing
		if problem == credInvalid {
			code = codeInvalid
		}
		verifications[code].Inc()
		return writeError(w, code)
	}
	v := a.app.Verifier()
	if v == nil { // the app has not started: cannot happen once Caddy serves
		verifications[codeUnavailable].Inc()
		return writeError(w, codeUnavailable)
	}
	res := v.Verify(key, a.want)
	if res.Code != verify.OK {
		code := gatewayCode(res.Code)
		verifications[code].Inc()
		if c := a.logger.Check(zap.DebugLevel, "api key refused"); c != nil {
			c.Write(zap.String("code", errorBodies[code].code))
		}
		return writeError(w, code)
	}
	verifications[codeOK].Inc()
	env := res.Environment.String()
	r.Header[HeaderKeyID] = []string{res.KeyID}
	r.Header[HeaderInstance] = []string{res.Instance}
	r.Header[HeaderEnvironment] = []string{env}
	if !a.KeepAuthorization {
		r.Header.Del("Authorization")
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.auth.user.id", res.KeyID)
	repl.Set("http.auth.user.instance", res.Instance)
	repl.Set("http.auth.user.environment", env)
	return next.ServeHTTP(w, r)
}

type credProblem uint8

const (
	credOK credProblem = iota
	credMissing
	credInvalid
)

// credential extracts the key from the Authorization header values: "Bearer <key>" (scheme
// case-insensitive) or "Basic base64(<key>:)" as `curl -u sk_test_…:` sends. No header or an
// empty credential is missing; anything else unusable is invalid. It checks the shape only:
// the key's format is apikey.Parse's job.
func credential(values []string) (string, credProblem) {
	switch len(values) {
	case 0:
		return "", credMissing
	case 1:
	default:
		return "", credInvalid
	}
	h := strings.TrimSpace(values[0])
	if h == "" {
		return "", credMissing
	}
	scheme, rest, _ := strings.Cut(h, " ")
	rest = strings.TrimLeft(rest, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if rest == "" {
			return "", credMissing
		}
		if strings.ContainsAny(rest, " \t") {
			return "", credInvalid
		}
		return rest, credOK
	case strings.EqualFold(scheme, "Basic"):
		if rest == "" {
			return "", credMissing
		}
		// A key:  46 characters and a colon, 64 base64 characters at most.
		if len(rest) > 64 || strings.ContainsAny(rest, " \t") {
			return "", credInvalid
		}
		var buf [48]byte
		n, err := base64.StdEncoding.Decode(buf[:], []byte(rest))
		if err != nil {
			return "", credInvalid
		}
		user, pass, ok := strings.Cut(string(buf[:n]), ":")
		if !ok || pass != "" {
			return "", credInvalid
		}
		if user == "" {
			return "", credMissing
		}
		return user, credOK
	}
	return "", credInvalid
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
)
