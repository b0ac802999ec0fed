package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func testConcurrentCreates(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	other := x.instance("other", apikey.Sandbox)
	const n = 100
	keys := make([]store.Key, n)
	for i := range keys {
		keys[i], _ = NewKey(t, in.ID, in.Environment, fmt.Sprintf("k%03d", i), x.now)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	start := make(chan struct{})
	for i := range keys {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			errs <- x.s.CreateKey(x.ctx, keys[i])
		}()
		go func() { // meanwhile, another instance gets keys too
			defer wg.Done()
			<-start
			k, _ := NewKey(t, other.ID, other.Environment, "o", x.now)
			errs <- x.s.CreateKey(x.ctx, k)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent CreateKey: %v", err)
		}
	}
	listed, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if more || len(listed) != n {
		t.Fatalf("listed %d keys (hasMore %v), want %d", len(listed), more, n)
	}
	seen := map[string]bool{}
	for _, k := range listed {
		if seen[k.ID] {
			t.Errorf("key %s listed twice", k.ID)
		}
		seen[k.ID] = true
	}
	for _, k := range keys {
		if !seen[k.ID] {
			t.Errorf("key %s lost", k.ID)
		}
		if l, err := x.s.LookupHash(x.ctx, k.Hash); err != nil || l.ID != k.ID {
			t.Errorf("LookupHash(%s) = %+v, %v", k.ID, l, err)
		}
	}
	if paged := x.listAll(in.ID, 7, "", x.now); !slices.Equal(ids(paged), ids(listed)) {
		t.Errorf("paging by 7 gives another order or set than one page")
	}
	if n2 := len(x.listAll(other.ID, 1000, "", x.now)); n2 != n {
		t.Errorf("other instance lists %d keys, want %d", n2, n)
	}
}

// rollers is how many goroutines race in the concurrency tests.
const rollers = 12

// Concurrent rolls of one key: exactly one succeeds, the others are refused; one
// replacement is listed and works, and the trail holds one api_key.rolled event.
func testConcurrentRolls(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	for _, grace := range []time.Duration{time.Hour, 0} {
		old := x.key(in, "old", x.now)
		type result struct {
			next store.Key
			ev   store.Event
			got  store.Key
			err  error
		}
		res := make([]result, rollers)
		for i := range res {
			res[i].next, _ = NewKey(t, in.ID, in.Environment, old.Name, x.now)
			res[i].ev = x.event(store.EventKeyRolled, in.ID, old.ID, res[i].next.ID)
		}
		race(rollers, func(i int) {
			r := &res[i]
			r.got, r.err = x.s.RollKey(x.ctx, in.ID, old.ID, r.next, x.now.Add(grace), &r.ev)
		})
		var winner *result
		for i := range res {
			r := &res[i]
			switch {
			case r.err == nil:
				if winner != nil {
					t.Fatalf("grace %v: two concurrent rolls of one key succeeded (%s and %s)", grace, winner.next.ID, r.next.ID)
				}
				winner = r
			case errors.Is(r.err, store.ErrAlreadyRolled), grace == 0 && errors.Is(r.err, store.ErrNotActive):
				x.rollLeftNothingBut(in.ID, r.next)
			default:
				t.Errorf("grace %v: a losing concurrent roll: %v, want ErrAlreadyRolled", grace, r.err)
			}
		}
		if winner == nil {
			t.Fatalf("grace %v: no concurrent roll succeeded", grace)
		}
		for _, r := range res {
			if errors.Is(r.err, store.ErrAlreadyRolled) && r.got.ReplacedBy != winner.next.ID {
				t.Errorf("grace %v: a refused roll names %q as the replacement, want %s", grace, r.got.ReplacedBy, winner.next.ID)
			}
		}
		if got := x.get(in.ID, old.ID); got.ReplacedBy != winner.next.ID {
			t.Errorf("grace %v: old key replaced by %q, want the winner %s", grace, got.ReplacedBy, winner.next.ID)
		}
		sameTime(t, "old key's ExpiresAt", x.get(in.ID, old.ID).ExpiresAt, x.now.Add(grace))
		if l := x.lookup(winner.next.Hash); l.ID != winner.next.ID || l.Status(x.now) != store.StatusActive {
			t.Errorf("grace %v: the winner's replacement lookup = %+v", grace, l)
		}
		rolled := eventsOf(x.events(in.ID), store.EventKeyRolled, old.ID)
		if len(rolled) != 1 || rolled[0].ID != winner.ev.ID || rolled[0].NewKeyID != winner.next.ID {
			t.Errorf("grace %v: rolled events %+v, want the winner's one (%s → %s)", grace, rolled, old.ID, winner.next.ID)
		}
	}
	// Two rounds, two old keys, two replacements: nothing else was listed.
	if n := len(x.listAll(in.ID, 1000, "", x.now)); n != 4 {
		t.Errorf("%d keys listed after two rounds of concurrent rolls, want 4", n)
	}
}

// rollLeftNothingBut checks that a refused roll's replacement is nowhere.
func (x *suite) rollLeftNothingBut(instance string, next store.Key) {
	x.t.Helper()
	if _, err := x.s.LookupHash(x.ctx, next.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		x.t.Errorf("a refused roll's replacement looks up: %v", err)
	}
	if _, err := x.s.Key(x.ctx, instance, next.ID); !errors.Is(err, store.ErrKeyNotFound) {
		x.t.Errorf("a refused roll's replacement is listed: %v", err)
	}
}

