package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

const (
	clientAllToken  = "client-test-token-all-0123456789"
	clientReadToken = "client-test-token-read-012345678"
)

// clientTestServer runs the real API over a file store holding the sandbox instance
// "acme-sandbox", behind an httptest server.
func clientTestServer(t *testing.T) (*httptest.Server, store.Store) {
	t.Helper()
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateInstance(context.Background(), store.Instance{ID: "acme-sandbox", Name: "Acme (sandbox)", Environment: apikey.Sandbox}); err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(s, []Token{
		{Name: "all", Hash: sha256.Sum256([]byte(clientAllToken)), Permissions: []Permission{PermRead, PermCreate, PermDelete, PermInstance}},
		{Name: "reader", Hash: sha256.Sum256([]byte(clientReadToken)), Permissions: []Permission{PermRead}},
	}, apikey.Hasher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return srv, s
}

func TestClientCalls(t *testing.T) {
	srv, st := clientTestServer(t)
	ctx := context.Background()
	c := &Client{BaseURL: srv.URL + "/", Token: clientAllToken}

	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if me.Name != "all" || len(me.Permissions) != 4 || len(me.Instances) != 1 || me.Instances[0] != "*" {
		t.Errorf("Me = %+v", me)
	}

	if _, err := c.CreateInstance(ctx, "acme-prod", "Acme (production)", "production"); err != nil {
		t.Fatal(err)
	}
	ins, err := c.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ins.Object != "list" || len(ins.Data) != 2 || ins.Data[0].ID != "acme-prod" || ins.Data[1].Environment != "sandbox" {
		t.Errorf("Instances = %+v", ins)
	}

	// Three days ahead: the roll's grace of an hour below must end before this expiry.
	later := time.Now().UTC().AddDate(0, 0, 3).Format("2006-01-02")
	k1, err := c.CreateKey(ctx, "acme-sandbox", "first", "")
	if err != nil {
		t.Fatal(err)
	}
	if env, err := apikey.Parse(k1.Secret); err != nil || env != apikey.Sandbox {
		t.Fatalf("secret does not parse as a sandbox key: %v %v", env, err)
	}
	if k1.Object != "api_key" || k1.Status != "active" || k1.ExpiresAt != nil || !strings.HasPrefix(k1.Secret, k1.Prefix) {
		t.Errorf("created key = %+v", k1)
	}
	k2, err := c.CreateKey(ctx, "acme-sandbox", "second", later)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ExpiresAt == nil || k2.ExpiresAt.Format("2006-01-02T15:04:05") != later+"T00:00:00" {
		t.Errorf("expires_at = %v, want %s at 00:00 UTC", k2.ExpiresAt, later)
	}

	page, err := c.ListKeys(ctx, "acme-sandbox", 1, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != k2.ID || !page.HasMore || page.Data[0].Secret != "" {
		t.Errorf("first page = %+v", page)
	}
	page, err = c.ListKeys(ctx, "acme-sandbox", 1, k2.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != k1.ID || page.HasMore {
		t.Errorf("second page = %+v", page)
	}

	got, err := c.GetKey(ctx, "acme-sandbox", k1.ID)
	if err != nil || got.ID != k1.ID || got.Name != "first" || got.Secret != "" {
		t.Errorf("GetKey = %+v, %v", got, err)
	}

	r1, err := c.RevokeKey(ctx, "acme-sandbox", k1.ID)
	if err != nil || r1.Status != "revoked" || r1.RevokedAt == nil {
		t.Fatalf("RevokeKey = %+v, %v", r1, err)
	}
	r2, err := c.RevokeKey(ctx, "acme-sandbox", k1.ID)
	if err != nil || !r2.RevokedAt.Equal(*r1.RevokedAt) {
		t.Errorf("second RevokeKey = %+v, %v; want the same revoked_at", r2, err)
	}
	revoked, err := c.ListKeys(ctx, "acme-sandbox", 0, "", "revoked")
	if err != nil || len(revoked.Data) != 1 || revoked.Data[0].ID != k1.ID {
		t.Errorf("status=revoked list = %+v, %v", revoked, err)
	}

	before := time.Now()
	k3, err := c.RollKey(ctx, "acme-sandbox", k2.ID, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if k3.Secret == "" || k3.Secret == k1.Secret || k3.ID == k2.ID || k3.Name != "second" || !k3.ExpiresAt.Equal(*k2.ExpiresAt) {
		t.Errorf("rolled key = %+v", k3)
	}
	old, err := st.Key(ctx, "acme-sandbox", k2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := old.ExpiresAt.Sub(before.Add(time.Hour)); d < -time.Second || d > 5*time.Second {
		t.Errorf("old key expires at %v, want about %v", old.ExpiresAt, before.Add(time.Hour))
	}

	events, err := c.Events(ctx, "acme-sandbox", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range events.Data {
		types = append(types, e.Type)
		if e.Actor != "all" {
			t.Errorf("event actor = %q", e.Actor)
		}
	}
	if want := "api_key.rolled api_key.revoked api_key.created api_key.created"; strings.Join(types, " ") != want {
		t.Errorf("events = %v, want %s", types, want)
	}
	if events.Data[0].NewKeyID != k3.ID {
		t.Errorf("roll event new_key_id = %q, want %q", events.Data[0].NewKeyID, k3.ID)
	}
}

func TestClientRefusals(t *testing.T) {
	srv, _ := clientTestServer(t)
	ctx := context.Background()
	all := &Client{BaseURL: srv.URL, Token: clientAllToken}
	k, err := all.CreateKey(ctx, "acme-sandbox", "k", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		call   func() error
		status int
		code   string
	}{
		{"wrong token", func() error {
			_, err := (&Client{BaseURL: srv.URL, Token: "not-the-token-at-all"}).ListKeys(ctx, "acme-sandbox", 0, "", "")
			return err
		}, 401, "unauthorized"},
		{"no token", func() error { _, err := (&Client{BaseURL: srv.URL}).Me(ctx); return err }, 401, "unauthorized"},
		{"missing permission", func() error {
			_, err := (&Client{BaseURL: srv.URL, Token: clientReadToken}).CreateKey(ctx, "acme-sandbox", "x", "")
			return err
		}, 403, "forbidden"},
		{"unknown instance", func() error { _, err := all.CreateKey(ctx, "nope", "x", ""); return err }, 404, "instance_not_found"},
		{"unknown key", func() error {
			_, err := all.GetKey(ctx, "acme-sandbox", "key_"+strings.Repeat("A", 24))
			return err
		}, 404, "api_key_not_found"},
		{"past expiry", func() error { _, err := all.CreateKey(ctx, "acme-sandbox", "x", "2001-01-01"); return err }, 400, "invalid_expiration"},
		{"bad limit", func() error { _, err := all.ListKeys(ctx, "acme-sandbox", 5000, "", ""); return err }, 400, "invalid_request"},
		{"grace too long", func() error { _, err := all.RollKey(ctx, "acme-sandbox", k.ID, MaxGrace+1); return err }, 400, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if ae.Status != tt.status || ae.Code != tt.code || ae.Message == "" || ae.Type == "" {
				t.Errorf("err = %+v, want status %d code %s", ae, tt.status, tt.code)
			}
			if want := ae.Message + " (" + tt.code + ")"; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
			for _, tok := range []string{clientAllToken, clientReadToken, "not-the-token-at-all"} {
				if strings.Contains(err.Error(), tok) {
					t.Errorf("error %q contains a token", err)
				}
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := (&Client{BaseURL: url, Token: clientAllToken}).ListKeys(context.Background(), "acme-sandbox", 0, "", "")
	if err == nil {
		t.Fatal("no error from a closed endpoint")
	}
	if want := "cannot reach the admin endpoint at " + url + ": connection refused"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	var ae *Error
	if errors.As(err, &ae) {
		t.Errorf("a network failure is not an API refusal: %+v", ae)
	}
}

func TestClientTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := &Client{BaseURL: srv.URL, Token: clientAllToken, HTTP: &http.Client{Timeout: 50 * time.Millisecond}}
	_, err := c.Me(context.Background())
	if err == nil || err.Error() != "cannot reach the admin endpoint at "+srv.URL+": timed out after 50ms" {
		t.Errorf("err = %v", err)
	}
	if defaultClient.Timeout != 30*time.Second {
		t.Errorf("default timeout = %v, want 30s", defaultClient.Timeout)
	}
}

func TestClientForeignAnswers(t *testing.T) {
	var sawToken bool
	mux := http.NewServeMux()
	mux.HandleFunc("/bad-gateway/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	})
	mux.HandleFunc("/moved/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere/v1/me", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/elsewhere/", func(w http.ResponseWriter, r *http.Request) {
		sawToken = r.Header.Get("Authorization") != ""
		w.Write([]byte(`{"name":"x"}`))
	})
	mux.HandleFunc("/html/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>a web page</html>"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := context.Background()

	_, err := (&Client{BaseURL: srv.URL + "/bad-gateway", Token: clientAllToken}).Me(ctx)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 502 || ae.Code != "" || !strings.Contains(err.Error(), "answered 502 Bad Gateway") {
		t.Errorf("502 page: err = %v", err)
	}

	_, err = (&Client{BaseURL: srv.URL + "/moved", Token: clientAllToken}).Me(ctx)
	if err == nil || !strings.Contains(err.Error(), "redirecting to /elsewhere/v1/me") || sawToken {
		t.Errorf("redirect: err = %v, token sent on = %v", err, sawToken)
	}

	_, err = (&Client{BaseURL: srv.URL + "/html", Token: clientAllToken}).Me(ctx)
	if err == nil || !strings.Contains(err.Error(), "not the admin API's JSON") {
		t.Errorf("HTML 200: err = %v", err)
	}
}

func TestClientRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, base := range []string{"", "localhost:9180", "ftp://host", "http://", "http://u:hunter2@host?x=1"} {
		_, err := (&Client{BaseURL: base, Token: clientAllToken}).Me(ctx)
		if err == nil || !strings.Contains(err.Error(), "admin URL") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("BaseURL %q: err = %v", base, err)
		}
	}
	c := &Client{BaseURL: "http://127.0.0.1:1", Token: clientAllToken}
	for _, in := range []string{"", ".", ".."} {
		if _, err := c.ListKeys(ctx, in, 0, "", ""); err == nil || strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("instance %q: err = %v, want refused before any request", in, err)
		}
	}
	if _, err := c.RevokeKey(ctx, "acme", ".."); err == nil || strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("key id \"..\": err = %v", err)
	}
}

// A path segment is escaped: an odd id reaches the API as one segment (and is refused
// there as malformed), never as another call.
func TestClientEscapesPath(t *testing.T) {
	srv, _ := clientTestServer(t)
	c := &Client{BaseURL: srv.URL, Token: clientAllToken}
	_, err := c.GetKey(context.Background(), "acme-sandbox", "x/../../../me")
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != "invalid_request" {
		t.Errorf("err = %v, want invalid_request for a malformed key id", err)
	}
}

// CreateKeyWith sends the restrictions; UpdateKey sends only the fields it is given, nil
// pointers left out and pointers to nil sent as null.
func TestClientRestrictedKeys(t *testing.T) {
	srv, _ := clientTestServer(t)
	ctx := context.Background()
	c := &Client{BaseURL: srv.URL, Token: clientAllToken}
	k, err := c.CreateKeyWith(ctx, "acme-sandbox", NewKey{Name: "r", Scopes: []string{"a:b"},
		AllowedIPs: []string{"192.0.2.1/32", "10.0.0.0/8"}, Metadata: map[string]string{"m": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(k.Scopes, ",") != "a:b" || strings.Join(k.AllowedIPs, ",") != "192.0.2.1,10.0.0.0/8" || k.Metadata["m"] != "1" {
		t.Fatalf("created %+v", k)
	}
	if _, err := c.CreateKeyWith(ctx, "acme-sandbox", NewKey{Name: "r", Scopes: []string{}}); err == nil {
		t.Fatal("an empty scope list was not sent as one (or not refused)")
	}
	plain, err := c.CreateKey(ctx, "acme-sandbox", "plain", "")
	if err != nil || plain.Scopes != nil || plain.AllowedIPs != nil || plain.Metadata == nil || len(plain.Metadata) != 0 {
		t.Fatalf("plain key %+v %v: want null, null, {}", plain, err)
	}

	name := "renamed"
	got, err := c.UpdateKey(ctx, "acme-sandbox", k.ID, KeyChanges{Name: &name})
	if err != nil || got.Name != "renamed" || strings.Join(got.Scopes, ",") != "a:b" || got.Metadata["m"] != "1" {
		t.Fatalf("UpdateKey(name) = %+v, %v", got, err)
	}
	day := time.Now().UTC().AddDate(0, 0, 5).Format("2006-01-02")
	var noScopes []string
	var noMeta map[string]string
	got, err = c.UpdateKey(ctx, "acme-sandbox", k.ID, KeyChanges{ExpiresAt: &day, Scopes: &noScopes, Metadata: &noMeta})
	if err != nil || got.ExpiresAt == nil || got.Scopes != nil || len(got.Metadata) != 0 || len(got.AllowedIPs) != 2 {
		t.Fatalf("UpdateKey(expiry, clear scopes and metadata) = %+v, %v", got, err)
	}
	never := ""
	var anyIP []string
	got, err = c.UpdateKey(ctx, "acme-sandbox", k.ID, KeyChanges{ExpiresAt: &never, AllowedIPs: &anyIP})
	if err != nil || got.ExpiresAt != nil || got.AllowedIPs != nil {
		t.Fatalf("UpdateKey(never, any address) = %+v, %v", got, err)
	}
	_, err = c.UpdateKey(ctx, "acme-sandbox", k.ID, KeyChanges{})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(ae.Message, "Nothing to update") {
		t.Fatalf("empty UpdateKey: %v", err)
	}
	if _, err := c.RevokeKey(ctx, "acme-sandbox", k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err = c.UpdateKey(ctx, "acme-sandbox", k.ID, KeyChanges{Name: &name}); !errors.As(err, &ae) || ae.Status != 409 || ae.Code != "api_key_revoked" {
		t.Fatalf("UpdateKey of a revoked key: %v", err)
	}
	evs, err := c.Events(ctx, "acme-sandbox", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var updates []string
	for _, e := range evs.Data {
		if e.Type == "api_key.updated" {
			updates = append(updates, strings.Join(e.Fields, "+"))
		}
	}
	if want := "expires_at+allowed_ips expires_at+scopes+metadata name"; strings.Join(updates, " ") != want {
		t.Fatalf("update events %q, want %q", updates, want)
	}
}
