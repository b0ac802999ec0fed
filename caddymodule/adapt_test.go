package caddymodule_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The golden Caddyfile tests: each testdata/*.caddytest is a Caddyfile, a line of ten dashes,
// and either the JSON it adapts to or, when that part does not start with "{", a piece of the
// error its adaptation must fail with (the format of Caddy's own caddyfile_adapt tests and
// mholt/caddy-l4's). quickstart.caddytest's Caddyfile is the repository's Caddyfile itself.
//
// To regenerate the JSON after a deliberate change of syntax or config shape:
//
//	go test ./caddymodule/ -run Golden -update      (or KEYGATE_UPDATE_GOLDEN=1)
//
// and read the diff before committing it.

var updateGolden = flag.Bool("update", false, "rewrite the JSON of caddymodule/testdata/*.caddytest from what the Caddyfiles adapt to")

const goldenSeparator = "----------"

func TestGoldenCaddyfileAdapt(t *testing.T) {
	update := *updateGolden || os.Getenv("KEYGATE_UPDATE_GOLDEN") == "1"
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddytest"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.caddytest files (%v)", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddytest"), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			text := strings.ReplaceAll(string(data), "\r\n", "\n")
			input, want, ok := strings.Cut(text, "\n"+goldenSeparator+"\n")
			if !ok {
				t.Fatalf("%s: no %q line between the Caddyfile and the JSON", file, goldenSeparator)
			}
			input = strings.TrimSpace(input) + "\n"
			want = strings.TrimSpace(want)
			if filepath.Base(file) == "quickstart.caddytest" {
				quick, err := os.ReadFile(filepath.Join("..", "Caddyfile"))
				if err != nil {
					t.Fatal(err)
				}
				if q := strings.TrimSpace(string(quick)) + "\n"; q != input {
					if !update {
						t.Fatalf("%s no longer holds the repository's Caddyfile: run with -update\n%s", file, lineDiff(input, q))
					}
					input = q
				}
			}

			if want != "" && want[0] != '{' { // an error is expected
				_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
				switch {
				case err == nil:
					t.Fatalf("%s adapted, but the golden file expects an error containing %q", file, want)
				case !strings.Contains(err.Error(), want):
					t.Fatalf("%s: the error\n\t%v\ndoes not contain\n\t%s", file, err, want)
				}
				return
			}

			got, err := adaptIndented(input)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if update {
				if got != want || !bytes.Equal(data, []byte(input+goldenSeparator+"\n"+got+"\n")) {
					if err := os.WriteFile(file, []byte(input+goldenSeparator+"\n"+got+"\n"), 0o644); err != nil {
						t.Fatal(err)
					}
					t.Logf("rewrote %s", file)
				}
				return
			}
			if got != want {
				t.Errorf("%s: the Caddyfile no longer adapts to the golden JSON (- golden, + now; -update rewrites it):\n%s", file, lineDiff(want, got))
			}
		})
	}
}

// adaptIndented adapts a Caddyfile to JSON indented with tabs. Any adapter warning is an
// error: a golden Caddyfile must be clean.
func adaptIndented(input string) (string, error) {
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return "", fmt.Errorf("adapting: %v", err)
	}
	if len(warnings) > 0 {
		return "", fmt.Errorf("adapter warnings: %v", warnings)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "\t"); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// TestAdaptRateLimitOrder pins the README's advice for rate limiting per key: a handler that
// reads {http.auth.user.*} must run after nora_auth. caddy-ratelimit orders its rate_limit
// before basic_auth, and so before nora_auth, where every client has the same (empty) key
// and shares one bucket; `order rate_limit after nora_auth` puts it after.
func TestAdaptRateLimitOrder(t *testing.T) {
	const site = `
:8080 {
	nora_auth
	rate_limit {
		zone per_key {
			key {http.auth.user.id}
			events 100
			window 1m
		}
	}
	reverse_proxy 127.0.0.1:9000
}
`
	for _, tc := range []struct {
		name   string
		global string
		want   []string
	}{
		{"without an order line rate_limit runs first", "", []string{"rate_limit", "nora_auth", "reverse_proxy"}},
		{"order rate_limit after nora_auth", "{\n\torder rate_limit after nora_auth\n}\n", []string{"nora_auth", "rate_limit", "reverse_proxy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tc.global+site), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := siteHandlers(t, out); strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("handlers run in the order %v, want %v", got, tc.want)
			}
		})
	}
}

// siteHandlers lists, in order, the handlers of the single route of the single server.
func siteHandlers(t *testing.T, cfg []byte) []string {
	t.Helper()
	var c struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Handler string `json:"handler"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, srv := range c.Apps.HTTP.Servers {
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				names = append(names, h.Handler)
			}
		}
	}
	return names
}

// rateLimitStandIn takes the place of github.com/mholt/caddy-ratelimit's handler, which the
// Go module proxy here does not serve: it registers the rate_limit directive exactly as
// caddy-ratelimit does (RegisterHandlerDirective, then RegisterDirectiveOrder before
// basic_auth, as caddy-ratelimit has since its pull request 59 of July 2024) and adapts its zone blocks to the
// same JSON (rate_limits: {zone: {key, max_events, window}}). The adapter writes only
// registered modules, so it is registered (in this test binary only) as
// http.handlers.rate_limit; loaded, it limits nothing and passes every request on.
type rateLimitStandIn struct {
	RateLimits map[string]*rateLimitZone `json:"rate_limits,omitempty"`
}

type rateLimitZone struct {
	Key       string         `json:"key,omitempty"`
	MaxEvents int            `json:"max_events,omitempty"`
	Window    caddy.Duration `json:"window,omitempty"`
}

func init() {
	caddy.RegisterModule(new(rateLimitStandIn))
	httpcaddyfile.RegisterHandlerDirective("rate_limit", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		rl := new(rateLimitStandIn)
		return rl, rl.UnmarshalCaddyfile(h.Dispenser)
	})
	httpcaddyfile.RegisterDirectiveOrder("rate_limit", httpcaddyfile.Before, "basic_auth")
}

func (*rateLimitStandIn) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.rate_limit", New: func() caddy.Module { return new(rateLimitStandIn) }}
}

func (*rateLimitStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

// UnmarshalCaddyfile reads `rate_limit { zone <name> { key <k>; events <n>; window <d> } }`.
func (rl *rateLimitStandIn) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if d.Val() != "zone" || !d.NextArg() {
			return d.Err("expected zone <name> { … }")
		}
		name, z := d.Val(), new(rateLimitZone)
		for n := d.Nesting(); d.NextBlock(n); {
			opt := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch opt {
			case "key":
				z.Key = d.Val()
			case "events":
				if _, err := fmt.Sscan(d.Val(), &z.MaxEvents); err != nil {
					return d.Errf("events: %v", err)
				}
			case "window":
				w, err := caddy.ParseDuration(d.Val())
				if err != nil {
					return d.Errf("window: %v", err)
				}
				z.Window = caddy.Duration(w)
			default:
				return d.Errf("unrecognized zone option '%s'", opt)
			}
		}
		if rl.RateLimits == nil {
			rl.RateLimits = map[string]*rateLimitZone{}
		}
		rl.RateLimits[name] = z
	}
	return nil
}

// lineDiff shows how b differs from a, line by line (a longest common subsequence): "-"
// for lines only in a, "+" for lines only in b, with two lines of context.
func lineDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var lines []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			lines = append(lines, line{' ', x[i]})
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', x[i]})
			i++
		default:
			lines = append(lines, line{'+', y[j]})
			j++
		}
	}
	var out strings.Builder
	const context = 2
	lastShown := -1
	for k, l := range lines {
		near := false
		for m := max(0, k-context); m <= min(len(lines)-1, k+context); m++ {
			if lines[m].op != ' ' {
				near = true
				break
			}
		}
		if !near {
			continue
		}
		if lastShown >= 0 && k > lastShown+1 {
			out.WriteString("  …\n")
		}
		fmt.Fprintf(&out, "%c %s\n", l.op, l.text)
		lastShown = k
	}
	return out.String()
}

// TestGoldenDocsConfigJSON keeps docs/config-json.md true: each ```json block there is what
// the source just before it adapts to, the ```caddyfile block before it or the file named by
// a line `<!-- adapt: PATH -->` (relative to the repository root). -update rewrites the
// JSON blocks.
func TestGoldenDocsConfigJSON(t *testing.T) {
	update := *updateGolden || os.Getenv("KEYGATE_UPDATE_GOLDEN") == "1"
	path := filepath.Join("..", "docs", "config-json.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	var out []string
	var source, sourceName string
	blocks := 0
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		out = append(out, l)
		switch {
		case strings.HasPrefix(l, "<!-- adapt: ") && strings.HasSuffix(l, " -->"):
			sourceName = strings.TrimSuffix(strings.TrimPrefix(l, "<!-- adapt: "), " -->")
			b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(sourceName)))
			if err != nil {
				t.Fatalf("%s:%d: %v", path, i+1, err)
			}
			source = string(b)
		case l == "```caddyfile":
			var body []string
			for i++; i < len(lines) && lines[i] != "```"; i++ {
				body = append(body, lines[i])
				out = append(out, lines[i])
			}
			out = append(out, "```")
			source, sourceName = strings.Join(body, "\n")+"\n", fmt.Sprintf("the caddyfile block at line %d", i-len(body))
		case l == "```json":
			start := i + 1
			var body []string
			for i++; i < len(lines) && lines[i] != "```"; i++ {
				body = append(body, lines[i])
			}
			if source == "" {
				t.Fatalf("%s:%d: a json block with no caddyfile block or adapt line before it", path, start)
			}
			got, err := adaptIndented(source)
			if err != nil {
				t.Fatalf("%s:%d: adapting %s: %v", path, start, sourceName, err)
			}
			if want := strings.Join(body, "\n"); got != want && !update {
				t.Errorf("%s:%d: the JSON is no longer what %s adapts to (- doc, + now; -update rewrites it):\n%s", path, start, sourceName, lineDiff(want, got))
			}
			out = append(out, strings.Split(got, "\n")...)
			out = append(out, "```")
			source, sourceName = "", ""
			blocks++
		}
	}
	if blocks == 0 {
		t.Fatalf("%s has no json block", path)
	}
	if update {
		if b := strings.Join(out, "\n"); b != string(data) {
			if err := os.WriteFile(path, []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("rewrote %s", path)
		}
	}
}
