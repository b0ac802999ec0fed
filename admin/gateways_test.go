package admin

import (
	"context"
	"crypto/sha256"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
	"github.com/keygate/keygate/store/redisstore"
)

const noPermissionToken = "gateways-test-token-no-perms-0123"

// fleetAPI serves the API over s; with join, as a member of s's fleet. It returns a client
// with every key permission and one with no permission at all.
func fleetAPI(t *testing.T, s store.Store, join bool) (all, none *Client, m *fleet.Member) {
	t.Helper()
	if err := s.CreateInstance(context.Background(), store.Instance{ID: "acme-sandbox", Name: "Acme (sandbox)", Environment: apikey.Sandbox}); err != nil {
		t.Fatal(err)
	}
	api, err := NewAPI(s, []Token{
		{Name: "all", Hash: sha256.Sum256([]byte(clientAllToken)), Permissions: []Permission{PermRead, PermCreate, PermDelete}},
		{Name: "none", Hash: sha256.Sum256([]byte(noPermissionToken))},
	}, apikey.Hasher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if join {
		if m, err = fleet.Join(s.(fleet.Registry), fleet.Options{Hostname: "here"}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		api.Fleet = m
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Token: clientAllToken}, &Client{BaseURL: srv.URL, Token: noPermissionToken}, m
}

func mintFleetKey(t *testing.T, s store.Store) store.Key {
	t.Helper()
	_, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "k", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return k
}

// checkPropagation runs a revoke, a roll with and without grace and an update, and checks
// what each answer says of its propagation.
func checkPropagation(t *testing.T, c *Client, s store.Store, want int) {
	t.Helper()
	ctx := context.Background()
	out, err := c.RevokeKey(ctx, "acme-sandbox", mintFleetKey(t, s).ID)
	if err != nil {
		t.Fatal(err)
	}
	if p := out.Propagation; p == nil || p.Gateways != want || p.Confirmed != want || p.ElapsedMS > 500 || len(p.Missing) != 0 {
		t.Errorf("revoke: propagation %+v", p)
	}
	out, err = c.RollKey(ctx, "acme-sandbox", mintFleetKey(t, s).ID, 60)
	if err != nil || out.Propagation != nil {
		t.Errorf("roll with grace: %v, propagation %+v (want none: the old key still works)", err, out.Propagation)
	}
	out, err = c.RollKey(ctx, "acme-sandbox", out.ID, 0)
	if err != nil || out.Propagation == nil || out.Propagation.Confirmed != want {
		t.Fatalf("roll without grace: %v, propagation %+v", err, out.Propagation)
	}
	name := "renamed"
	out, err = c.UpdateKey(ctx, "acme-sandbox", out.ID, KeyChanges{Name: &name})
	if err != nil || out.Propagation == nil || out.Propagation.Confirmed != want {
		t.Errorf("update: %v, propagation %+v", err, out.Propagation)
	}
}

func TestGatewaysFileStoreIsOneGatewayThatConfirmsAtOnce(t *testing.T) {
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, none, m := fleetAPI(t, s, true)
	var gws []Gateway
	testutil.WaitFor(t, 3*time.Second, "the gateway listed", func() bool {
		gws, err = none.Gateways(context.Background())
		return err == nil && len(gws) == 1
	})
	if g := gws[0]; g.Object != "gateway" || g.ID != m.ID() || g.Hostname != "here" || g.StartedAt == nil || g.LastSeenAt == nil {
		t.Errorf("gateway object: %+v", g)
	}
	checkPropagation(t, c, s, 1)
}

func TestGatewaysWithoutFleet(t *testing.T) {
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, none, _ := fleetAPI(t, s, false)
	if gws, err := none.Gateways(context.Background()); err != nil || len(gws) != 0 {
		t.Errorf("gateways without a fleet: %v, %v", gws, err)
	}
	out, err := c.RevokeKey(context.Background(), "acme-sandbox", mintFleetKey(t, s).ID)
	if err != nil || out.Propagation != nil {
		t.Errorf("revoke without a fleet: %v, %+v", err, out.Propagation)
	}
}

func TestGatewaysRedisFleetAndAFrozenGateway(t *testing.T) {
	srv := redistest.Start(t)
	s := redisstore.New(srv.Client(), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	c, none, _ := fleetAPI(t, s, true)
	// A second gateway process on the same Redis.
	other := redisstore.New(srv.Client(), redisstore.Options{})
	t.Cleanup(func() { other.Close() })
	om, err := fleet.Join(other, fleet.Options{Hostname: "there"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { om.Close() })
	ctx := context.Background()
	testutil.WaitFor(t, 3*time.Second, "two gateways listed", func() bool {
		gws, err := none.Gateways(ctx)
		return err == nil && len(gws) == 2
	})
	checkPropagation(t, c, s, 2)

	// A gateway that heartbeats but acknowledges nothing (as a frozen one looks): the revoke
	// answers after about a second, 2 of 3, naming it.
	if err := s.Heartbeat(ctx, fleet.Gateway{ID: "gw_frozen", Hostname: "frozen", StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := c.RevokeKey(ctx, "acme-sandbox", mintFleetKey(t, s).ID)
	d := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	p := out.Propagation
	if p == nil || p.Gateways != 3 || p.Confirmed != 2 || len(p.Missing) != 1 || p.Missing[0].ID != "gw_frozen" || p.Missing[0].Hostname != "frozen" {
		t.Errorf("one frozen: %+v", p)
	}
	if d < fleet.DefaultWait || d > fleet.DefaultWait+300*time.Millisecond {
		t.Errorf("one frozen: answered in %v, want about %v", d, fleet.DefaultWait)
	}
}
