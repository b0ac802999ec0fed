// Package deploy holds the files that install keygate (a systemd unit, a Dockerfile) and the
// tests that keep them working: there is no Docker engine or systemd instance in CI, so they
// check what can be checked without one.
package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSystemdUnitVerifies runs `systemd-analyze verify` on keygate.service, with the binary
// path pointed at a stand-in executable (verify checks that ExecStart's command exists).
// Any warning fails the test: verify exits 0 on an unknown setting or a bad value.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd)")
	}
	unit, err := os.ReadFile("keygate.service")
	if err != nil {
		t.Fatal(err)
	}
	const bin = "/usr/local/bin/keygate"
	if !bytes.Contains(unit, []byte("ExecStart="+bin+" run --config /etc/keygate/Caddyfile")) {
		t.Fatalf("keygate.service no longer starts %s run --config /etc/keygate/Caddyfile; update this test", bin)
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "keygate")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keygate.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte(bin), []byte(stub)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify keygate.service: %v\n%s", err, out)
	}
}

// TestDockerfileBuilds checks the Dockerfile without a Docker engine: the files it copies
// exist, its Go image matches go.mod's Go version, and its `go build` line, run as it stands
// (from the repository root, as the build context), gives a static binary that carries the
// nora modules and reports the version passed as VERSION.
func TestDockerfileBuilds(t *testing.T) {
	lines := dockerfileLines(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	var build string
	for _, l := range lines {
		fields := strings.Fields(l)
		switch {
		case len(fields) >= 3 && fields[0] == "COPY" && !strings.HasPrefix(fields[1], "--from="):
			for _, src := range fields[1 : len(fields)-1] {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("the Dockerfile copies %s, which is not in the repository: %v", src, err)
				}
			}
		case len(fields) >= 2 && fields[0] == "FROM" && strings.HasPrefix(fields[1], "golang:"):
			goVersion := goModVersion(t, filepath.Join(root, "go.mod"))
			if tag := strings.TrimPrefix(fields[1], "golang:"); !strings.HasPrefix(tag, goVersion) {
				t.Errorf("the Dockerfile builds with golang:%s, but go.mod asks for Go %s", tag, goVersion)
			}
		case len(fields) >= 2 && fields[0] == "RUN" && strings.Contains(l, "go build"):
			build = strings.TrimSpace(strings.TrimPrefix(l, "RUN"))
		}
	}
	if build == "" {
		t.Fatal("the Dockerfile has no RUN … go build line")
	}
	if !strings.Contains(build, "-o /out/keygate") || !strings.HasPrefix(build, "CGO_ENABLED=0 ") {
		t.Fatalf("the go build line changed (%s); update this test", build)
	}
	if testing.Short() {
		t.Skip("-short: not building the binary")
	}

	out := filepath.Join(t.TempDir(), "keygate")
	const version = "v0.0.0-dockerfile-test"
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(build, "-o /out/keygate", "-o "+out))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "VERSION="+version)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build failed: %v\n%s", err, b)
	}

	got, err := exec.Command(out, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "keygate "+version+" (Caddy v2.") {
		t.Errorf("keygate version said %q, want keygate %s (Caddy v2.…)", got, version)
	}
	mods, err := exec.Command(out, "list-modules").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"nora", "http.handlers.nora_auth", "http.handlers.nora_admin"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(m) + `$`).Match(mods) {
			t.Errorf("the built binary lacks the module %s", m)
		}
	}
	// CGO_ENABLED=0: a static binary, so the slim runtime image (or any other) can run it.
	if ldd, err := exec.LookPath("ldd"); err == nil {
		b, _ := exec.Command(ldd, out).CombinedOutput()
		if !bytes.Contains(b, []byte("not a dynamic executable")) && !bytes.Contains(b, []byte("statically linked")) {
			t.Errorf("the binary is not static: ldd says\n%s", b)
		}
	}
}

// dockerfileLines returns the Dockerfile's instructions, comments dropped and continued
// lines joined.
func dockerfileLines(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\") + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// goModVersion is go.mod's `go` line as major.minor ("1.26").
func goModVersion(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}
