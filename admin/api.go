// Package admin is keygate's admin endpoint without Caddy: the admin JSON API over a
// store.Store, guarded by admin tokens, and a client for it (used by the `keys` CLI).
package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/internal/wire"
	"github.com/keygate/keygate/store"
)

// MaxBody is the largest request body accepted.
const MaxBody = 64 << 10

// MaxGrace is the longest a rolled key keeps working (seven days).
const MaxGrace = 7 * 24 * 60 * 60

// API serves the admin JSON API. Its zero value is not usable: set Store and Tokens.
type API struct {
	Store  store.Store
	Tokens []Token
	Hasher apikey.Hasher
	// Signer, when set, signs the keys the API mints.
	Signer *apikey.Signer
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *zap.Logger
	// Ready, when set, says whether start-up is complete (the configured instances exist):
	// until it does, /healthz answers 503.
	Ready func() bool
	// Fleet, when set, is the gateway this API runs in: GET /v1/gateways lists its fleet,
	// and a revoke, a roll with no grace and every update wait (at most a second) for the
	// fleet to apply them, and say so in "propagation".
	Fleet *fleet.Member

	mux *http.ServeMux
}

// NewAPI returns an API ready to serve.
func NewAPI(s store.Store, tokens []Token, hasher apikey.Hasher, logger *zap.Logger) (*API, error) {
	if len(tokens) == 0 {
		return nil, errors.New("no admin token configured")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	a := &API{Store: s, Tokens: tokens, Hasher: hasher, Now: time.Now, Logger: logger}
	m := http.NewServeMux()
	for _, rt := range routes {
		if rt.public != nil {
			m.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) { rt.public(a, w, r) })
			continue
		}
		m.HandleFunc(rt.pattern, a.auth(func(w http.ResponseWriter, r *http.Request, t *Token) error {
			return rt.call(a, w, r, t)
		}, rt.perms...))
	}
	// Everything else under these paths is a 404 or a 405 in the API's error shape.
	m.HandleFunc("/v1/", a.noRoute)
	m.HandleFunc(OpenAPIPath, a.noRoute)
	a.mux = m
	return a, nil
}

// route is one call of the API. NewAPI serves exactly these and Routes lists them, so the
// test that holds the OpenAPI description to the API sees every call the mux serves.
type route struct {
	pattern string // "METHOD /path", a ServeMux pattern and the description's path
	// public answers without a token; call needs a valid one that holds perms.
	public func(a *API, w http.ResponseWriter, r *http.Request)
	call   func(a *API, w http.ResponseWriter, r *http.Request, t *Token) error
	perms  []Permission
}

func public(pattern string, h func(*API, http.ResponseWriter, *http.Request)) route {
	return route{pattern: pattern, public: h}
}

func guarded(pattern string, h func(*API, http.ResponseWriter, *http.Request, *Token) error, perms ...Permission) route {
	return route{pattern: pattern, call: h, perms: perms}
}

var routes = []route{
	public("GET /healthz", (*API).healthz),
	public("GET "+OpenAPIPath, (*API).openAPI),
	guarded("GET /v1/me", (*API).me),
	guarded("GET /v1/gateways", (*API).listGateways),
	guarded("GET /v1/instances", (*API).listInstances),
	guarded("POST /v1/instances", (*API).createInstance, PermInstance),
	guarded("GET /v1/instances/{instance}/keys", (*API).listKeys, PermRead),
	guarded("POST /v1/instances/{instance}/keys", (*API).createKey, PermCreate),
	guarded("GET /v1/instances/{instance}/keys/{id}", (*API).getKey, PermRead),
	guarded("PATCH /v1/instances/{instance}/keys/{id}", (*API).updateKey, PermCreate),
	guarded("DELETE /v1/instances/{instance}/keys/{id}", (*API).revokeKey, PermDelete),
	guarded("POST /v1/instances/{instance}/keys/{id}/roll", (*API).rollKey, PermCreate, PermDelete),
	guarded("GET /v1/instances/{instance}/keys/{id}/usage", (*API).usage, PermRead),
	guarded("GET /v1/instances/{instance}/usage", (*API).usage, PermRead),
	guarded("GET /v1/instances/{instance}/events", (*API).listEvents, PermRead),
}

