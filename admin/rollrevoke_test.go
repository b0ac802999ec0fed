package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
)

// atomicityStores are the stores the roll and revoke races run on through the API.
func atomicityStores(t *testing.T) map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"file": func(t *testing.T) store.Store {
			s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"redis": func(t *testing.T) store.Store {
			srv := redistest.Start(t)
			s := redisstore.New(srv.Client(), redisstore.Options{})
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

// atomicityServer serves the API over s, which gets the sandbox instance "acme-sandbox".
func atomicityServer(t *testing.T, s store.Store) *Client {
	t.Helper()
	if err := s.CreateInstance(context.Background(), store.Instance{ID: "acme-sandbox", Name: "Acme (sandbox)", Environment: apikey.Sandbox}); err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(s, []Token{
		{Name: "all", Hash: sha256.Sum256([]byte(clientAllToken)), Permissions: []Permission{PermRead, PermCreate, PermDelete}},
	}, apikey.Hasher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Token: clientAllToken}
}

// eventsOfType returns the instance's events of one type for one key.
func eventsOfType(t *testing.T, c *Client, typ, keyID string) []Event {
	t.Helper()
	evs, err := c.Events(context.Background(), "acme-sandbox", 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for _, e := range evs.Data {
		if e.Type == typ && e.KeyID == keyID {
			out = append(out, e)
		}
	}
	return out
}

// Concurrent rolls of one key through the API: one 201, every other answer 409
// api_key_already_rolled naming the replacement; one replacement listed, one event.
func TestConcurrentRollsOneReplacement(t *testing.T) {
	for name, open := range atomicityStores(t) {
		t.Run(name, func(t *testing.T) {
			c := atomicityServer(t, open(t))
			ctx := context.Background()
			old, err := c.CreateKey(ctx, "acme-sandbox", "ci", "")
			if err != nil {
				t.Fatal(err)
			}
			const n = 12
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				created []Key
				refused []*Error
			)
			start := make(chan struct{})
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					k, err := c.RollKey(ctx, "acme-sandbox", old.ID, 3600)
					mu.Lock()
					defer mu.Unlock()
					var ae *Error
					switch {
					case err == nil:
						created = append(created, k)
					case errors.As(err, &ae):
						refused = append(refused, ae)
					default:
						t.Errorf("roll: %v", err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if len(created) != 1 {
				t.Fatalf("%d concurrent rolls succeeded, want 1", len(created))
			}
			next := created[0]
			for _, ae := range refused {
				if ae.Status != http.StatusConflict || ae.Code != "api_key_already_rolled" || !strings.Contains(ae.Message, next.ID) {
					t.Errorf("a losing roll got %d %s %q; want 409 api_key_already_rolled naming %s", ae.Status, ae.Code, ae.Message, next.ID)
				}
			}
			keys, err := c.ListKeys(ctx, "acme-sandbox", 100, "", "")
			if err != nil {
				t.Fatal(err)
			}
			if len(keys.Data) != 2 || keys.Data[0].ID != next.ID || keys.Data[1].ID != old.ID {
				t.Errorf("after the rolls %d keys listed, want the replacement and the old key", len(keys.Data))
			}
			if evs := eventsOfType(t, c, store.EventKeyRolled, old.ID); len(evs) != 1 || evs[0].NewKeyID != next.ID {
				t.Errorf("rolled events %+v, want one naming %s", evs, next.ID)
			}
			// A roll later on is refused the same way.
			_, err = c.RollKey(ctx, "acme-sandbox", old.ID, 0)
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != "api_key_already_rolled" {
				t.Errorf("rolling a rolled key again: %v, want 409 api_key_already_rolled", err)
			}
		})
	}
}

// Concurrent revokes of one key through the API: all 200 with the same revoked_at, one
// api_key.revoked event.
func TestConcurrentRevokesOneEvent(t *testing.T) {
	for name, open := range atomicityStores(t) {
		t.Run(name, func(t *testing.T) {
			c := atomicityServer(t, open(t))
			ctx := context.Background()
			k, err := c.CreateKey(ctx, "acme-sandbox", "ci", "")
			if err != nil {
				t.Fatal(err)
			}
			const n = 12
			answers := make([]Key, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					answers[i], errs[i] = c.RevokeKey(ctx, "acme-sandbox", k.ID)
				}()
			}
			close(start)
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("revoke: %v", errs[i])
				}
				if answers[i].Status != "revoked" || answers[i].RevokedAt == nil || !answers[i].RevokedAt.Equal(*answers[0].RevokedAt) {
					t.Errorf("revoke %d answered %s at %v; want revoked at %v like the first", i, answers[i].Status, answers[i].RevokedAt, answers[0].RevokedAt)
				}
			}
			if evs := eventsOfType(t, c, store.EventKeyRevoked, k.ID); len(evs) != 1 {
				t.Errorf("%d revoked events, want 1", len(evs))
			}
		})
	}
}

// narrowingStore narrows a key's scopes just before a roll claims it, as a PATCH arriving
// between the roll's read of the old key and its claim would.
type narrowingStore struct {
	store.Store
	scopes []string
}

func (s narrowingStore) RollKey(ctx context.Context, instance, id string, next store.Key, oldExpiresAt time.Time, ev *store.Event) (store.Key, error) {
	if _, err := s.UpdateKey(ctx, instance, id, store.KeyUpdate{Scopes: &s.scopes}, nil); err != nil {
		return store.Key{}, err
	}
	return s.Store.RollKey(ctx, instance, id, next, oldExpiresAt, ev)
}

// A roll gives the replacement the old key's restrictions as the roll found them, even when
// they changed after the roll read the old key.
func TestRollAfterConcurrentUpdate(t *testing.T) {
	for name, open := range atomicityStores(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			c := atomicityServer(t, narrowingStore{Store: s, scopes: []string{"charges:read"}})
			ctx := context.Background()
			old, err := c.CreateKeyWith(ctx, "acme-sandbox", NewKey{Name: "wide", Scopes: []string{"charges:*", "refunds:*"}})
			if err != nil {
				t.Fatal(err)
			}
			next, err := c.RollKey(ctx, "acme-sandbox", old.ID, 60)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(next.Scopes, ",") != "charges:read" {
				t.Errorf("replacement answered with scopes %v, want the narrowed [charges:read]", next.Scopes)
			}
			l, err := s.LookupHash(ctx, apikey.Hasher{}.Sum(next.Secret))
			if err != nil || strings.Join(l.Scopes, ",") != "charges:read" {
				t.Errorf("replacement's lookup entry has scopes %v (%v), want [charges:read]", l.Scopes, err)
			}
		})
	}
}
