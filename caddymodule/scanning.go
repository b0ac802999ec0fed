package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/keygate/keygate/scanning"
)

func init() {
	caddy.RegisterModule(SecretScanning{})
}

// SecretScanning is the `nora_secret_scanning` handler: the endpoint of GitHub's secret
// scanning partner program. GitHub posts the tokens it found in public places, signed; each
// one that is one of our keys is revoked (through the store, so the revocation reaches every
// gateway) and recorded as api_key.leaked. It is terminal: it answers every request of its
// route itself.
type SecretScanning struct {
	// PublicKeys is where GitHub's public keys are read: an http(s) URL (GitHub's is
	// https://api.github.com/meta/public_keys/secret_scanning) or a file holding the same JSON.
	PublicKeys string `json:"public_keys,omitempty"`
	// Sandbox says what a leaked sk_test_ key gets: "revoke" (default) or "report" (the event
	// is recorded and the key left active). sk_live_ keys are always revoked.
	Sandbox string `json:"sandbox,omitempty"`

	app     *App
	handler *scanning.Handler
	mode    scanning.SandboxMode
	logger  *zap.Logger
}

// DefaultPublicKeys is GitHub's public keys document for secret scanning.
const DefaultPublicKeys = "https://api.github.com/meta/public_keys/secret_scanning"

// CaddyModule returns the Caddy module information.
func (SecretScanning) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.nora_secret_scanning", New: func() caddy.Module { return new(SecretScanning) }}
}

// Provision links the handler to the nora app and starts fetching the public keys (in the
// background: a gateway starts, and `caddy validate` passes, while GitHub is unreachable).
func (h *SecretScanning) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.PublicKeys == "" {
		h.PublicKeys = DefaultPublicKeys
	}
	mode, err := scanning.ParseSandboxMode(h.Sandbox)
	if err != nil {
		return fmt.Errorf("nora_secret_scanning: %v", err)
	}
	h.mode = mode
	src := caddy.NewReplacer().ReplaceKnown(h.PublicKeys, "")
	var ks scanning.KeySource
	if strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
		ks = scanning.URLSource(src, nil)
	} else {
		ks = scanning.FileSource(src)
	}
	v := scanning.NewVerifier(ks)
	app, err := ctx.App("nora")
	if err != nil {
		return fmt.Errorf("loading nora app: %v", err)
	}
	h.app = app.(*App)
	h.handler = &scanning.Handler{Verifier: v, Scanner: h.scanner, Logger: h.logger}
	go func(ctx context.Context) {
		if err := v.Refresh(ctx); err != nil && ctx.Err() == nil {
			h.logger.Warn("fetching GitHub's secret scanning public keys (tried again on the first alert)",
				zap.String("public_keys", src), zap.Error(err))
		}
	}(ctx)
	return nil
}

// Validate checks the config.
func (h *SecretScanning) Validate() error {
	if _, err := scanning.ParseSandboxMode(h.Sandbox); err != nil {
		return fmt.Errorf("nora_secret_scanning: %v", err)
	}
	return nil
}

// scanner is the scanner over the app's store, or nil while it is not open.
func (h *SecretScanning) scanner(r *http.Request) *scanning.Scanner {
	s := h.app.KeyStore()
	if s == nil && h.app.awaitStart(r.Context()) {
		// Caddy started the http app before the nora app: wait for it rather than refuse.
		s = h.app.KeyStore()
	}
	if s == nil {
		return nil
	}
	return &scanning.Scanner{Store: s, Hasher: h.app.hasher, Sandbox: h.mode, Logger: h.logger}
}

// ServeHTTP implements caddyhttp.MiddlewareHandler; it never calls next.
func (h *SecretScanning) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.handler.ServeHTTP(w, r)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*SecretScanning)(nil)
	_ caddy.Validator             = (*SecretScanning)(nil)
	_ caddyhttp.MiddlewareHandler = (*SecretScanning)(nil)
)
