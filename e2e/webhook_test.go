package e2e

// Webhooks with real processes (§15): gateway processes on one real redis-server deliver the
// audit events recorded through their admin endpoints to receivers in the test process
// (httptest servers recording every delivery with its headers and body). A delivery is
// signed and carries the event object; each webhook gets only the types it lists; a failed
// attempt is retried; with two gateways each event is delivered once; a SIGKILLed gateway's
// deliveries are taken over by another (after the 60 s lease, for those it had claimed); a
// gateway stopped gracefully hands its deliveries back and a restart delivers them; a
// receiver that hangs never slows the admin API.
//
// Timing: the only timed assertions are generous bounds (an admin call under 1 s, events
// within 10 s, a retry not before 7 s): the machine running these has 2 cores shared with
// other tests, so tight bounds would fail on load, not on bugs. The waits follow the design:
// the first retry comes 8–12 s after a failure (webhook.Backoff), a claimed delivery is left
// to its claimer for 60 s, the outbox is polled every second.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/webhook"
)

const (
	whToken     = "webhook-e2e-admin-token-0123456789"
	whActor     = "e2e-webhooks" // the token's name: the events' actor
	whInstance  = "acme-sandbox"
	whTolerance = 5 * time.Minute // the signature's timestamp tolerance a receiver would use
)

// Receiver modes.
const (
	whOK        = "ok"         // answer 200
	whFail      = "fail"       // answer 503
	whFailFirst = "fail-first" // answer 500 to each event's first attempt, then 200
	whHang      = "hang"       // answer nothing until the mode changes (then 200), or the sender goes away
)

// whDelivery is one request a receiver got.
type whDelivery struct {
	at      time.Time
	eventID string // its Nora-Event-Id
	header  http.Header
	body    []byte
	status  int // what the receiver answered; 0: nothing (the sender went away while it hung)
}

// whReceiver is a webhook receiver recording every delivery.
type whReceiver struct {
	srv        *httptest.Server
	mu         sync.Mutex
	mode       string
	release    chan struct{} // closed when the mode leaves whHang
	hanging    int           // requests hanging now
	deliveries []*whDelivery
	attempts   map[string]int // by event id
}

func startReceiver(t *testing.T, mode string) *whReceiver {
	t.Helper()
	rc := &whReceiver{mode: mode, release: make(chan struct{}), attempts: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	t.Cleanup(func() { rc.setMode(whOK) }) // runs first: no handler hangs at Close
	return rc
}

func (rc *whReceiver) url() string { return rc.srv.URL + "/hooks/keygate" }

func (rc *whReceiver) serve(w http.ResponseWriter, r *http.Request) {
	// The whole body first: the server notices a closed connection only after that.
	body, _ := io.ReadAll(r.Body)
	d := &whDelivery{at: time.Now(), eventID: r.Header.Get(webhook.HeaderEventID), header: r.Header.Clone(), body: body}
	rc.mu.Lock()
	rc.deliveries = append(rc.deliveries, d)
	rc.attempts[d.eventID]++
	status := http.StatusOK
	switch rc.mode {
	case whFail:
		status = http.StatusServiceUnavailable
	case whFailFirst:
		if rc.attempts[d.eventID] == 1 {
			status = http.StatusInternalServerError
		}
	case whHang:
		rc.hanging++
		release := rc.release
		rc.mu.Unlock()
		select {
		case <-release:
			rc.mu.Lock()
			rc.hanging--
		case <-r.Context().Done():
			rc.mu.Lock()
			rc.hanging--
			rc.mu.Unlock()
			return
		}
	}
	d.status = status
	rc.mu.Unlock()
	w.WriteHeader(status)
}

func (rc *whReceiver) setMode(mode string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.mode == whHang && mode != whHang {
		close(rc.release)
		rc.release = make(chan struct{})
	}
	rc.mode = mode
}

func (rc *whReceiver) hangingNow() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.hanging
}

