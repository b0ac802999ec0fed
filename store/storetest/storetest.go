// Package storetest is the contract test suite that every store.Store implementation passes
// (SPEC §3: "Both stores pass one shared contract test suite"). A store's own tests call Run
// with a function that opens a fresh, empty store:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, fp func(string) error) store.Store {
//			s := open(t, Options{FailPoint: fp})
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The package also offers the small helpers those tests share: a recording Watcher, a key
// maker and a polling wait.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Opener returns a fresh, empty store whose Options.FailPoint is failPoint (which may be nil).
// It registers the store's Close with t.Cleanup.
type Opener func(t *testing.T, failPoint func(step string) error) store.Store

// The fail points every store calls (Options.FailPoint): after a create wrote the listed
// record and before the lookup entry, and after a revoke marked the lookup entry and before
// the listed record.
const (
	StepCreateListed = "create:listed"
	StepRevokeLookup = "revoke:lookup"
)

// errInjected is what the switchable fail point returns.
var errInjected = errors.New("storetest: injected failure")

// FailPoint is a switchable fail point: it fails the step it is set to, and records which
// steps the store passed through.
type FailPoint struct {
	step atomic.Pointer[string]
	mu   sync.Mutex
	seen map[string]int
}

// Fail makes the fail point return an error at step; "" switches it off.
func (f *FailPoint) Fail(step string) {
	if step == "" {
		f.step.Store(nil)
		return
	}
	f.step.Store(&step)
}

// Hook is the function to wire into a store's Options.FailPoint.
func (f *FailPoint) Hook(step string) error {
	f.mu.Lock()
	if f.seen == nil {
		f.seen = make(map[string]int)
	}
	f.seen[step]++
	f.mu.Unlock()
	if p := f.step.Load(); p != nil && *p == step {
		return fmt.Errorf("%w at %s", errInjected, step)
	}
	return nil
}

// Seen returns how many times the store reached step.
func (f *FailPoint) Seen(step string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[step]
}

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

// WaitFor polls cond every few milliseconds until it holds or timeout passes, and reports
// whether it held.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
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

// Run runs the contract suite against the stores open returns. Each subtest opens its own
// store, and the subtests run in parallel: open must be safe to call concurrently.
func Run(t *testing.T, open func(t *testing.T, failPoint func(step string) error) store.Store) {
	tests := []struct {
		name string
		f    func(*suite)
	}{
		{"NewStoreIsEmptyAndAnswers", testEmpty},
		{"Instances", testInstances},
		{"CreateKeyThenGetEveryField", testCreateAndGet},
		{"LookupHash", testLookupHash},
		{"UnknownKeysAndInstances", testNotFound},
		{"CreateKeyInMissingInstanceWritesNothing", testCreateMissingInstance},
		{"ListNewestFirstInCreationOrder", testListOrder},
		{"ListPaginationBoundaries", testListPagination},
		{"ListStatusFilterWithPaging", testListStatus},
		{"ListInvalidCursorAndMissingInstance", testListErrors},
		{"ListKeepsInstancesApart", testListInstancesApart},
		{"RevokeKeyIsIdempotent", testRevoke},
		{"ExpireKeyOnlyMovesEarlier", testExpire},
		{"RollCreatesNewKeyAndExpiresOld", testRoll},
		{"TouchKeyNeverMovesBack", testTouch},
		{"InvalidationsBeforeReturnAndUnsubscribe", testInvalidations},
		{"ConcurrentCreatesLoseNothing", testConcurrentCreates},
		{"FailedCreateLeavesNoWorkingKey", testFailedCreate},
		{"FailedRevokeNeverListedRevokedButWorking", testFailedRevoke},
		{"EventsNewestFirstPagedAndBounded", testEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(newSuite(t, open))
		})
	}
}

