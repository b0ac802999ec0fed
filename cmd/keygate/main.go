// Command keygate is Caddy with its standard modules and keygate's modules (the `nora` app,
// `nora_auth`, `nora_admin`), plus the `keys` command group that talks to the admin API.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/keygate/keygate/caddymodule"
)

// modulePath is keygate's Go module, looked up in the build information.
const modulePath = "github.com/keygate/keygate"

// version is keygate's release, set at build time:
//
//	go build -ldflags "-X main.version=v1.2.0" ./cmd/keygate
//
// Left empty, the version comes from the build information (see keygateVersion).
var version string

func main() {
	caddy.CustomBinaryName = "keygate"
	// Caddy's own `version` command knows only Caddy's version, and a command cannot be
	// registered twice; `keygate version` says both.
	if len(os.Args) == 2 && os.Args[1] == "version" {
		printVersion(os.Stdout)
		return
	}
	caddycmd.Main()
}

// printVersion writes `keygate version`'s line: keygate's version, then Caddy's full one.
func printVersion(w io.Writer) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	_, caddyFull := caddy.Version()
	fmt.Fprintf(w, "keygate %s (Caddy %s)\n", keygateVersion(version, bi), caddyFull)
}

// keygateVersion is set (from -ldflags) when given; else the module version that the build
// recorded (a `go install …@v1.2.0` build, or keygate as a dependency of another main
// module); else the VCS revision of a build from a checkout (with "+modified" for
// uncommitted changes); else "(devel)".
func keygateVersion(set string, bi *debug.BuildInfo) string {
	if set != "" {
		return set
	}
	if bi == nil {
		return "(devel)"
	}
	mod := &bi.Main
	if mod.Path != modulePath {
		mod = nil
		for _, dep := range bi.Deps {
			if dep.Path == modulePath {
				mod = dep
				break
			}
		}
	}
	if mod != nil {
		if mod.Replace != nil && mod.Replace.Version != "" {
			return mod.Replace.Version
		}
		if mod.Replace == nil && mod.Version != "" && mod.Version != "(devel)" {
			return mod.Version
		}
	}
	var revision string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if revision == "" {
		return "(devel)"
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	v := "(devel) " + revision
	if modified {
		v += "+modified"
	}
	return v
}
