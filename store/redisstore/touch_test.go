package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// touchKeysWithoutScripts checks that TouchKeys records every use on a Redis whose script
// cache is empty (a fresh server, and again after flush empties it), and that the fallback
// puts the script back: the next batch runs by digest alone. calls counts a command's runs
// over every server the keys live on.
func touchKeysWithoutScripts(t *testing.T, s *Store, flush func(), calls func(cmd string) int64) []store.Key {
	t.Helper()
	ctx := context.Background()
	var keys []store.Key
	for i := range 8 {
		in := store.Instance{ID: fmt.Sprintf("inst-%d", i), Name: "n", Environment: apikey.Sandbox}
		if err := s.CreateInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			k, _ := storetest.NewKey(t, in.ID, in.Environment, "k", time.Now())
			if err := s.CreateKey(ctx, k); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	batch := func(at time.Time) []store.Touch {
		ts := make([]store.Touch, len(keys))
		for i, k := range keys {
			ts[i] = store.Touch{Instance: k.Instance, ID: k.ID, At: at}
		}
		return ts
	}
	check := func(what string, want time.Time) {
		t.Helper()
		for _, k := range keys {
			got, err := s.Key(ctx, k.Instance, k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !got.LastUsedAt.Equal(store.FromMillis(store.Millis(want))) {
				t.Errorf("%s: key %s of %s: last_used_at = %v, want %v", what, k.ID, k.Instance, got.LastUsedAt, want)
			}
		}
	}
	base := time.Date(2031, 5, 17, 10, 0, 0, 0, time.UTC)

	// A fresh server has never seen the script.
	if err := s.TouchKeys(ctx, batch(base)); err != nil {
		t.Fatalf("TouchKeys on a fresh server: %v", err)
	}
	check("fresh server", base)

	// After SCRIPT FLUSH (as after a failover to a replica that never ran it).
	flush()
	evals := calls("eval")
	if err := s.TouchKeys(ctx, batch(base.Add(time.Minute))); err != nil {
		t.Fatalf("TouchKeys after SCRIPT FLUSH: %v", err)
	}
	check("after SCRIPT FLUSH", base.Add(time.Minute))
	if calls("eval") == evals {
		t.Errorf("no EVAL after SCRIPT FLUSH: the flush did not empty the script cache, or the test is wrong")
	}
	// TouchKey, one use, works without the script too.
	flush()
	if err := s.TouchKey(ctx, keys[0].Instance, keys[0].ID, base.Add(2*time.Minute)); err != nil {
		t.Fatalf("TouchKey after SCRIPT FLUSH: %v", err)
	}

	// The script is cached again: a batch is EVALSHA only.
	if err := s.TouchKeys(ctx, batch(base.Add(time.Minute))); err != nil { // refreshes the other servers' caches
		t.Fatal(err)
	}
	evals, shas := calls("eval"), calls("evalsha")
	if err := s.TouchKeys(ctx, batch(base.Add(3*time.Minute))); err != nil {
		t.Fatal(err)
	}
	check("once the script is cached again", base.Add(3*time.Minute))
	if n := calls("eval") - evals; n != 0 {
		t.Errorf("%d EVALs once the script was cached again, want 0", n)
	}
	if n := calls("evalsha") - shas; n != 8 {
		t.Errorf("%d EVALSHAs for a batch of %d uses of 8 instances, want one per instance", n, len(keys))
	}
	return keys
}

func TestTouchKeysWithoutScripts(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client()
	touchKeysWithoutScripts(t, open(t, srv, Options{}), func() {
		if err := admin.ScriptFlush(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
	}, srv.CommandCalls)
}

// On Cluster, the batch is split among the masters, each flushed of its scripts.
func TestTouchKeysWithoutScriptsCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	h := &slotErrors{}
	s := openOn(t, redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()}), h, Options{})
	keys := touchKeysWithoutScripts(t, s, func() {
		for _, m := range c.Masters {
			if err := m.Client().ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}, func(cmd string) int64 {
		var n int64
		for _, m := range c.Masters {
			n += m.CommandCalls(cmd)
		}
		return n
	})
	masters := map[*redistest.Server]bool{}
	for _, k := range keys {
		masters[c.MasterFor(s.kKey(k.Instance, k.ID))] = true
	}
	if len(masters) < 2 {
		t.Errorf("the keys live on %d master(s): the batch was not split", len(masters))
	}
	h.verify(t)
}

// One instance's uses go in calls of at most touchChunk keys, every use recorded.
func TestTouchKeysChunksAnInstance(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv, Options{})
	ctx := context.Background()
	in := store.Instance{ID: "busy", Name: "n", Environment: apikey.Sandbox}
	if err := s.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	const n = 2*touchChunk + 3
	at := time.Date(2031, 5, 17, 10, 0, 0, 0, time.UTC)
	ts := make([]store.Touch, n)
	for i := range n {
		k, _ := storetest.NewKey(t, in.ID, in.Environment, "k", time.Now())
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		ts[i] = store.Touch{Instance: in.ID, ID: k.ID, At: at.Add(time.Duration(i) * time.Millisecond)}
	}
	if err := s.TouchKeys(ctx, ts[:1]); err != nil { // caches the script
		t.Fatal(err)
	}
	shas := srv.CommandCalls("evalsha")
	if err := s.TouchKeys(ctx, ts); err != nil {
		t.Fatal(err)
	}
	if got := srv.CommandCalls("evalsha") - shas; got != 3 {
		t.Errorf("%d EVALSHAs for %d uses of one instance, want 3 (at most %d keys each)", got, n, touchChunk)
	}
	for _, u := range ts {
		k, err := s.Key(ctx, in.ID, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !k.LastUsedAt.Equal(u.At) {
			t.Errorf("key %s: last_used_at = %v, want %v", u.ID, k.LastUsedAt, u.At)
		}
	}
}