func testEmpty(x *suite) {
	t := x.t
	if err := x.s.Ping(x.ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ins, err := x.s.Instances(x.ctx)
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	if len(ins) != 0 {
		t.Fatalf("a fresh store has instances: %v", ins)
	}
}

func testInstances(x *suite) {
	t := x.t
	want := []store.Instance{
		{ID: "acme-prod", Name: "Acme (production)", Environment: apikey.Production},
		{ID: "acme-sandbox", Name: "Acme (sandbox) ✓", Environment: apikey.Sandbox},
		{ID: "beta_1", Name: "Beta", Environment: apikey.Sandbox},
		{ID: "zeta", Name: "Zeta", Environment: apikey.Production},
	}
	for _, i := range []int{3, 1, 0, 2} { // not in id order
		if err := x.s.CreateInstance(x.ctx, want[i]); err != nil {
			t.Fatalf("CreateInstance(%s): %v", want[i].ID, err)
		}
	}
	for _, in := range want {
		got, err := x.s.Instance(x.ctx, in.ID)
		if err != nil {
			t.Fatalf("Instance(%s): %v", in.ID, err)
		}
		if got != in {
			t.Errorf("Instance(%s) = %+v, want %+v", in.ID, got, in)
		}
	}
	got, err := x.s.Instances(x.ctx)
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Instances = %+v, want (ordered by id) %+v", got, want)
	}

	dup := store.Instance{ID: "beta_1", Name: "Other name", Environment: apikey.Production}
	wantErr(t, "CreateInstance of an existing id", x.s.CreateInstance(x.ctx, dup), store.ErrInstanceExists)
	if got, err := x.s.Instance(x.ctx, "beta_1"); err != nil || got != want[2] {
		t.Errorf("after a refused duplicate, Instance(beta_1) = %+v, %v; want it unchanged %+v", got, err, want[2])
	}
	if got, _ := x.s.Instances(x.ctx); len(got) != len(want) {
		t.Errorf("after a refused duplicate, %d instances, want %d", len(got), len(want))
	}

	_, err = x.s.Instance(x.ctx, "missing")
	wantErr(t, "Instance(missing)", err, store.ErrInstanceNotFound)
}

func testCreateAndGet(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k, secret := NewKey(t, in.ID, in.Environment, "Deploy bot ✓", x.now)
	k.ExpiresAt = x.now.Add(30*24*time.Hour + 987654321)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	got := x.get(in.ID, k.ID)
	checkKey(t, got, k)
	if got.Prefix != secret[:apikey.DisplayPrefixLen] {
		t.Errorf("Prefix = %q", got.Prefix)
	}
	if st := got.Status(x.now); st != store.StatusActive {
		t.Errorf("status = %s, want active", st)
	}

	// A key that never expires keeps a zero ExpiresAt; a sandbox key keeps its environment.
	sb := x.instance("acme-sandbox", apikey.Sandbox)
	k2, _ := NewKey(t, sb.ID, sb.Environment, "n", x.now.Add(time.Millisecond))
	if err := x.s.CreateKey(x.ctx, k2); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	checkKey(t, x.get(sb.ID, k2.ID), k2)
}

func testLookupHash(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k, secret := NewKey(t, in.ID, in.Environment, "k", x.now)
	k.ExpiresAt = x.now.Add(48*time.Hour + 1234567)
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	l := x.lookup(apikey.Hasher{}.Sum(secret))
	if l.ID != k.ID || l.Instance != in.ID || l.Environment != apikey.Sandbox {
		t.Errorf("LookupHash = %+v, want id %s instance %s sandbox", l, k.ID, in.ID)
	}
	sameTime(t, "Lookup.ExpiresAt", l.ExpiresAt, k.ExpiresAt)
	sameTime(t, "Lookup.RevokedAt", l.RevokedAt, time.Time{})
	if st := l.Status(x.now); st != store.StatusActive {
		t.Errorf("lookup status = %s, want active", st)
	}

	never := x.key(in, "never", x.now)
	l = x.lookup(never.Hash)
	if l.ID != never.ID || !l.ExpiresAt.IsZero() || !l.RevokedAt.IsZero() {
		t.Errorf("LookupHash(never) = %+v", l)
	}

	other, _ := apikey.Generate(apikey.Sandbox)
	_, err := x.s.LookupHash(x.ctx, apikey.Hasher{}.Sum(other))
	wantErr(t, "LookupHash(unknown)", err, store.ErrKeyNotFound)
	_, err = x.s.LookupHash(x.ctx, apikey.Hash{})
	wantErr(t, "LookupHash(zero hash)", err, store.ErrKeyNotFound)
}

func testNotFound(x *suite) {
	t := x.t
	a := x.instance("a", apikey.Sandbox)
	b := x.instance("b", apikey.Sandbox)
	ka := x.key(a, "ka", x.now)
	_, err := x.s.Key(x.ctx, a.ID, "key_missing")
	wantErr(t, "Key(unknown id)", err, store.ErrKeyNotFound)
	_, err = x.s.Key(x.ctx, b.ID, ka.ID)
	wantErr(t, "Key(id of another instance)", err, store.ErrKeyNotFound)
	_, err = x.s.Key(x.ctx, "missing", ka.ID)
	wantErr(t, "Key(missing instance)", err, store.ErrInstanceNotFound)
}

