package caddymodule_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/store"
)

// The nora_secret_scanning handler in real Caddy, with GitHub played by a generated ECDSA
// P-256 key whose public half is served in GitHub's format (by an httptest server, or from a
// file). The protocol's pieces (signatures, refetching, batch decoding, the deadline) are
// tested in package scanning, without Caddy.

type ghSigner struct {
	id  string
	key *ecdsa.PrivateKey
}

func newGHSigner(t *testing.T, id string) *ghSigner {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &ghSigner{id, k}
}

// doc is GitHub's public keys document listing these signers.
func ghKeysDoc(t *testing.T, signers ...*ghSigner) []byte {
	var b strings.Builder
	b.WriteString(`{"public_keys":[`)
	for i, s := range signers {
		der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"key_identifier":%q,"key":%s,"is_current":%v}`, s.id, p, i == 0)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

func (s *ghSigner) sign(t *testing.T, body []byte) string {
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

type scanEnv struct {
	s       store.Store
	base    string // the site
	gh      *ghSigner
	logFile string
	fetches *atomic.Int64 // of the keys URL (nil: a file)
}

type alert struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

type verdict struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// startScanning runs Caddy with a file store, the two instances, a nora_secret_scanning
// route (its keys from a URL or from a file) and a nora_auth route.
func startScanning(t *testing.T, fromURL bool, sandbox string) *scanEnv {
	t.Helper()
	return startScanningOn(t, fromURL, sandbox, "")
}

// startScanningOn is startScanning on the store of storeLine ("": a file store).
func startScanningOn(t *testing.T, fromURL bool, sandbox, storeLine string) *scanEnv {
	t.Helper()
	dir := t.TempDir()
	if storeLine == "" {
		storeLine = "store file " + filepath.Join(dir, "keys.db")
	}
	e := &scanEnv{gh: newGHSigner(t, "github-key-1"), logFile: filepath.Join(dir, "caddy.log")}
	doc := ghKeysDoc(t, e.gh, newGHSigner(t, "github-key-0"))
	var src string
	if fromURL {
		e.fetches = new(atomic.Int64)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.fetches.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Write(doc)
		}))
		t.Cleanup(srv.Close)
		src = srv.URL + "/meta/public_keys/secret_scanning"
	} else {
		src = filepath.Join(dir, "github-keys.json")
		if err := os.WriteFile(src, doc, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	up := newUpstream(t)
	port := redistest.FreePort(t)
	e.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	sandboxLine := ""
	if sandbox != "" {
		sandboxLine = "sandbox " + sandbox
	}
	loadNoPersist(t, fmt.Sprintf(`{
	admin off
	auto_https off
	log {
		output file %s
		format json
		level DEBUG
	}
	nora {
		%s
		instance acme-sandbox sandbox "Acme (sandbox)"
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	route /secret-scanning {
		nora_secret_scanning {
			public_keys %s
			%s
		}
	}
	route /api/* {
		nora_auth
		reverse_proxy %s
	}
}
`, e.logFile, storeLine, port, src, sandboxLine, up.URL))
	e.s = noraApp(t).KeyStore()
	waitInstances(t, e.s, 2)
	return e
}

func (e *scanEnv) post(t *testing.T, body []byte, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.base+"/secret-scanning", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *scanEnv) signed(t *testing.T, body []byte) map[string]string {
	return map[string]string{"Github-Public-Key-Identifier": e.gh.id, "Github-Public-Key-Signature": e.gh.sign(t, body)}
}

// alert posts a signed batch and decodes the 200 answer.
func (e *scanEnv) alert(t *testing.T, alerts []alert) []verdict {
	t.Helper()
	body, _ := json.Marshal(alerts)
	status, b := e.post(t, body, e.signed(t, body))
	if status != 200 {
		t.Fatalf("signed batch: %d %s", status, b)
	}
	var out []verdict
	if err := json.Unmarshal(b, &out); err != nil || len(out) != len(alerts) {
		t.Fatalf("answer %s: %v", b, err)
	}
	return out
}

// snapshot is every key and event of both instances.
func (e *scanEnv) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, in := range []string{"acme-sandbox", "acme-prod"} {
		keys, _, err := e.s.ListKeys(context.Background(), in, store.ListOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		evs, _, err := e.s.ListEvents(context.Background(), in, store.ListOptions{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			k.LastUsedAt = time.Time{}
			fmt.Fprintf(&b, "%+v\n", k)
		}
		fmt.Fprintf(&b, "%+v\n", evs)
	}
	return b.String()
}

func (e *scanEnv) leaked(t *testing.T, instance string) []store.Event {
	t.Helper()
	evs, _, err := e.s.ListEvents(context.Background(), instance, store.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Event
	for _, ev := range evs {
		if ev.Type == store.EventKeyLeaked {
			out = append(out, ev)
		}
	}
	return out
}

func (e *scanEnv) checkLogHoldsNo(t *testing.T, secrets ...string) {
	t.Helper()
	b, err := os.ReadFile(e.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		t.Fatal("the log is empty: the check would prove nothing")
	}
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) || bytes.Contains(b, []byte(s[8:])) {
			t.Errorf("the Caddy log (debug level) holds a token")
		}
	}
}

func tokenHash(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

func TestScanningThroughCaddy(t *testing.T) {
	for _, fromURL := range []bool{false, true} {
		name := "keys from a file"
		if fromURL {
			name = "keys from a URL"
		}
		t.Run(name, func(t *testing.T) { testScanning(t, fromURL) })
	}
}

func testScanning(t *testing.T, fromURL bool) {
	e := startScanning(t, fromURL, "")
	live, lk := mint(t, e.s, "acme-prod", apikey.Production, time.Time{})
	test, tk := mint(t, e.s, "acme-sandbox", apikey.Sandbox, time.Time{})
	gone, gk := mint(t, e.s, "acme-prod", apikey.Production, time.Time{})
	if _, _, err := e.s.RevokeKey(context.Background(), "acme-prod", gk.ID, time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	control, _ := mint(t, e.s, "acme-prod", apikey.Production, time.Time{})
	unknown, _ := apikey.Generate(apikey.Production)
	malformed := live[:20] + "!" + live[21:]
	other := "ghp_" + strings.Repeat("a1B2", 9)
	for _, k := range []string{live, test, control} {
		if a := call(t, e.base+"/api/x", "Bearer "+k); a.status != 200 {
			t.Fatalf("a fresh key is refused: %d %s", a.status, a.body)
		}
	}

	batch := []alert{
		{live, "keygate_api_key", "https://github.com/acme/app/blob/abc123/.env", "content"},
		{test, "keygate_api_key", "https://github.com/acme/app/issues/7#issuecomment-1", "issue_comment"},
		{gone, "keygate_api_key", "https://github.com/acme/app/commit/def", "commit"},
		{unknown, "keygate_api_key", "https://gist.github.com/x", "gist_content"},
		{malformed, "keygate_api_key", "https://github.com/acme/app/blob/1/a", "content"},
		{other, "github_personal_access_token", "https://github.com/acme/app/blob/1/b", "content"},
	}
	body, _ := json.Marshal(batch)

	t.Run("refusals change nothing", func(t *testing.T) {
		before := e.snapshot(t)
		sig := e.gh.sign(t, body)
		wrong := newGHSigner(t, e.gh.id).sign(t, body)
		altered := bytes.Replace(body, []byte(`"content"`), []byte(`"commit"`), 1)
		big := append([]byte(`[{"token":"`+live+`","type":"x","url":"`), bytes.Repeat([]byte("a"), 1<<20)...)
		big = append(big, `","source":"content"}]`...)
		for _, tc := range []struct {
			name   string
			method string
			body   []byte
			hdr    map[string]string
			status int
			code   string
		}{
			{"no headers", "POST", body, nil, 401, "invalid_signature"},
			{"no signature", "POST", body, map[string]string{"Github-Public-Key-Identifier": e.gh.id}, 401, "invalid_signature"},
			{"no identifier", "POST", body, map[string]string{"Github-Public-Key-Signature": sig}, 401, "invalid_signature"},
			{"signed by another key", "POST", body, map[string]string{"Github-Public-Key-Identifier": e.gh.id, "Github-Public-Key-Signature": wrong}, 401, "invalid_signature"},
			{"the other listed key", "POST", body, map[string]string{"Github-Public-Key-Identifier": "github-key-0", "Github-Public-Key-Signature": sig}, 401, "invalid_signature"},
			{"unknown identifier", "POST", body, map[string]string{"Github-Public-Key-Identifier": "nope", "Github-Public-Key-Signature": sig}, 401, "invalid_signature"},
			{"body altered", "POST", altered, map[string]string{"Github-Public-Key-Identifier": e.gh.id, "Github-Public-Key-Signature": sig}, 401, "invalid_signature"},
			{"malformed base64", "POST", body, map[string]string{"Github-Public-Key-Identifier": e.gh.id, "Github-Public-Key-Signature": "%%%"}, 401, "invalid_signature"},
			{"malformed DER", "POST", body, map[string]string{"Github-Public-Key-Identifier": e.gh.id, "Github-Public-Key-Signature": base64.StdEncoding.EncodeToString([]byte("not DER at all"))}, 401, "invalid_signature"},
			{"over 1 MiB, signed", "POST", big, e.signed(t, big), 413, "request_too_large"},
			{"GET", "GET", nil, nil, 405, "method_not_allowed"},
		} {
			req, _ := http.NewRequest(tc.method, e.base+"/secret-scanning", bytes.NewReader(tc.body))
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			a := send(t, req)
			if a.status != tc.status || a.Error.Code != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, a.status, a.body, tc.status, tc.code)
			}
		}
		// Over 1 MiB sent chunked (no Content-Length): refused while reading.
		req, _ := http.NewRequest("POST", e.base+"/secret-scanning", io.MultiReader(bytes.NewReader(big)))
		req.ContentLength = -1
		for k, v := range e.signed(t, big) {
			req.Header.Set(k, v)
		}
		if a := send(t, req); a.status != 413 || a.Error.Code != "request_too_large" {
			t.Errorf("chunked over 1 MiB: %d %s", a.status, a.body)
		}
		for _, bad := range []string{`{"token":"x"}`, `not json`, `[{"token":1}]`, `null`} {
			if status, b := e.post(t, []byte(bad), e.signed(t, []byte(bad))); status != 400 || !strings.Contains(string(b), `"invalid_request"`) {
				t.Errorf("signed %s: %d %s", bad, status, b)
			}
		}
		if after := e.snapshot(t); after != before {
			t.Fatalf("a refused alert changed the store:\nbefore %s\nafter %s", before, after)
		}
		for _, k := range []string{live, test} {
			if a := call(t, e.base+"/api/x", "Bearer "+k); a.status != 200 {
				t.Fatalf("a refused alert revoked a key: %d %s", a.status, a.body)
			}
		}
	})

	t.Run("true and false positives", func(t *testing.T) {
		got := e.alert(t, batch)
		want := []string{"true_positive", "true_positive", "true_positive", "false_positive", "false_positive", "false_positive"}
		for i, v := range got {
			if v.Label != want[i] || v.TokenHash != tokenHash(batch[i].Token) || v.TokenType != batch[i].Type {
				t.Errorf("alert %d: %+v, want %s", i, v, want[i])
			}
		}
		// Revoked at once on this gateway (the store's invalidation): both the live and
		// (sandbox revoke, the default) the test key.
		for _, k := range []string{live, test} {
			if a := call(t, e.base+"/api/x", "Bearer "+k); a.status != 401 || a.Error.Code != "api_key_revoked" {
				t.Errorf("a leaked key: %d %s", a.status, a.body)
			}
		}
		if a := call(t, e.base+"/api/x", "Bearer "+control); a.status != 200 {
			t.Errorf("the control key: %d %s", a.status, a.body)
		}
		evs := e.leaked(t, "acme-prod")
		if len(evs) != 1 || evs[0].KeyID != lk.ID || evs[0].URL != batch[0].URL || evs[0].Source != "content" || evs[0].Actor != "github-secret-scanning" {
			t.Errorf("production leaked events: %+v", evs)
		}
		evs = e.leaked(t, "acme-sandbox")
		if len(evs) != 1 || evs[0].KeyID != tk.ID || evs[0].URL != batch[1].URL || evs[0].Source != "issue_comment" {
			t.Errorf("sandbox leaked events: %+v", evs)
		}
		// Sent again: the same answer, no new event.
		before := e.snapshot(t)
		again := e.alert(t, batch)
		if !reflect.DeepEqual(again, got) {
			t.Errorf("again: %+v, first %+v", again, got)
		}
		if after := e.snapshot(t); after != before {
			t.Errorf("a repeated alert changed the store")
		}
	})

	t.Run("an empty batch", func(t *testing.T) {
		status, b := e.post(t, []byte(`[]`), e.signed(t, []byte(`[]`)))
		if status != 200 || strings.TrimSpace(string(b)) != "[]" {
			t.Errorf("empty batch: %d %s", status, b)
		}
	})
	if fromURL && e.fetches.Load() > 2 {
		// One at start, one for the unknown identifier at most (rate-limited after that).
		t.Errorf("the keys URL was fetched %d times", e.fetches.Load())
	}
	e.checkLogHoldsNo(t, live, test, gone, unknown, control)
}

func TestScanningSandboxReport(t *testing.T) {
	e := startScanning(t, true, "report")
	live, _ := mint(t, e.s, "acme-prod", apikey.Production, time.Time{})
	test, tk := mint(t, e.s, "acme-sandbox", apikey.Sandbox, time.Time{})
	got := e.alert(t, []alert{
		{test, "keygate_api_key", "https://github.com/acme/app/blob/1/test.env", "content"},
		{live, "keygate_api_key", "https://github.com/acme/app/blob/1/live.env", "content"},
	})
	if got[0].Label != "true_positive" || got[1].Label != "true_positive" {
		t.Fatalf("labels: %+v", got)
	}
	if a := call(t, e.base+"/api/x", "Bearer "+test); a.status != 200 {
		t.Errorf("sandbox report: the sk_test_ key was refused: %d %s", a.status, a.body)
	}
	if a := call(t, e.base+"/api/x", "Bearer "+live); a.status != 401 || a.Error.Code != "api_key_revoked" {
		t.Errorf("sandbox report: the sk_live_ key: %d %s", a.status, a.body)
	}
	evs := e.leaked(t, "acme-sandbox")
	if len(evs) != 1 || evs[0].KeyID != tk.ID || evs[0].URL != "https://github.com/acme/app/blob/1/test.env" || evs[0].Source != "content" || evs[0].Actor != "github-secret-scanning" {
		t.Errorf("sandbox report events: %+v", evs)
	}
	if k, _ := e.s.Key(context.Background(), "acme-sandbox", tk.ID); !k.RevokedAt.IsZero() {
		t.Error("sandbox report revoked the key")
	}
	e.checkLogHoldsNo(t, live, test)
}

// A full batch: ~10,000 tokens in under 1 MiB, most of them our format (each a store
// lookup), some of them our keys (each a revocation), answered within GitHub's 10 s.
func TestScanningLargeBatch(t *testing.T) {
	t.Run("file store", func(t *testing.T) { testLargeBatch(t, "") })
	t.Run("redis store", func(t *testing.T) { testLargeBatch(t, "store redis "+redistest.Start(t).URL(0)) })
}

func testLargeBatch(t *testing.T, storeLine string) {
	e := startScanningOn(t, false, "", storeLine)
	var batch []alert
	var ours []string
	for i := 0; i < 100; i++ {
		k, _ := mint(t, e.s, "acme-prod", apikey.Production, time.Time{})
		ours = append(ours, k)
	}
	for len(batch) < 10000 {
		var tok string
		switch {
		case len(batch)%100 == 0:
			tok = ours[len(batch)/100]
		case len(batch)%10 == 1:
			tok = "ghp_" + strings.Repeat("x", 36)
		default:
			tok, _ = apikey.Generate(apikey.Sandbox)
		}
		// Short fields, so that 10,000 fit in 1 MiB.
		batch = append(batch, alert{tok, "kg_key", "u/1", "c"})
	}
	body, _ := json.Marshal(batch)
	if len(body) > 1<<20 {
		t.Fatalf("the batch is %d bytes, over 1 MiB", len(body))
	}
	start := time.Now()
	got := e.alert(t, batch)
	elapsed := time.Since(start)
	t.Logf("%d tokens (%d bytes, %d our keys) answered in %v", len(batch), len(body), len(ours), elapsed)
	if elapsed > 10*time.Second {
		t.Fatalf("answered in %v: over GitHub's 10 s", elapsed)
	}
	n := 0
	for i, v := range got {
		if (v.Label == "true_positive") != (i%100 == 0) {
			t.Fatalf("alert %d: %+v", i, v)
		}
		if v.Label == "true_positive" {
			n++
		}
	}
	if n != 100 || len(e.leaked(t, "acme-prod")) != 100 {
		t.Fatalf("%d true positives, %d events", n, len(e.leaked(t, "acme-prod")))
	}
}

// With the store unreachable, a signed batch of our tokens is 503 (GitHub sends it again);
// once the store is back, the same batch revokes.
func TestScanningStoreUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	dir := t.TempDir()
	gh := newGHSigner(t, "gh")
	keys := filepath.Join(dir, "keys.json")
	if err := os.WriteFile(keys, ghKeysDoc(t, gh), 0o600); err != nil {
		t.Fatal(err)
	}
	port := redistest.FreePort(t)
	loadNoPersist(t, fmt.Sprintf(`{
	admin off
	auto_https off
	nora {
		store redis %s {
			timeout 200ms
		}
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	nora_secret_scanning {
		public_keys %s
	}
}
`, srv.URL(0), port, keys))
	e := &scanEnv{s: noraApp(t).KeyStore(), base: fmt.Sprintf("http://127.0.0.1:%d", port), gh: gh}
	waitInstances(t, e.s, 1)
	live, lk := mint(t, e.s, "acme-prod", apikey.Production, time.Time{})
	body, _ := json.Marshal([]alert{{live, "keygate_api_key", "https://github.com/o/r/blob/1/f", "content"}})
	srv.Kill()
	deadline0 := time.Now()
	status, b := e.post(t, body, e.signed(t, body))
	if status != 503 || !strings.Contains(string(b), "store_unavailable") {
		t.Fatalf("store down: %d %s", status, b)
	}
	srv.Restart() // empty: the test's redis-server keeps nothing on disk
	for {
		err := e.s.CreateInstance(context.Background(), store.Instance{ID: "acme-prod", Environment: apikey.Production})
		if err == nil || errors.Is(err, store.ErrInstanceExists) {
			break
		}
		if time.Since(deadline0) > 10*time.Second {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := e.s.CreateKey(context.Background(), lk); err != nil {
		t.Fatal(err)
	}
	var got []verdict
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, b = e.post(t, body, e.signed(t, body))
		if status == 200 {
			json.Unmarshal(b, &got)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store back: still %d %s", status, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != 1 || got[0].Label != "true_positive" {
		t.Fatalf("after the store came back: %s", b)
	}
	if k, err := e.s.Key(context.Background(), "acme-prod", lk.ID); err != nil || k.RevokedAt.IsZero() {
		t.Fatalf("not revoked: %v", err)
	}
}
