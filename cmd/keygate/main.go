// Command keygate is Caddy with its standard modules and keygate's modules (the `nora` app,
// `nora_auth`, `nora_admin`), plus the `keys` command group that talks to the admin API.
package main

import (
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/keygate/keygate/caddymodule"
)

func main() {
	caddy.CustomBinaryName = "keygate"
	caddycmd.Main()
}