func testCreateMissingInstance(x *suite) {
	t := x.t
	k, secret := NewKey(t, "ghost", apikey.Sandbox, "k", x.now)
	wantErr(t, "CreateKey in a missing instance", x.s.CreateKey(x.ctx, k), store.ErrInstanceNotFound)
	_, err := x.s.LookupHash(x.ctx, apikey.Hasher{}.Sum(secret))
	wantErr(t, "LookupHash after a refused create", err, store.ErrKeyNotFound)
	if ins, err := x.s.Instances(x.ctx); err != nil || len(ins) != 0 {
		t.Errorf("Instances after a refused create = %v, %v; want none", ins, err)
	}
	_, err = x.s.Instance(x.ctx, "ghost")
	wantErr(t, "Instance(ghost)", err, store.ErrInstanceNotFound)
	_, _, err = x.s.ListKeys(x.ctx, "ghost", store.ListOptions{Limit: 10})
	wantErr(t, "ListKeys(ghost)", err, store.ErrInstanceNotFound)

	// Once the instance exists, it holds nothing from the refused create.
	x.instance("ghost", apikey.Sandbox)
	keys, more, err := x.s.ListKeys(x.ctx, "ghost", store.ListOptions{Limit: 10})
	if err != nil || len(keys) != 0 || more {
		t.Errorf("ListKeys(ghost) = %v, %v, %v; want empty", ids(keys), more, err)
	}
	_, err = x.s.Key(x.ctx, "ghost", k.ID)
	wantErr(t, "Key of the refused create", err, store.ErrKeyNotFound)
	// And the same key can now be created.
	if err := x.s.CreateKey(x.ctx, k); err != nil {
		t.Fatalf("CreateKey once the instance exists: %v", err)
	}
	if l := x.lookup(k.Hash); l.ID != k.ID {
		t.Errorf("LookupHash = %+v", l)
	}
}

func testListOrder(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	var created []store.Key
	// 40 keys within the same millisecond, with identical CreatedAt.
	same := x.now
	for i := range 40 {
		created = append(created, x.key(in, fmt.Sprintf("same-%02d", i), same))
	}
	// Keys with later and then earlier CreatedAt: creation order decides, not CreatedAt.
	created = append(created, x.key(in, "later", same.Add(time.Hour)))
	created = append(created, x.key(in, "earlier", same.Add(-time.Hour)))
	created = append(created, x.key(in, "same-again", same))

	want := slices.Clone(created)
	slices.Reverse(want)
	keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if more {
		t.Errorf("hasMore = true with every key on the page")
	}
	if !slices.Equal(ids(keys), ids(want)) {
		t.Fatalf("ListKeys order:\n got %v\nwant %v (newest created first)", ids(keys), ids(want))
	}
	for i := range keys {
		checkKey(t, keys[i], want[i])
	}
	// Page by page, the same order.
	for _, limit := range []int{1, 2, 5, 40, 42, 43, 44} {
		if got := x.listAll(in.ID, limit, "", x.now); !slices.Equal(ids(got), ids(want)) {
			t.Errorf("paging by %d: got %v\nwant %v", limit, ids(got), ids(want))
		}
	}
}

func testListPagination(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	empty := x.instance("empty", apikey.Sandbox)
	keys, more, err := x.s.ListKeys(x.ctx, empty.ID, store.ListOptions{Limit: 3})
	if err != nil || len(keys) != 0 || more {
		t.Errorf("ListKeys(empty instance) = %v, %v, %v; want no keys, no more", ids(keys), more, err)
	}

	var all []store.Key // newest first
	for i := range 7 {
		all = slices.Insert(all, 0, x.key(in, fmt.Sprintf("k%d", i), x.now.Add(time.Duration(i)*time.Millisecond)))
	}
	after := ""
	for i, want := range []struct {
		n    int
		more bool
	}{{3, true}, {3, true}, {1, false}} {
		keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 3, StartingAfter: after})
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		wantIDs := ids(all[i*3 : i*3+want.n])
		if !slices.Equal(ids(keys), wantIDs) || more != want.more {
			t.Fatalf("page %d (after %q) = %v, hasMore %v; want %v, hasMore %v", i, after, ids(keys), more, wantIDs, want.more)
		}
		after = keys[len(keys)-1].ID
	}

	// hasMore is exact at every boundary, from every starting point.
	for start := 0; start <= len(all); start++ {
		after := ""
		if start > 0 {
			after = all[start-1].ID
		}
		for limit := 1; limit <= 9; limit++ {
			keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: limit, StartingAfter: after})
			if err != nil {
				t.Fatalf("ListKeys(limit %d, after #%d): %v", limit, start, err)
			}
			rest := all[start:]
			want := rest[:min(limit, len(rest))]
			wantMore := len(rest) > limit
			if !slices.Equal(ids(keys), ids(want)) || more != wantMore {
				t.Errorf("ListKeys(limit %d, after #%d) = %v, hasMore %v; want %v, hasMore %v",
					limit, start, ids(keys), more, ids(want), wantMore)
			}
		}
	}

	_, _, err = x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 0})
	if err == nil {
		t.Errorf("ListKeys with Limit 0: no error")
	}
}

