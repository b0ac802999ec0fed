package admin_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/store"
)

// A new key: its one-time secret, only its hash stored, the same object from GET.
func TestCreateAndGetKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		before := time.Now()
		for _, inst := range []string{sandboxInst, prodInst} {
			k := e.createKey(t, inst, map[string]string{"name": "Server key"})
			if k.Name != "Server key" || k.Status != "active" || k.ExpiresAt != nil || k.RevokedAt != nil || k.LastUsedAt != nil {
				t.Fatalf("created %+v", k)
			}
			near(t, "created_at", utc(t, "created_at", k.CreatedAt), before, 5*time.Second)
			// Only the hash is stored, and it finds the key.
			l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(k.Secret))
			if err != nil || l.ID != k.ID || l.Instance != inst {
				t.Fatalf("lookup of the new secret: %+v, %v", l, err)
			}
			r := e.Do(t, "GET", keysPath(inst)+"/"+k.ID, "reader", nil)
			admintest.Want(t, r, 200, "")
			got := checkKey(t, r.Obj, false)
			k.Secret = ""
			if !reflect.DeepEqual(got, k) {
				t.Fatalf("get = %+v, create = %+v", got, k)
			}
		}
		// With an expiry date: the key stops at 00:00 UTC that day.
		awayFromMidnight()
		day := time.Now().UTC().AddDate(0, 0, 30).Format("2006-01-02")
		k := e.createKey(t, sandboxInst, map[string]string{"name": "expiring", "expires_at": day})
		if k.ExpiresAt == nil || *k.ExpiresAt != day+"T00:00:00Z" {
			t.Fatalf("expires_at %v, want %sT00:00:00Z", k.ExpiresAt, day)
		}
		// A key of another instance is not found there.
		e.refused(t, "GET", keysPath(prodInst)+"/"+k.ID, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "DELETE", keysPath(prodInst)+"/"+k.ID, "ops", nil, 404, "api_key_not_found")
		e.refused(t, "POST", keysPath(prodInst)+"/"+k.ID+"/roll", "ops", nil, 404, "api_key_not_found")
	})
}

// Newest first, paged with limit and starting_after, filtered by status.
func TestListKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		inst := e.newInstance(t, "sandbox")
		var ids []string // oldest first
		for i := 0; i < 5; i++ {
			ids = append(ids, e.createKey(t, inst, map[string]string{"name": fmt.Sprintf("k%d", i)}).ID)
		}
		p := keysPath(inst)
		for _, tc := range []struct {
			query string
			want  []string
			more  bool
		}{
			{"", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
			{"?limit=2", []string{ids[4], ids[3]}, true},
			{"?limit=2&starting_after=" + ids[3], []string{ids[2], ids[1]}, true},
			{"?limit=2&starting_after=" + ids[1], []string{ids[0]}, false},
			{"?starting_after=" + ids[0], []string{}, false},
			{"?limit=5", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
			{"?limit=4", []string{ids[4], ids[3], ids[2], ids[1]}, true},
			{"?limit=1000", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
			{"?limit=1", []string{ids[4]}, true},
		} {
			r := e.Do(t, "GET", p+tc.query, "reader", nil)
			got, more := listIDs(t, r)
			if !slices.Equal(got, tc.want) || more != tc.more {
				t.Fatalf("list%s = %v has_more %v; want %v %v", tc.query, got, more, tc.want, tc.more)
			}
			for _, d := range r.Obj["data"].([]any) {
				checkKey(t, d.(map[string]any), false)
			}
		}
		// Status filter.
		admintest.Want(t, e.Do(t, "DELETE", p+"/"+ids[2], "ops", nil), 200, "")
		expired := e.mintKey(t, inst, time.Now().Add(-time.Minute))
		for _, tc := range []struct {
			query string
			want  []string
			more  bool
		}{
			{"?status=revoked", []string{ids[2]}, false},
			{"?status=expired", []string{expired.ID}, false},
			{"?status=active", []string{ids[4], ids[3], ids[1], ids[0]}, false},
			{"?status=active&limit=2", []string{ids[4], ids[3]}, true},
			{"?status=active&limit=2&starting_after=" + ids[3], []string{ids[1], ids[0]}, false},
			{"", []string{expired.ID, ids[4], ids[3], ids[2], ids[1], ids[0]}, false},
		} {
			r := e.Do(t, "GET", p+tc.query, "reader", nil)
			got, more := listIDs(t, r)
			if !slices.Equal(got, tc.want) || more != tc.more {
				t.Fatalf("list%s = %v has_more %v; want %v %v", tc.query, got, more, tc.want, tc.more)
			}
			for _, d := range r.Obj["data"].([]any) {
				k := checkKey(t, d.(map[string]any), false)
				if st := strings.TrimPrefix(tc.query, "?status="); strings.HasPrefix(tc.query, "?status=") && !strings.HasPrefix(st, k.Status) {
					t.Fatalf("list%s holds a %s key", tc.query, k.Status)
				}
			}
		}
	})
}

