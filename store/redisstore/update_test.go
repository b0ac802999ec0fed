package redisstore

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

// The restrictions are on the lookup entry, which is all the gateway reads, as compact JSON
// fields; an unrestricted key has none of them, as keys written before they existed.
func TestRestrictionsInTheLookupEntry(t *testing.T) {
	srv := redistest.Start(t)
	s := open(t, srv, Options{})
	ctx := context.Background()
	keys := makeKeys(t, s, 1)
	k, _ := storetest.NewKey(t, "acme", apikey.Production, "r", time.Now())
	k.Scopes = []string{"charges:*"}
	k.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::1/128")}
	k.Metadata = map[string]string{"team": "ü"}
	k.RateLimit = &store.RateLimit{Limit: 100, Window: time.Minute}
	k.Quota = &store.Quota{Limit: 1000, Period: store.QuotaDay}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"scopes": `["charges:*"]`, "ips": `["10.0.0.0/8","2001:db8::1"]`, "meta": `{"team":"ü"}`,
		"rl": `{"limit":100,"window":60}`, "quota": `{"limit":1000,"period":"day"}`}
	for _, key := range []string{s.kLookup(k.Hash), s.kKey("acme", k.ID)} {
		got, err := srv.Client().HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		for f, v := range want {
			if got[f] != v {
				t.Errorf("%s %s = %q, want %q", key, f, got[f], v)
			}
		}
	}
	for _, key := range []string{s.kLookup(keys[0].Hash), s.kKey("acme", keys[0].ID)} {
		for _, f := range restrictFields {
			if n, err := srv.Client().HExists(ctx, key, f).Result(); err != nil || n {
				t.Errorf("an unrestricted key's %s has a %s field (%v)", key, f, err)
			}
		}
	}

	// Widened back to unrestricted: the fields go.
	var none []string
	var noIPs []netip.Prefix
	var noMeta map[string]string
	var noRL *store.RateLimit
	var noQuota *store.Quota
	if _, err := s.UpdateKey(ctx, "acme", k.ID, store.KeyUpdate{Scopes: &none, AllowedIPs: &noIPs, Metadata: &noMeta, RateLimit: &noRL, Quota: &noQuota}, nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{s.kLookup(k.Hash), s.kKey("acme", k.ID)} {
		for _, f := range restrictFields {
			if n, err := srv.Client().HExists(ctx, key, f).Result(); err != nil || n {
				t.Errorf("a widened key's %s still has a %s field (%v)", key, f, err)
			}
		}
	}

	// A lookup entry that is gone (a create that failed half-way) is not brought back.
	srv.Client().Del(ctx, s.kLookup(keys[0].Hash))
	name := "x"
	if _, err := s.UpdateKey(ctx, "acme", keys[0].ID, store.KeyUpdate{Name: &name, Scopes: &[]string{"a"}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupHash(ctx, keys[0].Hash); !errors.Is(err, store.ErrKeyNotFound) {
		t.Errorf("UpdateKey of a key without a lookup entry made it work: %v", err)
	}
}

// An update that fails between its writes leaves the lookup entry as asked (the gateway
// enforces the update) and the record as it was, and the caches are told all the same.
func TestUpdateFailedHalfWay(t *testing.T) {
	srv := redistest.Start(t)
	fp := &storetest.FailPoint{}
	s := open(t, srv, Options{FailPoint: fp.Hook})
	rec := &storetest.Recorder{}
	defer s.Subscribe(rec)()
	ctx := context.Background()
	k := makeKeys(t, s, 1)[0]
	fp.Fail("update:lookup")
	scopes := []string{"charges:read"}
	ev := store.Event{ID: "evt_1", Type: store.EventKeyUpdated, Instance: "acme", KeyID: k.ID, Actor: "t", CreatedAt: time.Now()}
	if _, err := s.UpdateKey(ctx, "acme", k.ID, store.KeyUpdate{Scopes: &scopes}, &ev); err == nil {
		t.Fatal("UpdateKey succeeded through the fail point")
	}
	if l, err := s.LookupHash(ctx, k.Hash); err != nil || len(l.Scopes) != 1 || l.Scopes[0] != "charges:read" {
		t.Errorf("lookup after the failed update = %+v, %v; want the new scopes", l, err)
	}
	if got, err := s.Key(ctx, "acme", k.ID); err != nil || got.Scopes != nil {
		t.Errorf("record after the failed update = %+v, %v; want unchanged", got, err)
	}
	if !rec.Invalidated(k.Hash) {
		t.Errorf("the failed update did not invalidate")
	}
	if evs, _, err := s.ListEvents(ctx, "acme", store.ListOptions{Limit: 10}); err != nil || len(evs) != 0 {
		t.Errorf("the failed update recorded events %+v, %v", evs, err)
	}
	// Retried, it completes.
	fp.Fail("")
	if _, err := s.UpdateKey(ctx, "acme", k.ID, store.KeyUpdate{Scopes: &scopes}, &ev); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Key(ctx, "acme", k.ID); err != nil || len(got.Scopes) != 1 {
		t.Errorf("record after the retried update = %+v, %v", got, err)
	}
}

// wait_replicas applies to updates: both writes are on the replica when UpdateKey returns,
// and with the replica hung the update is in force on the master, told, and reported.
func TestWaitReplicasUpdate(t *testing.T) {
	sn := redistest.StartSentinel(t)
	h := &slotErrors{}
	s := openOn(t, redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: []string{sn.Addr}}),
		h, Options{WaitReplicas: 1, WaitTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	replica := redis.NewClient(&redis.Options{Addr: sn.Replica.Addr})
	defer replica.Close()
	keys := makeKeys(t, s, 2)
	scopes := []string{"charges:read"}
	if _, err := s.UpdateKey(ctx, "acme", keys[0].ID, store.KeyUpdate{Scopes: &scopes}, nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{s.kLookup(keys[0].Hash), s.kKey("acme", keys[0].ID)} {
		if v, err := replica.HGet(ctx, key, "scopes").Result(); err != nil || v != `["charges:read"]` {
			t.Errorf("the replica's %s right after UpdateKey: scopes %q, %v", key, v, err)
		}
	}

	sn.Replica.Stop()
	defer sn.Replica.Cont()
	rec := &storetest.Recorder{}
	defer s.Subscribe(rec)()
	_, err := s.UpdateKey(ctx, "acme", keys[1].ID, store.KeyUpdate{Scopes: &scopes}, nil)
	if !errors.Is(err, ErrNotReplicated) {
		t.Errorf("UpdateKey with the replica hung: %v, want ErrNotReplicated", err)
	}
	if l, err := s.LookupHash(ctx, keys[1].Hash); err != nil || len(l.Scopes) != 1 {
		t.Errorf("lookup after the unconfirmed update = %+v, %v", l, err)
	}
	if k, err := s.Key(ctx, "acme", keys[1].ID); err != nil || len(k.Scopes) != 1 {
		t.Errorf("record after the unconfirmed update = %+v, %v", k, err)
	}
	if !rec.Invalidated(keys[1].Hash) {
		t.Errorf("the unconfirmed update did not invalidate")
	}
	h.verify(t)
}