func testListStatus(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	now := x.now
	type spec struct {
		expires time.Time
		revoke  bool
		expire  time.Time // ExpireKey after create
		want    store.Status
	}
	specs := []spec{
		{want: store.StatusActive},
		{expires: now.Add(-time.Hour), want: store.StatusExpired},
		{revoke: true, want: store.StatusRevoked},
		{expires: now.Add(time.Hour), want: store.StatusActive},
		{expires: now, want: store.StatusExpired}, // expires_at not after now: expired
		{expires: now.Add(-time.Minute), revoke: true, want: store.StatusRevoked},
		{expires: now.Add(time.Millisecond), want: store.StatusActive},
		{expire: now.Add(-time.Second), want: store.StatusExpired},
		{want: store.StatusActive},
		{expires: now.Add(time.Hour), revoke: true, want: store.StatusRevoked},
		{expire: now.Add(time.Hour), want: store.StatusActive},
		{expires: now.Add(24 * time.Hour), expire: now.Add(-time.Millisecond), want: store.StatusExpired},
	}
	var all []store.Key // newest first
	for i, sp := range specs {
		k, _ := NewKey(t, in.ID, in.Environment, fmt.Sprintf("k%02d-%s", i, sp.want), now.Add(-time.Duration(len(specs)-i)*time.Minute))
		k.ExpiresAt = sp.expires
		if err := x.s.CreateKey(x.ctx, k); err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		if sp.revoke {
			if _, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, now.Add(-time.Second)); err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
		}
		if !sp.expire.IsZero() {
			if _, err := x.s.ExpireKey(x.ctx, in.ID, k.ID, sp.expire); err != nil {
				t.Fatalf("ExpireKey: %v", err)
			}
		}
		k = x.get(in.ID, k.ID)
		if st := k.Status(now); st != sp.want {
			t.Fatalf("key %d: status %s, want %s", i, st, sp.want)
		}
		all = slices.Insert(all, 0, k)
	}
	// Other keys in another instance must not show up.
	other := x.instance("other", apikey.Production)
	x.key(other, "other-active", now)

	for _, status := range []store.Status{"", store.StatusActive, store.StatusExpired, store.StatusRevoked} {
		for start := 0; start <= len(all); start++ {
			after := ""
			if start > 0 {
				after = all[start-1].ID // possibly a key of another status
			}
			var rest []store.Key
			for _, k := range all[start:] {
				if status == "" || k.Status(now) == status {
					rest = append(rest, k)
				}
			}
			for _, limit := range []int{1, 2, 3, 4, 5, 12, 13} {
				keys, more, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: limit, StartingAfter: after, Status: status, Now: now})
				if err != nil {
					t.Fatalf("ListKeys(status %q, limit %d, after #%d): %v", status, limit, start, err)
				}
				want := rest[:min(limit, len(rest))]
				wantMore := len(rest) > limit
				if !slices.Equal(ids(keys), ids(want)) || more != wantMore {
					t.Errorf("ListKeys(status %q, limit %d, after #%d) = %v, hasMore %v; want %v, hasMore %v",
						status, limit, start, ids(keys), more, ids(want), wantMore)
				}
				for _, k := range keys {
					if status != "" && k.Status(now) != status {
						t.Errorf("ListKeys(status %q) returned %s with status %s", status, k.ID, k.Status(now))
					}
				}
			}
		}
		// Paging through the whole filtered list gives each matching key once.
		var want []store.Key
		for _, k := range all {
			if status == "" || k.Status(now) == status {
				want = append(want, k)
			}
		}
		for _, limit := range []int{1, 2, 3} {
			if got := x.listAll(in.ID, limit, status, now); !slices.Equal(ids(got), ids(want)) {
				t.Errorf("paging status %q by %d: got %v, want %v", status, limit, ids(got), ids(want))
			}
		}
	}
}

func testListErrors(x *suite) {
	t := x.t
	a := x.instance("a", apikey.Sandbox)
	b := x.instance("b", apikey.Sandbox)
	x.key(a, "ka", x.now)
	kb := x.key(b, "kb", x.now)
	_, _, err := x.s.ListKeys(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: "key_doesnotexist"})
	wantErr(t, "ListKeys(unknown starting_after)", err, store.ErrInvalidCursor)
	_, _, err = x.s.ListKeys(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: kb.ID})
	wantErr(t, "ListKeys(starting_after a key of another instance)", err, store.ErrInvalidCursor)
	_, _, err = x.s.ListKeys(x.ctx, a.ID, store.ListOptions{Limit: 10, StartingAfter: "key_doesnotexist", Status: store.StatusActive, Now: x.now})
	wantErr(t, "ListKeys(unknown starting_after, status active)", err, store.ErrInvalidCursor)
	_, _, err = x.s.ListKeys(x.ctx, "missing", store.ListOptions{Limit: 10})
	wantErr(t, "ListKeys(missing instance)", err, store.ErrInstanceNotFound)
	_, _, err = x.s.ListKeys(x.ctx, "missing", store.ListOptions{Limit: 10, StartingAfter: kb.ID})
	wantErr(t, "ListKeys(missing instance, starting_after)", err, store.ErrInstanceNotFound)
}

