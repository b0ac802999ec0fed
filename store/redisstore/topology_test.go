package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// slotErrors is a client hook that records every CROSSSLOT error (and every other
// cross-slot complaint) a client meets, whoever swallows it afterwards.
type slotErrors struct {
	mu   sync.Mutex
	errs []string
}

func (h *slotErrors) check(err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.Contains(msg, "CROSSSLOT") || strings.Contains(msg, "same slot") {
		h.mu.Lock()
		h.errs = append(h.errs, msg)
		h.mu.Unlock()
	}
}

func (h *slotErrors) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slotErrors) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(err)
		return err
	}
}

func (h *slotErrors) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.check(c.Err())
		}
		return err
	}
}

// verify fails t if any CROSSSLOT error was seen.
func (h *slotErrors) verify(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errs {
		t.Errorf("cross-slot error: %s", e)
	}
}

// openOn returns a Store on rdb, closed at the end of the test, whose listener errors are
// checked for CROSSSLOT too.
func openOn(t *testing.T, rdb redis.UniversalClient, h *slotErrors, opts Options) *Store {
	t.Helper()
	rdb.AddHook(h)
	opts.OnError = func(err error) { h.check(err) }
	s := New(rdb, opts)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// The whole contract suite on Redis Cluster, through a ClusterClient: each subtest on the one
// cluster with a key prefix of its own. No command may span slots.
func TestContractCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	h := &slotErrors{}
	var n atomic.Int64
	t.Run("suite", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T, fp func(step string) error) store.Store {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
			return openOn(t, rdb, h, Options{KeyPrefix: fmt.Sprintf("t%d:", n.Add(1)), FailPoint: fp})
		})
	})
	h.verify(t)
}

// The contract suite once through Sentinel (a FailoverClient).
func TestContractSentinel(t *testing.T) {
	sn := redistest.StartSentinel(t)
	h := &slotErrors{}
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T, fp func(step string) error) store.Store {
		rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: []string{sn.Addr}})
		return openOn(t, rdb, h, Options{KeyPrefix: fmt.Sprintf("t%d:", n.Add(1)), FailPoint: fp})
	})
}

// On Cluster the invalidation stream lives on one shard: stores whose clients were seeded
// with different nodes all follow it.
func TestClusterRevocationReachesOtherGateway(t *testing.T) {
	c := redistest.StartCluster(t)
	h := &slotErrors{}
	var gws []gateway
	for _, addr := range c.Addrs() {
		g := gateway{s: openOn(t, redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{addr}}), h, Options{}), rec: &storetest.Recorder{}}
		t.Cleanup(g.s.Subscribe(g.rec))
		testutil.WaitFor(t, 5*time.Second, "the store seeded with "+addr+" to be healthy", g.rec.Healthy)
		gws = append(gws, g)
	}
	keys := makeKeys(t, gws[0].s, 8)
	// The lookup entries spread over the shards.
	shards := map[string]bool{}
	for _, k := range keys {
		shards[c.MasterFor(gws[0].s.kLookup(k.Hash)).Addr] = true
	}
	t.Logf("8 lookup entries on %d shards; stream on %s", len(shards), c.MasterFor("nora:inval").Addr)
	for i, k := range keys {
		from := gws[i%len(gws)]
		start := time.Now()
		if _, _, err := from.s.RevokeKey(context.Background(), "acme", k.ID, time.Now(), nil); err != nil {
			t.Fatal(err)
		}
		for j, g := range gws {
			testutil.WaitEvery(t, time.Second, 2*time.Millisecond, fmt.Sprintf("the revocation through store %d to reach store %d", i%len(gws), j),
				func() bool { return g.rec.Invalidated(k.Hash) })
		}
		if i == 0 {
			t.Logf("revocation reached every store in %v", time.Since(start))
		}
	}
	h.verify(t)
}

