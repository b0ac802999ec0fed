package caddymodule

import (
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/admin"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("nora_admin", parseAdmin)
	// A terminal handler: it goes where respond does.
	httpcaddyfile.RegisterDirectiveOrder("nora_admin", httpcaddyfile.Before, "respond")
}

func parseAdmin(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	a := new(Admin)
	err := a.UnmarshalCaddyfile(h.Dispenser)
	return a, err
}

// UnmarshalCaddyfile sets up the admin endpoint:
//
//	nora_admin {
//		token <token or sha256:hex> <permission>... [{
//			name <name>
//			instances <instance id>...
//		}]
//	}
//
// Permissions: apiKey.read apiKey.create apiKey.delete instance.manage.
func (a *Admin) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "token":
			var tc TokenConfig
			if !d.NextArg() {
				return d.Err("token: expected the token (or sha256:<hex>) and its permissions")
			}
			tc.Token = d.Val()
			for d.NextArg() {
				if _, err := admin.ParsePermission(d.Val()); err != nil {
					return d.Errf("token: %v", err)
				}
				tc.Permissions = append(tc.Permissions, d.Val())
			}
			for n := d.Nesting(); d.NextBlock(n); {
				switch d.Val() {
				case "name":
					if !d.AllArgs(&tc.Name) {
						return d.ArgErr()
					}
				case "instances":
					ids := d.RemainingArgs()
					if len(ids) == 0 {
						return d.ArgErr()
					}
					tc.Instances = append(tc.Instances, ids...)
				default:
					return d.Errf("unrecognized token option '%s'", d.Val())
				}
			}
			a.Tokens = append(a.Tokens, tc)
		default:
			return d.Errf("unrecognized nora_admin option '%s'", d.Val())
		}
	}
	if len(a.Tokens) == 0 {
		return d.Err("nora_admin: no admin token configured: " + addTokenHint)
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Admin)(nil)
