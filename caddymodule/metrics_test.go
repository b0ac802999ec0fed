package caddymodule_test

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no series %s in:\n%s", series, body)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The metrics count verifications by code, cache hits and misses and store lookups, carry no
// key material, and keep their values across a reload.
func TestMetricsCountAndSurviveReload(t *testing.T) {
	up := newUpstream(t)
	port, mport := redistest.FreePort(t), redistest.FreePort(t)
	db := filepath.Join(t.TempDir(), "keys.db")
	config := func(i int) string {
		return gatewayConfig(t, "store file "+db, up.URL, port, fmt.Sprintf("header X-Reload %d", i)) +
			fmt.Sprintf("http://127.0.0.1:%d {\n\tmetrics /metrics\n}\n", mport)
	}
	load(t, config(0))
	s := noraApp(t).KeyStore()
	waitInstances(t, s, 2)
	key, k := mint(t, s, "acme-sandbox", apikey.Sandbox, time.Time{})
	base := fmt.Sprintf("http://127.0.0.1:%d/any/x", port)
	murl := fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)

	before := scrape(t, murl)
	okBefore := metricValue(t, before, `keygate_verifications_total{code="ok"}`)
	badBefore := metricValue(t, before, `keygate_verifications_total{code="invalid_api_key"}`)
	missingBefore := metricValue(t, before, `keygate_verifications_total{code="missing_api_key"}`)

	for i := 0; i < 3; i++ {
		call(t, base, "Bearer "+key)
	}
	call(t, base, "Bearer nonsense")
	call(t, base)

	cfg, err := adapt(config(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	after := scrape(t, murl)
	if got := metricValue(t, after, `keygate_verifications_total{code="ok"}`) - okBefore; got != 3 {
		t.Errorf("ok verifications counted %v, want 3 (across a reload)", got)
	}
	if got := metricValue(t, after, `keygate_verifications_total{code="invalid_api_key"}`) - badBefore; got != 1 {
		t.Errorf("invalid_api_key counted %v, want 1", got)
	}
	if got := metricValue(t, after, `keygate_verifications_total{code="missing_api_key"}`) - missingBefore; got != 1 {
		t.Errorf("missing_api_key counted %v, want 1", got)
	}
	if metricValue(t, after, "keygate_store_lookups_total") < 1 || metricValue(t, after, "keygate_cache_hits_total") < 1 {
		t.Errorf("lookups/hits not counted:\n%s", after)
	}
	if metricValue(t, after, "keygate_store_lookup_seconds_count") < 1 {
		t.Error("store latency not observed")
	}
	for _, secret := range []string{key, key[8:20], k.ID, k.Prefix} {
		if strings.Contains(after, secret) {
			t.Fatalf("the metrics expose key material (%s…)", secret[:4])
		}
	}
}
