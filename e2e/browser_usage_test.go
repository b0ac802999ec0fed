package e2e

// Browser tests of the usage charts (docs/usage.md): a real keygate on a real redis-server, usage
// seeded into the same Redis through the store package, and Debian's Chromium reading the
// charts' accessible names and totals the way a person (or a screen reader) does.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

const usagePrefix = "kgusage:"

// usageEnv is the page's keygate on Redis, with the store opened beside it and the keys the
// subtests read, by name.
type usageEnv struct {
	*pageEnv
	store *redisstore.Store
	keys  map[string]apiKey
}

// The seeded usage of "Busy key" (minutes before the seeding): inside the last 24 hours,
// inside the last 7 days only, inside the last 30 days only, and older than 30 days.
var busySeeds = []usageSeed{
	{30 * time.Minute, 600, map[string]int64{"rate_limit_exceeded": 6}},
	{30 * time.Minute, 400, nil}, // a second gateway's count of the same minute
	{2 * time.Hour, 234, map[string]int64{"api_key_revoked": 50}},
	{3 * 24 * time.Hour, 2000, map[string]int64{"quota_exceeded": 7}},
	{12 * 24 * time.Hour, 5000, map[string]int64{"api_key_ip_not_allowed": 3}},
	{40 * 24 * time.Hour, 99999, map[string]int64{"api_key_expired": 1}},
}

// What the page must say about "Busy key".
const (
	busyRowLabel = "Requests in the last 24 hours: 1,290 (56 refused)"
	busyDay      = "1,234 let through · 56 refused: api_key_revoked 50, rate_limit_exceeded 6"
	busyWeek     = "3,234 let through · 63 refused: api_key_revoked 50, quota_exceeded 7, rate_limit_exceeded 6"
	busyMonth    = "8,234 let through · 66 refused: api_key_revoked 50, quota_exceeded 7, rate_limit_exceeded 6, api_key_ip_not_allowed 3"
)

type usageSeed struct {
	ago     time.Duration
	ok      int64
	refused map[string]int64
}

