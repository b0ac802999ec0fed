package e2e

// Browser tests of the "API keys" web page: a real keygate process serves the page
// and the admin API, and Debian's Chromium, driven by chromedp, uses it the way a person does.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
)

const chromiumPath = "/usr/bin/chromium"

// The admin tokens of the browser tests' keygate (at least 16 characters each).
const (
	fullToken     = "kg-browser-full-admin-token-0001"
	readToken     = "kg-browser-read-only-token-00002"
	createToken   = "kg-browser-create-only-token-003"
	instanceToken = "kg-browser-instance-only-token-4"
)

// screenshotDir receives the screenshots of the page's main states: a temporary directory,
// or the committed docs/screenshots when refreshed on purpose with
// KEYGATE_SCREENSHOTS=1 go test -run Browser ./e2e/
var screenshotDir = func() string {
	if os.Getenv("KEYGATE_SCREENSHOTS") == "1" {
		return "../docs/screenshots"
	}
	return filepath.Join(os.TempDir(), "keygate-screenshots")
}()

// pageEnv is a running keygate (gateway, upstream, admin endpoint) and a headless Chromium.
type pageEnv struct {
	admin   string // the admin origin, http://127.0.0.1:port
	gateway string
	browser context.Context
}

func TestBrowserAPIKeysPage(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		msg := fmt.Sprintf("the browser tests need Chromium at %s: install the Debian package `chromium` (apt-get install chromium)", chromiumPath)
		if os.Getenv("KEYGATE_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	start := time.Now()
	env := startPageEnv(t)
	t.Logf("keygate and Chromium up in %v", time.Since(start).Round(time.Millisecond))

	t.Run("PageHeadersAndMarkup", env.testHeaders)
	t.Run("ConsoleWatchSeesCSPViolations", env.testViolationDetector)
	t.Run("CreateUseRevoke", env.testCreateUseRevoke)
	t.Run("ReadOnlyToken", env.testReadOnly)
	t.Run("CreateOnlyToken", env.testCreateOnly)
	t.Run("InstanceManageOnlyToken", env.testInstanceOnly)
	t.Run("WrongStaleTokenAndSignOut", env.testTokens)
	t.Run("NetworkErrorBanner", env.testNetworkError)
	t.Run("Keyboard", env.testKeyboard)
	t.Run("CreateRestricted", env.testCreateRestricted)
	t.Run("RestrictionRefused", env.testRestrictionRefused)
	t.Run("KeyboardRestricted", env.testKeyboardRestricted)
	t.Run("ManyRestrictions", env.testManyRestrictions)
	t.Run("Limits", env.testLimits)
	t.Run("Paging", env.testPaging)
}

func startPageEnv(t *testing.T) *pageEnv {
	gw, up, adm := freePort(t), freePort(t), freePort(t)
	cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store file %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy 127.0.0.1:%d
}
http://127.0.0.1:%d {
	header Content-Type application/json
	respond `+"`"+`{"ok":true}`+"`"+`
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete instance.manage {
			name full-admin
		}
		token %s apiKey.read {
			name read-only
		}
		token %s apiKey.create {
			name create-only
		}
		token %s instance.manage {
			name instance-manager
		}
	}
}
`, filepath.Join(t.TempDir(), "keys.db"), gw, up, up, adm, fullToken, readToken, createToken, instanceToken)
	g := startGateway(t, cf, gw)
	env := &pageEnv{admin: fmt.Sprintf("http://127.0.0.1:%d", adm), gateway: g.url}
	var healthErr error
	defer func() {
		if healthErr != nil { // the wait below timed out
			t.Logf("last /healthz: %v", healthErr)
		}
	}()
	testutil.WaitEvery(t, 10*time.Second, 20*time.Millisecond, "the admin endpoint to become healthy", func() bool {
		resp, err := client.Get(env.admin + "/healthz")
		if healthErr = err; err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			healthErr = fmt.Errorf("/healthz answered %d", resp.StatusCode)
		}
		return healthErr == nil
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc) // runs before the user-data-dir is removed, and waits for Chromium
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	env.browser = ctx
	return env
}

// ---- API helpers (the test's own HTTP client, playing a script with an admin token) ----

type apiKey struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Prefix     string   `json:"prefix"`
	Status     string   `json:"status"`
	ExpiresAt  *string  `json:"expires_at"`
	Secret     string   `json:"secret"`
	Scopes     []string `json:"scopes"`      // nil: null, any route
	AllowedIPs []string `json:"allowed_ips"` // nil: null, any address
}

func (e *pageEnv) call(t *testing.T, method, path, token string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.admin+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

func (e *pageEnv) createKey(t *testing.T, instance, name string, body map[string]any) apiKey {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	body["name"] = name
	var k apiKey
	if st := e.call(t, "POST", "/v1/instances/"+instance+"/keys", fullToken, body, &k); st != 201 {
		t.Fatalf("creating key %q: HTTP %d", name, st)
	}
	return k
}

// gatewayStatus calls the gateway with a key and returns the status and error code.
func (e *pageEnv) gatewayStatus(t *testing.T, key string) (int, string) {
	a := get(t, e.gateway+"/v1/charges", key)
	return a.status, a.Error.Code
}

// ---- Tabs ----

// tab is one browser tab on the page, with what it saw: every request URL, and every
// uncaught exception, console error, CSP violation and failed response.
type tab struct {
	t   *testing.T
	env *pageEnv
	ctx context.Context

	mu       sync.Mutex
	requests []string
	problems []string
}

func (e *pageEnv) newTab(t *testing.T) *tab {
	tb := &tab{t: t, env: e}
	ctx, cancel := chromedp.NewContext(e.browser, chromedp.WithListener(tb.listen))
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 40*time.Second)
	t.Cleanup(tcancel)
	tb.ctx = tctx
	t.Cleanup(tb.checkClean) // runs before the tab closes
	return tb
}

// listen runs in the tab's message loop: it only records.
func (tb *tab) listen(ev any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		tb.requests = append(tb.requests, ev.Request.URL)
	case *network.EventResponseReceived:
		if ev.Response.Status == 404 || ev.Response.Status >= 500 {
			tb.problems = append(tb.problems, fmt.Sprintf("HTTP %d for %s", ev.Response.Status, ev.Response.URL))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		tb.problems = append(tb.problems, "uncaught exception: "+text)
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			tb.problems = append(tb.problems, "console.error: "+strings.Join(parts, " "))
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Source == log.EntrySourceSecurity || e.Source == log.EntrySourceViolation ||
			strings.Contains(e.Text, "Content Security Policy") || strings.Contains(e.Text, "Content-Security-Policy") {
			tb.problems = append(tb.problems, fmt.Sprintf("browser log (%s/%s): %s", e.Source, e.Level, e.Text))
		}
	}
}

// checkClean fails the test if the page loaded anything from outside its origin, threw, or
// broke its CSP.
func (tb *tab) checkClean() {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.requests) == 0 {
		tb.t.Error("the network listener saw no request at all")
	}
	for _, u := range tb.requests {
		// data: URLs are no request to any origin (Chromium's own date-picker icon is one).
		if !strings.HasPrefix(u, tb.env.admin+"/") && !strings.HasPrefix(u, "data:") {
			tb.t.Errorf("the page made a request outside its origin %s: %s", tb.env.admin, u)
		}
	}
	for _, p := range tb.problems {
		tb.t.Errorf("page problem: %s", p)
	}
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v\n%s", err, tb.state())
	}
}

// js evaluates an expression (through DevTools, so the page's CSP does not apply to it).
func js[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS waits until the expression is true.
func (tb *tab) waitJS(expr, what string) {
	tb.t.Helper()
	var err error
	waiting := true
	defer func() {
		if waiting { // the wait below timed out
			tb.t.Logf("%s: %v\n%s", expr, err, tb.state())
		}
	}()
	testutil.WaitEvery(tb.t, 10*time.Second, 15*time.Millisecond, what, func() bool {
		var ok bool
		ok, err = chromedp.Run(tb.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		return err == nil && ok
	})
	waiting = false
}

// state describes the page for a failure message.
func (tb *tab) state() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? 'focus: ' + document.activeElement.outerHTML.slice(0, 120) +
		'\nopen dialogs: ' + [...document.querySelectorAll('dialog[open]')].map(d => d.id).join(' ') +
		'\npage text:\n' + document.body.innerText.slice(0, 1500) : ''`))
	return s
}

