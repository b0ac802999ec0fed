package e2e

// Fault tests (what keygate guarantees under faults), with gateway processes and a real
// redis-server started for the test (never the machine's own Redis): invalidations are not
// lost when the gateways' connections are killed around a revoke; a cache fill racing a revoke
// never brings the key back; an unreachable store (crashed or frozen) answers 503 fast without
// piling up, cached keys serve at most max_stale, the gateways recover by themselves, and
// appendfsync always loses nothing acknowledged; config reloads under load fail no request
// and keep the cache warm. Every Redis used here is started by redistest on a free port, so
// without redis-server the tests skip (naming it) unless KEYGATE_REQUIRE_REDIS=1.
//
// This file holds the fault cluster and the helpers the fault_*_test.go files share.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

// The store settings of the fault gateways: a short command timeout and a short max_stale,
// so that outages are felt (and end) quickly.
const (
	faultTimeout  = 300 * time.Millisecond
	faultMaxStale = 2 * time.Second
)

// faultGateway is a gateway process of a faultCluster.
type faultGateway struct {
	*gateway
	name       string // its Redis client name (CLIENT LIST name=…)
	port       int
	metricsURL string
	adminAddr  string // its Caddy admin address, "" with admin off
	caddyfile  string // path of its Caddyfile (for reloads)
}

// faultCluster is a redis-server, a plain upstream and gateway processes configured with
// faultTimeout and faultMaxStale, each with a metrics site; the test's redisstore client
// plays the admin side.
type faultCluster struct {
	srv      *redistest.Server
	store    *redisstore.Store
	rdb      *redis.Client // the test's own raw client
	gateways []*faultGateway
	upstream string
}

type faultConfig struct {
	gateways  int
	withAdmin bool     // give each gateway a Caddy admin address (for reloads)
	redisArgs []string // extra redis-server arguments
}

func startFaultCluster(t *testing.T, cfg faultConfig) *faultCluster {
	t.Helper()
	c := &faultCluster{srv: redistest.Start(t, cfg.redisArgs...)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(up.Close)
	c.upstream = up.URL
	for i := 0; i < cfg.gateways; i++ {
		g := &faultGateway{name: fmt.Sprintf("gw%d", i), port: freePort(t)}
		mport := freePort(t)
		g.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)
		if cfg.withAdmin {
			g.adminAddr = fmt.Sprintf("localhost:%d", freePort(t))
		}
		cf := c.caddyfile(g, mport, "gen-0")
		g.gateway = startGateway(t, cf, g.port)
		g.caddyfile = filepath.Join(filepath.Dir(g.log), "Caddyfile")
		c.gateways = append(c.gateways, g)
	}
	c.rdb = redis.NewClient(&redis.Options{Addr: c.srv.Addr})
	t.Cleanup(func() { c.rdb.Close() })
	c.store = redisstore.New(redis.NewClient(&redis.Options{Addr: c.srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { c.store.Close() })
	testutil.WaitFor(t, 10*time.Second, "the gateways to create their instances", func() bool {
		ins, _ := c.store.Instances(context.Background())
		return len(ins) == 2
	})
	return c
}

// caddyfile is the config of gateway g; header is the value of its X-Config answer header
// (what a reload changes). The upstream connections idle out after 1 s rather than Caddy's
// 2 min: a reload closes the old proxy transport's idle connections, but those busy at that
// moment go back to its pool and would otherwise hold two goroutines each for 2 min, which is
// Caddy's business and would hide a leak of keygate's own in go_goroutines.
func (c *faultCluster) caddyfile(g *faultGateway, mport int, header string) string {
	admin := "admin off"
	if g.adminAddr != "" {
		admin = "admin " + g.adminAddr
	}
	return fmt.Sprintf(`{
	%s
	auto_https off
	nora {
		store redis %s?client_name=%s {
			timeout %s
		}
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
		cache {
			max_stale %s
		}
	}
}
http://127.0.0.1:%d {
	header X-Config %s
	nora_auth
	reverse_proxy %s {
		transport http {
			keepalive 1s
		}
	}
}
http://127.0.0.1:%d {
	metrics /metrics
}
`, admin, c.srv.URL(0), g.name, faultTimeout, faultMaxStale, g.port, header, c.upstream, mport)
}

func (c *faultCluster) mint(t *testing.T) (string, store.Key) {
	t.Helper()
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-sandbox", Environment: apikey.Sandbox}, "fault", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.store.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

// warm makes sure key is cached (as valid) on every gateway: a request costs no lookup.
func (c *faultCluster) warm(t *testing.T, key string) {
	t.Helper()
	for _, g := range c.gateways {
		for i := 0; ; i++ {
			before := c.srv.CommandCalls("hmget")
			if a := get(t, g.url+"/", key); a.status != 200 {
				t.Fatalf("%s: valid key refused: %d %s", g.name, a.status, a.body)
			}
			if c.srv.CommandCalls("hmget") == before {
				break
			}
			if i == 50 {
				t.Fatalf("%s: the key does not stay cached", g.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// faultClient is a keep-alive HTTP client with room for many connections per gateway.
func faultClient(conns int) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: conns * 4, MaxIdleConnsPerHost: conns, IdleConnTimeout: 30 * time.Second}}
}

// try is get without t.Fatal, for goroutines.
func try(hc *http.Client, url, key string) (answer, error) {
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if a.status != 200 {
		json.Unmarshal(b, &a)
	}
	return a, nil
}

// goroutines scrapes go_goroutines from the gateway's metrics endpoint.
func (g *faultGateway) goroutines(t *testing.T) int {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(g.metricsURL)
	if err != nil {
		t.Fatalf("%s: scraping metrics: %v", g.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: go_goroutines %q", g.name, v)
			}
			return int(f)
		}
	}
	t.Fatalf("%s: no go_goroutines on %s", g.name, g.metricsURL)
	return 0
}

// settleGoroutines waits (up to 10 s) for the gateway's goroutine count to come back within
// slack of baseline, and returns the last count seen.
func (g *faultGateway) settleGoroutines(t *testing.T, baseline, slack int) int {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		n = g.goroutines(t)
		if n <= baseline+slack {
			return n
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %d goroutines 10 s after the fault, baseline %d: a pile-up or a leak", g.name, n, baseline)
			return n
		}
	}
}

// clientList returns Redis' CLIENT LIST, one map of fields per connection.
func clientList(ctx context.Context, rdb *redis.Client) ([]map[string]string, error) {
	s, err := rdb.ClientList(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		m := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			m[k] = v
		}
		out = append(out, m)
	}
	return out, nil
}

// namedConns counts the Redis connections per client name.
func namedConns(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	cl, err := clientList(context.Background(), rdb)
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	out := map[string]int{}
	for _, m := range cl {
		out[m["name"]]++
	}
	return out
}

func connectedClients(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "clients").Result()
	if err != nil {
		t.Fatalf("INFO clients: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_clients:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("INFO clients has no connected_clients")
	return 0
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s)) + 0.5)
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}
