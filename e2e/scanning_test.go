package e2e

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
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/testutil"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/redisstore"
)

// GitHub reports a live key leaked to one gateway process: the key, warm in both gateways'
// caches, is refused by both within 1 s, and the leak is in the audit trail.
func TestScanningLeakRevokesOnEveryGateway(t *testing.T) {
	srv := redistest.Start(t)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pemKey, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	doc := fmt.Sprintf(`{"public_keys":[{"key_identifier":"e2e-key","key":%s,"is_current":true}]}`, pemKey)
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, doc)
	}))
	t.Cleanup(gh.Close)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"ok":true}`) }))
	t.Cleanup(up.Close)

	var gws []*gateway
	for i := 0; i < 2; i++ {
		port := freePort(t)
		gws = append(gws, startGateway(t, fmt.Sprintf(`{
	admin off
	auto_https off
	debug
	nora {
		store redis %s
		instance acme-prod production "Acme (production)"
	}
}
http://127.0.0.1:%d {
	route /secret-scanning {
		nora_secret_scanning {
			public_keys %s/meta/public_keys/secret_scanning
		}
	}
	route {
		nora_auth
		reverse_proxy %s
	}
}
`, srv.URL(0), port, gh.URL, up.URL), port))
	}
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.Addr}), redisstore.Options{})
	t.Cleanup(func() { st.Close() })
	testutil.WaitFor(t, 10*time.Second, "the gateways to create their instance", func() bool {
		ins, _ := st.Instances(context.Background())
		return len(ins) == 1
	})
	secret, k, err := store.Mint(apikey.Hasher{}, store.Instance{ID: "acme-prod", Environment: apikey.Production}, "e2e", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	// Warm in both caches: a second request costs Redis nothing.
	for _, g := range gws {
		for i := 0; i < 2; i++ {
			if r := get(t, g.url+"/v1/charges", secret); r.status != 200 {
				t.Fatalf("valid key refused: %d %s", r.status, r.body)
			}
		}
	}
	before := srv.CommandCalls("hmget")
	for _, g := range gws {
		if r := get(t, g.url+"/v1/charges", secret); r.status != 200 {
			t.Fatal(r.body)
		}
	}
	if got := srv.CommandCalls("hmget"); got != before {
		t.Fatalf("the key is not cached: %d lookups", got-before)
	}

	body, _ := json.Marshal([]map[string]string{{"token": secret, "type": "keygate_api_key",
		"url": "https://github.com/acme/app/blob/abc/.env", "source": "content"}})
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", gws[0].url+"/secret-scanning", bytes.NewReader(body))
	req.Header.Set("Github-Public-Key-Identifier", "e2e-key")
	req.Header.Set("Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	answered := time.Now()
	var got []struct {
		TokenHash string `json:"token_hash"`
		Label     string `json:"label"`
	}
	json.Unmarshal(answer, &got)
	if resp.StatusCode != 200 || len(got) != 1 || got[0].Label != "true_positive" ||
		got[0].TokenHash != fmt.Sprintf("%x", sha256.Sum256([]byte(secret))) {
		t.Fatalf("alert: %d %s", resp.StatusCode, answer)
	}
	for _, g := range []*gateway{gws[1], gws[0]} {
		for {
			r := get(t, g.url+"/v1/charges", secret)
			if r.status == 401 && r.Error.Code == "api_key_revoked" {
				break
			}
			if r.status != 200 {
				t.Fatalf("unexpected answer %d %s", r.status, r.body)
			}
			if time.Since(answered) > time.Second {
				t.Fatal("the leaked key was not refused within 1 s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Logf("both gateways refused the leaked key %v after the alert was answered", time.Since(answered))
	evs, _, err := st.ListEvents(context.Background(), "acme-prod", store.ListOptions{Limit: 10})
	if err != nil || len(evs) == 0 || evs[0].Type != store.EventKeyLeaked || evs[0].KeyID != k.ID ||
		evs[0].URL != "https://github.com/acme/app/blob/abc/.env" || evs[0].Source != "content" || evs[0].Actor != "github-secret-scanning" {
		t.Fatalf("events: %+v %v", evs, err)
	}
	c := &cluster{gateways: gws}
	c.checkLogsHoldNoSecret(t, secret)
}
