package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestKeygateVersion(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name string
		set  string
		bi   *debug.BuildInfo
		want string
	}{
		{"ldflags win over everything", "v1.4.0", &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "v1.3.0"}}, "v1.4.0"},
		{"no build info", "", nil, "(devel)"},
		{"go install of a release", "", &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "v1.3.0"}}, "v1.3.0"},
		{"checkout build with vcs stamping", "", &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "(devel)"}, Settings: vcs(rev, "false")}, "(devel) 0123456789ab"},
		{"checkout build with local changes", "", &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "(devel)"}, Settings: vcs(rev, "true")}, "(devel) 0123456789ab+modified"},
		{"checkout build without vcs (-buildvcs=false)", "", &debug.BuildInfo{Main: debug.Module{Path: modulePath, Version: "(devel)"}}, "(devel)"},
		{"a dependency of another main module", "", &debug.BuildInfo{
			Main: debug.Module{Path: "caddy", Version: "(devel)"},
			Deps: []*debug.Module{{Path: "github.com/caddyserver/caddy/v2", Version: "v2.11.9"}, {Path: modulePath, Version: "v1.2.3"}},
		}, "v1.2.3"},
		{"a replaced dependency with no version", "", &debug.BuildInfo{
			Main: debug.Module{Path: "caddy", Version: "(devel)"},
			Deps: []*debug.Module{{Path: modulePath, Version: "v0.0.0", Replace: &debug.Module{Path: "./keygate"}}},
		}, "(devel)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keygateVersion(tc.set, tc.bi); got != tc.want {
				t.Errorf("keygateVersion = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPrintVersionSaysKeygateAndCaddy(t *testing.T) {
	old := version
	version = "v9.8.7"
	defer func() { version = old }()
	var out bytes.Buffer
	printVersion(&out)
	_, caddyFull := caddy.Version()
	want := "keygate v9.8.7 (Caddy " + caddyFull + ")\n"
	if out.String() != want {
		t.Errorf("printVersion wrote %q, want %q", out.String(), want)
	}
	if !strings.Contains(caddyFull, "v2.") {
		t.Errorf("Caddy's version %q does not look like one", caddyFull)
	}
}
