package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/scanning"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("nora_secret_scanning", parseSecretScanning)
	// A terminal handler, like nora_admin: it goes where respond does.
	httpcaddyfile.RegisterDirectiveOrder("nora_secret_scanning", httpcaddyfile.Before, "respond")
}

func parseSecretScanning(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(SecretScanning)
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return s, err
}

// UnmarshalCaddyfile sets up the secret scanning endpoint:
//
//	nora_secret_scanning {
//		public_keys <url or file>   # default https://api.github.com/meta/public_keys/secret_scanning
//		sandbox revoke|report       # what a leaked sk_test_ key gets (default revoke)
//	}
func (s *SecretScanning) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "public_keys":
			if !d.AllArgs(&s.PublicKeys) {
				return d.ArgErr()
			}
		case "sandbox":
			if !d.AllArgs(&s.Sandbox) {
				return d.ArgErr()
			}
			if _, err := scanning.ParseSandboxMode(s.Sandbox); err != nil {
				return d.Errf("sandbox: %v", err)
			}
		default:
			return d.Errf("unrecognized nora_secret_scanning option '%s'", d.Val())
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*SecretScanning)(nil)