func testListInstancesApart(x *suite) {
	t := x.t
	a := x.instance("a", apikey.Sandbox)
	a2 := x.instance("a-2", apikey.Sandbox) // a prefix of nothing, but close in name
	b := x.instance("b", apikey.Production)
	var wantA, wantA2, wantB []string
	for i := range 10 {
		wantA = slices.Insert(wantA, 0, x.key(a, fmt.Sprintf("a%d", i), x.now).ID)
		wantA2 = slices.Insert(wantA2, 0, x.key(a2, fmt.Sprintf("a2-%d", i), x.now).ID)
		wantB = slices.Insert(wantB, 0, x.key(b, fmt.Sprintf("b%d", i), x.now).ID)
	}
	for in, want := range map[string][]string{a.ID: wantA, a2.ID: wantA2, b.ID: wantB} {
		for _, limit := range []int{3, 100} {
			got := x.listAll(in, limit, "", x.now)
			if !slices.Equal(ids(got), want) {
				t.Errorf("instance %s, paging by %d: got %v, want %v", in, limit, ids(got), want)
			}
			for _, k := range got {
				if k.Instance != in {
					t.Errorf("instance %s lists %s of instance %s", in, k.ID, k.Instance)
				}
			}
		}
	}
}

func testRevoke(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k := x.key(in, "k", x.now)
	other := x.key(in, "other", x.now)
	t1 := x.now.Add(time.Hour + 345678)
	got, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, t1)
	if err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	want := k
	want.RevokedAt = t1
	checkKey(t, got, want)
	if got.Status(x.now) != store.StatusRevoked {
		t.Errorf("returned status %s, want revoked", got.Status(x.now))
	}
	checkKey(t, x.get(in.ID, k.ID), want)
	l := x.lookup(k.Hash)
	sameTime(t, "Lookup.RevokedAt", l.RevokedAt, t1)
	if l.Status(x.now) != store.StatusRevoked {
		t.Errorf("lookup status %s, want revoked", l.Status(x.now))
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10, Status: store.StatusRevoked, Now: x.now})
	if err != nil || !slices.Equal(ids(keys), []string{k.ID}) {
		t.Errorf("revoked keys listed = %v, %v; want [%s]", ids(keys), err, k.ID)
	}

	// Again, later or earlier: nothing changes, the first RevokedAt is returned.
	for _, at := range []time.Time{t1.Add(time.Hour), t1.Add(-time.Hour)} {
		again, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, at)
		if err != nil {
			t.Fatalf("second RevokeKey: %v", err)
		}
		checkKey(t, again, want)
		checkKey(t, x.get(in.ID, k.ID), want)
		sameTime(t, "Lookup.RevokedAt after a second revoke", x.lookup(k.Hash).RevokedAt, t1)
	}

	// The other key is untouched.
	checkKey(t, x.get(in.ID, other.ID), other)
	if l := x.lookup(other.Hash); !l.RevokedAt.IsZero() {
		t.Errorf("other key's lookup revoked: %+v", l)
	}

	_, err = x.s.RevokeKey(x.ctx, in.ID, "key_missing", t1)
	wantErr(t, "RevokeKey(unknown id)", err, store.ErrKeyNotFound)
	b := x.instance("b", apikey.Production)
	_, err = x.s.RevokeKey(x.ctx, b.ID, other.ID, t1)
	wantErr(t, "RevokeKey(id of another instance)", err, store.ErrKeyNotFound)
	if l := x.lookup(other.Hash); !l.RevokedAt.IsZero() {
		t.Errorf("revoking through another instance revoked the key: %+v", l)
	}
	_, err = x.s.RevokeKey(x.ctx, "missing", other.ID, t1)
	wantErr(t, "RevokeKey(missing instance)", err, store.ErrInstanceNotFound)
}