// Revoking is idempotent: the same answer twice, one event.
func TestRevokeKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		k := e.createKey(t, sandboxInst, map[string]string{"name": "to revoke"})
		before := time.Now()
		r := e.Do(t, "DELETE", keysPath(sandboxInst)+"/"+k.ID, "deleter", nil)
		admintest.Want(t, r, 200, "")
		rk := checkKey(t, r.Obj, false)
		if rk.ID != k.ID || rk.Status != "revoked" || rk.RevokedAt == nil {
			t.Fatalf("revoked %s", r)
		}
		near(t, "revoked_at", utc(t, "revoked_at", rk.RevokedAt), before, 5*time.Second)
		time.Sleep(20 * time.Millisecond)
		r = e.Do(t, "DELETE", keysPath(sandboxInst)+"/"+k.ID, "ops", nil)
		admintest.Want(t, r, 200, "")
		again := checkKey(t, r.Obj, false)
		if !reflect.DeepEqual(again, rk) {
			t.Fatalf("second revoke = %+v, first = %+v", again, rk)
		}
		r = e.Do(t, "GET", keysPath(sandboxInst)+"/"+k.ID, "reader", nil)
		admintest.Want(t, r, 200, "")
		if got := checkKey(t, r.Obj, false); !reflect.DeepEqual(got, rk) {
			t.Fatalf("get after revoke = %+v", got)
		}
		l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(k.Secret))
		if err != nil || l.RevokedAt.IsZero() {
			t.Fatalf("lookup entry after revoke: %+v %v", l, err)
		}
		// One revocation, one event.
		n := 0
		for _, ev := range e.events(t, sandboxInst) {
			if ev.KeyID == k.ID && ev.Type == "api_key.revoked" {
				n++
				if ev.Actor != "deleter" {
					t.Fatalf("revoke event actor %q", ev.Actor)
				}
			}
		}
		if n != 1 {
			t.Fatalf("%d api_key.revoked events for one key revoked twice", n)
		}
	})
}