// Concurrent revokes of one key, each at its own time: all answer revoked with the same
// RevokedAt, the lookup entry agrees, one of them says it revoked the key, and the trail
// holds that one's event only.
func testConcurrentRevokes(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k := x.key(in, "k", x.now)
	type result struct {
		ev      store.Event
		got     store.Key
		changed bool
		err     error
	}
	res := make([]result, rollers)
	for i := range res {
		res[i].ev = x.event(store.EventKeyRevoked, in.ID, k.ID, "")
	}
	race(rollers, func(i int) {
		r := &res[i]
		at := x.now.Add(time.Duration(i) * time.Millisecond) // clocks disagree
		r.got, r.changed, r.err = x.s.RevokeKey(x.ctx, in.ID, k.ID, at, &r.ev)
	})
	var first *result
	for i := range res {
		r := &res[i]
		if r.err != nil {
			t.Fatalf("concurrent RevokeKey: %v", r.err)
		}
		if r.got.Status(x.now) != store.StatusRevoked {
			t.Errorf("concurrent RevokeKey answered status %s", r.got.Status(x.now))
		}
		if r.changed {
			if first != nil {
				t.Errorf("two concurrent revokes both say they revoked the key")
			}
			first = r
		}
	}
	if first == nil {
		t.Fatal("no concurrent revoke says it revoked the key")
	}
	stored := x.get(in.ID, k.ID).RevokedAt
	for _, r := range res {
		if !r.got.RevokedAt.Equal(stored) {
			t.Errorf("a concurrent revoke answered RevokedAt %v, the store holds %v", r.got.RevokedAt, stored)
		}
	}
	if l := x.lookup(k.Hash); !l.RevokedAt.Equal(stored) {
		t.Errorf("lookup entry RevokedAt %v, listed %v", l.RevokedAt, stored)
	}
	revoked := eventsOf(x.events(in.ID), store.EventKeyRevoked, k.ID)
	if len(revoked) != 1 || revoked[0].ID != first.ev.ID {
		t.Errorf("revoked events %+v, want only %s (of the call that revoked the key)", revoked, first.ev.ID)
	}
}

// A revoke racing a roll of the same key: either the roll came first (its replacement is
// listed and works, the old key is revoked, both events are recorded) or the revoke did
// (the roll is refused and leaves no replacement anywhere). Never a refused or failed roll
// whose replacement works, never a roll of a key already revoked.
func testRevokeRacingRoll(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	outcomes := map[bool]int{}
	for round := range 20 {
		old := x.key(in, fmt.Sprintf("old-%d", round), x.now)
		next, _ := NewKey(t, in.ID, in.Environment, old.Name, x.now)
		rollEv := x.event(store.EventKeyRolled, in.ID, old.ID, next.ID)
		revokeEv := x.event(store.EventKeyRevoked, in.ID, old.ID, "")
		var rollErr, revokeErr error
		race(2, func(i int) {
			if i == 0 {
				_, rollErr = x.s.RollKey(x.ctx, in.ID, old.ID, next, x.now.Add(time.Hour), &rollEv)
			} else {
				_, _, revokeErr = x.s.RevokeKey(x.ctx, in.ID, old.ID, x.now, &revokeEv)
			}
		})
		if revokeErr != nil {
			t.Fatalf("round %d: RevokeKey: %v", round, revokeErr)
		}
		if st := x.get(in.ID, old.ID).Status(x.now); st != store.StatusRevoked {
			t.Fatalf("round %d: old key %s after the revoke", round, st)
		}
		evs := x.events(in.ID)
		if n := len(eventsOf(evs, store.EventKeyRevoked, old.ID)); n != 1 {
			t.Errorf("round %d: %d revoked events, want 1", round, n)
		}
		rolled := eventsOf(evs, store.EventKeyRolled, old.ID)
		switch {
		case rollErr == nil:
			if l := x.lookup(next.Hash); l.ID != next.ID || l.Status(x.now) != store.StatusActive {
				t.Errorf("round %d: the roll succeeded but its replacement's lookup = %+v", round, l)
			}
			if r := x.get(in.ID, old.ID).ReplacedBy; r != next.ID {
				t.Errorf("round %d: the roll succeeded but the old key is replaced by %q", round, r)
			}
			if len(rolled) != 1 {
				t.Errorf("round %d: the roll succeeded with %d rolled events", round, len(rolled))
			}
		case errors.Is(rollErr, store.ErrNotActive):
			x.rollLeftNothingBut(in.ID, next)
			if len(rolled) != 0 {
				t.Errorf("round %d: a refused roll recorded %+v", round, rolled)
			}
		default:
			t.Fatalf("round %d: RollKey racing a revoke: %v, want success or ErrNotActive", round, rollErr)
		}
		outcomes[rollErr == nil]++
	}
	t.Logf("rolls that came first: %d, revokes that came first: %d", outcomes[true], outcomes[false])
}

// race runs f(0) … f(n-1) on n goroutines released together, and waits for them.
func race(n int, f func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			f(i)
		}()
	}
	close(start)
	wg.Wait()
}