// Routes lists the calls the API serves, as "METHOD /path" (the path in ServeMux's syntax,
// which is also the OpenAPI description's).
func Routes() []string {
	out := make([]string, 0, len(routes))
	for _, rt := range routes {
		out = append(out, rt.pattern)
	}
	return out
}

// noRoute answers a path no call has (404 not_found) or a method the path does not take
// (405 method_not_allowed, with Allow).
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		// The patterns of calls name their method; the catch-alls do not.
		if _, pattern := a.mux.Handler(probe); strings.Contains(pattern, " ") {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
			r.Method+" is not allowed here; use "+strings.Join(allowed, " or ")+".")
		return
	}
	writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "No such API call.")
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r)
}

// Handles reports whether the API answers this path (the rest is the web page's).
func Handles(path string) bool {
	return path == "/healthz" || path == OpenAPIPath || path == "/v1" || strings.HasPrefix(path, "/v1/")
}

// fail answers err: an *apiError as it is, a store error as its API code, anything else as
// 503 store_unavailable (logged without request data).
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, store.ErrInstanceNotFound):
		ae = errInstanceNotFound
	case errors.Is(err, store.ErrKeyNotFound):
		ae = errKeyNotFound
	case errors.Is(err, store.ErrInstanceExists):
		ae = errInstanceExists
	case errors.Is(err, store.ErrKeyRevoked):
		ae = errKeyRevoked
	case errors.Is(err, store.ErrAlreadyRolled):
		ae = errAlreadyRolled("")
	case errors.Is(err, store.ErrNotActive):
		ae = errInvalid("Only an active key can be rolled.")
	case errors.Is(err, store.ErrInvalidCursor):
		ae = errInvalid("starting_after names no item of this list.")
	default:
		a.Logger.Warn("admin request failed at the store", zap.String("method", r.Method),
			zap.String("pattern", r.Pattern), zap.Error(err))
		ae = errUnavailable
	}
	writeError(w, ae.status, ae.typ, ae.code, ae.msg)
}

type handler func(w http.ResponseWriter, r *http.Request, t *Token) error

// auth checks the admin token, the permissions and the instance scope of the path, in that
// order, before the call does anything.
func (a *API) auth(h handler, perms ...Permission) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := a.token(r)
		if t == nil {
			a.fail(w, r, errUnauthorized)
			return
		}
		for _, p := range perms {
			if !t.Has(p) {
				a.fail(w, r, errForbidden(fmt.Sprintf("This token lacks the %s permission.", p)))
				return
			}
		}
		if in := r.PathValue("instance"); in != "" && !t.Covers(in) {
			a.fail(w, r, errForbidden("This token may not act on this instance."))
			return
		}
		if err := h(w, r, t); err != nil {
			a.fail(w, r, err)
		}
	}
}

// token returns the admin token a request carries, or nil. Only the Authorization header
// counts: cookies are never read.
func (a *API) token(r *http.Request) *Token {
	secret, p := wire.Bearer(r.Header.Values("Authorization"))
	if p != wire.OK {
		return nil
	}
	return authenticate(a.Tokens, secret)
}

func (a *API) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if a.Ready != nil && !a.Ready() {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	if err := a.Store.Ping(ctx); err != nil {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) me(w http.ResponseWriter, r *http.Request, t *Token) error {
	instances := t.Instances
	if instances == nil {
		instances = []string{"*"}
	}
	perms := t.Permissions
	if perms == nil {
		perms = []Permission{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": t.Name, "permissions": perms, "instances": instances})
	return nil
}
