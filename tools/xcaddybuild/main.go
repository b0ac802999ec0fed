// Command xcaddybuild builds a custom Caddy from the manifest xcaddy.json with xcaddy: the
// Caddy version, this module and any other plugins ops add. Run it from the repository root:
//
//	go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
//	go run ./tools/xcaddybuild            # writes the manifest's output, dist/keygate
//	go run ./tools/xcaddybuild -n         # prints the xcaddy command only
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Manifest is xcaddy.json.
type Manifest struct {
	// CaddyVersion is the Caddy release to build; a test keeps it equal to go.mod's.
	CaddyVersion string `json:"caddy_version"`
	// Output is the binary to write, relative to the manifest.
	Output string `json:"output"`
	// Plugins are the modules to build in.
	Plugins []Plugin `json:"plugins"`
}

// Plugin is one module given to xcaddy's --with.
type Plugin struct {
	// Module is the module path.
	Module string `json:"module"`
	// Version is a module version. With Replace it is the version the build requires
	// (v0.0.0 is fine): without one, `go get` would ask the module proxy for the module.
	Version string `json:"version,omitempty"`
	// Replace is a local directory (relative to the manifest) to build the module from.
	Replace string `json:"replace,omitempty"`
}

// Load reads and checks a manifest.
func Load(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if !strings.HasPrefix(m.CaddyVersion, "v2.") {
		return nil, fmt.Errorf("%s: caddy_version must be a Caddy 2 release like v2.11.9", path)
	}
	if m.Output == "" {
		m.Output = "dist/keygate"
	}
	for _, p := range m.Plugins {
		if p.Module == "" {
			return nil, fmt.Errorf("%s: a plugin without module", path)
		}
		if p.Replace != "" && p.Version == "" {
			return nil, fmt.Errorf("%s: plugin %s has replace without version (use v0.0.0)", path, p.Module)
		}
	}
	return &m, nil
}

// Args returns xcaddy's arguments for the manifest at dir.
func (m *Manifest) Args(dir string) []string {
	args := []string{"build", m.CaddyVersion, "--output", filepath.Join(dir, m.Output)}
	for _, p := range m.Plugins {
		w := p.Module
		if p.Version != "" {
			w += "@" + p.Version
		}
		if p.Replace != "" {
			abs, err := filepath.Abs(filepath.Join(dir, p.Replace))
			if err != nil {
				abs = filepath.Join(dir, p.Replace)
			}
			w += "=" + abs
		}
		args = append(args, "--with", w)
	}
	return args
}

func main() {
	manifest := flag.String("manifest", "xcaddy.json", "the build manifest")
	dry := flag.Bool("n", false, "print the xcaddy command without running it")
	flag.Parse()
	m, err := Load(*manifest)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xcaddybuild:", err)
		os.Exit(1)
	}
	args := m.Args(filepath.Dir(*manifest))
	fmt.Fprintln(os.Stderr, "xcaddy", strings.Join(args, " "))
	if *dry {
		return
	}
	cmd := exec.Command("xcaddy", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "xcaddybuild:", err, "(is xcaddy installed? go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5)")
		os.Exit(1)
	}
}
