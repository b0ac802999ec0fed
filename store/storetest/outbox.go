package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
)

// outboxTests are the webhook outbox's tests (store.Outbox).
var outboxTests = []contractTest{
	{"OutboxOfUnregisteredWebhookOrMissingInstanceIsEmpty", testOutboxUnregistered},
	{"OutboxDeliversEventsAfterRegistrationInOrderOnce", testOutboxDelivers},
	{"OutboxFilterPassesOverOtherTypesForGood", testOutboxFilter},
	{"OutboxClaimLeasesItems", testOutboxLease},
	{"OutboxRetryAndAck", testOutboxRetryAck},
	{"OutboxConcurrentClaimsHandOutEachItemOnce", testOutboxConcurrentClaims},
	{"OutboxKeepsItemsTheTrailDropped", testOutboxTrimmed},
	{"OutboxDepthCountsEveryInstance", testOutboxDepth},
	{"OutboxGetsRevokeRollAndUpdateEvents", testOutboxKeyEvents},
	{"WatchEventsHearsEveryRecordedEvent", testWatchEvents},
}

// Webhook ids, as the deliverer derives them from the URLs.
const (
	webhookA = "5f0c2b7e9a31d4c8"
	webhookB = "e81d03a6bb5c9f27"
)

// outbox returns the suite's store as a store.Outbox.
func (x *suite) outbox() store.Outbox {
	x.t.Helper()
	o, ok := x.s.(store.Outbox)
	if !ok {
		x.t.Fatalf("%T does not implement store.Outbox", x.s)
	}
	return o
}

func (x *suite) register(webhook string) {
	x.t.Helper()
	if err := x.outbox().RegisterWebhook(x.ctx, webhook); err != nil {
		x.t.Fatalf("RegisterWebhook(%s): %v", webhook, err)
	}
}

func (x *suite) claim(webhook, instance string, types []string, max int, lease time.Duration) []store.OutboxItem {
	x.t.Helper()
	items, err := x.outbox().ClaimOutbox(x.ctx, webhook, instance, types, max, lease)
	if err != nil {
		x.t.Fatalf("ClaimOutbox(%s, %s): %v", webhook, instance, err)
	}
	if len(items) > max {
		x.t.Fatalf("ClaimOutbox(%s, %s) claimed %d items, max %d", webhook, instance, len(items), max)
	}
	return items
}

func (x *suite) ack(webhook, instance, id string) {
	x.t.Helper()
	if err := x.outbox().AckOutbox(x.ctx, webhook, instance, id); err != nil {
		x.t.Fatalf("AckOutbox(%s, %s, %s): %v", webhook, instance, id, err)
	}
}

func (x *suite) retry(webhook, instance, id string, delay time.Duration) {
	x.t.Helper()
	if err := x.outbox().RetryOutbox(x.ctx, webhook, instance, id, delay); err != nil {
		x.t.Fatalf("RetryOutbox(%s, %s, %s, %v): %v", webhook, instance, id, delay, err)
	}
}

func (x *suite) depth(webhook string) int64 {
	x.t.Helper()
	n, err := x.outbox().OutboxDepth(x.ctx, webhook)
	if err != nil {
		x.t.Fatalf("OutboxDepth(%s): %v", webhook, err)
	}
	return n
}

// addEvents records n events of type typ in instance and returns them as the store keeps
// them.
func (x *suite) addEvents(instance, typ string, n int) []store.Event {
	x.t.Helper()
	var out []store.Event
	for i := 0; i < n; i++ {
		e := x.event(typ, instance, fmt.Sprintf("key_%d", i), "")
		if err := x.s.AddEvent(x.ctx, e); err != nil {
			x.t.Fatalf("AddEvent: %v", err)
		}
		out = append(out, x.stored(e))
	}
	return out
}

// drain claims and acknowledges webhook's items of instance until none is due, and returns
// their events in the order claimed. Every item must be a first attempt.
func (x *suite) drain(webhook, instance string, types []string) []store.Event {
	x.t.Helper()
	var out []store.Event
	for round := 0; ; round++ {
		if round > 1000 {
			x.t.Fatal("ClaimOutbox claims without end")
		}
		items := x.claim(webhook, instance, types, 100, time.Hour)
		if len(items) == 0 {
			return out
		}
		for _, it := range items {
			if it.Attempts != 0 {
				x.t.Errorf("item %s: Attempts %d on its first claim, want 0", it.Event.ID, it.Attempts)
			}
			x.checkQueuedAt(it)
			x.ack(webhook, instance, it.Event.ID)
			out = append(out, it.Event)
		}
	}
}

