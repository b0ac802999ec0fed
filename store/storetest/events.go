package storetest

import (
	"errors"
	"fmt"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testEvents(x *suite) {
	t := x.t
	a := x.instance("acme", apikey.Sandbox)
	b := x.instance("other", apikey.Production)
	if _, _, err := x.s.ListEvents(x.ctx, "missing", store.ListOptions{Limit: 10}); !errors.Is(err, store.ErrInstanceNotFound) {
		t.Errorf("ListEvents(missing) = %v, want ErrInstanceNotFound", err)
	}
	if evs, more, err := x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 10}); err != nil || len(evs) != 0 || more {
		t.Fatalf("no events yet: %v %v %v", evs, more, err)
	}
	if _, _, err := x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: "evt_nope"}); !errors.Is(err, store.ErrInvalidCursor) {
		t.Errorf("unknown cursor on an empty trail = %v, want ErrInvalidCursor", err)
	}
	if err := x.s.AddEvent(x.ctx, store.Event{ID: "evt_x", Instance: "missing", Type: store.EventKeyCreated, CreatedAt: x.now}); !errors.Is(err, store.ErrInstanceNotFound) {
		t.Errorf("AddEvent(missing instance) = %v, want ErrInstanceNotFound", err)
	}
	var want []store.Event
	for i := 0; i < 7; i++ {
		e := store.Event{ID: fmt.Sprintf("evt_%03d", i), Type: store.EventKeyRolled, Instance: a.ID,
			KeyID: fmt.Sprintf("key_%d", i), NewKeyID: "key_new", Actor: "ci", CreatedAt: x.now}
		if err := x.s.AddEvent(x.ctx, e); err != nil {
			t.Fatal(err)
		}
		e.CreatedAt = store.FromMillis(store.Millis(x.now))
		want = append([]store.Event{e}, want...) // newest first
	}
	if err := x.s.AddEvent(x.ctx, store.Event{ID: "evt_b", Type: store.EventKeyCreated, Instance: b.ID, CreatedAt: x.now}); err != nil {
		t.Fatal(err)
	}
	var got []store.Event
	cursor := ""
	for page := 0; ; page++ {
		evs, more, err := x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 3, StartingAfter: cursor})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, evs...)
		if wantMore := page < 2; more != wantMore {
			t.Fatalf("page %d: hasMore %v", page, more)
		}
		if !more {
			break
		}
		cursor = evs[len(evs)-1].ID
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Type != want[i].Type || got[i].KeyID != want[i].KeyID ||
			got[i].NewKeyID != want[i].NewKeyID || got[i].Actor != want[i].Actor || !got[i].CreatedAt.Equal(want[i].CreatedAt) {
			t.Fatalf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// The trail keeps the newest MaxEvents.
	for i := 0; i < store.MaxEvents; i++ {
		if err := x.s.AddEvent(x.ctx, store.Event{ID: fmt.Sprintf("evt_bulk%05d", i), Type: store.EventKeyCreated, Instance: a.ID, CreatedAt: x.now}); err != nil {
			t.Fatal(err)
		}
	}
	evs, more, err := x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 1000, StartingAfter: fmt.Sprintf("evt_bulk%05d", 1001)})
	if err != nil || len(evs) != 1000 || !more {
		t.Fatalf("paging the bulk: %d events, more %v, %v", len(evs), more, err)
	}
	n := 0
	for cursor, more := "", true; more; {
		var page []store.Event
		page, more, err = x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 1000, StartingAfter: cursor})
		if err != nil {
			t.Fatal(err)
		}
		n += len(page)
		if len(page) > 0 {
			cursor = page[len(page)-1].ID
		}
	}
	if n != store.MaxEvents {
		t.Fatalf("the trail holds %d events, want the newest %d", n, store.MaxEvents)
	}
	if _, _, err := x.s.ListEvents(x.ctx, a.ID, store.ListOptions{Limit: 1, StartingAfter: "evt_000"}); !errors.Is(err, store.ErrInvalidCursor) {
		t.Errorf("a dropped event as cursor = %v, want ErrInvalidCursor", err)
	}
	if evs, _, _ := x.s.ListEvents(x.ctx, b.ID, store.ListOptions{Limit: 10}); len(evs) != 1 || evs[0].ID != "evt_b" {
		t.Errorf("the other instance's trail: %+v", evs)
	}
}