// all returns every request received so far.
func (rc *whReceiver) all() []whDelivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]whDelivery, len(rc.deliveries))
	for i, d := range rc.deliveries {
		out[i] = *d
	}
	return out
}

// delivered returns the requests answered 2xx, by event id.
func (rc *whReceiver) delivered() map[string][]whDelivery {
	out := map[string][]whDelivery{}
	for _, d := range rc.all() {
		if d.status >= 200 && d.status < 300 {
			out[d.eventID] = append(out[d.eventID], d)
		}
	}
	return out
}

// deliveredEvents decodes the delivered events (the first delivery of each id), by event id.
func (rc *whReceiver) deliveredEvents(t *testing.T) map[string]webhook.Event {
	t.Helper()
	out := map[string]webhook.Event{}
	for id, ds := range rc.delivered() {
		var e webhook.Event
		if err := json.Unmarshal(ds[0].body, &e); err != nil {
			t.Fatalf("a delivery's body is not an event: %v: %s", err, ds[0].body)
		}
		out[id] = e
	}
	return out
}

// keysDelivered returns the key ids of the delivered events of type typ.
func (rc *whReceiver) keysDelivered(t *testing.T, typ string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, e := range rc.deliveredEvents(t) {
		if e.Type == typ {
			out[e.KeyID]++
		}
	}
	return out
}

// whHook is a webhook line of the gateways' config.
type whHook struct {
	url, secret string
	events      []string
}

// whEnv is one redis-server and gateway processes sharing it, with the same webhooks (or,
// without the redis-server, a gateway on a file store).
type whEnv struct {
	srv   *redistest.Server // nil: the file store
	file  string            // the file store's path (kept across restarts)
	rdb   *redis.Client
	hooks []whHook
	gws   []*whGateway
}

type whGateway struct {
	*gateway
	port, adm int
	config    string
	admin     *admin.Client
	adminURL  string
}

func newWebhookEnv(t *testing.T, hooks ...whHook) *whEnv {
	t.Helper()
	e := &whEnv{srv: redistest.Start(t), hooks: hooks}
	e.rdb = redis.NewClient(&redis.Options{Addr: e.srv.Addr})
	t.Cleanup(func() { e.rdb.Close() })
	return e
}

// newFileWebhookEnv is newWebhookEnv for a gateway on a file store.
func newFileWebhookEnv(t *testing.T, hooks ...whHook) *whEnv {
	return &whEnv{file: filepath.Join(t.TempDir(), "keys.db"), hooks: hooks}
}

