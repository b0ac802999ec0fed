package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/internal/wire"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin is the `nora_admin` handler: keygate's admin endpoint (JSON API under /v1, /healthz,
// the API's OpenAPI description at /openapi.yaml), meant for its own site on a private
// listener. It is terminal: it answers everything under its route itself. Requests
// authenticate with `Authorization: Bearer <admin token>`; cookies are never read.
type Admin struct {
	// Tokens are the admin tokens. At least one is required.
	Tokens []TokenConfig `json:"tokens,omitempty"`

	tokens   []admin.Token
	disabled string // why the endpoint refuses every call, when its tokens resolved empty
	app      *App
	logger   *zap.Logger

	lazy *lazyAPI
}

// lazyAPI is the admin API, built on the first request that finds the store open.
type lazyAPI struct {
	mu  sync.Mutex
	api atomic.Pointer[admin.API]
}

// TokenConfig is one admin token.
type TokenConfig struct {
	// Token is the token in clear (usually an {env.*} placeholder) or "sha256:<hex>" of it,
	// so that the config holds no secret.
	Token string `json:"token"`
	// Permissions: apiKey.read, apiKey.create, apiKey.delete, instance.manage.
	Permissions []string `json:"permissions,omitempty"`
	// Name appears in the audit trail (default "token-" and 8 hex characters of its hash).
	Name string `json:"name,omitempty"`
	// Instances limits the token to these instances (default all).
	Instances []string `json:"instances,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.nora_admin", New: func() caddy.Module { return new(Admin) }}
}

const addTokenHint = "add a token line to nora_admin, e.g. `token {env.NORA_ADMIN_TOKEN} apiKey.read apiKey.create apiKey.delete instance.manage`"

// Provision reads the tokens and links the handler to the nora app.
func (h *Admin) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.lazy = new(lazyAPI)
	if len(h.Tokens) == 0 {
		return errors.New("nora_admin: no admin token configured: " + addTokenHint)
	}
	repl := caddy.NewReplacer()
	var empty []string
	for i, tc := range h.Tokens {
		secret := repl.ReplaceKnown(tc.Token, "")
		if secret == "" {
			// Usually an {env.*} placeholder whose variable is not set: the gateway still
			// starts, and the admin endpoint says what is missing.
			empty = append(empty, tc.Token)
			continue
		}
		hash, err := admin.TokenHash(secret)
		if err != nil {
			return fmt.Errorf("nora_admin: token %d: %v", i+1, err)
		}
		t := admin.Token{Name: tc.Name, Hash: hash}
		if t.Name == "" {
			t.Name = admin.DefaultTokenName(hash)
		}
		for _, p := range tc.Permissions {
			perm, err := admin.ParsePermission(p)
			if err != nil {
				return fmt.Errorf("nora_admin: token %s: %v", t.Name, err)
			}
			t.Permissions = append(t.Permissions, perm)
		}
		if tc.Instances != nil {
			t.Instances = append([]string{}, tc.Instances...)
		}
		h.tokens = append(h.tokens, t)
	}
	if len(h.tokens) == 0 {
		h.disabled = fmt.Sprintf("No admin token is set: %s resolved empty. Restart keygate with the token set (e.g. export NORA_ADMIN_TOKEN=$(openssl rand -hex 32)).",
			strings.Join(empty, ", "))
		h.logger.Warn("admin endpoint disabled: every admin token resolved empty", zap.Strings("tokens", empty))
	} else if len(empty) > 0 {
		h.logger.Warn("admin tokens resolved empty and are ignored", zap.Strings("tokens", empty))
	}
	app, err := ctx.App("nora")
	if err != nil {
		return fmt.Errorf("loading nora app: %v", err)
	}
	h.app = app.(*App)
	return nil
}

// ServeHTTP implements caddyhttp.MiddlewareHandler; it never calls next.
func (h *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if !admin.Handles(r.URL.Path) {
		page.ServeHTTP(w, r)
		return nil
	}
	// Disabled, it still says whether it is up, and what its API is.
	if h.disabled != "" && r.URL.Path != "/healthz" && r.URL.Path != admin.OpenAPIPath {
		writeAdminError(w, http.StatusServiceUnavailable, "admin_disabled", h.disabled)
		return nil
	}
	api := h.getAPI()
	if api == nil && h.app.awaitStart(r.Context()) {
		// Caddy started the http app before the nora app: wait for it rather than refuse.
		api = h.getAPI()
	}
	if api == nil {
		writeAdminError(w, http.StatusServiceUnavailable, "store_unavailable", "The key store is not open yet.")
		return nil
	}
	api.ServeHTTP(w, r)
	return nil
}

// page is the "API keys" web page, served at / by every nora_admin.
var page = admin.Page()

// getAPI builds the API on first use: the store is opened when the nora app starts, after
// handlers are provisioned, and Caddy may start the http app first. Until the store is
// open it returns nil (ServeHTTP then waits for the app's start).
func (h *Admin) getAPI() *admin.API {
	if api := h.lazy.api.Load(); api != nil {
		return api
	}
	h.lazy.mu.Lock()
	defer h.lazy.mu.Unlock()
	if api := h.lazy.api.Load(); api != nil {
		return api
	}
	s := h.app.KeyStore()
	if s == nil {
		return nil
	}
	tokens := h.tokens
	if len(tokens) == 0 { // disabled: /healthz and /openapi.yaml only
		tokens = []admin.Token{{Name: "none"}}
	}
	api, err := admin.NewAPI(s, tokens, h.app.hasher, h.logger)
	if err != nil {
		h.logger.Error("starting the admin API", zap.Error(err))
		return nil
	}
	api.Ready = h.app.InstancesReady
	api.Signer = h.app.signer
	api.Fleet = h.app.Fleet()
	h.lazy.api.Store(api)
	return api
}

func writeAdminError(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	wire.WriteError(w, status, wire.ErrorBody("api_error", code, msg))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Admin)(nil)
	_ caddyhttp.MiddlewareHandler = (*Admin)(nil)
)
