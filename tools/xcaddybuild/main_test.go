package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The manifest ops build from must name the Caddy that keygate is built and tested with.
func TestManifestCaddyVersionMatchesGoMod(t *testing.T) {
	m, err := Load("../../xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	match := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/caddyserver/caddy/v2 (v\S+)`).FindSubmatch(gomod)
	if match == nil {
		t.Fatal("go.mod does not require github.com/caddyserver/caddy/v2")
	}
	if m.CaddyVersion != string(match[1]) {
		t.Fatalf("xcaddy.json builds Caddy %s but go.mod requires %s", m.CaddyVersion, match[1])
	}
	found := false
	for _, p := range m.Plugins {
		found = found || p.Module == "github.com/keygate/keygate"
	}
	if !found {
		t.Fatal("xcaddy.json does not build in github.com/keygate/keygate")
	}
}

func TestManifestArgs(t *testing.T) {
	m := &Manifest{CaddyVersion: "v2.11.9", Output: "dist/x", Plugins: []Plugin{
		{Module: "github.com/keygate/keygate", Version: "v0.0.0", Replace: "."},
		{Module: "github.com/mholt/caddy-ratelimit", Version: "v0.1.0"},
	}}
	got := strings.Join(m.Args("/src"), " ")
	want := "build v2.11.9 --output /src/dist/x --with github.com/keygate/keygate@v0.0.0=/src --with github.com/mholt/caddy-ratelimit@v0.1.0"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestManifestRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown field": `{"caddy_version":"v2.11.9","plugins":[],"extra":1}`,
		"no version":    `{"plugins":[]}`,
		"replace alone": `{"caddy_version":"v2.11.9","plugins":[{"module":"m","replace":"."}]}`,
		"not json":      `caddy 2`,
	} {
		p := dir + "/" + strings.ReplaceAll(name, " ", "_") + ".json"
		os.WriteFile(p, []byte(body), 0o600)
		if _, err := Load(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
