package caddymodule_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

// Caddy starts its apps in no fixed order, so the http app may serve before the nora app has
// opened the store. A request with a valid key that arrives in that window waits for the
// start and goes through: no 503 because the start is under way. (The store file is held
// open by the test for a while, which keeps the nora app's Start waiting.)
func TestGatewayRequestDuringStartWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := filestore.Open(path, filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := store.Instance{ID: "early", Name: "Early", Environment: apikey.Sandbox}
	if err := s.CreateInstance(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	secret, _ := mint(t, s, "early", apikey.Sandbox, time.Time{})
	s.Close()

	up := newUpstream(t)
	port := redistest.FreePort(t)
	cfg, err := adapt(gatewayConfig(t, "store file "+path, up.URL, port, ""))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	get := func() int {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/any/x", port), nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for attempt := 1; attempt <= 20; attempt++ {
		hold, err := filestore.Open(path, filestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		loaded := make(chan error, 1)
		go func() { loaded <- caddy.Load(cfg, true) }()
		released := make(chan struct{})
		time.AfterFunc(300*time.Millisecond, func() { hold.Close(); close(released) })
		early := 0
	poll:
		for early == 0 {
			select {
			case <-released:
				break poll
			default:
				early = get()
				time.Sleep(2 * time.Millisecond)
			}
		}
		<-released
		if err := <-loaded; err != nil {
			t.Fatalf("load: %v", err)
		}
		caddy.Stop()
		if early == 0 { // the nora app started first this time: no window to test
			continue
		}
		if early != http.StatusOK {
			t.Fatalf("attempt %d: a valid key during start-up got %d, want 200", attempt, early)
		}
		return
	}
	t.Skip("the http app never started before the nora app")
}
