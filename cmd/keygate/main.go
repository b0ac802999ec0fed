// Command keygate is Caddy with its standard modules and keygate's modules (the `nora` app,
// `nora_auth` and, later, `nora_admin`).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/keygate/keygate/caddymodule"
)

func main() {
	caddycmd.Main()
}