// Refusal: a key prefix whose first brace opens an empty hash tag would spread an
// instance's records over the slots.
func TestCheckKeyPrefix(t *testing.T) {
	for _, p := range []string{"", "nora:", "{nora}:", "a{", "a}{b", "{x", "x}"} {
		if err := CheckKeyPrefix(p); err != nil {
			t.Errorf("CheckKeyPrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"{}", "a{}:", "x{}{y}"} {
		if err := CheckKeyPrefix(p); err == nil {
			t.Errorf("CheckKeyPrefix(%q) = nil, want an error", p)
		}
	}
}

// wait_replicas on Sentinel: every write of a create and a revoke is on the replica when the
// call returns, and with the replica hung the calls fail, many at once among reads too.
func TestWaitReplicasSentinel(t *testing.T) {
	sn := redistest.StartSentinel(t)
	h := &slotErrors{}
	s := openOn(t, redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: []string{sn.Addr}}),
		h, Options{WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	replica := redis.NewClient(&redis.Options{Addr: sn.Replica.Addr})
	defer replica.Close()

	keys := makeKeys(t, s, 3)
	for _, k := range keys {
		if n, err := replica.Exists(ctx, s.kLookup(k.Hash), s.kKey("acme", k.ID)).Result(); err != nil || n != 2 {
			t.Fatalf("the replica holds %d of the key's 2 records right after CreateKey (%v)", n, err)
		}
	}
	if _, _, err := s.RevokeKey(ctx, "acme", keys[0].ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if rev, err := replica.HGet(ctx, s.kLookup(keys[0].Hash), "rev").Result(); err != nil || rev == "0" {
		t.Fatalf("the replica's lookup entry right after RevokeKey: rev %q, %v", rev, err)
	}

	// Spread the client's pool over several connections, each with an acknowledged write
	// behind it: a WAIT sent on one of those (rather than on the write's own connection)
	// would confirm the old write at once.
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _ := storetest.NewKey(t, "acme", apikey.Production, "spread", time.Now())
			if err := s.CreateKey(ctx, k); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	// Hang the replica: nothing is acknowledged any more.
	sn.Replica.Stop()
	defer sn.Replica.Cont()
	// Creates while gateways read, the reads taking pooled connections meanwhile.
	reading, stop := sync.WaitGroup{}, make(chan struct{})
	for range 4 {
		reading.Add(1)
		go func() {
			defer reading.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s.LookupHash(ctx, keys[2].Hash)
			}
		}()
	}
	errs := make([]error, 8)
	doomed := make([]store.Key, len(errs))
	for i := range errs {
		doomed[i], _ = storetest.NewKey(t, "acme", apikey.Production, "doomed", time.Now())
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.CreateKey(ctx, doomed[i])
		}()
	}
	wg.Wait()
	close(stop)
	reading.Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrNotReplicated) {
			t.Errorf("CreateKey %d with the replica hung: %v, want ErrNotReplicated", i, err)
		}
		if _, err := s.LookupHash(ctx, doomed[i].Hash); !errors.Is(err, store.ErrKeyNotFound) {
			t.Errorf("a create that was not replicated left a working key: %v", err)
		}
	}
	rec := &storetest.Recorder{}
	defer s.Subscribe(rec)()
	_, _, err := s.RevokeKey(ctx, "acme", keys[1].ID, time.Now(), nil)
	if !errors.Is(err, ErrNotReplicated) {
		t.Errorf("RevokeKey with the replica hung: %v, want ErrNotReplicated", err)
	}
	// Not confirmed, but in force on the master, and the caches were told.
	if l, err := s.LookupHash(ctx, keys[1].Hash); err != nil || l.RevokedAt.IsZero() {
		t.Errorf("after the unconfirmed revoke: %+v, %v", l, err)
	}
	if k, err := s.Key(ctx, "acme", keys[1].ID); err != nil || k.RevokedAt.IsZero() {
		t.Errorf("listed record after the unconfirmed revoke: %+v, %v", k, err)
	}
	if !rec.Invalidated(keys[1].Hash) {
		t.Errorf("the unconfirmed revoke did not invalidate")
	}
	sn.Replica.Cont()
	if _, _, err := s.RevokeKey(ctx, "acme", keys[1].ID, time.Now(), nil); err != nil {
		t.Errorf("revoke again with the replica back: %v", err)
	}
	h.verify(t)
}

