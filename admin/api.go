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
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /v1/me", a.auth(a.me))
	m.HandleFunc("GET /v1/gateways", a.auth(a.listGateways))
	m.HandleFunc("GET /v1/instances", a.auth(a.listInstances))
	m.HandleFunc("POST /v1/instances", a.auth(a.createInstance, PermInstance))
	m.HandleFunc("GET /v1/instances/{instance}/keys", a.auth(a.listKeys, PermRead))
	m.HandleFunc("POST /v1/instances/{instance}/keys", a.auth(a.createKey, PermCreate))
	m.HandleFunc("GET /v1/instances/{instance}/keys/{id}", a.auth(a.getKey, PermRead))
	m.HandleFunc("PATCH /v1/instances/{instance}/keys/{id}", a.auth(a.updateKey, PermCreate))
	m.HandleFunc("DELETE /v1/instances/{instance}/keys/{id}", a.auth(a.revokeKey, PermDelete))
	m.HandleFunc("POST /v1/instances/{instance}/keys/{id}/roll", a.auth(a.rollKey, PermCreate, PermDelete))
	m.HandleFunc("GET /v1/instances/{instance}/keys/{id}/usage", a.auth(a.usage, PermRead))
	m.HandleFunc("GET /v1/instances/{instance}/usage", a.auth(a.usage, PermRead))
	m.HandleFunc("GET /v1/instances/{instance}/events", a.auth(a.listEvents, PermRead))
	m.HandleFunc("/v1/", a.noRoute)
	a.mux = m
	return a, nil
}

// noRoute answers a path no call has (404 not_found) or a method the path does not take
// (405 method_not_allowed, with Allow).
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "/v1/" {
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
	return path == "/healthz" || path == "/v1" || strings.HasPrefix(path, "/v1/")
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