func (tb *tab) open() {
	tb.t.Helper()
	tb.do(chromedp.Navigate(tb.env.admin + "/"))
	tb.waitJS(`document.readyState === 'complete'`, "the page loaded")
}

// visible is a JS expression: the element exists and is rendered.
func visible(id string) string {
	return fmt.Sprintf(`(e => !!e && !e.closest('[hidden]') && e.getClientRects().length > 0)(document.getElementById(%q))`, id)
}

func (tb *tab) signIn(token string) {
	tb.t.Helper()
	tb.waitJS(visible("token"), "the token prompt shows")
	tb.do(chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("signin-submit")))
	tb.waitJS(visible("app")+` && document.getElementById('signin').hidden`, "the page is signed in")
}

func (tb *tab) pick(instance string) {
	tb.t.Helper()
	got := js[string](tb, fmt.Sprintf(`(() => { const s = document.getElementById('instance');
		s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value })()`, instance))
	if got != instance {
		tb.t.Fatalf("the instance picker has no %s", instance)
	}
}

func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	// Let transitions and fonts settle.
	tb.do(chromedp.Sleep(100 * time.Millisecond))
	buf, err := chromedp.Run(tb.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshotDir, name), buf, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

func (tb *tab) rowCount() int {
	return js[int](tb, `document.querySelectorAll('#rows tr').length`)
}

// keyNamesJS is a JS expression: the key names of the table's rows, in order.
const keyNamesJS = `[...document.querySelectorAll('#rows tr')].map(tr => tr.cells[0].querySelector('.key-name').textContent)`

// row returns the cells' text of the row naming the key, and what its name cell says about
// restrictions: the tag's text ("" when there is none), the scopes and allowed addresses
// shown (space-separated), and the whole restrictions text as a person reads it.
func (tb *tab) row(name string) map[string]string {
	tb.t.Helper()
	var r map[string]string
	raw := js[[]byte](tb, fmt.Sprintf(`(() => {
		const tr = %s;
		if (!tr) return null;
		const c = [...tr.cells].map(td => td.textContent.trim());
		const n = tr.cells[0], chips = sel => [...n.querySelectorAll(sel + ' .chip')].map(e => e.textContent).join(' ');
		const tag = n.querySelector('.tag-restricted'), box = n.querySelector('.restrictions');
		return {name: n.querySelector('.key-name').textContent, key: c[1], status: c[2], expires: c[3], created: c[4], lastUsed: c[5],
			trash: String(tr.querySelectorAll('button').length),
			tag: tag && tag.checkVisibility() ? tag.textContent : '', restricted: tr.dataset.restricted || '',
			scopes: chips('.restriction-scopes'), ips: chips('.restriction-ips'),
			restrictions: box && box.checkVisibility() ? box.innerText.replace(/\s+/g, ' ').trim() : ''};
	})()`, rowExpr(name)))
	if err := json.Unmarshal(raw, &r); err != nil {
		tb.t.Fatal(err)
	}
	if r == nil {
		tb.t.Fatalf("no row for %q\n%s", name, tb.state())
	}
	return r
}

func rowExpr(name string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#rows tr')].find(tr => tr.cells[0].querySelector('.key-name').textContent === %q)`, name)
}

// secretLeft reports where the secret is still present in the page, or "".
func (tb *tab) secretLeft(secret string) string {
	return js[string](tb, fmt.Sprintf(`(() => {
		const s = %q, body = s.slice(8);
		if (document.documentElement.outerHTML.includes(body)) return 'outerHTML';
		for (const e of document.querySelectorAll('input, textarea')) if (e.value.includes(body)) return 'the value of #' + e.id;
		for (const st of [sessionStorage, localStorage])
			for (let i = 0; i < st.length; i++) { const k = st.key(i); if (k.includes(body) || st.getItem(k).includes(body)) return 'web storage'; }
		if (document.cookie.includes(body)) return 'a cookie';
		return '';
	})()`, secret))
}

// readSecret waits for the secret field and returns its value.
func (tb *tab) readSecret() string {
	tb.t.Helper()
	tb.waitJS(visible("secret")+` && document.getElementById('secret').value !== ''`, "the secret shows")
	return js[string](tb, `document.getElementById('secret').value`)
}

func checkSecretFormat(t *testing.T, secret, prefix string) {
	t.Helper()
	if !regexp.MustCompile(`^` + prefix + `[0-9A-Za-z]{38}$`).MatchString(secret) {
		t.Fatalf("the secret %q is not %s + 38 base62 characters", secret, prefix)
	}
	if _, err := apikey.Parse(secret); err != nil || apikey.Checksum(secret[:40]) != secret[40:] {
		t.Fatalf("the secret fails its checksum: %v", err)
	}
}

// ---- Subtests ----

func (e *pageEnv) testHeaders(t *testing.T) {
	resp, err := client.Get(e.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"frame-ancestors 'none'", "default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("the CSP of / lacks %s: %q", want, csp)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("the CSP allows inline code: %q", csp)
	}
	// No inline script, style element or attribute, event-handler attribute, or outside URL in
	// the markup.
	html := string(body)
	for _, tag := range regexp.MustCompile(`(?is)<script\b[^>]*>.*?</script>`).FindAllString(html, -1) {
		if !regexp.MustCompile(`(?is)^<script\b[^>]*\bsrc="[^":]+"[^>]*>\s*</script>$`).MatchString(tag) {
			t.Errorf("index.html has an inline or outside script: %s", tag)
		}
	}
	for _, re := range []string{`(?i)<style\b`, `(?i)\sstyle=`, `(?i)\son[a-z]+=`, `(?i)(src|href|action)="?(https?:)?//`} {
		if m := regexp.MustCompile(re).FindString(html); m != "" {
			t.Errorf("index.html has %q", m)
		}
	}
	for _, f := range []string{"/app.js", "/style.css", "/favicon.svg"} {
		r, err := client.Get(e.admin + f)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("GET %s: %d", f, r.StatusCode)
		}
	}
}