// Rolling makes a new key and expires the old one after its grace.
func TestRollKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *apiEnv) {
		awayFromMidnight()
		day := time.Now().UTC().AddDate(0, 0, 30).Format("2006-01-02")
		roll := func(t *testing.T, old keyObj, role string, body any) keyObj {
			t.Helper()
			r := e.Do(t, "POST", keysPath(sandboxInst)+"/"+old.ID+"/roll", role, body)
			admintest.Want(t, r, 201, "")
			nk := checkKey(t, r.Obj, true)
			if nk.ID == old.ID || nk.Secret == old.Secret || nk.Instance != old.Instance {
				t.Fatalf("rolled %+v into %+v", old, nk)
			}
			return nk
		}
		get := func(t *testing.T, id string) keyObj {
			t.Helper()
			r := e.Do(t, "GET", keysPath(sandboxInst)+"/"+id, "ops", nil)
			admintest.Want(t, r, 200, "")
			return checkKey(t, r.Obj, false)
		}

		t.Run("grace 0", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "Roll me", "expires_at": day})
			before := time.Now()
			nk := roll(t, old, "roller", map[string]any{"expire_old_in_seconds": 0})
			if nk.Name != "Roll me" || nk.ExpiresAt == nil || *nk.ExpiresAt != *old.ExpiresAt {
				t.Fatalf("new key %+v does not keep name and expiry of %+v", nk, old)
			}
			o := get(t, old.ID)
			if o.Status != "expired" {
				t.Fatalf("old key is %s after a roll with no grace", o.Status)
			}
			near(t, "old expires_at", utc(t, "expires_at", o.ExpiresAt), before, 5*time.Second)
			if got := get(t, nk.ID); got.Status != "active" {
				t.Fatalf("new key is %s", got.Status)
			}
			// The old key now fails at the store too.
			l, err := e.s.LookupHash(context.Background(), apikey.Hasher{}.Sum(old.Secret))
			if err != nil || l.Status(time.Now()) != store.StatusExpired {
				t.Fatalf("old lookup %+v %v", l, err)
			}
			// An expired key cannot be rolled again; nothing is written.
			e.refused(t, "POST", keysPath(sandboxInst)+"/"+old.ID+"/roll", "ops", map[string]any{}, 400, "invalid_request")
		})
		t.Run("no body", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "default grace"})
			nk := roll(t, old, "ops", nil)
			if nk.Name != old.Name || nk.ExpiresAt != nil {
				t.Fatalf("new key %+v", nk)
			}
			if o := get(t, old.ID); o.Status != "expired" {
				t.Fatalf("expire_old_in_seconds does not default to 0: old key %s", o.Status)
			}
			// No body sent chunked, without Content-Length: the same.
			old = e.createKey(t, sandboxInst, map[string]string{"name": "chunked"})
			c, err := net.Dial("tcp", strings.TrimPrefix(e.Base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST %s/%s/roll HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
				keysPath(sandboxInst), old.ID, strings.TrimPrefix(e.Base, "http://"), e.Tok["ops"])
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("roll with an empty chunked body: %d %s", resp.StatusCode, b)
			}
			if o := get(t, old.ID); o.Status != "expired" {
				t.Fatalf("old key %s after a roll with an empty chunked body", o.Status)
			}
			// An empty object means the defaults too.
			old = e.createKey(t, sandboxInst, map[string]string{"name": "empty object"})
			roll(t, old, "ops", "{}")
			if o := get(t, old.ID); o.Status != "expired" {
				t.Fatalf("old key %s after a roll with {}", o.Status)
			}
		})
		t.Run("grace 3600", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "graceful"})
			before := time.Now()
			nk := roll(t, old, "ops", map[string]any{"expire_old_in_seconds": 3600})
			if nk.ExpiresAt != nil || nk.Name != "graceful" {
				t.Fatalf("new key %+v", nk)
			}
			o := get(t, old.ID)
			if o.Status != "active" {
				t.Fatalf("old key is %s during its grace", o.Status)
			}
			near(t, "old expires_at", utc(t, "expires_at", o.ExpiresAt), before.Add(time.Hour), 5*time.Second)
		})
		t.Run("grace 7 days", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "week"})
			before := time.Now()
			roll(t, old, "ops", map[string]any{"expire_old_in_seconds": 604800})
			near(t, "old expires_at", utc(t, "expires_at", get(t, old.ID).ExpiresAt), before.Add(7*24*time.Hour), 5*time.Second)
		})
		t.Run("new name and expiry", func(t *testing.T) {
			old := e.createKey(t, sandboxInst, map[string]string{"name": "old name", "expires_at": day})
			day2 := time.Now().UTC().AddDate(0, 0, 10).Format("2006-01-02")
			nk := roll(t, old, "ops", map[string]any{"name": "new name", "expires_at": day2})
			if nk.Name != "new name" || nk.ExpiresAt == nil || *nk.ExpiresAt != day2+"T00:00:00Z" {
				t.Fatalf("new key %+v", nk)
			}
		})
		t.Run("grace shorter than old expiry only", func(t *testing.T) {
			// A grace longer than the old key's remaining life never extends it.
			old := e.createKey(t, sandboxInst, map[string]string{"name": "short life", "expires_at": time.Now().UTC().AddDate(0, 0, 2).Format("2006-01-02")})
			roll(t, old, "ops", map[string]any{"expire_old_in_seconds": 604800})
			if o := get(t, old.ID); *o.ExpiresAt != *old.ExpiresAt {
				t.Fatalf("roll moved the old expiry from %s to %s", *old.ExpiresAt, *o.ExpiresAt)
			}
		})
	})
}
