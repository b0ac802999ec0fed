package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Recorder is a Watcher that records what it receives. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	inval   []apikey.Hash
	flushes int
	health  []bool
}

var _ store.Watcher = (*Recorder)(nil)

// Invalidate implements store.Watcher.
func (r *Recorder) Invalidate(hashes ...apikey.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inval = append(r.inval, hashes...)
}

// Flush implements store.Watcher.
func (r *Recorder) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushes++
}

// SetHealthy implements store.Watcher.
func (r *Recorder) SetHealthy(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.health = append(r.health, ok)
}

// Invalidated reports whether h was invalidated.
func (r *Recorder) Invalidated(h apikey.Hash) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.inval, h)
}

// Invalidations returns every hash received so far, in order.
func (r *Recorder) Invalidations() []apikey.Hash {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.inval)
}

// Flushes returns how many times Flush was called.
func (r *Recorder) Flushes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flushes
}

// Healthy reports the last SetHealthy value (false if none yet).
func (r *Recorder) Healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.health) > 0 && r.health[len(r.health)-1]
}

// HealthHistory returns every SetHealthy value received, in order.
func (r *Recorder) HealthHistory() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.health)
}

// Events returns the number of calls received (invalidated hashes, flushes, health changes).
func (r *Recorder) Events() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.inval) + r.flushes + len(r.health)
}

// NewKey builds a key of instance (environment env) the way the admin endpoint does, and
// returns it with its secret. CreatedAt is createdAt; the other times are unset.
func NewKey(t testing.TB, instance string, env apikey.Environment, name string, createdAt time.Time) (store.Key, string) {
	t.Helper()
	secret, err := apikey.Generate(env)
	if err != nil {
		t.Fatal(err)
	}
	id, err := apikey.NewID("key_", 24)
	if err != nil {
		t.Fatal(err)
	}
	return store.Key{
		ID: id, Instance: instance, Environment: env, Name: name,
		Prefix: apikey.DisplayPrefix(secret), Hash: apikey.Hasher{}.Sum(secret),
		CreatedAt: createdAt,
	}, secret
}

// ms is how a store returns t: UTC, truncated to the millisecond.
func ms(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// sameTime checks that a time a store returned is want as the store keeps it.
func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	w := ms(want)
	if !got.Equal(w) {
		t.Errorf("%s = %v, want %v", what, got, w)
	}
	if !got.IsZero() && got.Location() != time.UTC {
		t.Errorf("%s = %v: not in UTC", what, got)
	}
	if got.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("%s = %v: not truncated to the millisecond", what, got)
	}
}