// The console watch must see a CSP violation, or its silence in the other tests means
// nothing.
func (e *pageEnv) testViolationDetector(t *testing.T) {
	tb := e.newTab(t)
	tb.open()
	js[chromedp.Void](tb, `(() => { const s = document.createElement('script'); s.textContent = 'window.x = 1'; document.body.append(s); })()`)
	testutil.WaitEvery(t, 5*time.Second, 20*time.Millisecond, "the console watch to see the inline script break the CSP", func() bool {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		if len(tb.problems) == 0 {
			return false
		}
		t.Logf("seen: %s", tb.problems[0])
		tb.problems = nil // expected here: keep the tab's own check green
		return true
	})
}

func (e *pageEnv) testCreateUseRevoke(t *testing.T) {
	e.createKey(t, "acme-sandbox", "CI pipeline", nil)
	e.createKey(t, "acme-sandbox", "Staging worker", map[string]any{"expires_at": time.Now().UTC().AddDate(0, 3, 0).Format("2006-01-02")})
	e.createKey(t, "acme-sandbox", "Billing worker", map[string]any{
		"scopes": []string{"charges:read", "charges:write"}, "allowed_ips": []string{"10.0.0.0/8"}})
	old := e.createKey(t, "acme-sandbox", "Old laptop", nil)
	if st := e.call(t, "DELETE", "/v1/instances/acme-sandbox/keys/"+old.ID, fullToken, nil, nil); st != 200 {
		t.Fatalf("revoke: %d", st)
	}

	tb := e.newTab(t)
	tb.open()
	if n := js[int](tb, `sessionStorage.length + localStorage.length`); n != 0 {
		t.Fatalf("web storage holds %d items before sign-in", n)
	}
	tb.signIn(fullToken)
	tb.waitJS(`document.getElementById('whoami').textContent.includes('full-admin')`, "the token's name shows")
	// The token is in sessionStorage only.
	if !js[bool](tb, fmt.Sprintf(`Object.values(sessionStorage).includes(%q) && localStorage.length === 0 && document.cookie === '' && !location.href.includes(%q)`, fullToken, fullToken)) {
		t.Fatal("the admin token is not (only) in sessionStorage")
	}

	// Create is shown but disabled until an instance is picked.
	if !js[bool](tb, visible("create")+` && document.getElementById('create').disabled`) {
		t.Fatal("Create should show, disabled, with no instance selected")
	}
	if js[int](tb, `document.getElementById('instance').options.length`) != 3 ||
		!js[bool](tb, `[...document.getElementById('instance').options].some(o => o.textContent.includes('Acme (production)') && o.textContent.includes('production'))`) {
		t.Fatal("the picker should list both instances with name and environment")
	}
	tb.pick("acme-sandbox")
	tb.waitJS(`!document.getElementById('create').disabled`, "Create is enabled")
	tb.waitJS(rowExpr("Old laptop"), "the list shows")

	// The dialog.
	tb.do(chromedp.Click(chromedp.ID("create")))
	tb.waitJS(`document.getElementById('create-dialog').open && document.activeElement.id === 'key-name'`, "the dialog opens with focus on Key name")
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format("2006-01-02")
	if min := js[string](tb, `document.getElementById('key-expiry').min`); min != tomorrow {
		t.Errorf("the expiration picker's minimum is %q, want tomorrow in UTC %s", min, tomorrow)
	}
	if !js[bool](tb, `document.querySelector('label[for=key-expiry]').textContent.includes('UTC')`) {
		t.Error("the expiration date is not labelled as UTC")
	}
	// An API error shows in the dialog: an expiry of today passes the browser but not the API.
	today := time.Now().UTC().Format("2006-01-02")
	tb.do(chromedp.SendKeys(chromedp.ID("key-name"), "Production server"),
		chromedp.SetValue(chromedp.ID("key-expiry"), today),
		chromedp.Click(chromedp.ID("create-submit")))
	tb.waitJS(visible("create-error")+` && document.getElementById('create-error').textContent.includes('tomorrow')`, "the invalid_expiration message shows in the dialog")
	tb.screenshot("create-dialog-error.png")

	expires := time.Now().UTC().AddDate(0, 1, 0).Format("2006-01-02")
	tb.do(chromedp.SetValue(chromedp.ID("key-expiry"), expires), chromedp.Click(chromedp.ID("create-submit")))
	secret := tb.readSecret()
	checkSecretFormat(t, secret, "sk_test_")
	if !js[bool](tb, `document.getElementById('secret').readOnly && document.getElementById('secret-warning').textContent.includes('not show it again') && `+visible("create-close")) {
		t.Error("the secret field should be read-only, with the warning and Close")
	}
	tb.screenshot("create-secret.png")

	// Escape does not close a dialog showing a secret.
	tb.do(chromedp.KeyEvent(kb.Escape))
	time.Sleep(150 * time.Millisecond)
	if !js[bool](tb, `document.getElementById('create-dialog').open && !!document.getElementById('secret')`) {
		t.Fatal("Escape closed the dialog showing the secret")
	}

	// Copy: the clipboard gets the secret, or the page says copying failed.
	for _, name := range []string{"clipboard-write", "clipboard-read"} {
		chromedp.CallBrowser(tb.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:    browser.PermissionSettingGranted, Origin: e.admin})
	}
	tb.do(chromedp.Click(chromedp.ID("copy")))
	tb.waitJS(`document.getElementById('copy-status').textContent !== ''`, "the copy button reports")
	status := js[string](tb, `document.getElementById('copy-status').textContent`)
	switch {
	case status == "Copied":
		clip, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Logf("copy reported Copied; reading the clipboard back failed: %v", err)
		} else if clip != secret {
			t.Errorf("the clipboard holds %q, not the secret", clip)
		}
	case strings.Contains(status, "Ctrl+C"):
		t.Logf("copy reported failure, as it should when the clipboard is unavailable: %s", status)
	default:
		t.Errorf("copy status %q", status)
	}

	tb.do(chromedp.Click(chromedp.ID("create-close")))
	tb.waitJS(`!document.getElementById('create-dialog').open`, "the dialog closes")
	if id := js[string](tb, `document.activeElement.id`); id != "create" {
		t.Errorf("focus went to %q after Close, want the Create button", id)
	}
	if where := tb.secretLeft(secret); where != "" {
		t.Fatalf("after Close the secret is still in %s", where)
	}

	// The new row.
	tb.waitJS(rowExpr("Production server"), "the new key's row shows")
	r := tb.row("Production server")
	if r["key"] != secret[:14]+"…" || r["status"] != "active" || r["expires"] != expires || r["lastUsed"] != "Never" || r["trash"] != "1" {
		t.Fatalf("row %v: want key %s…, active, expires %s, last used Never, a trash button", r, secret[:14], expires)
	}
	if !regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$`).MatchString(r["created"]) {
		t.Errorf("Created shows %q", r["created"])
	}
	if !js[bool](tb, `[...document.querySelectorAll('#keys th')].filter(th => th.textContent.includes('UTC')).length >= 3`) {
		t.Error("the date columns do not say UTC")
	}
	if rr := tb.row("Old laptop"); rr["status"] != "revoked" || rr["trash"] != "0" {
		t.Errorf("a revoked key's row: %v", rr)
	}
	if rr := tb.row("Billing worker"); rr["tag"] != "Restricted" || rr["restrictions"] != "Scopes: charges:read charges:write Allowed IPs: 10.0.0.0/8" {
		t.Errorf("a restricted key's row: %v", rr)
	}
	for _, name := range []string{"Production server", "CI pipeline"} {
		if rr := tb.row(name); rr["tag"] != "" || rr["restricted"] != "" || rr["restrictions"] != "" || rr["name"] != name {
			t.Errorf("an unrestricted key's row shows restrictions: %v", rr)
		}
	}

	// The key works through the gateway.
	if st, code := e.gatewayStatus(t, secret); st != 200 {
		t.Fatalf("the new key is refused by the gateway: %d %s", st, code)
	}

	// Revoke through the dialog.
	tb.do(chromedp.Click(chromedp.CSS(`button[aria-label="Revoke Production server"]`)))
	tb.waitJS(`document.getElementById('revoke-dialog').open`, "the revoke dialog opens")
	if name := js[string](tb, `document.getElementById('revoke-name').textContent`); name != "Production server" {
		t.Fatalf("the revoke dialog names %q", name)
	}
	if js[string](tb, `document.getElementById('revoke-title').textContent`) != "Revoke API key?" ||
		!js[bool](tb, `document.getElementById('revoke-dialog').contains(document.activeElement)`) {
		t.Error("the revoke dialog's title or focus is wrong")
	}
	tb.screenshot("revoke-confirm.png")
	tb.do(chromedp.Click(chromedp.ID("revoke-submit")))
	tb.waitJS(`!document.getElementById('revoke-dialog').open`, "the revoke dialog closes")
	tb.waitJS(rowExpr("Production server")+`.dataset.status === 'revoked'`, "the row says revoked")
	// The page says how far the revocation went: one gateway (the file store's), confirmed.
	tb.waitJS(`!document.getElementById('notice').hidden`, "the propagation notice shows")
	if n := js[string](tb, `document.getElementById('notice').textContent`); n != "Revoked — confirmed by 1 of 1 gateway." {
		t.Errorf("the propagation notice says %q", n)
	}
	if r := tb.row("Production server"); r["status"] != "revoked" || r["trash"] != "0" {
		t.Fatalf("after revoking, the row is %v", r)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("keys-list.png")

	st, code := 0, ""
	defer func() {
		if code != "api_key_revoked" { // the wait below timed out
			t.Logf("the gateway still answers %d %s for the revoked key", st, code)
		}
	}()
	testutil.WaitFor(t, 2*time.Second, "the gateway to refuse the revoked key", func() bool {
		st, code = e.gatewayStatus(t, secret)
		return st == 401 && code == "api_key_revoked"
	})
}

func (e *pageEnv) testReadOnly(t *testing.T) {
	e.createKey(t, "acme-sandbox", "Visible to readers", nil)
	tb := e.newTab(t)
	tb.open()
	tb.signIn(readToken)
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Visible to readers"), "the list shows")
	if !js[bool](tb, `document.getElementById('create').hidden && !`+visible("create")) {
		t.Error("a read-only token sees the Create button")
	}
	if n := js[int](tb, `document.querySelectorAll('#rows tr[data-status=active]').length`); n == 0 {
		t.Fatal("no active key in the list")
	}
	if n := js[int](tb, `document.querySelectorAll('#rows button, button[aria-label^="Revoke "]').length`); n != 0 {
		t.Errorf("a read-only token sees %d trash buttons", n)
	}
	if js[bool](tb, visible("locked")) {
		t.Error("a read-only token sees the locked state")
	}
}

func (e *pageEnv) testCreateOnly(t *testing.T) {
	tb := e.newTab(t)
	tb.open()
	tb.signIn(createToken)
	tb.waitJS(visible("locked"), "the locked state shows")
	locked := js[string](tb, `document.getElementById('locked').textContent.trim()`)
	if locked != "You don't have access to API keys. Ask an admin for the apiKey.read permission." {
		t.Errorf("locked text %q", locked)
	}
	if !js[bool](tb, visible("create")+` && document.getElementById('create').disabled && !`+visible("keys")) {
		t.Fatal("a create-only token should see Create (disabled until an instance is picked) and no table")
	}
	tb.pick("acme-sandbox")
	tb.waitJS(`!document.getElementById('create').disabled`, "Create is enabled")
	if !js[bool](tb, visible("locked")+` && !`+visible("keys")) {
		t.Fatal("after picking an instance a create-only token should still see the locked list")
	}
	tb.do(chromedp.Click(chromedp.ID("create")),
		chromedp.SendKeys(chromedp.ID("key-name"), "Made without read"),
		chromedp.Click(chromedp.ID("create-submit")))
	secret := tb.readSecret()
	checkSecretFormat(t, secret, "sk_test_")
	tb.do(chromedp.Click(chromedp.ID("create-close")))
	tb.waitJS(`!document.getElementById('create-dialog').open`, "the dialog closes")
	if where := tb.secretLeft(secret); where != "" {
		t.Fatalf("after Close the secret is still in %s", where)
	}
	if !js[bool](tb, visible("locked")) {
		t.Error("the locked state went away")
	}
	tb.mu.Lock()
	for _, u := range tb.requests {
		if strings.Contains(u, "/keys?") {
			t.Errorf("a token without apiKey.read made the page list keys: %s", u)
		}
	}
	tb.mu.Unlock()
	if st, _ := e.gatewayStatus(t, secret); st != 200 {
		t.Errorf("the key made by the create-only token does not work: %d", st)
	}
}

func (e *pageEnv) testInstanceOnly(t *testing.T) {
	tb := e.newTab(t)
	tb.open()
	tb.signIn(instanceToken)
	tb.waitJS(visible("locked"), "the locked state shows")
	tb.pick("acme-sandbox")
	if !js[bool](tb, visible("locked")+` && !`+visible("create")+` && !`+visible("keys")) {
		t.Fatal("an instance.manage-only token should see the locked state, no Create and no table")
	}
	if js[bool](tb, `document.getElementById('create').hidden`) != true {
		t.Error("the Create button is not hidden")
	}
	tb.screenshot("locked.png")
}

func (e *pageEnv) testTokens(t *testing.T) {
	var bad struct {
		Error struct{ Message string } `json:"error"`
	}
	if st := e.call(t, "GET", "/v1/me", "not-a-valid-admin-token", nil, &bad); st != 401 || bad.Error.Message == "" {
		t.Fatalf("GET /v1/me with a bad token: %d", st)
	}

	tb := e.newTab(t)
	tb.open()
	tb.do(chromedp.SendKeys(chromedp.ID("token"), "not-a-valid-admin-token"), chromedp.Click(chromedp.ID("signin-submit")))
	tb.waitJS(visible("signin-error")+` && `+visible("token"), "the prompt shows an error")
	if msg := js[string](tb, `document.getElementById('signin-error').textContent`); !strings.Contains(msg, bad.Error.Message) {
		t.Errorf("the prompt says %q, not the API's message %q", msg, bad.Error.Message)
	}
	if n := js[int](tb, `sessionStorage.length`); n != 0 {
		t.Errorf("a refused token left %d items in sessionStorage", n)
	}
	if js[bool](tb, visible("app")) {
		t.Error("the key list shows with a refused token")
	}
	tb.screenshot("signin-error.png")

	// A token that goes stale mid-session brings the prompt back.
	tb.signIn(fullToken)
	js[chromedp.Void](tb, fmt.Sprintf(`for (const k of Object.keys(sessionStorage)) if (sessionStorage.getItem(k) === %q) sessionStorage.setItem(k, 'stale-admin-token-000000000')`, fullToken))
	tb.pick("acme-prod")
	tb.waitJS(visible("signin-error")+` && `+visible("token")+` && !`+visible("app"), "a stale token brings the prompt back")
	if msg := js[string](tb, `document.getElementById('signin-error').textContent`); !strings.Contains(msg, bad.Error.Message) {
		t.Errorf("after a stale token the prompt says %q", msg)
	}

	// Sign out.
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.do(chromedp.Click(chromedp.ID("signout")))
	tb.waitJS(visible("token")+` && !`+visible("app"), "sign out shows the prompt")
	if n := js[int](tb, `sessionStorage.length`); n != 0 {
		t.Errorf("sign out left %d items in sessionStorage", n)
	}
	if js[bool](tb, visible("signin-error")) {
		t.Error("sign out shows an error")
	}
	// A reload stays signed out.
	tb.do(chromedp.Reload())
	tb.waitJS(`document.readyState === 'complete' && `+visible("token"), "the prompt after reload")
}

// A request that never reaches the API shows an error banner; the next good answer clears it.
func (e *pageEnv) testNetworkError(t *testing.T) {
	e.createKey(t, "acme-sandbox", "Network check", nil)
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	// Every key-list request fails as if the connection were refused.
	ictx, stop := context.WithCancel(tb.ctx)
	paused := chromedp.Events(ictx, fetch.RequestPaused)
	if _, err := chromedp.Call(tb.ctx, fetch.Enable, fetch.EnableParams{
		Patterns: []*fetch.RequestPattern{{URLPattern: "*/v1/instances/*/keys*"}}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range paused {
			if err != nil {
				return
			}
			chromedp.Call(tb.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionRefused})
		}
	}()
	tb.pick("acme-sandbox")
	tb.waitJS(visible("banner")+` && document.getElementById('banner-text').textContent.includes('Could not reach the admin API')`, "the banner reports the network error")
	if _, err := chromedp.Call(tb.ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	tb.pick("acme-prod")
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Network check")+` && !`+visible("banner"), "the list shows and the banner goes")
}

func (e *pageEnv) testKeyboard(t *testing.T) {
	e.createKey(t, "acme-sandbox", "Keyboard neighbour", nil)
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.waitJS(`!document.getElementById('create').disabled && document.querySelectorAll('#rows tr').length > 0`, "the list shows")

	// Enter on the Create button opens the dialog with focus inside; Escape closes it and
	// focus returns to the button.
	tb.do(chromedp.Focus(chromedp.ID("create")), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`document.getElementById('create-dialog').open && document.activeElement.id === 'key-name'`, "the dialog opens with focus on Key name")
	tb.do(chromedp.KeyEvent("draft"), chromedp.KeyEvent(kb.Escape))
	tb.waitJS(`!document.getElementById('create-dialog').open`, "Escape closes the dialog")
	if id := js[string](tb, `document.activeElement.id`); id != "create" {
		t.Fatalf("after Escape focus is on %q, want the Create button", id)
	}

	// The whole create flow by keyboard: Enter submits, Escape leaves the secret alone,
	// Enter on Close closes.
	tb.do(chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`document.getElementById('create-dialog').open && document.activeElement.id === 'key-name' && document.getElementById('key-name').value === ''`, "the dialog opens afresh")
	tb.do(chromedp.KeyEvent("Keyboard key"), chromedp.KeyEvent(kb.Enter))
	secret := tb.readSecret()
	tb.do(chromedp.KeyEvent(kb.Escape))
	time.Sleep(150 * time.Millisecond)
	if !js[bool](tb, `document.getElementById('create-dialog').open && document.getElementById('secret').value !== ''`) {
		t.Fatal("Escape closed the dialog showing a secret")
	}
	tb.do(chromedp.Focus(chromedp.ID("create-close")), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`!document.getElementById('create-dialog').open && document.activeElement.id === 'create'`, "Close returns focus to Create")
	if where := tb.secretLeft(secret); where != "" {
		t.Fatalf("after Close the secret is still in %s", where)
	}

	// The revoke dialog: Enter on the trash button, focus inside, Escape cancels, focus back.
	tb.waitJS(`document.querySelector('button[aria-label="Revoke Keyboard key"]')`, "the new row has a trash button")
	tb.do(chromedp.Focus(chromedp.CSS(`button[aria-label="Revoke Keyboard key"]`)), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`document.getElementById('revoke-dialog').open && document.getElementById('revoke-dialog').contains(document.activeElement)`, "the revoke dialog opens with focus inside")
	tb.do(chromedp.KeyEvent(kb.Escape))
	tb.waitJS(`!document.getElementById('revoke-dialog').open && document.activeElement.getAttribute('aria-label') === 'Revoke Keyboard key'`, "Escape cancels and focus returns to the trash button")
	if r := tb.row("Keyboard key"); r["status"] != "active" {
		t.Fatalf("Escape revoked the key: %v", r)
	}
}

func (e *pageEnv) testPaging(t *testing.T) {
	const n = 105
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			b, _ := json.Marshal(map[string]string{"name": fmt.Sprintf("Paging key %03d", i)})
			req, _ := http.NewRequest("POST", e.admin+"/v1/instances/acme-prod/keys", bytes.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+fullToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				errs <- fmt.Errorf("create: HTTP %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-prod")
	tb.waitJS(`document.querySelectorAll('#rows tr').length === 100`, "the first page shows 100 rows")
	if !js[bool](tb, visible("pager")+` && !document.getElementById('next').disabled && document.getElementById('prev').disabled`) {
		t.Fatal("the pager should show, with Next enabled and Previous disabled")
	}
	if !js[bool](tb, `[...document.querySelectorAll('#rows tr')].every(tr => tr.cells[1].textContent.startsWith('sk_live_'))`) {
		t.Error("production keys should show sk_live_ prefixes")
	}
	first := js[[]string](tb, keyNamesJS)
	tb.do(chromedp.Click(chromedp.ID("next")))
	tb.waitJS(`document.querySelectorAll('#rows tr').length === 5`, "Next shows the last 5 rows")
	second := js[[]string](tb, keyNamesJS)
	seen := map[string]bool{}
	for _, s := range append(first, second...) {
		if seen[s] {
			t.Errorf("%s shows on both pages", s)
		}
		seen[s] = true
	}
	if len(seen) != n {
		t.Errorf("the two pages show %d distinct keys, want %d", len(seen), n)
	}
	if !js[bool](tb, `document.getElementById('next').disabled && !document.getElementById('prev').disabled`) {
		t.Error("on the last page Next should be disabled and Previous enabled")
	}
	tb.do(chromedp.Click(chromedp.ID("prev")))
	tb.waitJS(`document.querySelectorAll('#rows tr').length === 100`, "Previous shows the first page again")
}

// ---- Restricted keys ----

// getKey reads a key back through the admin API.
func (e *pageEnv) getKey(t *testing.T, instance, id string) apiKey {
	t.Helper()
	var k apiKey
	if st := e.call(t, "GET", "/v1/instances/"+instance+"/keys/"+id, fullToken, nil, &k); st != 200 {
		t.Fatalf("GET key %s: HTTP %d", id, st)
	}
	return k
}

// keysNamed returns the instance's keys with that name, through the admin API.
func (e *pageEnv) keysNamed(t *testing.T, instance, name string) []apiKey {
	t.Helper()
	var list struct{ Data []apiKey }
	if st := e.call(t, "GET", "/v1/instances/"+instance+"/keys?limit=1000", fullToken, nil, &list); st != 200 {
		t.Fatalf("listing keys: HTTP %d", st)
	}
	var out []apiKey
	for _, k := range list.Data {
		if k.Name == name {
			out = append(out, k)
		}
	}
	return out
}

// onlyKeyNamed returns the one key with that name.
func (e *pageEnv) onlyKeyNamed(t *testing.T, instance, name string) apiKey {
	t.Helper()
	ks := e.keysNamed(t, instance, name)
	if len(ks) != 1 {
		t.Fatalf("%d keys named %q, want 1", len(ks), name)
	}
	return e.getKey(t, instance, ks[0].ID)
}

func equalList(got, want []string) bool {
	if (got == nil) != (want == nil) || len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// closeSecret closes the dialog showing a secret and checks the secret left the page.
func (tb *tab) closeSecret(secret string) {
	tb.t.Helper()
	tb.do(chromedp.Click(chromedp.ID("create-close")))
	tb.waitJS(`!document.getElementById('create-dialog').open`, "the dialog closes")
	if where := tb.secretLeft(secret); where != "" {
		tb.t.Fatalf("after Close the secret is still in %s", where)
	}
}

func (e *pageEnv) testCreateRestricted(t *testing.T) {
	e.createKey(t, "acme-sandbox", "Unrestricted neighbour", nil)
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Unrestricted neighbour"), "the list shows")
	if r := tb.row("Unrestricted neighbour"); r["tag"] != "" || r["restricted"] != "" || r["restrictions"] != "" ||
		js[string](tb, rowExpr("Unrestricted neighbour")+`.cells[0].textContent`) != "Unrestricted neighbour" {
		t.Errorf("an unrestricted key shows a marker: %v", r)
	}

	tb.do(chromedp.Click(chromedp.ID("create")))
	tb.waitJS(`document.getElementById('create-dialog').open && document.activeElement.id === 'key-name'`, "the dialog opens with focus on Key name")
	// The fields are labelled, optional, and their hints are their descriptions.
	for _, f := range []struct{ id, label, hint string }{
		{"key-scopes", "Scopes", "Leave empty for full access."},
		{"key-ips", "Allowed IP addresses", "Leave empty to allow any address."},
	} {
		got := js[[]string](tb, fmt.Sprintf(`(() => { const i = document.getElementById(%q);
			const hint = (i.getAttribute('aria-describedby') || '').split(' ').map(id => document.getElementById(id)).filter(Boolean).map(e => e.textContent).join(' ');
			return [i.labels.length === 1 ? i.labels[0].textContent.replace(/\s+/g, ' ').trim() : '', hint, String(i.required), i.value]; })()`, f.id))
		if got[0] != f.label+" optional" || !strings.Contains(got[1], f.hint) || got[2] != "false" || got[3] != "" {
			t.Errorf("#%s: label %q, description %q, required %s, value %q; want label %q and a hint saying %q", f.id, got[0], got[1], got[2], got[3], f.label, f.hint)
		}
	}

	// Scopes typed with commas and spaces; addresses pasted one per line (inserted as text, the
	// way a paste arrives).
	tb.do(chromedp.SendKeys(chromedp.ID("key-name"), "Charges reader"),
		chromedp.SendKeys(chromedp.ID("key-scopes"), "charges:read,  customers:*"),
		chromedp.Focus(chromedp.ID("key-ips")))
	if _, err := chromedp.Call(tb.ctx, input.InsertText, input.InsertTextParams{Text: "203.0.113.7\n10.0.0.0/8\n"}); err != nil {
		t.Fatal(err)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("create-restricted.png")
	tb.do(chromedp.Click(chromedp.ID("create-submit")))
	secret := tb.readSecret()
	checkSecretFormat(t, secret, "sk_test_")
	tb.closeSecret(secret)
	if id := js[string](tb, `document.activeElement.id`); id != "create" {
		t.Errorf("focus went to %q after Close, want the Create button", id)
	}

	tb.waitJS(rowExpr("Charges reader"), "the new key's row shows")
	r := tb.row("Charges reader")
	if r["tag"] != "Restricted" || r["restricted"] != "true" || r["scopes"] != "charges:read customers:*" || r["ips"] != "203.0.113.7 10.0.0.0/8" ||
		r["restrictions"] != "Scopes: charges:read customers:* Allowed IPs: 203.0.113.7 10.0.0.0/8" {
		t.Errorf("the restricted key's row: %v", r)
	}
	// The restrictions are text in the name cell, so its accessible content carries them.
	if !js[bool](tb, rowExpr("Charges reader")+`.cells[0].innerText.includes('Allowed IPs:')`) {
		t.Error("the restrictions are not part of the name cell's text")
	}
	if r := tb.row("Unrestricted neighbour"); r["tag"] != "" || r["restrictions"] != "" {
		t.Errorf("after a restricted key was made, the unrestricted one shows %v", r)
	}

	k := e.onlyKeyNamed(t, "acme-sandbox", "Charges reader")
	if !equalList(k.Scopes, []string{"charges:read", "customers:*"}) || !equalList(k.AllowedIPs, []string{"203.0.113.7", "10.0.0.0/8"}) {
		t.Errorf("the API has scopes %q and allowed_ips %q", k.Scopes, k.AllowedIPs)
	}
	if !strings.HasPrefix(secret, k.Prefix) {
		t.Errorf("the key read back (%s) is not the one shown", k.Prefix)
	}
	if n := e.onlyKeyNamed(t, "acme-sandbox", "Unrestricted neighbour"); n.Scopes != nil || n.AllowedIPs != nil {
		t.Errorf("the unrestricted key has scopes %q, allowed_ips %q", n.Scopes, n.AllowedIPs)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)

	// A key made with only one of the two restrictions shows only that one; empty fields
	// are sent as nothing (null).
	tb.do(chromedp.Click(chromedp.ID("create")))
	tb.waitJS(`document.getElementById('create-dialog').open && document.getElementById('key-scopes').value === ''`, "the dialog opens afresh")
	tb.do(chromedp.SendKeys(chromedp.ID("key-name"), "Office only"),
		chromedp.SendKeys(chromedp.ID("key-ips"), " 2001:db8::/32 "),
		chromedp.SendKeys(chromedp.ID("key-scopes"), "   "),
		chromedp.Click(chromedp.ID("create-submit")))
	tb.closeSecret(tb.readSecret())
	tb.waitJS(rowExpr("Office only"), "the second key's row shows")
	if r := tb.row("Office only"); r["tag"] != "Restricted" || r["restrictions"] != "Allowed IPs: 2001:db8::/32" {
		t.Errorf("a key with allowed addresses only: %v", r)
	}
	if k := e.onlyKeyNamed(t, "acme-sandbox", "Office only"); k.Scopes != nil || !equalList(k.AllowedIPs, []string{"2001:db8::/32"}) {
		t.Errorf("the API has scopes %q and allowed_ips %q, want null and [2001:db8::/32]", k.Scopes, k.AllowedIPs)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("keys-restricted.png")
}

// The API's refusal of a bad scope or address shows in the dialog, which stays open with what
// was typed; nothing is created.
func (e *pageEnv) testRestrictionRefused(t *testing.T) {
	// What the API says about each bad value, asked directly.
	apiMessage := func(body map[string]any) string {
		var bad struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		body["name"] = "Never created"
		if st := e.call(t, "POST", "/v1/instances/acme-sandbox/keys", fullToken, body, &bad); st != 400 || bad.Error.Code != "invalid_request" || bad.Error.Message == "" {
			t.Fatalf("the API answers %d %+v to %v, want 400 invalid_request", st, bad.Error, body)
		}
		return bad.Error.Message
	}
	scopeMsg := apiMessage(map[string]any{"scopes": []string{"charges:read", "Charges:Write"}})
	ipMsg := apiMessage(map[string]any{"allowed_ips": []string{"10.0.0.300"}})

	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.waitJS(`!document.getElementById('create').disabled && document.querySelectorAll('#rows tr').length > 0`, "the list shows")
	tb.do(chromedp.Click(chromedp.ID("create")))
	tb.waitJS(`document.getElementById('create-dialog').open`, "the dialog opens")

	values := `[...['key-name', 'key-scopes', 'key-ips']].map(id => document.getElementById(id).value).join('|')`
	invalid := `[...['key-name', 'key-scopes', 'key-ips']].filter(id => document.getElementById(id).getAttribute('aria-invalid') === 'true').join(' ')`
	errorShows := func(msg, what string) {
		t.Helper()
		tb.waitJS(visible("create-error")+fmt.Sprintf(` && document.getElementById('create-error').textContent.includes(%q)`, msg)+
			` && !document.getElementById('create-submit').disabled`, what)
		if !js[bool](tb, `document.getElementById('create-dialog').open && `+visible("create-step")+` && !document.getElementById('secret')`) {
			t.Fatalf("after the refusal the dialog is not showing the form\n%s", tb.state())
		}
	}

	tb.do(chromedp.SendKeys(chromedp.ID("key-name"), "Bad restrictions"),
		chromedp.SendKeys(chromedp.ID("key-scopes"), "charges:read Charges:Write"),
		chromedp.SendKeys(chromedp.ID("key-ips"), "203.0.113.7"),
		chromedp.Click(chromedp.ID("create-submit")))
	errorShows(scopeMsg, "the API's message about the scope shows in the dialog")
	if v := js[string](tb, values); v != "Bad restrictions|charges:read Charges:Write|203.0.113.7" {
		t.Errorf("the fields hold %q after the refusal", v)
	}
	if v := js[string](tb, invalid); v != "key-scopes" {
		t.Errorf("fields marked invalid: %q, want key-scopes", v)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("create-restriction-error.png")

	// Fix the scope, break the address.
	tb.do(chromedp.SetValue(chromedp.ID("key-scopes"), "charges:read charges:write"),
		chromedp.SetValue(chromedp.ID("key-ips"), "203.0.113.7, 10.0.0.300"),
		chromedp.Click(chromedp.ID("create-submit")))
	errorShows(ipMsg, "the API's message about the address shows in the dialog")
	if v := js[string](tb, values); v != "Bad restrictions|charges:read charges:write|203.0.113.7, 10.0.0.300" {
		t.Errorf("the fields hold %q after the refusal", v)
	}
	if v := js[string](tb, invalid); v != "key-ips" {
		t.Errorf("fields marked invalid: %q, want key-ips", v)
	}
	if ks := e.keysNamed(t, "acme-sandbox", "Bad restrictions"); len(ks) != 0 {
		t.Fatalf("a refused create made %d keys", len(ks))
	}
	if ks := e.keysNamed(t, "acme-sandbox", "Never created"); len(ks) != 0 {
		t.Fatalf("the API made %d keys from refused bodies", len(ks))
	}

	// Escape still closes the form (no secret shown); opening again starts empty.
	tb.do(chromedp.Focus(chromedp.ID("key-ips")), chromedp.KeyEvent(kb.Escape))
	tb.waitJS(`!document.getElementById('create-dialog').open`, "Escape closes the dialog")
	tb.do(chromedp.Click(chromedp.ID("create")))
	tb.waitJS(`document.getElementById('create-dialog').open`, "the dialog opens again")
	if v := js[string](tb, values); v != "||" || js[bool](tb, visible("create-error")) || js[string](tb, invalid) != "" {
		t.Errorf("the reopened dialog holds %q, error shown %v, invalid %q", v, js[bool](tb, visible("create-error")), js[string](tb, invalid))
	}

	// Corrected values go through.
	tb.do(chromedp.SendKeys(chromedp.ID("key-name"), "Bad restrictions"),
		chromedp.SendKeys(chromedp.ID("key-scopes"), "charges:read charges:write"),
		chromedp.SendKeys(chromedp.ID("key-ips"), "203.0.113.7, 10.0.0.30"),
		chromedp.Click(chromedp.ID("create-submit")))
	tb.closeSecret(tb.readSecret())
	k := e.onlyKeyNamed(t, "acme-sandbox", "Bad restrictions")
	if !equalList(k.Scopes, []string{"charges:read", "charges:write"}) || !equalList(k.AllowedIPs, []string{"203.0.113.7", "10.0.0.30"}) {
		t.Errorf("the API has scopes %q and allowed_ips %q", k.Scopes, k.AllowedIPs)
	}
}

// Creating a restricted key with the keyboard only: Tab goes name, expiration, scopes,
// addresses, Cancel, Create key; Enter in a field submits.
func (e *pageEnv) testKeyboardRestricted(t *testing.T) {
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.waitJS(`!document.getElementById('create').disabled && document.querySelectorAll('#rows tr').length > 0`, "the list shows")

	tb.do(chromedp.Focus(chromedp.ID("create")), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`document.getElementById('create-dialog').open && document.activeElement.id === 'key-name'`, "the dialog opens with focus on Key name")
	// The Tab order, from Key name (the date field may take several stops: its parts).
	var order []string
	for i := 0; i < 12 && (len(order) == 0 || order[len(order)-1] != "create-submit"); i++ {
		tb.do(chromedp.KeyEvent(kb.Tab))
		id := js[string](tb, `document.activeElement.id`)
		if len(order) == 0 || order[len(order)-1] != id {
			order = append(order, id)
		}
	}
	if got := strings.Join(order, " "); got != "key-expiry key-scopes key-ips create-cancel create-submit" {
		t.Fatalf("the Tab order after Key name is %q", got)
	}
	// Shift+Tab goes back: Cancel, addresses, scopes.
	for _, want := range []string{"create-cancel", "key-ips", "key-scopes"} {
		tb.do(chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
		if id := js[string](tb, `document.activeElement.id`); id != want {
			t.Fatalf("Shift+Tab went to %q, want %q", id, want)
		}
	}
	// Back to the name, then the whole form by typing.
	tb.do(chromedp.Focus(chromedp.ID("key-name")), chromedp.KeyEvent("Keyboard restricted"))
	for tries := 0; js[string](tb, `document.activeElement.id`) != "key-scopes" && tries < 6; tries++ {
		tb.do(chromedp.KeyEvent(kb.Tab))
	}
	tb.do(chromedp.KeyEvent("customers:read, refunds:*"), chromedp.KeyEvent(kb.Tab))
	if id := js[string](tb, `document.activeElement.id`); id != "key-ips" {
		t.Fatalf("Tab from Scopes went to %q", id)
	}
	tb.do(chromedp.KeyEvent("198.51.100.0/24 ::1"), chromedp.KeyEvent(kb.Enter))
	secret := tb.readSecret()
	tb.do(chromedp.KeyEvent(kb.Escape))
	time.Sleep(150 * time.Millisecond)
	if !js[bool](tb, `document.getElementById('create-dialog').open && document.getElementById('secret').value !== ''`) {
		t.Fatal("Escape closed the dialog showing a secret")
	}
	tb.do(chromedp.Focus(chromedp.ID("create-close")), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`!document.getElementById('create-dialog').open && document.activeElement.id === 'create'`, "Close returns focus to Create")
	if where := tb.secretLeft(secret); where != "" {
		t.Fatalf("after Close the secret is still in %s", where)
	}
	tb.waitJS(rowExpr("Keyboard restricted"), "the new key's row shows")
	if r := tb.row("Keyboard restricted"); r["tag"] != "Restricted" || r["scopes"] != "customers:read refunds:*" || r["ips"] != "198.51.100.0/24 ::1" {
		t.Errorf("the row: %v", r)
	}
	k := e.onlyKeyNamed(t, "acme-sandbox", "Keyboard restricted")
	if !equalList(k.Scopes, []string{"customers:read", "refunds:*"}) || !equalList(k.AllowedIPs, []string{"198.51.100.0/24", "::1"}) {
		t.Errorf("the API has scopes %q and allowed_ips %q", k.Scopes, k.AllowedIPs)
	}
}

// A long list shows its first entries and the rest behind a disclosure a keyboard opens.
func (e *pageEnv) testManyRestrictions(t *testing.T) {
	var ips []string
	for i := 1; i <= 12; i++ {
		ips = append(ips, fmt.Sprintf("192.0.2.%d", i))
	}
	e.createKey(t, "acme-sandbox", "Many addresses", map[string]any{"scopes": []string{"charges:*"}, "allowed_ips": ips})
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Many addresses"), "the list shows")
	r := tb.row("Many addresses")
	if r["scopes"] != "charges:*" || r["ips"] != strings.Join(ips, " ") || r["tag"] != "Restricted" {
		t.Fatalf("the row: %v", r)
	}
	if !strings.HasSuffix(r["restrictions"], "192.0.2.5 7 more") {
		t.Errorf("the closed list reads %q, want the first five addresses and \"7 more\"", r["restrictions"])
	}
	summary := rowExpr("Many addresses") + `.querySelector('.restriction-ips summary')`
	tb.do(chromedp.Focus(chromedp.JSPath(summary)), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(summary+`.parentElement.open && `+summary+`.textContent === 'show fewer'`, "Enter opens the rest")
	if got := tb.row("Many addresses")["restrictions"]; !strings.Contains(got, "192.0.2.12") || !strings.Contains(got, "show fewer") {
		t.Errorf("the open list reads %q", got)
	}
	tb.do(chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`!`+summary+`.parentElement.open && `+summary+`.textContent === '7 more'`, "Enter closes it again")
}

// A key's rate limit and quota use show as text under its name; a key without limits shows
// none.
func (e *pageEnv) testLimits(t *testing.T) {
	rl := func(limit, window int) map[string]any {
		return map[string]any{"limit": limit, "window_seconds": window}
	}
	q := func(limit int64, period string) map[string]any {
		return map[string]any{"limit": limit, "period": period}
	}
	e.createKey(t, "acme-sandbox", "Plain neighbour", nil)
	e.createKey(t, "acme-sandbox", "Rate limited", map[string]any{"rate_limit": rl(100, 1)})
	e.createKey(t, "acme-sandbox", "Daily quota", map[string]any{"rate_limit": rl(1000, 60), "quota": q(10000, "day"), "scopes": []string{"charges:read"}})
	e.createKey(t, "acme-sandbox", "Monthly quota", map[string]any{"rate_limit": rl(10, 90), "quota": q(5000, "month")})
	e.createKey(t, "acme-sandbox", "Total quota", map[string]any{"quota": q(1_000_000_000_000, "total")})
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Total quota"), "the list shows")
	limits := func(name string) (text, limited, title string) {
		t.Helper()
		got := js[[]string](tb, fmt.Sprintf(`(() => { const tr = %s, box = tr.cells[0].querySelector('.limits'), qt = tr.cells[0].querySelector('.limit-quota');
			return [box && box.checkVisibility() ? box.innerText.replace(/\s+/g, ' ').trim() : '', tr.dataset.limited || '', qt ? qt.title : '']; })()`, rowExpr(name)))
		return got[0], got[1], got[2]
	}
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format("2006-01-02")
	for _, c := range []struct{ name, text, title string }{
		{"Plain neighbour", "", ""},
		{"Rate limited", "Rate limit: 100/s", ""},
		{"Daily quota", "Rate limit: 1,000/min Quota: 0 of 10,000 today", "Resets " + tomorrow + " 00:00 UTC"},
		{"Monthly quota", "Rate limit: 10/90s Quota: 0 of 5,000 this month", "Resets "},
		{"Total quota", "Quota: 0 of 1,000,000,000,000 in total", ""},
	} {
		text, limited, title := limits(c.name)
		if text != c.text || (limited == "true") != (c.text != "") || !strings.HasPrefix(title, c.title) || (c.title == "") != (title == "") {
			t.Errorf("%s: limits %q (limited %q, title %q), want %q (title %q…)", c.name, text, limited, title, c.text, c.title)
		}
	}
	// The limits are part of the name cell's text, beside the restrictions; a quota has a
	// meter of its use.
	if !js[bool](tb, rowExpr("Daily quota")+`.cells[0].innerText.includes('Quota: 0 of 10,000 today') && `+rowExpr("Daily quota")+`.cells[0].innerText.includes('Scopes:')`) {
		t.Error("the limits are not part of the name cell's text")
	}
	if m := js[[]float64](tb, `(m => m ? [m.value, m.max] : [])(`+rowExpr("Daily quota")+`.querySelector('meter'))`); len(m) != 2 || m[0] != 0 || m[1] != 10000 {
		t.Errorf("the quota meter is %v, want value 0 of max 10000", m)
	}
	if n := js[int](tb, rowExpr("Rate limited")+`.querySelectorAll('meter').length`); n != 0 {
		t.Errorf("a key without a quota has %d meters", n)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("keys-limits.png")
}
