package e2e

// The fleet with real processes: three gateways on one Redis list each other, a SIGKILLed one
// drops out after the heartbeat timeout, a revoke through one gateway's admin endpoint is
// confirmed by all three, and a SIGSTOPped one makes the revoke answer within about a second
// with 2 of 3 (never hang), catching up once it runs again.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

const fleetToken = "fleet-test-admin-token"

type fleetGateway struct {
	*gateway
	admin string // its admin endpoint's URL
}

func startFleet(t *testing.T, n int) ([]*fleetGateway, *redisstore.Store) {
	t.Helper()
	srv := redistest.Start(t)
	var gws []*fleetGateway
	for i := 0; i < n; i++ {
		port, adm := freePort(t), freePort(t)
		cf := fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store redis %s
		instance acme-sandbox sandbox "Acme (sandbox)"
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete
	}
}
`, srv.URL(0), port, adm, fleetToken)
		g := startGateway(t, cf, port)
		gws = append(gws, &fleetGateway{gateway: g, admin: fmt.Sprintf("http://127.0.0.1:%d", adm)})
	}
	s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { s.Close() })
	testutil.WaitFor(t, 10*time.Second, "the gateways to create their instance", func() bool {
		ins, _ := s.Instances(context.Background())
		return len(ins) == 1
	})
	return gws, s
}

func adminCall(t *testing.T, method, url string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Authorization", "Bearer "+fleetToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
	return resp.StatusCode
}

type gatewayList struct {
	Object string `json:"object"`
	Data   []struct {
		Object     string    `json:"object"`
		ID         string    `json:"id"`
		Hostname   string    `json:"hostname"`
		StartedAt  time.Time `json:"started_at"`
		LastSeenAt time.Time `json:"last_seen_at"`
	} `json:"data"`
}

func liveGateways(t *testing.T, g *fleetGateway) gatewayList {
	t.Helper()
	var l gatewayList
	if st := adminCall(t, "GET", g.admin+"/v1/gateways", &l); st != 200 {
		t.Fatalf("GET /v1/gateways: %d", st)
	}
	return l
}

type revoked struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	Propagation *struct {
		Gateways  int     `json:"gateways"`
		Confirmed int     `json:"confirmed"`
		ElapsedMS float64 `json:"elapsed_ms"`
		Missing   []struct {
			ID string `json:"id"`
		} `json:"missing"`
	} `json:"propagation"`
}

func cliKey(t *testing.T, s *redisstore.Store) store.Key {
	t.Helper()
	_, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "fleet", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return k
}

func revokeVia(t *testing.T, g *fleetGateway, s *redisstore.Store) (revoked, time.Duration) {
	t.Helper()
	_, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "fleet", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	var out revoked
	start := time.Now()
	if st := adminCall(t, "DELETE", g.admin+"/v1/instances/acme-sandbox/keys/"+k.ID, &out); st != 200 {
		t.Fatalf("revoke: %d", st)
	}
	d := time.Since(start)
	if out.Status != "revoked" || out.Propagation == nil {
		t.Fatalf("revoke answer: %+v", out)
	}
	return out, d
}

func TestFleetListsConfirmsAndSurvivesFrozenAndKilledGateways(t *testing.T) {
	gws, s := startFleet(t, 3)
	testutil.WaitFor(t, 5*time.Second, "three live gateways", func() bool { return len(liveGateways(t, gws[0]).Data) == 3 })
	l := liveGateways(t, gws[1])
	if l.Object != "list" {
		t.Errorf("object %q", l.Object)
	}
	for _, g := range l.Data {
		if g.Object != "gateway" || len(g.ID) < 4 || g.ID[:3] != "gw_" || g.Hostname == "" ||
			g.StartedAt.IsZero() || time.Since(g.LastSeenAt) > 3*time.Second {
			t.Errorf("gateway object: %+v", g)
		}
	}

	// All live: confirmed by 3 of 3, quickly.
	for i := 0; i < 5; i++ {
		out, d := revokeVia(t, gws[i%3], s)
		if p := out.Propagation; p.Gateways != 3 || p.Confirmed != 3 || d > 200*time.Millisecond {
			t.Errorf("all live: %+v in %v", *p, d)
		}
	}

	// The CLI says it too, and --json carries the propagation.
	k := cliKey(t, s)
	cli := exec.Command(binary, "keys", "revoke", "--admin", gws[0].admin, "--instance", "acme-sandbox", k.ID)
	cli.Env = append(os.Environ(), "NORA_ADMIN_TOKEN="+fleetToken)
	if b, err := cli.Output(); err != nil || string(b) != "revoked "+k.ID+" (fleet) — confirmed by 3 of 3 gateways\n" {
		t.Errorf("keys revoke: %q, %v", b, err)
	}
	k = cliKey(t, s)
	cli = exec.Command(binary, "keys", "revoke", "--json", "--admin", gws[0].admin, "--instance", "acme-sandbox", k.ID)
	cli.Env = append(os.Environ(), "NORA_ADMIN_TOKEN="+fleetToken)
	var j revoked
	if b, err := cli.Output(); err != nil || json.Unmarshal(b, &j) != nil || j.Propagation == nil || j.Propagation.Confirmed != 3 || j.Propagation.Gateways != 3 {
		t.Errorf("keys revoke --json: %s, %v", b, err)
	}

	// A frozen gateway (its heartbeat still fresh): the revoke answers within about a
	// second with 2 of 3, naming it.
	frozen := gws[2]
	if err := frozen.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	out, d := revokeVia(t, gws[0], s)
	if p := out.Propagation; p.Gateways != 3 || p.Confirmed != 2 || len(p.Missing) != 1 {
		t.Errorf("one frozen: %+v", *p)
	}
	if d < fleet.DefaultWait || d > 1100*time.Millisecond {
		t.Errorf("one frozen: the revoke answered in %v, want about %v", d, fleet.DefaultWait)
	}
	if err := frozen.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// It catches up: the next revoke is confirmed by all three again.
	testutil.WaitFor(t, 5*time.Second, "the thawed gateway to confirm again", func() bool {
		out, _ := revokeVia(t, gws[1], s)
		return out.Propagation.Confirmed == 3 && out.Propagation.Gateways == 3
	})

	// A killed gateway drops out of the list after the heartbeat timeout (10 s).
	killed := gws[1]
	if err := killed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.WaitEvery(t, 12*time.Second, 100*time.Millisecond, "the killed gateway to drop out", func() bool {
		return len(liveGateways(t, gws[0]).Data) == 2
	})
	if d := time.Since(start); d > 11*time.Second || d < 8*time.Second {
		t.Errorf("the killed gateway dropped out after %v, want about 10 s", d)
	}
	if out, _ := revokeVia(t, gws[2], s); out.Propagation.Gateways != 2 || out.Propagation.Confirmed != 2 {
		t.Errorf("after the kill: %+v", *out.Propagation)
	}
}
