// Package keygate is the module root that xcaddy imports: it registers keygate's Caddy
// modules (the `nora` app, `nora_auth`) and Caddyfile words. Build a custom Caddy with
//
//	xcaddy build v2.11.9 --with github.com/keygate/keygate
//
// or from this checkout with `go run ./tools/xcaddybuild` (reads xcaddy.json).
package keygate

import (
	// The Caddy modules live in caddymodule; importing this package registers them.
	_ "github.com/keygate/keygate/caddymodule"
)
