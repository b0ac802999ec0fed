package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

// receiver records deliveries; fail makes it answer 503 to the next n.
type receiver struct {
	mu    sync.Mutex
	got   []delivery
	fail  atomic.Int64
	calls atomic.Int64
	srv   *httptest.Server
}

type delivery struct {
	id, sig string
	body    []byte
	event   admin.Event
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.calls.Add(1)
		if r.fail.Add(-1) >= 0 {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(req.Body)
		var e admin.Event
		json.Unmarshal(body, &e)
		r.mu.Lock()
		r.got = append(r.got, delivery{id: req.Header.Get(HeaderEventID), sig: req.Header.Get(HeaderSignature), body: body, event: e})
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func openStore(t *testing.T) *filestore.Store {
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateInstance(context.Background(), store.Instance{ID: "acme", Name: "Acme", Environment: apikey.Sandbox}); err != nil {
		t.Fatal(err)
	}
	return s
}

func addEvent(t *testing.T, s store.Store, typ string) string {
	id, err := apikey.NewID("evt_", 24)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvent(context.Background(), store.Event{ID: id, Type: typ, Instance: "acme", KeyID: "key_a",
		Actor: "test", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestDeliverSignedOnceWithFilterAndRetry(t *testing.T) {
	s := openStore(t)
	before := addEvent(t, s, store.EventKeyCreated) // recorded before the webhook exists: never sent
	all, revokes := newReceiver(t), newReceiver(t)
	revokes.fail.Store(1) // the first attempt fails, the retry delivers
	// The deliverer registers its webhooks in the background; registering them first makes
	// the line between "before" and "after" exact.
	for _, u := range []string{all.srv.URL, revokes.srv.URL + "/r"} {
		if err := s.RegisterWebhook(context.Background(), (Webhook{URL: u}).ID()); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Start(s, []Webhook{
		{URL: all.srv.URL, Secret: secret},
		{URL: revokes.srv.URL + "/r", Secret: secret + "2", Events: []string{store.EventKeyRevoked}},
	}, Options{Poll: 50 * time.Millisecond, Backoff: func(int) time.Duration { return 100 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	created := addEvent(t, s, store.EventKeyCreated)
	revoked := addEvent(t, s, store.EventKeyRevoked)
	testutil.WaitFor(t, 5*time.Second, "deliveries", func() bool {
		return len(all.deliveries()) == 2 && len(revokes.deliveries()) == 1
	})
	time.Sleep(300 * time.Millisecond) // several polls more: nothing is sent twice
	a, r := all.deliveries(), revokes.deliveries()
	if len(a) != 2 || len(r) != 1 {
		t.Fatalf("deliveries: %d to the all-events hook, %d to the revokes hook; want 2 and 1", len(a), len(r))
	}
	ids := map[string]bool{}
	for _, x := range a {
		ids[x.id] = true
		if x.id != x.event.ID || x.event.Object != "event" || x.event.Instance != "acme" {
			t.Errorf("delivery %s: body %s", x.id, x.body)
		}
		if err := Verify(secret, x.sig, x.body, time.Now(), time.Minute); err != nil {
			t.Errorf("delivery %s: signature: %v", x.id, err)
		}
	}
	if !ids[created] || !ids[revoked] || ids[before] {
		t.Errorf("delivered %v; want %s and %s, never %s (recorded before)", ids, created, revoked, before)
	}
	if r[0].id != revoked || Verify(secret+"2", r[0].sig, r[0].body, time.Now(), time.Minute) != nil {
		t.Errorf("the revokes hook got %s (signature under its own secret?)", r[0].id)
	}
	if revokes.calls.Load() != 2 {
		t.Errorf("the failing hook was called %d times, want 2 (one failure, one retry)", revokes.calls.Load())
	}
	if n, _ := s.OutboxDepth(context.Background(), (Webhook{URL: all.srv.URL}).ID()); n != 0 {
		t.Errorf("outbox depth %d after every delivery", n)
	}
}

func TestDeliverGivesUpAfterGiveUpAfter(t *testing.T) {
	s := openStore(t)
	rcv := newReceiver(t)
	rcv.fail.Store(1 << 30)
	var dropped atomic.Int64
	d, err := Start(s, []Webhook{{URL: rcv.srv.URL, Secret: secret}}, Options{Poll: 20 * time.Millisecond,
		GiveUpAfter: 200 * time.Millisecond, Backoff: func(int) time.Duration { return 50 * time.Millisecond },
		OnResult: func(_, result string, _ time.Duration) {
			if result == ResultDropped {
				dropped.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := s.RegisterWebhook(context.Background(), (Webhook{URL: rcv.srv.URL}).ID()); err != nil {
		t.Fatal(err)
	}
	addEvent(t, s, store.EventKeyRevoked)
	testutil.WaitFor(t, 5*time.Second, "the event given up", func() bool { return dropped.Load() == 1 })
	calls := rcv.calls.Load()
	time.Sleep(300 * time.Millisecond)
	if rcv.calls.Load() != calls || calls < 2 {
		t.Fatalf("calls %d then %d: a given-up event must be retried before and never after", calls, rcv.calls.Load())
	}
}

func TestHangingReceiverHoldsOnlyItsSlots(t *testing.T) {
	s := openStore(t)
	release := make(chan struct{})
	var inFlight, most atomic.Int64
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	fine := newReceiver(t)
	d, err := Start(s, []Webhook{{URL: hang.URL, Secret: secret}, {URL: fine.srv.URL, Secret: secret}},
		Options{Poll: 20 * time.Millisecond, Concurrency: 2, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{hang.URL, fine.srv.URL} {
		if err := s.RegisterWebhook(context.Background(), (Webhook{URL: u}).ID()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for range 6 {
		addEvent(t, s, store.EventKeyCreated)
	}
	// Recording events never waits for a receiver (generous bound: a loaded machine).
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("recording 6 events took %v with a hanging receiver", took)
	}
	testutil.WaitFor(t, 5*time.Second, "the other webhook's deliveries", func() bool { return len(fine.deliveries()) == 6 })
	time.Sleep(200 * time.Millisecond)
	if most.Load() > 2 {
		t.Errorf("%d deliveries in flight to the hanging receiver, Concurrency is 2", most.Load())
	}
	// Close cancels the hanging ones and hands them back (due at once) for the next owner.
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a hanging receiver")
	}
	items, err := s.ClaimOutbox(context.Background(), (Webhook{URL: hang.URL}).ID(), "acme", nil, 10, time.Minute)
	if err != nil || len(items) != 6 {
		t.Fatalf("after Close %d items are due at once (%v), want 6 (the ones in flight handed back, the rest never sent)", len(items), err)
	}
	if n, err := s.OutboxDepth(context.Background(), (Webhook{URL: hang.URL}).ID()); err != nil || n != 6 {
		t.Fatalf("outbox depth %d (%v), want the 6 undelivered events", n, err)
	}
}