// checkQueuedAt checks that an item's QueuedAt is a store time: now, by a clock near this
// process', in UTC, in milliseconds.
func (x *suite) checkQueuedAt(it store.OutboxItem) {
	x.t.Helper()
	q := it.QueuedAt
	if d := time.Since(q); d < -5*time.Second || d > time.Minute {
		x.t.Errorf("item %s: QueuedAt %v is not about now", it.Event.ID, q)
	}
	if q.Location() != time.UTC || q.Nanosecond()%int(time.Millisecond) != 0 {
		x.t.Errorf("item %s: QueuedAt %v is not in UTC milliseconds", it.Event.ID, q)
	}
}

// sameEvents checks events as an outbox delivered them against the events recorded.
func sameEvents(x *suite, what string, got, want []store.Event) {
	x.t.Helper()
	if len(got) != len(want) {
		x.t.Errorf("%s: %d events %v, want %d %v", what, len(got), eventIDs(got), len(want), eventIDs(want))
		return
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			x.t.Errorf("%s: event %d = %+v, want %+v", what, i, got[i], want[i])
			return
		}
	}
}

func eventIDs(evs []store.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func itemEvents(items []store.OutboxItem) []store.Event {
	out := make([]store.Event, len(items))
	for i, it := range items {
		out[i] = it.Event
	}
	return out
}

func testOutboxUnregistered(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	before := x.addEvents(a.ID, store.EventKeyCreated, 3)
	if items := x.claim(webhookA, a.ID, nil, 10, time.Hour); len(items) != 0 {
		t.Errorf("an unregistered webhook claimed %v", itemEvents(items))
	}
	if n := x.depth(webhookA); n != 0 {
		t.Errorf("OutboxDepth of an unregistered webhook = %d", n)
	}
	x.register(webhookA)
	// What the claim before the registration saw is not delivered after it either.
	if got := x.drain(webhookA, a.ID, nil); len(got) != 0 {
		t.Errorf("events recorded before RegisterWebhook were delivered: %v (before: %v)", eventIDs(got), eventIDs(before))
	}
	after := x.addEvents(a.ID, store.EventKeyRevoked, 2)
	sameEvents(x, "after the registration", x.drain(webhookA, a.ID, nil), after)
	if items := x.claim(webhookA, "missing", nil, 10, time.Hour); len(items) != 0 {
		t.Errorf("a missing instance claimed %v", itemEvents(items))
	}
	// Only this webhook was registered.
	x.addEvents(a.ID, store.EventKeyCreated, 1)
	if items := x.claim(webhookB, a.ID, nil, 10, time.Hour); len(items) != 0 {
		t.Errorf("another, unregistered webhook claimed %v", itemEvents(items))
	}
}

func testOutboxDelivers(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	quiet := x.instance("quiet", apikey.Production) // no event before the registration
	x.addEvents(a.ID, store.EventKeyCreated, 3)
	x.register(webhookA)

	// More than a claim moves at once, of several types; a second registration in the
	// middle changes nothing.
	want := x.addEvents(a.ID, store.EventKeyCreated, 3)
	x.register(webhookA)
	want = append(want, x.addEvents(a.ID, store.EventKeyRolled, 300)...)
	want = append(want, x.addEvents(a.ID, store.EventKeyRevoked, 300)...)
	sameEvents(x, "the trail after the registration", x.drain(webhookA, a.ID, nil), want)
	if got := x.drain(webhookA, a.ID, nil); len(got) != 0 {
		t.Errorf("delivered again: %v", eventIDs(got))
	}
	more := x.addEvents(a.ID, store.EventKeyLeaked, 2)
	sameEvents(x, "events recorded after the outbox was drained", x.drain(webhookA, a.ID, nil), more)

	want = x.addEvents(quiet.ID, store.EventKeyCreated, 2)
	sameEvents(x, "an instance whose trail was empty at the registration", x.drain(webhookA, quiet.ID, nil), want)
	late := x.instance("late", apikey.Production)
	want = x.addEvents(late.ID, store.EventKeyCreated, 4)
	sameEvents(x, "an instance created after the registration", x.drain(webhookA, late.ID, nil), want)
}

func testOutboxFilter(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	x.register(webhookA)
	x.register(webhookB)
	var all []store.Event
	for _, typ := range []string{store.EventKeyCreated, store.EventKeyRevoked, store.EventKeyRolled,
		store.EventKeyCreated, store.EventKeyLeaked, store.EventKeyUpdated} {
		all = append(all, x.addEvents(a.ID, typ, 1)...)
	}
	types := []string{store.EventKeyCreated, store.EventKeyLeaked}
	sameEvents(x, "filtered by type", x.drain(webhookA, a.ID, types), []store.Event{all[0], all[3], all[4]})
	if got := x.drain(webhookA, a.ID, nil); len(got) != 0 {
		t.Errorf("events passed over were delivered once the filter widened: %v", eventIDs(got))
	}
	later := x.addEvents(a.ID, store.EventKeyRevoked, 1)
	sameEvents(x, "a revoke after the filter widened", x.drain(webhookA, a.ID, nil), later)
	// The other webhook, unfiltered, gets everything.
	sameEvents(x, "the other webhook", x.drain(webhookB, a.ID, nil), append(all, later...))
}

func testOutboxLease(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	x.register(webhookA)
	evs := x.addEvents(a.ID, store.EventKeyCreated, 2)
	const lease = 300 * time.Millisecond
	first := x.claim(webhookA, a.ID, nil, 1, lease)
	sameEvents(x, "the first claim of one", itemEvents(first), evs[:1])
	second := x.claim(webhookA, a.ID, nil, 10, lease)
	sameEvents(x, "the second claim, at once", itemEvents(second), evs[1:])
	if items := x.claim(webhookA, a.ID, nil, 10, lease); len(items) != 0 {
		t.Fatalf("a claim within the lease got %v", itemEvents(items))
	}
	queued := map[string]time.Time{}
	for _, it := range append(first, second...) {
		if it.Attempts != 0 {
			t.Errorf("first claim of %s: Attempts %d", it.Event.ID, it.Attempts)
		}
		x.checkQueuedAt(it)
		queued[it.Event.ID] = it.QueuedAt
	}

	// Once the lease is over they are due again, in order, each a second attempt.
	var again []store.OutboxItem
	testutil.WaitFor(t, 10*time.Second, "the leased items to be due again", func() bool {
		again = append(again, x.claim(webhookA, a.ID, nil, 10, time.Hour)...)
		return len(again) >= 2
	})
	sameEvents(x, "after the lease", itemEvents(again), evs)
	for _, it := range again {
		if it.Attempts != 1 {
			t.Errorf("second claim of %s: Attempts %d, want 1", it.Event.ID, it.Attempts)
		}
		if !it.QueuedAt.Equal(queued[it.Event.ID]) {
			t.Errorf("second claim of %s: QueuedAt %v, was %v", it.Event.ID, it.QueuedAt, queued[it.Event.ID])
		}
	}
	if items := x.claim(webhookA, a.ID, nil, 10, time.Hour); len(items) != 0 {
		t.Errorf("a claim within the new lease got %v", itemEvents(items))
	}
}

func testOutboxRetryAck(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	x.register(webhookA)
	evs := x.addEvents(a.ID, store.EventKeyCreated, 2)
	e1, e2 := evs[0].ID, evs[1].ID
	sameEvents(x, "the claim", itemEvents(x.claim(webhookA, a.ID, nil, 10, time.Hour)), evs)

	x.retry(webhookA, a.ID, e1, 0)
	items := x.claim(webhookA, a.ID, nil, 10, time.Hour)
	sameEvents(x, "after a retry with no delay", itemEvents(items), evs[:1])
	if len(items) == 1 && items[0].Attempts != 1 {
		t.Errorf("retried item: Attempts %d, want 1", items[0].Attempts)
	}
	x.retry(webhookA, a.ID, e2, time.Hour)
	if items := x.claim(webhookA, a.ID, nil, 10, time.Hour); len(items) != 0 {
		t.Errorf("an item retried in an hour was claimed at once: %v", itemEvents(items))
	}
	if n := x.depth(webhookA); n != 2 {
		t.Errorf("OutboxDepth with two items claimed = %d", n)
	}

	x.ack(webhookA, a.ID, e1)
	x.ack(webhookA, a.ID, e1) // again: not an error
	x.ack(webhookA, a.ID, "evt_nope")
	x.ack(webhookA, "missing", e1)
	x.ack(webhookB, a.ID, e2) // another webhook's outbox
	if n := x.depth(webhookA); n != 1 {
		t.Errorf("OutboxDepth after acknowledging one of two = %d", n)
	}
	x.retry(webhookA, a.ID, e1, 0) // acknowledged: stays gone
	x.retry(webhookA, a.ID, "evt_nope", 0)
	if items := x.claim(webhookA, a.ID, nil, 10, time.Hour); len(items) != 0 {
		t.Errorf("a retry brought back an acknowledged item: %v", itemEvents(items))
	}
	x.retry(webhookA, a.ID, e2, 0)
	items = x.claim(webhookA, a.ID, nil, 10, time.Hour)
	sameEvents(x, "the item retried at once after its delay", itemEvents(items), evs[1:])
	if len(items) == 1 && items[0].Attempts != 1 {
		t.Errorf("retried item: Attempts %d, want 1", items[0].Attempts)
	}
	x.ack(webhookA, a.ID, e2)
	if n := x.depth(webhookA); n != 0 {
		t.Errorf("OutboxDepth after acknowledging everything = %d", n)
	}
	x.retry(webhookA, a.ID, e2, 0)
	if n := x.depth(webhookA); n != 0 {
		t.Errorf("OutboxDepth after a retry of an acknowledged item = %d", n)
	}
}

func testOutboxConcurrentClaims(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	x.register(webhookA)
	const n, claimers = 120, 8
	evs := x.addEvents(a.ID, store.EventKeyCreated, n)
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for g := 0; g < claimers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for round := 0; round < n; round++ {
				items, err := x.outbox().ClaimOutbox(x.ctx, webhookA, a.ID, nil, 3, time.Minute)
				if err != nil {
					t.Errorf("ClaimOutbox: %v", err)
					return
				}
				if len(items) == 0 {
					return
				}
				mu.Lock()
				for _, it := range items {
					seen[it.Event.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, e := range evs {
		if c := seen[e.ID]; c != 1 {
			t.Errorf("event %s was claimed %d times within one lease, want once", e.ID, c)
		}
	}
	if len(seen) != n {
		t.Errorf("%d items claimed, want %d", len(seen), n)
	}
}

func testOutboxTrimmed(x *suite) {
	t := x.t
	if testing.Short() {
		t.Skip("writes a whole trail of events")
	}
	a := x.instance("acme", apikey.Sandbox)
	x.register(webhookA)
	e := x.event(store.EventKeyLeaked, a.ID, "key_leaked", "")
	e.URL, e.Source = "https://github.com/acme/app/blob/main/.env", "commit"
	if err := x.s.AddEvent(x.ctx, e); err != nil {
		t.Fatal(err)
	}
	const lease = 300 * time.Millisecond
	sameEvents(x, "the first claim", itemEvents(x.claim(webhookA, a.ID, nil, 1, lease)), []store.Event{x.stored(e)})

	// The trail drops the event (the newest MaxEvents stay)...
	var wg sync.WaitGroup
	const writers = 8
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < store.MaxEvents; i += writers {
				err := x.s.AddEvent(x.ctx, store.Event{ID: fmt.Sprintf("evt_bulk%05d", i), Type: store.EventKeyCreated, Instance: a.ID, CreatedAt: x.now})
				if err != nil {
					t.Errorf("AddEvent: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, _, err := x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 1, StartingAfter: e.ID}); !errors.Is(err, store.ErrInvalidCursor) {
		t.Fatalf("the trail still holds the first event (ListEvents after it: %v); the test proves nothing", err)
	}
	// ...but the outbox still has it, whole. (Claims before its lease ends get the events
	// written meanwhile; once due it comes first, due before them.)
	var items []store.OutboxItem
	testutil.WaitFor(t, 10*time.Second, "the leased item to be due again", func() bool {
		items = x.claim(webhookA, a.ID, nil, 1000, time.Hour)
		for _, it := range items {
			if it.Event.ID == e.ID {
				return true
			}
		}
		return false
	})
	sameEvents(x, "after the trail dropped it", itemEvents(items[:1]), []store.Event{x.stored(e)})
	if items[0].Attempts != 1 {
		t.Errorf("Attempts %d, want 1", items[0].Attempts)
	}
}

func testOutboxDepth(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	b := x.instance("other", apikey.Production)
	x.instance("empty", apikey.Production)
	x.register(webhookA)
	x.register(webhookB)
	x.addEvents(a.ID, store.EventKeyCreated, 3)
	x.addEvents(b.ID, store.EventKeyCreated, 2)
	// A claim moves an instance's events into the outbox; claimed items stay in it.
	ca := x.claim(webhookA, a.ID, nil, 1, time.Hour)
	x.claim(webhookA, b.ID, nil, 1, time.Hour)
	if n := x.depth(webhookA); n != 5 {
		t.Errorf("OutboxDepth over two instances = %d, want 5", n)
	}
	if len(ca) == 1 {
		x.ack(webhookA, a.ID, ca[0].Event.ID)
	}
	if n := x.depth(webhookA); n != 4 {
		t.Errorf("OutboxDepth after an acknowledgement = %d, want 4", n)
	}
	x.drain(webhookB, a.ID, nil)
	x.drain(webhookB, b.ID, nil)
	if n := x.depth(webhookB); n != 0 {
		t.Errorf("OutboxDepth of a drained webhook = %d", n)
	}
	if n := x.depth(webhookA); n != 4 {
		t.Errorf("OutboxDepth after another webhook's acknowledgements = %d, want 4", n)
	}
	if n := x.depth("0000000000000000"); n != 0 {
		t.Errorf("OutboxDepth of an unregistered webhook = %d", n)
	}
}

func testOutboxKeyEvents(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	x.register(webhookA)
	k1 := x.key(in, "one", x.now)
	k2 := x.key(in, "two", x.now)

	revoked := x.event(store.EventKeyRevoked, in.ID, k1.ID, "")
	if _, _, err := x.s.RevokeKey(x.ctx, in.ID, k1.ID, x.now, &revoked); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	again := x.event(store.EventKeyRevoked, in.ID, k1.ID, "")
	if _, _, err := x.s.RevokeKey(x.ctx, in.ID, k1.ID, x.now, &again); err != nil { // records nothing
		t.Fatalf("RevokeKey again: %v", err)
	}
	next, _ := NewKey(t, in.ID, in.Environment, "two", x.now.Add(time.Second))
	rolled := x.event(store.EventKeyRolled, in.ID, k2.ID, next.ID)
	if _, err := x.s.RollKey(x.ctx, in.ID, k2.ID, next, x.now.Add(time.Hour), &rolled); err != nil {
		t.Fatalf("RollKey: %v", err)
	}
	name := "renamed"
	updated := x.event(store.EventKeyUpdated, in.ID, next.ID, "")
	if _, err := x.s.UpdateKey(x.ctx, in.ID, next.ID, store.KeyUpdate{Name: &name}, &updated); err != nil {
		t.Fatalf("UpdateKey: %v", err)
	}
	if len(updated.Fields) != 1 || updated.Fields[0] != store.FieldName {
		t.Fatalf("UpdateKey set the event's Fields to %v", updated.Fields)
	}
	sameEvents(x, "the outbox after revoke, roll and update", x.drain(webhookA, in.ID, nil),
		[]store.Event{x.stored(revoked), x.stored(rolled), x.stored(updated)})
}

// watched counts the instances a WatchEvents callback was called with.
type watched struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *watched) f(instance string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == nil {
		w.n = map[string]int{}
	}
	w.n[instance]++
}

func (w *watched) count(instance string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[instance]
}

func testWatchEvents(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	b := x.instance("other", apikey.Production)
	var w1, w2 watched
	stop1 := x.outbox().WatchEvents(w1.f)
	stop2 := x.outbox().WatchEvents(w2.f)
	defer stop2()
	wait := func(w *watched, instance string, n int, what string) {
		t.Helper()
		testutil.WaitFor(t, 5*time.Second, what, func() bool { return w.count(instance) >= n })
	}

	x.addEvents(a.ID, store.EventKeyCreated, 1)
	wait(&w1, a.ID, 1, "the callback of AddEvent")
	wait(&w2, a.ID, 1, "the second callback of AddEvent")
	k := x.key(b, "k", x.now)
	ev := x.event(store.EventKeyRevoked, b.ID, k.ID, "")
	if _, _, err := x.s.RevokeKey(x.ctx, b.ID, k.ID, x.now, &ev); err != nil {
		t.Fatal(err)
	}
	wait(&w1, b.ID, 1, "the callback of a revoke with its event")
	k2 := x.key(b, "k2", x.now)
	next, _ := NewKey(t, b.ID, b.Environment, "k2", x.now.Add(time.Second))
	rolled := x.event(store.EventKeyRolled, b.ID, k2.ID, next.ID)
	if _, err := x.s.RollKey(x.ctx, b.ID, k2.ID, next, x.now.Add(time.Hour), &rolled); err != nil {
		t.Fatal(err)
	}
	wait(&w1, b.ID, 2, "the callback of a roll with its event")
	name := "renamed"
	updated := x.event(store.EventKeyUpdated, b.ID, next.ID, "")
	if _, err := x.s.UpdateKey(x.ctx, b.ID, next.ID, store.KeyUpdate{Name: &name}, &updated); err != nil {
		t.Fatal(err)
	}
	wait(&w1, b.ID, 3, "the callback of an update with its event")

	stop1()
	stop1() // twice: fine
	before := w1.count(a.ID)
	x.addEvents(a.ID, store.EventKeyCreated, 1)
	wait(&w2, a.ID, 2, "the remaining callback")
	time.Sleep(50 * time.Millisecond)
	if n := w1.count(a.ID); n != before {
		t.Errorf("a stopped callback was called %d more times", n-before)
	}
}