func TestBrowserUsage(t *testing.T) {
	requireChromium(t)
	srv := redistest.Start(t)
	gw, adm := freePort(t), freePort(t)
	cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store redis {
			addrs %s
			key_prefix %s
		}
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	nora_auth
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
	}
}
`, srv.Addr, usagePrefix, gw, adm, fullToken, readToken)
	start := time.Now()
	g := startGateway(t, cf, gw)
	env := &usageEnv{pageEnv: &pageEnv{admin: fmt.Sprintf("http://127.0.0.1:%d", adm), gateway: g.url}, keys: map[string]apiKey{}}
	waitHealthy(t, env.admin)
	env.browser = startChromium(t)
	s, err := redisstore.Dial(redisstore.Config{Addrs: []string{srv.Addr}}, redisstore.Options{KeyPrefix: usagePrefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	env.store = s
	t.Logf("keygate on Redis and Chromium up in %v", time.Since(start).Round(time.Millisecond))

	env.seed(t)
	t.Run("RowCharts", env.testRowCharts)
	t.Run("RowsLoadFourAtATime", env.testRowConcurrency)
	t.Run("RowFailureShowsDash", env.testRowFailure)
	t.Run("DetailDayWeekMonth", env.testDetail)
	t.Run("DetailKeyboard", env.testDetailKeyboard)
	t.Run("RealTraffic", env.testRealTraffic)
	t.Run("ConsoleWatchSeesCSPViolations", env.testViolationDetector)
}

// requireChromium skips the test without Chromium, or fails it with KEYGATE_REQUIRE_BROWSER=1.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		msg := fmt.Sprintf("the browser tests need Chromium at %s: install the Debian package `chromium` (apt-get install chromium)", chromiumPath)
		if os.Getenv("KEYGATE_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg + "; KEYGATE_REQUIRE_BROWSER=1 forbids skipping")
		}
		t.Skip(msg)
	}
}

// startChromium starts a headless Chromium the way startPageEnv does, stopped at the end of
// the test.
func startChromium(t *testing.T) context.Context {
	t.Helper()
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
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return ctx
}

// waitHealthy waits for the admin endpoint's /healthz to answer 200.
func waitHealthy(t *testing.T, admin string) {
	t.Helper()
	var last error
	ok := false
	defer func() {
		if !ok {
			t.Logf("last /healthz: %v", last)
		}
	}()
	testutil.WaitEvery(t, 10*time.Second, 20*time.Millisecond, "the admin endpoint to become healthy", func() bool {
		resp, err := client.Get(admin + "/healthz")
		if last = err; err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			last = fmt.Errorf("/healthz answered %d", resp.StatusCode)
		}
		return last == nil
	})
	ok = true
}

// addUsage adds counts for the key, each in the minute `ago` before now, as a gateway's
// flush would.
func (e *usageEnv) addUsage(t *testing.T, k apiKey, now time.Time, seeds ...usageSeed) {
	t.Helper()
	var counts []store.UsageCount
	for _, sd := range seeds {
		counts = append(counts, store.UsageCount{Instance: "acme-sandbox", KeyID: k.ID,
			Minute: now.Add(-sd.ago).UTC().Truncate(time.Minute), OK: sd.ok, Refused: sd.refused})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.store.AddUsage(ctx, counts); err != nil {
		t.Fatalf("adding usage: %v", err)
	}
}

// seed creates the sandbox's keys and their usage.
func (e *usageEnv) seed(t *testing.T) {
	now := time.Now().UTC()
	mk := func(name string) apiKey {
		k := e.createKey(t, "acme-sandbox", name, nil)
		e.keys[name] = k
		return k
	}
	// "Production server": a steady daily rhythm over the last 30 days, for the screenshots.
	prod := mk("Production server")
	var wave []usageSeed
	hour := now.Truncate(time.Hour)
	for h := 1; h < 7*24; h++ {
		at := hour.Add(-time.Duration(h)*time.Hour + 7*time.Minute)
		x := float64(at.Hour()) / 24 * 2 * math.Pi
		ok := int64(420 + 300*math.Sin(x-math.Pi/2) + float64((h*37)%11)*12)
		var refused map[string]int64
		if at.Hour() >= 14 && at.Hour() <= 16 {
			refused = map[string]int64{"rate_limit_exceeded": int64(20 + (h*13)%17)}
		}
		if h%29 == 0 {
			if refused == nil {
				refused = map[string]int64{}
			}
			refused["api_key_insufficient_scope"] = 9
		}
		wave = append(wave, usageSeed{now.Sub(at), ok, refused})
	}
	for d := 8; d < 30; d++ {
		wave = append(wave, usageSeed{time.Duration(d) * 24 * time.Hour, int64(9000 + (d*37)%11*400), nil})
	}
	e.addUsage(t, prod, now, wave...)

	busy := mk("Busy key")
	e.addUsage(t, busy, now, busySeeds...)
	e.addUsage(t, mk("Million key"), now, usageSeed{70 * time.Minute, 1_234_567, nil})
	mk("Quiet key")
	gone := mk("Refused only")
	e.addUsage(t, gone, now, usageSeed{20 * time.Hour, 0, map[string]int64{"api_key_revoked": 12}})
	if st := e.call(t, "DELETE", "/v1/instances/acme-sandbox/keys/"+gone.ID, fullToken, nil, nil); st != 200 {
		t.Fatalf("revoke: %d", st)
	}

	// The API agrees with the seed before the page is asked (a failure here is the store's).
	var u struct {
		Data  []json.RawMessage `json:"data"`
		Total struct {
			OK      int64            `json:"ok"`
			Refused map[string]int64 `json:"refused"`
		} `json:"total"`
	}
	if st := e.call(t, "GET", "/v1/instances/acme-sandbox/keys/"+busy.ID+"/usage?granularity=day&from="+
		now.AddDate(0, 0, -29).Format("2006-01-02"), readToken, nil, &u); st != 200 || u.Total.OK != 8234 || len(u.Total.Refused) != 4 {
		t.Fatalf("the API's 30 days of Busy key: HTTP %d, %+v", st, u.Total)
	}
}

// ---- Reading the page ----

// rowUsage is what a key's row says about its requests: the cell's state (loading, loaded,
// error), its chart's role and accessible name, and the cell's visible text and title.
func (tb *tab) rowUsage(name string) map[string]string {
	tb.t.Helper()
	var r map[string]string
	raw := js[[]byte](tb, fmt.Sprintf(`(() => {
		const tr = %s;
		if (!tr) return null;
		const td = tr.querySelector('td.usage'), svg = td && td.querySelector('svg');
		return {state: td ? td.dataset.usage || '' : 'no cell', role: svg ? svg.getAttribute('role') : '',
			label: svg ? svg.getAttribute('aria-label') : '', title: td ? td.title : '',
			text: td ? [...td.children].filter(c => !c.classList.contains('sr-only') && c.tagName !== 'svg').map(c => c.textContent).join('') : ''};
	})()`, rowExpr(name)))
	if err := json.Unmarshal(raw, &r); err != nil {
		tb.t.Fatal(err)
	}
	if r == nil {
		tb.t.Fatalf("no row for %q\n%s", name, tb.state())
	}
	return r
}

func (tb *tab) waitRowsLoaded() {
	tb.t.Helper()
	tb.waitJS(`document.querySelectorAll('#rows tr').length > 0 && [...document.querySelectorAll('#rows td.usage')].every(td => td.dataset.usage !== 'loading')`,
		"every row's usage has loaded")
}

// usageView is what the usage dialog shows.
type usageView struct {
	Open, Busy                     bool
	Title, Sub, Caption            string
	Role, Label                    string
	Buckets                        string
	Totals, Error                  string
	Pressed                        string   // the pressed range button's text
	Legend                         []string // the legend's entries, in order
	Series                         []string // the series drawn (seg-* classes), sorted
	Bars                           int      // the non-empty buckets drawn
	StyleAttrs                     int
	ActiveText, ActiveInsideDialog string
}

func (tb *tab) usageView() usageView {
	tb.t.Helper()
	raw := js[[]byte](tb, `(() => {
		const d = document.getElementById('usage-dialog'), svg = document.querySelector('#usage-chart svg');
		const pressed = document.querySelector('.range-btn[aria-pressed="true"]');
		const series = new Set([...document.querySelectorAll('#usage-chart .seg')].map(r => [...r.classList].find(c => c.startsWith('seg-')).slice(4)));
		return {Open: d.open, Busy: document.getElementById('usage-figure').getAttribute('aria-busy') === 'true',
			Title: document.getElementById('usage-title').textContent, Sub: document.getElementById('usage-sub').textContent,
			Caption: document.getElementById('usage-caption').textContent,
			Role: svg ? svg.getAttribute('role') : '', Label: svg ? svg.getAttribute('aria-label') : '',
			Buckets: svg ? svg.dataset.buckets : '',
			Totals: document.getElementById('usage-totals').textContent,
			Error: document.getElementById('usage-error').hidden ? '' : document.getElementById('usage-error').textContent,
			Pressed: pressed ? pressed.textContent : '',
			Legend: [...document.querySelectorAll('#usage-legend li')].map(li => li.textContent.trim()),
			Series: [...series].sort(), Bars: document.querySelectorAll('#usage-chart .bar').length,
			StyleAttrs: document.querySelectorAll('[style]').length,
			ActiveText: document.activeElement ? document.activeElement.textContent.trim() : '',
			ActiveInsideDialog: String(d.contains(document.activeElement))};
	})()`)
	var v usageView
	if err := json.Unmarshal(raw, &v); err != nil {
		tb.t.Fatal(err)
	}
	return v
}

// waitTotals waits for the dialog to show the totals of a loaded range.
func (tb *tab) waitTotals(want, what string) usageView {
	tb.t.Helper()
	tb.waitJS(fmt.Sprintf(`document.getElementById('usage-dialog').open && document.getElementById('usage-figure').getAttribute('aria-busy') !== 'true' && document.getElementById('usage-totals').textContent === %q`, want), what)
	return tb.usageView()
}

func (e *usageEnv) openSandbox(t *testing.T, token string) *tab {
	tb := e.newTab(t)
	tb.open()
	tb.signIn(token)
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Busy key"), "the list shows")
	tb.waitRowsLoaded()
	return tb
}

// ---- Subtests ----

// Each row's chart is an image whose accessible name states the key's requests in the last
// 24 hours, with thousands separators; a read-only token sees them.
func (e *usageEnv) testRowCharts(t *testing.T) {
	tb := e.openSandbox(t, readToken)
	for _, c := range []struct{ name, label, text string }{
		{"Busy key", busyRowLabel, "1,290"},
		{"Million key", "Requests in the last 24 hours: 1,234,567", "1,234,567"},
		{"Quiet key", "Requests in the last 24 hours: 0", "0"},
		{"Refused only", "Requests in the last 24 hours: 12 (12 refused)", "12"},
	} {
		r := tb.rowUsage(c.name)
		if r["state"] != "loaded" || r["role"] != "img" || r["label"] != c.label || r["text"] != c.text {
			t.Errorf("%s: row usage %v, want an img named %q showing %q", c.name, r, c.label, c.text)
		}
	}
	if n := js[int](tb, rowExpr("Busy key")+`.querySelectorAll('td.usage rect.spark-refused').length`); n != 2 {
		t.Errorf("Busy key's sparkline marks refusals in %d hours, want 2", n)
	}
	if n := js[int](tb, rowExpr("Quiet key")+`.querySelectorAll('td.usage rect.spark-ok, td.usage rect.spark-refused').length`); n != 0 {
		t.Errorf("Quiet key's sparkline draws %d bars", n)
	}
	if !js[bool](tb, `[...document.querySelectorAll('#keys th')].some(th => th.textContent.replace(/\s+/g, ' ').trim() === 'Requests 24h')`) {
		t.Error("no Requests (24h) column header")
	}
	if n := js[int](tb, `document.querySelectorAll('[style]').length`); n != 0 {
		t.Errorf("%d elements carry a style attribute (the CSP forbids them)", n)
	}
	// One usage request per row, no more.
	tb.mu.Lock()
	n := 0
	for _, u := range tb.requests {
		if strings.Contains(u, "/usage?") {
			n++
			if !strings.Contains(u, "granularity=hour") {
				t.Errorf("a row asked for %s, want hours", u)
			}
		}
	}
	tb.mu.Unlock()
	if rows := tb.rowCount(); n != rows {
		t.Errorf("%d usage requests for %d rows", n, rows)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("keys-usage.png")
}

// The rows' usage loads after the list shows, four requests at a time: with the first four
// held, no fifth is sent; answering one lets the next go.
func (e *usageEnv) testRowConcurrency(t *testing.T) {
	for i := 1; i <= 10; i++ {
		e.createKey(t, "acme-prod", fmt.Sprintf("Pool key %02d", i), nil)
	}
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)

	ictx, stop := context.WithCancel(tb.ctx)
	defer stop()
	paused := chromedp.Events(ictx, fetch.RequestPaused)
	if _, err := chromedp.Call(tb.ctx, fetch.Enable, fetch.EnableParams{
		Patterns: []*fetch.RequestPattern{{URLPattern: "*/usage?*"}}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []fetch.RequestID
	seen, release := 0, false
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range paused {
			if err != nil {
				return
			}
			mu.Lock()
			seen++
			if !release {
				held = append(held, ev.RequestID)
				mu.Unlock()
				continue
			}
			mu.Unlock()
			chromedp.Call(tb.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return seen }

	tb.pick("acme-prod")
	tb.waitJS(`document.querySelectorAll('#rows tr').length === 10`, "the list shows before any usage")
	testutil.WaitFor(t, 5*time.Second, "four usage requests", func() bool { return count() >= 4 })
	time.Sleep(600 * time.Millisecond)
	if n := count(); n != 4 {
		t.Fatalf("%d usage requests in flight at once, want 4", n)
	}
	if n := js[int](tb, `document.querySelectorAll('#rows td.usage[data-usage=loading]').length`); n != 10 {
		t.Errorf("%d rows wait for their usage, want all 10", n)
	}
	mu.Lock()
	first := held[0]
	held = held[1:]
	mu.Unlock()
	if _, err := chromedp.Call(tb.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: first}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "a fifth request once one is answered", func() bool { return count() == 5 })
	time.Sleep(300 * time.Millisecond)
	if n := count(); n != 5 {
		t.Fatalf("after one answer %d requests were sent, want 5", n)
	}
	mu.Lock()
	release = true
	rest := held
	held = nil
	mu.Unlock()
	for _, id := range rest {
		chromedp.Call(tb.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id})
	}
	tb.waitRowsLoaded()
	if n := count(); n != 10 {
		t.Errorf("%d usage requests for 10 rows", n)
	}
	if n := js[int](tb, `[...document.querySelectorAll('#rows td.usage svg[role=img]')].filter(s => s.getAttribute('aria-label') === 'Requests in the last 24 hours: 0').length`); n != 10 {
		t.Errorf("%d of 10 fresh keys show 0 requests", n)
	}
	if _, err := chromedp.Call(tb.ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
}

// A row whose usage cannot be loaded shows a dash, once: no banner, no retry loop, and the
// other rows load; the detail view says what went wrong.
func (e *usageEnv) testRowFailure(t *testing.T) {
	k := e.keys["Quiet key"]
	tb := e.newTab(t)
	tb.open()
	tb.signIn(fullToken)
	ictx, stop := context.WithCancel(tb.ctx)
	defer stop()
	paused := chromedp.Events(ictx, fetch.RequestPaused)
	if _, err := chromedp.Call(tb.ctx, fetch.Enable, fetch.EnableParams{
		Patterns: []*fetch.RequestPattern{{URLPattern: "*/keys/" + k.ID + "/usage?*"}}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	failed := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range paused {
			if err != nil {
				return
			}
			mu.Lock()
			failed++
			mu.Unlock()
			chromedp.Call(tb.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionRefused})
		}
	}()
	tb.pick("acme-sandbox")
	tb.waitJS(rowExpr("Quiet key"), "the list shows")
	tb.waitRowsLoaded()
	r := tb.rowUsage("Quiet key")
	if r["state"] != "error" || r["text"] != "—" || r["label"] != "" || !strings.Contains(r["title"], "Could not reach the admin API") {
		t.Errorf("the failed row shows %v, want a dash titled with the error", r)
	}
	if r := tb.rowUsage("Busy key"); r["state"] != "loaded" || r["label"] != busyRowLabel {
		t.Errorf("a neighbour of the failed row shows %v", r)
	}
	time.Sleep(time.Second)
	mu.Lock()
	n := failed
	mu.Unlock()
	if n != 1 {
		t.Errorf("the failing row's usage was asked for %d times, want once", n)
	}
	if js[bool](tb, visible("banner")) {
		t.Errorf("a row's usage failure shows the banner: %s", js[string](tb, `document.getElementById('banner-text').textContent`))
	}
	// The detail view shows the error instead of a chart.
	tb.do(chromedp.Click(chromedp.JSPath(rowExpr("Quiet key") + `.querySelector('a.key-name')`)))
	tb.waitJS(`document.getElementById('usage-dialog').open && !document.getElementById('usage-error').hidden`, "the dialog shows the error")
	if v := tb.usageView(); !strings.HasPrefix(v.Error, "Could not load the usage: Could not reach the admin API") || v.Totals != "" || v.Label != "" {
		t.Errorf("the failed detail view: error %q, totals %q, chart %q", v.Error, v.Totals, v.Label)
	}
	tb.do(chromedp.Click(chromedp.ID("usage-close")))
	tb.waitJS(`!document.getElementById('usage-dialog').open`, "Close closes the dialog")
	if _, err := chromedp.Call(tb.ctx, fetch.Disable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
}

// The detail view of a key: day, week and month, each with its chart's accessible name,
// buckets, series, legend and totals as text, exactly as seeded.
func (e *usageEnv) testDetail(t *testing.T) {
	tb := e.openSandbox(t, fullToken)
	// The row's chart opens it too (by mouse).
	tb.do(chromedp.Click(chromedp.JSPath(rowExpr("Busy key") + `.querySelector('td.usage svg')`)))
	v := tb.waitTotals(busyDay, "the day's totals")
	if v.Title != "Usage of Busy key" || !strings.HasPrefix(v.Sub, e.keys["Busy key"].Prefix+"…") || v.Pressed != "Day" ||
		v.Role != "img" || v.Label != "Requests in the last 24 hours, by hour" || v.Caption != v.Label || v.Buckets != "24" || v.Bars != 2 ||
		strings.Join(v.Series, " ") != "api_key_revoked ok rate_limit_exceeded" ||
		strings.Join(v.Legend, "|") != "Let through|api_key_revoked|rate_limit_exceeded" || v.Error != "" {
		t.Errorf("day view: %+v", v)
	}
	tb.do(chromedp.Click(chromedp.CSS(`.range-btn[data-range=week]`)))
	v = tb.waitTotals(busyWeek, "the week's totals")
	if v.Pressed != "Week" || v.Label != "Requests in the last 7 days, by hour" || v.Buckets != "168" || v.Bars != 3 ||
		strings.Join(v.Series, " ") != "api_key_revoked ok quota_exceeded rate_limit_exceeded" ||
		strings.Join(v.Legend, "|") != "Let through|api_key_revoked|rate_limit_exceeded|quota_exceeded" {
		t.Errorf("week view: %+v", v)
	}
	tb.do(chromedp.Click(chromedp.CSS(`.range-btn[data-range=month]`)))
	v = tb.waitTotals(busyMonth, "the month's totals")
	if v.Pressed != "Month" || v.Label != "Requests in the last 30 days, by day" || v.Buckets != "30" ||
		strings.Join(v.Series, " ") != "api_key_ip_not_allowed api_key_revoked ok quota_exceeded rate_limit_exceeded" ||
		strings.Join(v.Legend, "|") != "Let through|api_key_revoked|api_key_ip_not_allowed|rate_limit_exceeded|quota_exceeded" {
		t.Errorf("month view: %+v", v)
	}
	// Every bar names its time and counts (hover text), and no element has a style attribute.
	if !js[bool](tb, `[...document.querySelectorAll('#usage-chart .bar')].every(g => / UTC: [\d,]+ let through · [\d,]+ refused/.test(g.querySelector('title').textContent))`) {
		t.Error("a bar has no title with its counts")
	}
	if v.StyleAttrs != 0 {
		t.Errorf("%d elements carry a style attribute", v.StyleAttrs)
	}
	// Back to the day: the numbers change back.
	tb.do(chromedp.Click(chromedp.CSS(`.range-btn[data-range=day]`)))
	tb.waitTotals(busyDay, "the day's totals again")
	tb.do(chromedp.Click(chromedp.ID("usage-close")))
	tb.waitJS(`!document.getElementById('usage-dialog').open`, "Close closes the dialog")

	// The screenshot: a busier key's week.
	tb.do(chromedp.Click(chromedp.JSPath(rowExpr("Production server") + `.querySelector('a.key-name')`)))
	tb.waitJS(`document.getElementById('usage-dialog').open && document.getElementById('usage-figure').getAttribute('aria-busy') !== 'true'`, "the dialog shows")
	tb.do(chromedp.Click(chromedp.CSS(`.range-btn[data-range=week]`)))
	tb.waitJS(`document.querySelector('#usage-chart svg').dataset.buckets === '168' && document.getElementById('usage-figure').getAttribute('aria-busy') !== 'true'`, "the week shows")
	if v := tb.usageView(); !strings.Contains(v.Totals, " refused: rate_limit_exceeded ") || v.Bars < 160 {
		t.Errorf("Production server's week: %+v", v)
	}
	js[chromedp.Void](tb, `document.activeElement.blur()`)
	tb.screenshot("usage-detail.png")
}

// The detail view by keyboard: Enter on the key's name opens it with focus on the range
// switch, Tab and Enter or Space switch the range, Escape closes it and focus returns to the
// name.
func (e *usageEnv) testDetailKeyboard(t *testing.T) {
	tb := e.openSandbox(t, readToken)
	link := rowExpr("Busy key") + `.querySelector('a.key-name')`
	tb.do(chromedp.Focus(chromedp.JSPath(link)), chromedp.KeyEvent(kb.Enter))
	v := tb.waitTotals(busyDay, "the dialog opens on the day")
	if v.ActiveInsideDialog != "true" || v.ActiveText != "Day" {
		t.Fatalf("after opening, focus is on %q (inside the dialog: %s), want the Day button", v.ActiveText, v.ActiveInsideDialog)
	}
	tb.do(chromedp.KeyEvent(kb.Tab))
	if a := js[string](tb, `document.activeElement.textContent`); a != "Week" {
		t.Fatalf("Tab went to %q, want Week", a)
	}
	tb.do(chromedp.KeyEvent(kb.Enter))
	tb.waitTotals(busyWeek, "Enter shows the week")
	tb.do(chromedp.KeyEvent(kb.Tab), chromedp.KeyEvent(" "))
	v = tb.waitTotals(busyMonth, "Space shows the month")
	if v.ActiveText != "Month" || v.Pressed != "Month" {
		t.Errorf("focus %q, pressed %q after Space", v.ActiveText, v.Pressed)
	}
	tb.do(chromedp.KeyEvent(kb.Tab))
	if a := js[string](tb, `document.activeElement.id`); a != "usage-close" {
		t.Errorf("Tab after Month went to %q, want Close", a)
	}
	tb.do(chromedp.KeyEvent(kb.Escape))
	tb.waitJS(`!document.getElementById('usage-dialog').open`, "Escape closes the dialog")
	if !js[bool](tb, `document.activeElement === `+link) {
		t.Errorf("after Escape focus is on %s, want Busy key's name", js[string](tb, `document.activeElement.outerHTML.slice(0, 100)`))
	}
	// Opening again starts on the day; Enter on Close closes it too.
	tb.do(chromedp.KeyEvent(kb.Enter))
	tb.waitTotals(busyDay, "the dialog opens on the day again")
	tb.do(chromedp.Focus(chromedp.ID("usage-close")), chromedp.KeyEvent(kb.Enter))
	tb.waitJS(`!document.getElementById('usage-dialog').open && document.activeElement === `+link, "Close returns focus to the name")
}

// Real requests through the gateway with a key reach its row chart (a gateway flushes its
// counts to the store within 15 s).
func (e *usageEnv) testRealTraffic(t *testing.T) {
	k := e.createKey(t, "acme-sandbox", "Live traffic", nil)
	for range 3 {
		if st, code := e.gatewayStatus(t, k.Secret); st != 200 {
			t.Fatalf("the gateway refuses the new key: %d %s", st, code)
		}
	}
	tb := e.openSandbox(t, readToken)
	want := "Requests in the last 24 hours: 3"
	var last map[string]string
	ok := false
	defer func() {
		if !ok {
			t.Logf("the row last said %v", last)
		}
	}()
	testutil.WaitEvery(t, 20*time.Second, time.Second, "the row chart to count the gateway's requests", func() bool {
		if last = tb.rowUsage("Live traffic"); last["label"] == want {
			return true
		}
		// Load the list again (and with it the rows' usage).
		tb.pick("acme-prod")
		tb.pick("acme-sandbox")
		tb.waitJS(rowExpr("Live traffic"), "the list shows again")
		tb.waitRowsLoaded()
		last = tb.rowUsage("Live traffic")
		return last["label"] == want
	})
	ok = true
}