// start starts one more gateway process and, on Redis, waits until its webhooks are
// registered in the store (events recorded before a webhook's first registration are not its
// to deliver; on the file store see waitDelivering).
func (e *whEnv) start(t *testing.T) *whGateway {
	t.Helper()
	g := &whGateway{port: freePort(t), adm: freePort(t)}
	var hooks strings.Builder
	for _, h := range e.hooks {
		fmt.Fprintf(&hooks, "\t\twebhook %s {\n\t\t\tsecret %s\n", h.url, h.secret)
		if len(h.events) > 0 {
			fmt.Fprintf(&hooks, "\t\t\tevents %s\n", strings.Join(h.events, " "))
		}
		hooks.WriteString("\t\t}\n")
	}
	storeLine := "store file " + e.file
	if e.srv != nil {
		storeLine = "store redis " + e.srv.URL(0)
	}
	g.config = fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		%s
		instance %s sandbox "Acme (sandbox)"
%s	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete {
			name %s
		}
	}
}
`, storeLine, whInstance, hooks.String(), g.port, g.adm, whToken, whActor)
	g.adminURL = fmt.Sprintf("http://127.0.0.1:%d", g.adm)
	g.admin = &admin.Client{BaseURL: g.adminURL, Token: whToken, HTTP: &http.Client{Timeout: 10 * time.Second}}
	g.gateway = startGateway(t, g.config, g.port)
	if e.srv != nil {
		e.waitRegistered(t)
	} else {
		testutil.WaitFor(t, 10*time.Second, "the instance to exist", func() bool {
			_, err := g.admin.ListKeys(context.Background(), whInstance, 1, "", "")
			return err == nil
		})
	}
	e.gws = append(e.gws, g)
	return g
}

// restart starts gateway g again (after it stopped), same config and ports.
func (e *whEnv) restart(t *testing.T, g *whGateway) {
	t.Helper()
	g.gateway = startGateway(t, g.config, g.port)
}

func (e *whEnv) waitRegistered(t *testing.T) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the instance and the webhooks to be registered in Redis", func() bool {
		ctx := context.Background()
		if n, _ := e.rdb.Exists(ctx, "nora:{i:"+whInstance+"}").Result(); n == 0 {
			return false
		}
		for _, h := range e.hooks {
			ok, err := e.rdb.HExists(ctx, "nora:{webhooks}:registered", webhook.Webhook{URL: h.url}.ID()).Result()
			if err != nil || !ok {
				return false
			}
		}
		return true
	})
}

// waitDelivering creates probe keys through g until rc (answering) has received one: then
// g's webhook is registered, whatever the store. It returns the probes' key ids.
func waitDelivering(t *testing.T, g *whGateway, rc *whReceiver) []string {
	t.Helper()
	var probes []string
	testutil.WaitEvery(t, 10*time.Second, 200*time.Millisecond, "a first delivery", func() bool {
		if len(rc.delivered()) > 0 {
			return true
		}
		probes = append(probes, createKeys(t, 1, g)...)
		return false
	})
	return probes
}

// stopGateway sends sig to g and waits until its process is gone.
func stopGateway(t *testing.T, g *gateway, sig syscall.Signal) {
	t.Helper()
	p := g.cmd.Process
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
	testutil.WaitEvery(t, 15*time.Second, 5*time.Millisecond, fmt.Sprintf("the gateway to exit after %v", sig), func() bool {
		return errors.Is(syscall.Kill(p.Pid, 0), syscall.ESRCH)
	})
}

// createKeys creates n keys through the gateways' admin endpoints in turn, each call under
// 1 s (a generous bound: an admin call never waits for a receiver), and returns their ids.
func createKeys(t *testing.T, n int, gws ...*whGateway) []string {
	t.Helper()
	var ids []string
	for i := range n {
		start := time.Now()
		k, err := gws[i%len(gws)].admin.CreateKey(context.Background(), whInstance, fmt.Sprintf("wh-%d", i), "")
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("create %d answered in %v: an admin call must not wait for a webhook receiver", i, d)
		}
		ids = append(ids, k.ID)
	}
	return ids
}

// waitKeysDelivered waits until rc has a delivered event of type typ for every key id.
func waitKeysDelivered(t *testing.T, rc *whReceiver, typ string, ids []string, timeout time.Duration) time.Duration {
	t.Helper()
	return testutil.WaitEvery(t, timeout, 20*time.Millisecond, fmt.Sprintf("%d %s events to be delivered", len(ids), typ), func() bool {
		got := rc.keysDelivered(t, typ)
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
}

// checkOnce fails unless every delivered event was delivered exactly once.
func checkOnce(t *testing.T, name string, rc *whReceiver) {
	t.Helper()
	for id, ds := range rc.delivered() {
		if len(ds) != 1 {
			t.Errorf("%s: event %s delivered %d times", name, id, len(ds))
		}
	}
}

// checkSigned verifies a delivery's signature with secret (and that another secret fails).
func checkSigned(t *testing.T, name string, d whDelivery, secret string) {
	t.Helper()
	sig := d.header.Get(webhook.HeaderSignature)
	if err := webhook.Verify(secret, sig, d.body, time.Now(), whTolerance); err != nil {
		t.Errorf("%s: the signature %q does not verify with the webhook's secret: %v", name, sig, err)
	}
	if err := webhook.Verify(secret+"x", sig, d.body, time.Now(), whTolerance); !errors.Is(err, webhook.ErrSignature) {
		t.Errorf("%s: verifying with a wrong secret gave %v, want ErrSignature", name, err)
	}
	if ct := d.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", name, ct)
	}
}

// A revoke through the CLI reaches the receiver of a webhook for api_key.revoked signed, as
// the event object, once; that webhook never gets the api_key.created; a webhook without
// events gets both; a receiver that answers 500 to an event's first attempt gets it again
// (same id, same body) on a later attempt, and then no more.
func TestWebhookSignedFilteredAndRetried(t *testing.T) {
	revokedOnly := startReceiver(t, whOK)
	everything := startReceiver(t, whOK)
	flaky := startReceiver(t, whFailFirst)
	secrets := []string{"whsec-revoked-only-0123456789", "whsec-everything-0123456789ab", "whsec-flaky-receiver-012345678"}
	e := newWebhookEnv(t,
		whHook{url: revokedOnly.url(), secret: secrets[0], events: []string{"api_key.revoked"}},
		whHook{url: everything.url(), secret: secrets[1]},
		whHook{url: flaky.url(), secret: secrets[2]})
	g := e.start(t)

	ids := createKeys(t, 1, g)
	keyID := ids[0]
	cli := exec.Command(binary, "keys", "revoke", "--admin", g.adminURL, "--instance", whInstance, keyID)
	cli.Env = append(os.Environ(), "NORA_ADMIN_TOKEN="+whToken)
	revokedAt := time.Now()
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("keys revoke: %v: %s", err, out)
	}
	waitKeysDelivered(t, revokedOnly, "api_key.revoked", ids, 10*time.Second)
	waitKeysDelivered(t, everything, "api_key.revoked", ids, 10*time.Second)
	waitKeysDelivered(t, everything, "api_key.created", ids, 10*time.Second)

	// The trail as the admin API shows it: what the deliveries must carry.
	list, err := g.admin.Events(context.Background(), whInstance, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	trail := map[string]admin.Event{}
	for _, ev := range list.Data {
		trail[ev.ID] = ev
	}

	// The revoked-only receiver: exactly the revoke, signed with its secret.
	ds := revokedOnly.all()
	if len(ds) != 1 {
		t.Fatalf("the api_key.revoked webhook got %d requests, want 1 (the revoke)", len(ds))
	}
	d := ds[0]
	t.Logf("the revoke reached its receiver %v after the CLI started", d.at.Sub(revokedAt).Round(time.Millisecond))
	checkSigned(t, "revoke", d, secrets[0])
	if err := webhook.Verify(secrets[1], d.header.Get(webhook.HeaderSignature), d.body, time.Now(), whTolerance); err == nil {
		t.Errorf("the delivery also verifies with another webhook's secret")
	}
	var fields map[string]any
	if err := json.Unmarshal(d.body, &fields); err != nil {
		t.Fatalf("body: %v: %s", err, d.body)
	}
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	if want := []string{"actor", "created_at", "id", "instance", "key_id", "object", "type"}; !slices.Equal(names, want) {
		t.Errorf("the revoke's body has the fields %v, want %v: %s", names, want, d.body)
	}
	var ev admin.Event
	if err := json.Unmarshal(d.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Object != "event" || ev.Type != "api_key.revoked" || ev.KeyID != keyID || ev.Instance != whInstance || ev.Actor != whActor {
		t.Errorf("the revoke's body: %s", d.body)
	}
	if d.eventID == "" || d.eventID != ev.ID || !strings.HasPrefix(ev.ID, "evt_") {
		t.Errorf("Nora-Event-Id %q, the body's id %q", d.eventID, ev.ID)
	}
	if ev.CreatedAt.Location() != time.UTC || ev.CreatedAt.Before(revokedAt.Add(-5*time.Second)) || ev.CreatedAt.After(time.Now()) {
		t.Errorf("created_at %v (the CLI ran at %v)", ev.CreatedAt, revokedAt)
	}
	if tr, ok := trail[ev.ID]; !ok || !reflect.DeepEqual(tr, ev) {
		t.Errorf("the delivered event differs from the trail's:\n delivered %+v\n trail     %+v", ev, tr)
	}

	// The webhook without events: the create and the revoke, each signed and as the trail says.
	for id, e := range everything.deliveredEvents(t) {
		if tr, ok := trail[id]; !ok || !reflect.DeepEqual(tr, e) {
			t.Errorf("the every-type webhook got %+v; the trail has %+v", e, tr)
		}
	}
	for _, d := range everything.all() {
		checkSigned(t, "every-type webhook", d, secrets[1])
	}

	// The flaky receiver: both events, each first refused with 500, then delivered.
	retryStart := time.Now()
	waitKeysDelivered(t, flaky, "api_key.revoked", ids, 30*time.Second)
	waitKeysDelivered(t, flaky, "api_key.created", ids, 30*time.Second)
	t.Logf("the flaky receiver had both events %v after the revoke reached the first receiver", time.Since(retryStart).Round(time.Millisecond))

	// No duplicate anywhere, and no more attempts: wait a little longer (the next retry would
	// come 8–12 s after a failure; a duplicate of a delivered one at the next 1 s poll).
	time.Sleep(3 * time.Second)
	if n := len(revokedOnly.all()); n != 1 {
		t.Errorf("the api_key.revoked webhook got %d requests in all, want 1", n)
	}
	if n := len(everything.all()); n != 2 {
		t.Errorf("the every-type webhook got %d requests in all, want 2 (create, revoke)", n)
	}
	checkOnce(t, "every-type webhook", everything)
	attempts := map[string][]whDelivery{}
	for _, d := range flaky.all() {
		attempts[d.eventID] = append(attempts[d.eventID], d)
		checkSigned(t, "flaky receiver", d, secrets[2])
	}
	if len(attempts) != 2 {
		t.Errorf("the flaky receiver got %d event ids, want 2", len(attempts))
	}
	for id, as := range attempts {
		if len(as) != 2 || as[0].status != 500 || as[1].status != 200 {
			st := []int{}
			for _, a := range as {
				st = append(st, a.status)
			}
			t.Errorf("event %s at the flaky receiver: answers %v, want [500 200]", id, st)
			continue
		}
		if string(as[0].body) != string(as[1].body) {
			t.Errorf("event %s: the retry's body differs:\n%s\n%s", id, as[0].body, as[1].body)
		}
		// A lower bound only (load makes a retry later, never sooner): the first retry
		// waits 10 s ± 20 % (webhook.Backoff).
		gap := as[1].at.Sub(as[0].at)
		t.Logf("event %s: retried %v after the 500", id, gap.Round(time.Millisecond))
		if gap < 7*time.Second {
			t.Errorf("event %s retried %v after a failure: sooner than the backoff (8–12 s)", id, gap)
		}
	}
}

// Two gateways sharing Redis, both delivering to one receiver: 20 keys created through them
// in turn are each delivered once (counted by event id).
func TestWebhookTwoGatewaysDeliverEachEventOnce(t *testing.T) {
	rc := startReceiver(t, whOK)
	secret := "whsec-two-gateways-0123456789"
	e := newWebhookEnv(t, whHook{url: rc.url(), secret: secret})
	a, b := e.start(t), e.start(t)
	ids := createKeys(t, 20, a, b)
	took := waitKeysDelivered(t, rc, "api_key.created", ids, 15*time.Second)
	t.Logf("20 creates through two gateways: all delivered %v after the last create", took.Round(time.Millisecond))
	time.Sleep(3 * time.Second) // room for a duplicate to show up (the outbox is polled every second)
	ds := rc.all()
	checkOnce(t, "two gateways", rc)
	if len(ds) != 20 {
		t.Errorf("%d requests at the receiver for 20 events", len(ds))
	}
	for _, d := range ds {
		checkSigned(t, "two gateways", d, secret)
	}
	if got := rc.keysDelivered(t, "api_key.created"); len(got) != 20 {
		t.Errorf("creates delivered for %d keys, want 20", len(got))
	}
}

// A gateway SIGKILLed while its receiver hangs: it had claimed four deliveries (its
// concurrency per webhook) and was sending them, four more were waiting in the outbox. The
// receiver comes back and a second gateway starts: it takes the four waiting ones at its next
// poll, and the four claimed ones once their 60 s lease expires; every event arrives, once.
func TestWebhookSIGKILLedGatewaysDeliveriesTakenOver(t *testing.T) {
	rc := startReceiver(t, whHang)
	secret := "whsec-sigkill-0123456789abcdef"
	e := newWebhookEnv(t, whHook{url: rc.url(), secret: secret})
	a := e.start(t)
	ids := createKeys(t, 8, a)
	testutil.WaitFor(t, 10*time.Second, "the gateway to send 4 deliveries into the hanging receiver", func() bool { return rc.hangingNow() == 4 })
	time.Sleep(300 * time.Millisecond) // it takes no more than 4 at once
	if n := rc.hangingNow(); n != 4 {
		t.Errorf("%d deliveries hanging at once, want the gateway's concurrency (4)", n)
	}
	claimedAt := time.Now()
	stopGateway(t, a.gateway, syscall.SIGKILL)
	testutil.WaitFor(t, 10*time.Second, "the killed gateway's connections to close", func() bool { return rc.hangingNow() == 0 })
	rc.setMode(whOK)
	e.start(t)
	bStarted := time.Now()
	// The four waiting ones: at B's first poll (1 s). A generous bound, far below the lease.
	testutil.WaitEvery(t, 15*time.Second, 20*time.Millisecond, "the unclaimed deliveries to arrive through the other gateway", func() bool {
		return len(rc.delivered()) >= 4
	})
	t.Logf("4 unclaimed deliveries arrived %v after the second gateway started", time.Since(bStarted).Round(time.Millisecond))
	// The claimed ones: after the lease (60 s from A's claim), then B's next poll.
	waitKeysDelivered(t, rc, "api_key.created", ids, 90*time.Second)
	t.Logf("all 8 delivered %v after the kill (lease 60 s)", time.Since(claimedAt).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	checkOnce(t, "after a SIGKILL", rc)
	for _, d := range rc.all() {
		if d.status == 200 {
			checkSigned(t, "after a SIGKILL", d, secret)
		}
	}
	if n := len(rc.delivered()); n != 8 {
		t.Errorf("%d events delivered, want 8", n)
	}
}

// A receiver that hangs (never answers) does not slow the admin API: creates and revokes
// answer under 1 s each (a generous bound; they take milliseconds) while the gateway's
// deliveries hang, at most its concurrency (4) at once; once the receiver answers again,
// every event arrives.
func TestWebhookHangingReceiverDoesNotSlowTheAdminAPI(t *testing.T) {
	rc := startReceiver(t, whHang)
	e := newWebhookEnv(t, whHook{url: rc.url(), secret: "whsec-hanging-0123456789abcdef"})
	g := e.start(t)
	start := time.Now()
	ids := createKeys(t, 10, g)
	var slowest time.Duration
	for _, id := range ids {
		t0 := time.Now()
		if _, err := g.admin.RevokeKey(context.Background(), whInstance, id); err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		slowest = max(slowest, d)
		if d > time.Second {
			t.Errorf("a revoke answered in %v while the receiver hangs", d)
		}
	}
	t.Logf("10 creates and 10 revokes in %v with the receiver hanging (slowest revoke %v)", time.Since(start).Round(time.Millisecond), slowest.Round(time.Millisecond))
	testutil.WaitFor(t, 5*time.Second, "deliveries hanging at the receiver", func() bool { return rc.hangingNow() > 0 })
	if n := rc.hangingNow(); n > 4 {
		t.Errorf("%d deliveries hanging at once, more than the concurrency (4)", n)
	}
	rc.setMode(whOK)
	// Released within the 10 s delivery timeout, the hanging ones are answered at once; were
	// they timed out first, their retry comes 8–12 s later: 30 s covers both.
	took := waitKeysDelivered(t, rc, "api_key.revoked", ids, 30*time.Second)
	waitKeysDelivered(t, rc, "api_key.created", ids, 30*time.Second)
	t.Logf("all 20 events delivered %v after the receiver stopped hanging", took.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	checkOnce(t, "hanging receiver", rc)
}

// Deliveries pending (the receiver hangs: four in flight, the rest waiting) when the only
// gateway is stopped gracefully (SIGTERM): it hands the in-flight ones back at once, the
// outbox keeps the rest, and once it is started again (the receiver answering) every event
// arrives — well before the 60 s lease would have handed them on.
func TestWebhookPendingDeliveriesSurviveARestart(t *testing.T) {
	rc := startReceiver(t, whHang)
	secret := "whsec-restart-0123456789abcdef"
	e := newWebhookEnv(t, whHook{url: rc.url(), secret: secret})
	g := e.start(t)
	ids := createKeys(t, 6, g)
	testutil.WaitFor(t, 10*time.Second, "4 deliveries hanging at the receiver", func() bool { return rc.hangingNow() == 4 })
	stopGateway(t, g.gateway, syscall.SIGTERM)
	testutil.WaitFor(t, 5*time.Second, "the stopped gateway's deliveries to end", func() bool { return rc.hangingNow() == 0 })
	if n := len(rc.delivered()); n != 0 {
		t.Fatalf("%d events delivered to a hanging receiver", n)
	}
	rc.setMode(whOK)
	e.restart(t, g)
	// 15 s: generous for a delivery due at once, far below the 60 s lease that a gateway
	// that did not hand its deliveries back would leave them under.
	took := waitKeysDelivered(t, rc, "api_key.created", ids, 15*time.Second)
	t.Logf("all 6 delivered %v after the restart", took.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	checkOnce(t, "after a restart", rc)
	for _, d := range rc.all() {
		if d.status == 200 {
			checkSigned(t, "after a restart", d, secret)
		}
	}
}

// The restart case on the file store (one gateway): deliveries pending at
// a graceful stop (four hanging, two waiting) are all delivered after the restart, once.
func TestWebhookFileStorePendingDeliveriesSurviveARestart(t *testing.T) {
	rc := startReceiver(t, whOK)
	secret := "whsec-file-store-0123456789abc"
	e := newFileWebhookEnv(t, whHook{url: rc.url(), secret: secret})
	g := e.start(t)
	probes := waitDelivering(t, g, rc)
	testutil.WaitFor(t, 10*time.Second, "the probes to be delivered", func() bool { return len(rc.delivered()) == len(probes) })
	rc.setMode(whHang)
	ids := createKeys(t, 6, g)
	testutil.WaitFor(t, 10*time.Second, "4 deliveries hanging at the receiver", func() bool { return rc.hangingNow() == 4 })
	stopGateway(t, g.gateway, syscall.SIGTERM)
	testutil.WaitFor(t, 5*time.Second, "the stopped gateway's deliveries to end", func() bool { return rc.hangingNow() == 0 })
	rc.setMode(whOK)
	e.restart(t, g)
	// 15 s: as on Redis, far below the 60 s lease.
	took := waitKeysDelivered(t, rc, "api_key.created", ids, 15*time.Second)
	t.Logf("file store: all 6 delivered %v after the restart", took.Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	checkOnce(t, "file store, after a restart", rc)
	if n := len(rc.delivered()); n != len(probes)+6 {
		t.Errorf("%d events delivered, want %d", n, len(probes)+6)
	}
	for _, d := range rc.all() {
		if d.status == 200 {
			checkSigned(t, "file store", d, secret)
		}
	}
}