func testExpire(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k := x.key(in, "k", x.now)
	steps := []struct {
		at, want time.Time
	}{
		{x.now.Add(10*time.Hour + 111), x.now.Add(10 * time.Hour)}, // never → 10 h
		{x.now.Add(20 * time.Hour), x.now.Add(10 * time.Hour)},     // later: ignored
		{x.now.Add(5 * time.Hour), x.now.Add(5 * time.Hour)},       // earlier: taken
		{x.now.Add(5 * time.Hour), x.now.Add(5 * time.Hour)},       // the same: unchanged
		{x.now.Add(-time.Hour), x.now.Add(-time.Hour)},             // into the past: expired
	}
	for i, st := range steps {
		got, err := x.s.ExpireKey(x.ctx, in.ID, k.ID, st.at)
		if err != nil {
			t.Fatalf("ExpireKey #%d: %v", i, err)
		}
		want := k
		want.ExpiresAt = st.want
		checkKey(t, got, want)
		checkKey(t, x.get(in.ID, k.ID), want)
		sameTime(t, fmt.Sprintf("Lookup.ExpiresAt after step %d", i), x.lookup(k.Hash).ExpiresAt, st.want)
	}
	if st := x.get(in.ID, k.ID).Status(x.now); st != store.StatusExpired {
		t.Errorf("status %s, want expired", st)
	}
	if st := x.lookup(k.Hash).Status(x.now); st != store.StatusExpired {
		t.Errorf("lookup status %s, want expired", st)
	}

	// A zero time would mean "never": refused, the expiry unchanged.
	if _, err := x.s.ExpireKey(x.ctx, in.ID, k.ID, time.Time{}); !errors.Is(err, store.ErrNoExpiry) {
		t.Errorf("ExpireKey(zero time) = %v, want ErrNoExpiry", err)
	}
	sameTime(t, "ExpiresAt after ExpireKey(zero)", x.get(in.ID, k.ID).ExpiresAt, x.now.Add(-time.Hour))

	// A key created with an expiry is never extended either.
	k2, _ := NewKey(t, in.ID, in.Environment, "k2", x.now)
	k2.ExpiresAt = x.now.Add(time.Hour)
	if err := x.s.CreateKey(x.ctx, k2); err != nil {
		t.Fatal(err)
	}
	got, err := x.s.ExpireKey(x.ctx, in.ID, k2.ID, x.now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sameTime(t, "ExpiresAt after a later ExpireKey", got.ExpiresAt, x.now.Add(time.Hour))
	sameTime(t, "Lookup.ExpiresAt after a later ExpireKey", x.lookup(k2.Hash).ExpiresAt, x.now.Add(time.Hour))

	_, err = x.s.ExpireKey(x.ctx, in.ID, "key_missing", x.now)
	wantErr(t, "ExpireKey(unknown id)", err, store.ErrKeyNotFound)
	_, err = x.s.ExpireKey(x.ctx, "missing", k2.ID, x.now)
	wantErr(t, "ExpireKey(missing instance)", err, store.ErrInstanceNotFound)
}

func testRoll(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()

	old := x.key(in, "old", x.now)
	next, nextSecret := NewKey(t, in.ID, in.Environment, old.Name, x.now.Add(time.Second))
	grace := x.now.Add(time.Hour + 999999)
	got, err := store.Roll(x.ctx, x.s, in.ID, old.ID, next, grace)
	if err != nil {
		t.Fatalf("Roll: %v", err)
	}
	if !rec.Invalidated(old.Hash) {
		t.Errorf("Roll returned before the old key's hash was invalidated")
	}
	wantOld := old
	wantOld.ExpiresAt = grace
	checkKey(t, got, wantOld)
	checkKey(t, x.get(in.ID, old.ID), wantOld)
	sameTime(t, "old Lookup.ExpiresAt", x.lookup(old.Hash).ExpiresAt, grace)
	checkKey(t, x.get(in.ID, next.ID), next)
	if l := x.lookup(apikey.Hasher{}.Sum(nextSecret)); l.ID != next.ID || l.Status(x.now) != store.StatusActive {
		t.Errorf("new key lookup = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil || !slices.Equal(ids(keys), []string{next.ID, old.ID}) {
		t.Errorf("after roll, list = %v, %v; want [new old]", ids(keys), err)
	}

	// An old key that already expires earlier keeps its expiry.
	soon, _ := NewKey(t, in.ID, in.Environment, "soon", x.now)
	soon.ExpiresAt = x.now.Add(10 * time.Minute)
	if err := x.s.CreateKey(x.ctx, soon); err != nil {
		t.Fatal(err)
	}
	next2, _ := NewKey(t, in.ID, in.Environment, "soon", x.now)
	got, err = store.Roll(x.ctx, x.s, in.ID, soon.ID, next2, x.now.Add(time.Hour))
	if err != nil {
		t.Fatalf("Roll: %v", err)
	}
	sameTime(t, "ExpiresAt of an old key expiring before the grace", got.ExpiresAt, soon.ExpiresAt)
	sameTime(t, "Lookup.ExpiresAt of an old key expiring before the grace", x.lookup(soon.Hash).ExpiresAt, soon.ExpiresAt)

	// Grace 0: the old key is expired at once.
	next3, _ := NewKey(t, in.ID, in.Environment, "again", x.now)
	got, err = store.Roll(x.ctx, x.s, in.ID, next.ID, next3, x.now)
	if err != nil {
		t.Fatalf("Roll: %v", err)
	}
	if got.Status(x.now) != store.StatusExpired || x.lookup(next.Hash).Status(x.now) != store.StatusExpired {
		t.Errorf("old key after a roll with no grace: %s / lookup %s, want expired", got.Status(x.now), x.lookup(next.Hash).Status(x.now))
	}

	// Into another instance: refused, nothing created.
	b := x.instance("b", apikey.Production)
	stray, _ := NewKey(t, b.ID, b.Environment, "stray", x.now)
	if _, err := store.Roll(x.ctx, x.s, in.ID, next3.ID, stray, x.now); err == nil {
		t.Errorf("Roll into another instance succeeded")
	}
	if _, err := x.s.LookupHash(x.ctx, stray.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("refused roll created the new key: %v", err)
	}
	unknown, _ := NewKey(t, in.ID, in.Environment, "x", x.now)
	_, err = store.Roll(x.ctx, x.s, in.ID, "key_missing", unknown, x.now)
	wantErr(t, "Roll(unknown id)", err, store.ErrKeyNotFound)
}

func testTouch(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Sandbox)
	k := x.key(in, "k", x.now)
	k.ExpiresAt = time.Time{}
	t2 := x.now.Add(2*time.Minute + 777777)
	for i, st := range []struct{ at, want time.Time }{
		{t2, t2},
		{x.now.Add(time.Minute), t2}, // earlier: never moves back
		{t2, t2},                     // same
		{t2.Add(time.Hour), t2.Add(time.Hour)},
	} {
		if err := x.s.TouchKey(x.ctx, in.ID, k.ID, st.at); err != nil {
			t.Fatalf("TouchKey #%d: %v", i, err)
		}
		want := k
		want.LastUsedAt = st.want
		checkKey(t, x.get(in.ID, k.ID), want)
	}
	// Touching changes nothing else: still active, same lookup.
	if l := x.lookup(k.Hash); l.ID != k.ID || !l.RevokedAt.IsZero() || !l.ExpiresAt.IsZero() {
		t.Errorf("lookup after touch = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 1})
	if err != nil || len(keys) != 1 {
		t.Fatalf("ListKeys: %v %v", ids(keys), err)
	}
	sameTime(t, "listed LastUsedAt", keys[0].LastUsedAt, t2.Add(time.Hour))
}

func testInvalidations(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	var ks []store.Key
	for i := range 6 {
		ks = append(ks, x.key(in, fmt.Sprintf("k%d", i), x.now))
	}
	rec := &Recorder{}
	unsubscribe := x.s.Subscribe(rec)
	if !WaitFor(5*time.Second, rec.Healthy) {
		t.Fatalf("watcher not told SetHealthy(true) within 5 s; history %v", rec.HealthHistory())
	}

	if _, err := x.s.RevokeKey(x.ctx, in.ID, ks[0].ID, x.now); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[0].Hash) {
		t.Errorf("RevokeKey returned before the watcher got Invalidate(hash)")
	}
	if _, err := x.s.ExpireKey(x.ctx, in.ID, ks[1].ID, x.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[1].Hash) {
		t.Errorf("ExpireKey returned before the watcher got Invalidate(hash)")
	}
	if _, err := x.s.ExpireKey(x.ctx, in.ID, ks[2].ID, x.now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[2].Hash) {
		t.Errorf("ExpireKey into the past returned before the watcher got Invalidate(hash)")
	}
	// Creating and touching keys refuse nothing; they need not invalidate, and never the
	// untouched keys.
	if err := x.s.TouchKey(x.ctx, in.ID, ks[5].ID, x.now); err != nil {
		t.Fatal(err)
	}
	for _, h := range rec.Invalidations() {
		if h == ks[3].Hash || h == ks[4].Hash {
			t.Errorf("invalidation of a key nobody changed")
		}
	}

	// Several watchers all hear it.
	rec2 := &Recorder{}
	unsubscribe2 := x.s.Subscribe(rec2)
	defer unsubscribe2()
	if _, err := x.s.RevokeKey(x.ctx, in.ID, ks[3].ID, x.now); err != nil {
		t.Fatal(err)
	}
	if !rec.Invalidated(ks[3].Hash) || !rec2.Invalidated(ks[3].Hash) {
		t.Errorf("RevokeKey returned before every watcher got Invalidate(hash)")
	}

	// After unsubscribe: nothing more, even what the store's own channel echoes later.
	unsubscribe()
	unsubscribe() // harmless twice
	time.Sleep(100 * time.Millisecond)
	before := rec.Events()
	if _, err := x.s.RevokeKey(x.ctx, in.ID, ks[4].ID, x.now); err != nil {
		t.Fatal(err)
	}
	if _, err := x.s.ExpireKey(x.ctx, in.ID, ks[5].ID, x.now); err != nil {
		t.Fatal(err)
	}
	if !rec2.Invalidated(ks[4].Hash) || !rec2.Invalidated(ks[5].Hash) {
		t.Errorf("the still-subscribed watcher missed invalidations")
	}
	time.Sleep(300 * time.Millisecond)
	if rec.Invalidated(ks[4].Hash) || rec.Invalidated(ks[5].Hash) || rec.Events() != before {
		t.Errorf("an unsubscribed watcher still received events (%d before, %d after)", before, rec.Events())
	}
}

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

func testFailedCreate(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	before := x.key(in, "before", x.now)

	x.fp.Fail(StepCreateListed)
	k, secret := NewKey(t, in.ID, in.Environment, "doomed", x.now)
	err := x.s.CreateKey(x.ctx, k)
	x.fp.Fail("")
	if x.fp.Seen(StepCreateListed) == 0 {
		t.Fatalf("the store never reached fail point %q", StepCreateListed)
	}
	if err == nil {
		t.Fatalf("CreateKey succeeded although fail point %q failed", StepCreateListed)
	}
	_, err = x.s.LookupHash(x.ctx, apikey.Hasher{}.Sum(secret))
	wantErr(t, "LookupHash of a key whose create failed", err, store.ErrKeyNotFound)
	// At worst it is listed and does not work; the key before it is intact.
	checkKey(t, x.get(in.ID, before.ID), before)
	if l := x.lookup(before.Hash); l.ID != before.ID {
		t.Errorf("earlier key's lookup = %+v", l)
	}

	// The store still works, and a new key created now is usable and listed first.
	after := x.key(in, "after", x.now)
	if l := x.lookup(after.Hash); l.ID != after.ID {
		t.Errorf("LookupHash(after) = %+v", l)
	}
	keys, _, err := x.s.ListKeys(x.ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil || len(keys) == 0 || keys[0].ID != after.ID {
		t.Errorf("ListKeys after a failed create = %v, %v; want %s first", ids(keys), err, after.ID)
	}
	for _, lk := range keys {
		if lk.ID == k.ID {
			if _, err := x.s.LookupHash(x.ctx, lk.Hash); !errors.Is(err, store.ErrKeyNotFound) {
				t.Errorf("the failed key is listed and works: %v", err)
			}
		}
	}
}

func testFailedRevoke(x *suite) {
	t := x.t
	in := x.instance("acme", apikey.Production)
	k := x.key(in, "k", x.now)
	rec := &Recorder{}
	defer x.s.Subscribe(rec)()

	check := func(when string) (store.Key, store.Lookup) {
		t.Helper()
		got := x.get(in.ID, k.ID)
		l := x.lookup(k.Hash)
		if got.Status(x.now) == store.StatusRevoked && l.RevokedAt.IsZero() {
			t.Errorf("%s: listed revoked (at %v) but the lookup entry still works: %+v", when, got.RevokedAt, l)
		}
		return got, l
	}

	t1 := x.now.Add(time.Minute)
	x.fp.Fail(StepRevokeLookup)
	_, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, t1)
	x.fp.Fail("")
	if x.fp.Seen(StepRevokeLookup) == 0 {
		t.Fatalf("the store never reached fail point %q", StepRevokeLookup)
	}
	if err == nil {
		t.Fatalf("RevokeKey succeeded although fail point %q failed", StepRevokeLookup)
	}
	check("after the failed revoke")

	// A retry succeeds and the listed record and lookup entry agree.
	t2 := x.now.Add(2 * time.Minute)
	got, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, t2)
	if err != nil {
		t.Fatalf("retried RevokeKey: %v", err)
	}
	if got.Status(x.now) != store.StatusRevoked {
		t.Fatalf("retried RevokeKey returned status %s", got.Status(x.now))
	}
	if !rec.Invalidated(k.Hash) {
		t.Errorf("retried RevokeKey returned before the watcher got Invalidate(hash)")
	}
	listed, l := check("after the retried revoke")
	if listed.RevokedAt.IsZero() || !listed.RevokedAt.Equal(l.RevokedAt) || !got.RevokedAt.Equal(l.RevokedAt) {
		t.Errorf("after the retry: returned RevokedAt %v, listed %v, lookup %v; want all equal", got.RevokedAt, listed.RevokedAt, l.RevokedAt)
	}
	if !l.RevokedAt.Equal(ms(t1)) && !l.RevokedAt.Equal(ms(t2)) {
		t.Errorf("RevokedAt %v is neither the failed nor the retried revoke's time", l.RevokedAt)
	}
	// And a third revoke keeps that time.
	again, err := x.s.RevokeKey(x.ctx, in.ID, k.ID, x.now.Add(time.Hour))
	if err != nil || !again.RevokedAt.Equal(l.RevokedAt) {
		t.Errorf("third RevokeKey = %v, %v; want RevokedAt %v", again.RevokedAt, err, l.RevokedAt)
	}
}

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
