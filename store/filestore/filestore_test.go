package filestore

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, fp func(step string) error) store.Store {
		s, err := Open(filepath.Join(t.TempDir(), "keys.db"), Options{FailPoint: fp})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

func TestDataSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "keys.db")
	now := time.Now()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := store.Instance{ID: "acme", Name: "Acme", Environment: apikey.Production}
	if err := s.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	var created []store.Key
	for _, name := range []string{"a", "b", "c"} {
		k, _ := storetest.NewKey(t, in.ID, in.Environment, name, now)
		k.ExpiresAt = now.Add(time.Hour)
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		created = append(created, k)
	}
	revoked, _, err := s.RevokeKey(ctx, in.ID, created[1].ID, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.TouchKey(ctx, in.ID, created[2].ID, now); err != nil {
		t.Fatal(err)
	}
	before, _, err := s.ListKeys(ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopening: %v", err)
	}
	defer s.Close()
	ins, err := s.Instances(ctx)
	if err != nil || !slices.Equal(ins, []store.Instance{in}) {
		t.Fatalf("Instances after reopen = %v, %v", ins, err)
	}
	after, _, err := s.ListKeys(ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before, after, func(a, b store.Key) bool {
		return a.ID == b.ID && a.Hash == b.Hash && a.Name == b.Name && a.Prefix == b.Prefix &&
			a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) &&
			a.RevokedAt.Equal(b.RevokedAt) && a.LastUsedAt.Equal(b.LastUsedAt)
	}) {
		t.Fatalf("keys after reopen:\n%+v\nbefore:\n%+v", after, before)
	}
	l, err := s.LookupHash(ctx, created[1].Hash)
	if err != nil || !l.RevokedAt.Equal(revoked.RevokedAt) || l.RevokedAt.IsZero() {
		t.Errorf("revoked key's lookup after reopen = %+v, %v", l, err)
	}
	if k, err := s.Key(ctx, in.ID, created[2].ID); err != nil || !k.LastUsedAt.Equal(now.Truncate(time.Millisecond)) {
		t.Errorf("touched key after reopen = %+v, %v", k, err)
	}
	// Creation order carries on across the reopen: a new key lists first.
	k, _ := storetest.NewKey(t, in.ID, in.Environment, "d", now.Add(-time.Hour))
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	keys, _, err := s.ListKeys(ctx, in.ID, store.ListOptions{Limit: 10})
	if err != nil || len(keys) != 4 || keys[0].ID != k.ID {
		t.Errorf("after reopen and create, list = %d keys, first %v, %v", len(keys), keys, err)
	}
}

// Records written before keys had restrictions read as unrestricted.
func TestRecordsWithoutRestrictions(t *testing.T) {
	ctx := context.Background()
	s, err := Open(filepath.Join(t.TempDir(), "keys.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := store.Instance{ID: "acme", Name: "Acme", Environment: apikey.Production}
	if err := s.CreateInstance(ctx, in); err != nil {
		t.Fatal(err)
	}
	k, _ := storetest.NewKey(t, in.ID, in.Environment, "old", time.Now())
	k.Scopes = []string{"a"}
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	// Rewrite the record as an older keygate wrote it.
	err = s.db.Update(func(tx *bolt.Tx) error {
		keys, _, err := instanceBuckets(tx, in.ID)
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(keys.Get([]byte(k.ID)), &m); err != nil {
			return err
		}
		delete(m, "scopes")
		delete(m, "allowed_ips")
		delete(m, "metadata")
		v, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return keys.Put([]byte(k.ID), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Key(ctx, in.ID, k.ID)
	if err != nil || got.Scopes != nil || got.AllowedIPs != nil || got.Metadata != nil {
		t.Errorf("old record = %+v, %v; want unrestricted", got, err)
	}
	l, err := s.LookupHash(ctx, k.Hash)
	if err != nil || l.Scopes != nil || l.AllowedIPs != nil || l.Metadata != nil {
		t.Errorf("old record's lookup = %+v, %v; want unrestricted", l, err)
	}
}
