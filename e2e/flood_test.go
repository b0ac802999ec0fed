package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

// The floods of the failed-attempt limit and signed keys, against a real gateway process on
// a real Redis, with the store's cost read from Redis' own INFO commandstats.

const floodSecret = "e2e-flood-signing-secret-0123456789"

type floodGateway struct {
	*gateway
	srv        *redistest.Server
	store      *redisstore.Store
	admin      int
	metricsURL string
}

// startFloodGateway runs a gateway on its own Redis, trusting X-Forwarded-For from loopback
// so that the test can speak for many clients; noraExtra goes in the nora block.
func startFloodGateway(t *testing.T, noraExtra string) *floodGateway {
	t.Helper()
	srv := redistest.Start(t)
	port, admin, mport := freePort(t), freePort(t), freePort(t)
	cf := fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	servers {
		trusted_proxies static 127.0.0.1/32
		client_ip_headers X-Forwarded-For
	}
	nora {
		store redis %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		%s
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
http://127.0.0.1:%d {
	metrics /metrics
}
`, admin, srv.URL(0), noraExtra, port, mport)
	g := &floodGateway{gateway: startGateway(t, cf, port), srv: srv, admin: admin,
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)}
	s, err := redisstore.Dial(redisstore.Config{Addrs: []string{srv.Addr}}, redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	g.store = s
	testutil.WaitFor(t, 10*time.Second, "the gateway to create its instance", func() bool {
		_, err := s.Instance(context.Background(), "acme-sandbox")
		return err == nil
	})
	return g
}

func (g *floodGateway) mint(t *testing.T, signer *apikey.Signer) string {
	t.Helper()
	secret, k, err := store.Minter{Signer: signer}.Mint(store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "flood", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.store.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret
}

var floodClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func (g *floodGateway) call(t *testing.T, from, key string) (int, string) {
	req, _ := http.NewRequest("GET", g.url+"/", nil)
	req.Header.Set("X-Forwarded-For", from)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := floodClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct{ Error struct{ Code string } }
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code
}

// flood sends n requests over 8 connections: request i from from(i) with key(i). It returns
// the answers counted by status and code.
func (g *floodGateway) flood(t *testing.T, n int, from func(int) string, key func(int) string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	got := map[string]int{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				status, code := g.call(t, from(i), key(i))
				mu.Lock()
				got[fmt.Sprintf("%d %s", status, code)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return got
}

// dataCommands is the difference of two INFO commandstats snapshots, without the commands
// that are not about keys (the invalidation listener's blocking XREAD, connection set-up).
func dataCommands(before, after map[string]int64) map[string]int64 {
	return commandsBut(before, after, "xread", "ping", "info", "client", "hello", "select", "auth", "command")
}

// floodCommands is dataCommands without the fleet's background work either — each
// gateway's heartbeat once a second (a script stamping Redis' TIME into a hash: evalsha,
// time, hset) and its acknowledgements (hset) — which no request causes. A key lookup is an
// HMGET, never left out.
func floodCommands(before, after map[string]int64) map[string]int64 {
	return commandsBut(before, after, "xread", "ping", "info", "client", "hello", "select", "auth", "command",
		"evalsha", "eval", "script", "time", "hset")
}

func commandsBut(before, after map[string]int64, skip ...string) map[string]int64 {
	out := map[string]int64{}
	for name, n := range after {
		base, _, _ := strings.Cut(name, "|")
		if slices.Contains(skip, base) {
			continue
		}
		if d := n - before[name]; d > 0 {
			out[name] = d
		}
	}
	return out
}

func addr4(i int) string { return fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255) }

// A bad-checksum flood makes no store call, from one address or many; from one address the
// limit then answers 429.
func TestFloodBadChecksums(t *testing.T) {
	g := startFloodGateway(t, "")
	badKey := func(i int) string {
		k, _ := apikey.Generate(apikey.Sandbox)
		if apikey.Checksum(k[:40]) == "zzzzzz" {
			return k[:40] + "zzzzzy"
		}
		return k[:40] + "zzzzzz"
	}
	before := g.srv.AllCommandCalls()
	many := g.flood(t, 2000, addr4, badKey)
	one := g.flood(t, 500, func(int) string { return "192.0.2.1" }, badKey)
	if d := floodCommands(before, g.srv.AllCommandCalls()); len(d) != 0 {
		t.Fatalf("bad-checksum floods ran Redis commands: %v", d)
	}
	if many["401 invalid_api_key"] != 2000 {
		t.Fatalf("2000 addresses: %v", many)
	}
	// Bad checksums cost no lookup, so they are not admitted one by one: requests racing on
	// the 8 connections may each pass the check before the 20th failure is counted.
	if n := one["401 invalid_api_key"]; n < 20 || n > 27 || n+one["429 too_many_failed_attempts"] != 500 {
		t.Fatalf("one address: %v, want 20 (up to 7 more racing) refused 401 and then 429", one)
	}
}

// Without key signing, one address's random valid-checksum keys cost at most the limit of
// lookups per window; then the address is refused, valid key included, and others are not.
func TestFloodRandomKeysFromOneAddress(t *testing.T) {
	g := startFloodGateway(t, "")
	valid := g.mint(t, nil)
	before := g.srv.CommandCalls("hmget")
	got := g.flood(t, 1000, func(int) string { return "192.0.2.7" }, func(int) string {
		k, _ := apikey.Generate(apikey.Sandbox)
		return k
	})
	lookups := g.srv.CommandCalls("hmget") - before
	if lookups > 20 {
		t.Fatalf("1000 random keys from one address made %d lookups, want at most the limit (20)", lookups)
	}
	if got["401 invalid_api_key"] != 20 || got["429 too_many_failed_attempts"] != 980 {
		t.Fatalf("answers %v", got)
	}
	if status, code := g.call(t, "192.0.2.7", valid); status != 429 || code != "too_many_failed_attempts" {
		t.Fatalf("the limited address with a valid key: %d %s", status, code)
	}
	if status, _ := g.call(t, "192.0.2.8", valid); status != 200 {
		t.Fatalf("another address with the valid key: %d", status)
	}
	t.Logf("1000 random keys from one address: %d lookups, %v", lookups, got)
}

// With key_signing require, random valid-checksum keys from 2,000 addresses make no Redis
// data command at all, and a signed key still works.
func TestFloodSignedKeysFromManyAddresses(t *testing.T) {
	t.Setenv("KG_E2E_SIGNING", floodSecret)
	g := startFloodGateway(t, "key_signing {\n\t\t\tsecret {env.KG_E2E_SIGNING}\n\t\t\trequire\n\t\t}")
	signer, err := apikey.NewSigner([]byte(floodSecret))
	if err != nil {
		t.Fatal(err)
	}
	valid := g.mint(t, signer)
	touched := g.srv.CommandCalls("exists")
	if status, _ := g.call(t, "192.0.2.1", valid); status != 200 {
		t.Fatalf("a signed key: %d", status)
	}
	// Its last use is recorded in the background, within about 50 ms (the touch script's
	// EXISTS): the count of the flood's commands starts after it.
	testutil.WaitFor(t, 5*time.Second, "the signed key's last use to be recorded", func() bool {
		return g.srv.CommandCalls("exists") > touched
	})
	before := g.srv.AllCommandCalls()
	got := g.flood(t, 4000, func(i int) string { return addr4(i / 2) }, func(int) string {
		k, _ := apikey.Generate(apikey.Sandbox)
		return k
	})
	if d := floodCommands(before, g.srv.AllCommandCalls()); len(d) != 0 {
		t.Fatalf("random keys from 2,000 addresses ran Redis data commands: %v", d)
	}
	if got["401 invalid_api_key"] != 4000 {
		t.Fatalf("answers %v", got)
	}
	if status, _ := g.call(t, "192.0.2.1", valid); status != 200 {
		t.Fatalf("the signed key after the flood: %d", status)
	}
	// The signing secret never appears in the gateway's log (it runs with debug logging off,
	// but logs its config load, warnings and refusals).
	if b, err := os.ReadFile(g.log); err != nil || strings.Contains(string(b), floodSecret) {
		t.Fatalf("the gateway log holds the signing secret (or cannot be read: %v)", err)
	}
}

// An address-rotating flood (50,000 addresses) never tracks more than max_clients, and the
// gateway's heap does not grow with it.
func TestFloodRotatingAddressesStaysBounded(t *testing.T) {
	g := startFloodGateway(t, "failed_attempts {\n\t\t\tmax_clients 5000\n\t\t}")
	heap := func() uint64 {
		resp, err := http.Get(fmt.Sprintf("http://localhost:%d/debug/vars", g.admin))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct{ Memstats struct{ HeapAlloc uint64 } }
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v.Memstats.HeapAlloc
	}
	key := func(int) string { k, _ := apikey.Generate(apikey.Sandbox); return k }
	g.flood(t, 5000, addr4, key) // fill the limiter and the negative cache's steady state
	h0 := heap()
	got := g.flood(t, 50_000, func(i int) string { return addr4(5000 + i) }, key)
	h1 := heap()
	if got["401 invalid_api_key"] != 50_000 {
		t.Fatalf("answers %v", got)
	}
	tracked := metricValue(t, g.metricsURL, "keygate_failed_attempt_clients")
	if tracked > 5000+64 {
		t.Fatalf("the limiter tracks %v clients, max_clients is 5000", tracked)
	}
	t.Logf("heap %d KiB before, %d KiB after 50,000 addresses; %v clients tracked", h0/1024, h1/1024, tracked)
	if h1 > h0+32<<20 {
		t.Fatalf("the heap grew from %d to %d KiB", h0/1024, h1/1024)
	}
}

var metricLine = regexp.MustCompile(`(?m)^(\S+?)(\{[^}]*\})? (\S+)$`)

// metricValue reads one metric (summed over its labels) from a Prometheus endpoint.
func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum, found := 0.0, false
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		if m[1] == name {
			v, _ := strconv.ParseFloat(m[3], 64)
			sum += v
			found = true
		}
	}
	if !found {
		names := []string{}
		for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
			if strings.HasPrefix(m[1], "keygate_") {
				names = append(names, m[1])
			}
		}
		sort.Strings(names)
		t.Fatalf("no metric %s (keygate metrics: %v)", name, names)
	}
	return sum
}

// With the limit off, invented keys with a valid checksum cost one lookup each, then the
// negative cache answers; bad checksums cost none; the valid key keeps working.
func TestFloodUnlimitedUsesTheNegativeCache(t *testing.T) {
	g := startFloodGateway(t, "failed_attempts off")
	valid := g.mint(t, nil)
	before := g.srv.CommandCalls("hmget")
	const distinct = 50
	keys := make([]string, distinct)
	for i := range keys {
		keys[i], _ = apikey.Generate(apikey.Sandbox)
	}
	got := g.flood(t, distinct*5, func(int) string { return "192.0.2.9" }, func(i int) string { return keys[i%distinct] })
	if got["401 invalid_api_key"] != distinct*5 {
		t.Fatalf("answers %v", got)
	}
	if n := g.srv.CommandCalls("hmget") - before; n != distinct {
		t.Fatalf("%d unknown keys asked 5 times each made %d lookups, want %d", distinct, n, distinct)
	}
	if status, _ := g.call(t, "192.0.2.9", valid); status != 200 {
		t.Fatalf("the valid key during the flood: %d", status)
	}
}