// checkKey compares every field of a key a store returned with what was stored.
func checkKey(t *testing.T, got, want store.Key) {
	t.Helper()
	if got.ID != want.ID || got.Instance != want.Instance || got.Environment != want.Environment ||
		got.Name != want.Name || got.Prefix != want.Prefix || got.Hash != want.Hash {
		t.Errorf("key = {ID:%s Instance:%s Env:%v Name:%q Prefix:%s Hash:%x}, want {ID:%s Instance:%s Env:%v Name:%q Prefix:%s Hash:%x}",
			got.ID, got.Instance, got.Environment, got.Name, got.Prefix, got.Hash[:4],
			want.ID, want.Instance, want.Environment, want.Name, want.Prefix, want.Hash[:4])
	}
	sameTime(t, got.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	sameTime(t, got.ID+" ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	sameTime(t, got.ID+" RevokedAt", got.RevokedAt, want.RevokedAt)
	sameTime(t, got.ID+" LastUsedAt", got.LastUsedAt, want.LastUsedAt)
}

func ids(keys []store.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}

// suite is one subtest's store, fail point and helpers.
type suite struct {
	t   *testing.T
	s   store.Store
	fp  *FailPoint
	ctx context.Context
	now time.Time // a time with sub-millisecond digits, not in UTC
}

func newSuite(t *testing.T, open Opener) *suite {
	t.Helper()
	fp := &FailPoint{}
	s := open(t, fp.Hook)
	if s == nil {
		t.Fatal("open returned a nil store")
	}
	// Sub-millisecond digits and a non-UTC zone, so that truncation and UTC are checked.
	now := time.Date(2031, 5, 17, 10, 20, 30, 123456789, time.FixedZone("UTC+2", 2*3600))
	return &suite{t: t, s: s, fp: fp, ctx: context.Background(), now: now}
}

func (x *suite) instance(id string, env apikey.Environment) store.Instance {
	x.t.Helper()
	in := store.Instance{ID: id, Name: "Instance " + id, Environment: env}
	if err := x.s.CreateInstance(x.ctx, in); err != nil {
		x.t.Fatalf("CreateInstance(%s): %v", id, err)
	}
	return in
}

// key creates a key in instance in (created at createdAt) and returns it.
func (x *suite) key(in store.Instance, name string, createdAt time.Time) store.Key {
	x.t.Helper()
	k, _ := NewKey(x.t, in.ID, in.Environment, name, createdAt)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		x.t.Fatalf("CreateKey(%s): %v", name, err)
	}
	return k
}

func (x *suite) get(in, id string) store.Key {
	x.t.Helper()
	k, err := x.s.Key(x.ctx, in, id)
	if err != nil {
		x.t.Fatalf("Key(%s, %s): %v", in, id, err)
	}
	return k
}

func (x *suite) lookup(h apikey.Hash) store.Lookup {
	x.t.Helper()
	l, err := x.s.LookupHash(x.ctx, h)
	if err != nil {
		x.t.Fatalf("LookupHash: %v", err)
	}
	return l
}

// listAll pages through an instance's keys with the given page size and status.
func (x *suite) listAll(in string, limit int, status store.Status, now time.Time) []store.Key {
	x.t.Helper()
	var out []store.Key
	after := ""
	for page := 0; ; page++ {
		if page > 10000 {
			x.t.Fatal("ListKeys pages without end")
		}
		keys, more, err := x.s.ListKeys(x.ctx, in, store.ListOptions{Limit: limit, StartingAfter: after, Status: status, Now: now})
		if err != nil {
			x.t.Fatalf("ListKeys(%s, after %q): %v", in, after, err)
		}
		if len(keys) > limit {
			x.t.Fatalf("ListKeys returned %d keys for limit %d", len(keys), limit)
		}
		out = append(out, keys...)
		if !more {
			return out
		}
		if len(keys) == 0 {
			x.t.Fatal("ListKeys: hasMore with an empty page")
		}
		after = keys[len(keys)-1].ID
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

// event returns an audit event of the instance's trail as the admin endpoint makes one: a
// fresh id, the actor, the suite's time.
func (x *suite) event(typ, instance, keyID, newKeyID string) store.Event {
	x.t.Helper()
	id, err := apikey.NewID("evt_", 24)
	if err != nil {
		x.t.Fatal(err)
	}
	return store.Event{ID: id, Type: typ, Instance: instance, KeyID: keyID, NewKeyID: newKeyID, Actor: "storetest", CreatedAt: x.now}
}

// stored is e as a store returns it (its time truncated to the millisecond, in UTC).
func (x *suite) stored(e store.Event) store.Event {
	e.CreatedAt = ms(e.CreatedAt)
	return e
}

// events returns an instance's whole audit trail, newest first.
func (x *suite) events(instance string) []store.Event {
	x.t.Helper()
	var out []store.Event
	for cursor, more := "", true; more; {
		var page []store.Event
		var err error
		page, more, err = x.s.ListEvents(x.ctx, instance, store.ListOptions{Limit: 1000, StartingAfter: cursor})
		if err != nil {
			x.t.Fatalf("ListEvents(%s): %v", instance, err)
		}
		out = append(out, page...)
		if len(page) > 0 {
			cursor = page[len(page)-1].ID
		}
	}
	return out
}

// eventsOf returns the events of the trail with this type and key id.
func eventsOf(evs []store.Event, typ, keyID string) []store.Event {
	var out []store.Event
	for _, e := range evs {
		if e.Type == typ && e.KeyID == keyID {
			out = append(out, e)
		}
	}
	return out
}