// wait_replicas on Cluster: each write is confirmed by the replicas of its own shard. With
// one shard's replica hung, writes on that shard fail and writes on the others succeed.
func TestWaitReplicasCluster(t *testing.T) {
	c := redistest.StartClusterReplicas(t, 1)
	h := &slotErrors{}
	s := openOn(t, redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()}),
		h, Options{WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	ctx := context.Background()

	// The shard to hang holds neither the index of instances nor the stream.
	busy := map[*redistest.Server]bool{c.MasterFor(s.kInstances()): true, c.MasterFor(s.kStream()): true}
	var hung *redistest.Server
	for _, m := range c.Masters {
		if !busy[m] {
			hung = m
		}
	}
	instanceWhere := func(onHung bool) string {
		for i := 0; ; i++ {
			if id := fmt.Sprintf("inst%d", i); (c.MasterFor(s.kInstance(id)) == hung) == onHung {
				return id
			}
		}
	}
	hot, cold := instanceWhere(true), instanceWhere(false)
	// keyWhere makes a key of instance in whose lookup entry is (or is not) on the hung shard.
	keyWhere := func(in string, onHung bool) store.Key {
		for {
			k, _ := storetest.NewKey(t, in, apikey.Production, "k", time.Now())
			if (c.MasterFor(s.kLookup(k.Hash)) == hung) == onHung {
				return k
			}
		}
	}
	for _, id := range []string{hot, cold} {
		if err := s.CreateInstance(ctx, store.Instance{ID: id, Name: id, Environment: apikey.Production}); err != nil {
			t.Fatal(err)
		}
	}
	hotKey, coldKey := keyWhere(hot, false), keyWhere(cold, false)
	for _, k := range []store.Key{hotKey, coldKey} {
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatalf("CreateKey with every replica up: %v", err)
		}
	}

	reps := c.ReplicasOf(hung)
	if len(reps) != 1 {
		t.Fatalf("shard %s has %d replicas", hung.Addr, len(reps))
	}
	reps[0].Stop()
	defer reps[0].Cont()

	// Writes on the hung shard are not confirmed.
	k := keyWhere(hot, false) // its listed record is on the hung shard
	if err := s.CreateKey(ctx, k); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("CreateKey whose record is on the hung shard: %v, want ErrNotReplicated", err)
	}
	if _, err := s.LookupHash(ctx, k.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("the unreplicated create left a working key: %v", err)
	}
	k = keyWhere(cold, true) // its lookup entry is on the hung shard
	if err := s.CreateKey(ctx, k); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("CreateKey whose lookup entry is on the hung shard: %v, want ErrNotReplicated", err)
	}
	if _, err := s.LookupHash(ctx, k.Hash); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("the unreplicated create left a working key: %v", err)
	}
	if _, _, err := s.RevokeKey(ctx, hot, hotKey.ID, time.Now(), nil); !errors.Is(err, ErrNotReplicated) {
		t.Errorf("RevokeKey whose record is on the hung shard: %v, want ErrNotReplicated", err)
	}
	if l, err := s.LookupHash(ctx, hotKey.Hash); err != nil || l.RevokedAt.IsZero() {
		t.Errorf("the unconfirmed revoke is not in force: %+v, %v", l, err)
	}

	// Writes on the other shards are, WAIT going to each write's own shard.
	for range 3 {
		if err := s.CreateKey(ctx, keyWhere(cold, false)); err != nil {
			t.Errorf("CreateKey with every write on healthy shards: %v", err)
		}
	}
	if _, _, err := s.RevokeKey(ctx, cold, coldKey.ID, time.Now(), nil); err != nil {
		t.Errorf("RevokeKey with every write on healthy shards: %v", err)
	}
	h.verify(t)
}

// What wait_replicas buys on Sentinel: writes made while a failover is under way. A
// planned failover (SENTINEL FAILOVER) leaves the old master up and writable until the
// sentinel converts it, and clients keep writing to it until they hear of the switch; what
// it takes after the replica was promoted never reaches the new master. With wait_replicas 1
// those writes fail (the old master has no replica left to acknowledge them), so every create
// that succeeded is on the new master.
func TestWaitReplicasSentinelFailover(t *testing.T) {
	sn := redistest.StartSentinel(t)
	h := &slotErrors{}
	s := openOn(t, redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: []string{sn.Addr}}),
		h, Options{WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
	ctx := context.Background()
	makeKeys(t, s, 1)

	var (
		mu    sync.Mutex
		acked []store.Key
		fails int
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k, _ := storetest.NewKey(t, "acme", apikey.Production, "during", time.Now())
				err := s.CreateKey(ctx, k)
				mu.Lock()
				if err == nil {
					acked = append(acked, k)
				} else {
					fails++
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	sn.Failover()
	time.Sleep(300 * time.Millisecond) // past the clients' switch
	close(stop)
	wg.Wait()

	newMaster := redis.NewClient(&redis.Options{Addr: sn.Master.Addr})
	defer newMaster.Close()
	lost := 0
	for _, k := range acked {
		if n, err := newMaster.Exists(ctx, s.kLookup(k.Hash), s.kKey("acme", k.ID)).Result(); err != nil || n != 2 {
			lost++
		}
	}
	t.Logf("%d creates acknowledged, %d failed, across the failover", len(acked), fails)
	if lost > 0 {
		t.Errorf("%d acknowledged creates are missing on the new master", lost)
	}
	if len(acked) == 0 {
		t.Errorf("no create succeeded before the failover")
	}
	h.verify(t)
}
