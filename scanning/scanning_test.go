package scanning_test

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
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/scanning"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keysDoc is GitHub's public keys document for these keys, by identifier.
func keysDoc(t testing.TB, keys map[string]*ecdsa.PrivateKey) []byte {
	type entry struct {
		ID      string `json:"key_identifier"`
		Key     string `json:"key"`
		Current bool   `json:"is_current"`
	}
	var d struct {
		PublicKeys []entry `json:"public_keys"`
	}
	for id, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		d.PublicKeys = append(d.PublicKeys, entry{id, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), true})
	}
	b, _ := json.Marshal(d)
	return b
}

func sign(t testing.TB, k *ecdsa.PrivateKey, body []byte) string {
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// counted is a key source over a document that counts its fetches.
type counted struct {
	doc   atomic.Pointer[[]byte]
	calls atomic.Int64
}

func (c *counted) set(b []byte) { c.doc.Store(&b) }
func (c *counted) src(context.Context) ([]byte, error) {
	c.calls.Add(1)
	return *c.doc.Load(), nil
}

func TestScanningSignatures(t *testing.T) {
	k1, k2, other := newKey(t), newKey(t), newKey(t)
	src := &counted{}
	src.set(keysDoc(t, map[string]*ecdsa.PrivateKey{"k1": k1}))
	clock := time.Unix(1_800_000_000, 0)
	v := scanning.NewVerifier(src.src)
	v.Now = func() time.Time { return clock }
	body := []byte(`[{"token":"x","type":"t","url":"u","source":"content"}]`)
	ctx := context.Background()

	if err := v.Verify(ctx, "k1", sign(t, k1, body), body); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	if src.calls.Load() != 1 {
		t.Fatalf("first use fetched %d times", src.calls.Load())
	}
	bad := []struct {
		name, id, sig string
		body          []byte
	}{
		{"wrong key", "k1", sign(t, other, body), body},
		{"body altered", "k1", sign(t, k1, body), append([]byte(" "), body...)},
		{"body altered inside", "k1", sign(t, k1, body), bytes.Replace(body, []byte(`"x"`), []byte(`"y"`), 1)},
		{"malformed base64", "k1", "not base64!!", body},
		{"malformed DER", "k1", base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")), body},
		{"empty signature", "k1", "", body},
		{"no identifier", "", sign(t, k1, body), body},
	}
	for _, tc := range bad {
		if err := v.Verify(ctx, tc.id, tc.sig, tc.body); !errors.Is(err, scanning.ErrSignature) {
			t.Errorf("%s: got %v, want ErrSignature", tc.name, err)
		}
	}
	if src.calls.Load() != 1 {
		t.Fatalf("bad signatures of a known key fetched the keys again (%d fetches)", src.calls.Load())
	}

	// GitHub rotates to k2: an alert signed by k2 makes one refetch, which finds it.
	src.set(keysDoc(t, map[string]*ecdsa.PrivateKey{"k1": k1, "k2": k2}))
	clock = clock.Add(2 * time.Minute)
	if err := v.Verify(ctx, "k2", sign(t, k2, body), body); err != nil {
		t.Fatalf("new key after refetch: %v", err)
	}
	if src.calls.Load() != 2 {
		t.Fatalf("unknown identifier: %d fetches, want 2", src.calls.Load())
	}
	// Unknown identifiers within the minute: refused without fetching again.
	for i := 0; i < 20; i++ {
		clock = clock.Add(time.Second)
		if err := v.Verify(ctx, fmt.Sprintf("nope-%d", i), sign(t, k1, body), body); !errors.Is(err, scanning.ErrSignature) {
			t.Fatalf("unknown identifier: %v", err)
		}
	}
	if src.calls.Load() != 2 {
		t.Fatalf("20 unknown identifiers within a minute of the last fetch made %d fetches, want none more (2)", src.calls.Load())
	}
	clock = clock.Add(scanning.MinRefetch)
	for i := 0; i < 5; i++ {
		v.Verify(ctx, "nope-again", sign(t, k1, body), body)
	}
	if src.calls.Load() != 3 {
		t.Fatalf("a minute later, 5 unknown identifiers: %d fetches, want 3", src.calls.Load())
	}
	// A key GitHub dropped keeps working until a refetch drops it (it is cached), and k1 too.
	if err := v.Verify(ctx, "k1", sign(t, k1, body), body); err != nil {
		t.Fatal(err)
	}
}

func TestScanningKeysUnavailable(t *testing.T) {
	k := newKey(t)
	body := []byte(`[]`)
	v := scanning.NewVerifier(func(context.Context) ([]byte, error) { return nil, errors.New("down") })
	if err := v.Verify(context.Background(), "k1", sign(t, k, body), body); !errors.Is(err, scanning.ErrKeysUnavailable) {
		t.Fatalf("got %v, want ErrKeysUnavailable", err)
	}
	for _, doc := range []string{`{}`, `{"public_keys":[]}`, `not json`,
		`{"public_keys":[{"key_identifier":"a","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}`} {
		if _, err := scanning.ParseKeys([]byte(doc)); err == nil {
			t.Errorf("ParseKeys(%s) accepted", doc)
		}
	}
}

func TestScanningURLAndFileSources(t *testing.T) {
	k := newKey(t)
	doc := keysDoc(t, map[string]*ecdsa.PrivateKey{"gh": k})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Write(doc)
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := writeFile(path, doc); err != nil {
		t.Fatal(err)
	}
	body := []byte(`[{"token":"a"}]`)
	for name, src := range map[string]scanning.KeySource{"url": scanning.URLSource(srv.URL, nil), "file": scanning.FileSource(path)} {
		v := scanning.NewVerifier(src)
		if err := v.Refresh(context.Background()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := v.Verify(context.Background(), "gh", sign(t, k, body), body); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := scanning.URLSource(srv.URL+"/404", nil)(context.Background()); err == nil {
		t.Fatal("a 404 is no keys document")
	}
}

func TestScanningDecodeBatch(t *testing.T) {
	ok := []struct {
		in   string
		want []scanning.Alert
	}{
		{`[]`, []scanning.Alert{}},
		{` [{"token":"a","type":"t","url":"u","source":"s","extra":1}]`, []scanning.Alert{{"a", "t", "u", "s"}}},
		{`[{"token":"a"},{"type":"t"}]`, []scanning.Alert{{Token: "a"}, {Type: "t"}}},
	}
	for _, tc := range ok {
		got, err := scanning.DecodeBatch([]byte(tc.in))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) || got == nil {
			t.Errorf("DecodeBatch(%s) = %v, %v", tc.in, got, err)
		}
	}
	for _, in := range []string{``, `null`, `{}`, `"a"`, `[null]`, `[1]`, `[{"token":1}]`, `[{"token":"a"}] x`, `[{"token":"a"}`, `[[]]`} {
		if _, err := scanning.DecodeBatch([]byte(in)); !errors.Is(err, scanning.ErrBatch) {
			t.Errorf("DecodeBatch(%s): %v, want ErrBatch", in, err)
		}
	}
}

func FuzzBatch(f *testing.F) {
	for _, s := range []string{`[]`, `[{"token":"sk_live_x","type":"t","url":"u","source":"s"}]`, `null`, `[null]`, `[{"token":1}]`, "[{\"token\":\"\xff\"}]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		alerts, err := scanning.DecodeBatch(b)
		if err != nil {
			if !errors.Is(err, scanning.ErrBatch) {
				t.Fatalf("error %v is not ErrBatch", err)
			}
			return
		}
		// What was accepted encodes back to a batch that decodes the same.
		again, err := json.Marshal(alerts)
		if err != nil {
			t.Fatal(err)
		}
		back, err := scanning.DecodeBatch(again)
		if err != nil || len(back) != len(alerts) {
			t.Fatalf("round trip: %v, %d vs %d", err, len(back), len(alerts))
		}
		for i := range back {
			if back[i] != alerts[i] {
				t.Fatalf("round trip changed alert %d", i)
			}
		}
	})
}

// scanEnv is a file store with one instance of each environment.
type scanEnv struct {
	s *filestore.Store
}

func newScanEnv(t *testing.T) *scanEnv {
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, in := range []store.Instance{{ID: "live", Environment: apikey.Production}, {ID: "test", Environment: apikey.Sandbox}} {
		if err := s.CreateInstance(context.Background(), in); err != nil {
			t.Fatal(err)
		}
	}
	return &scanEnv{s}
}

func (e *scanEnv) mint(t *testing.T, h apikey.Hasher, instance string, env apikey.Environment) (string, store.Key) {
	secret, k, err := store.Mint(h, store.Instance{ID: instance, Environment: env}, "k", time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.s.CreateKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	return secret, k
}

func (e *scanEnv) leaked(t *testing.T, instance string) []store.Event {
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

func TestScanningProcess(t *testing.T) {
	for _, mode := range []scanning.SandboxMode{scanning.SandboxRevoke, scanning.SandboxReport} {
		t.Run(fmt.Sprint("sandbox mode ", mode), func(t *testing.T) {
			e := newScanEnv(t)
			h := apikey.NewHasher([]byte("pepper-for-the-test"))
			live, lk := e.mint(t, h, "live", apikey.Production)
			test, tk := e.mint(t, h, "test", apikey.Sandbox)
			gone, gk := e.mint(t, h, "live", apikey.Production)
			if _, _, err := e.s.RevokeKey(context.Background(), "live", gk.ID, time.Now(), nil); err != nil {
				t.Fatal(err)
			}
			unknown, _ := apikey.Generate(apikey.Production)
			core, logs := observer.New(zap.DebugLevel)
			sc := &scanning.Scanner{Store: e.s, Hasher: h, Sandbox: mode, Logger: zap.New(core)}
			alerts := []scanning.Alert{
				{live, "keygate_api_key", "https://github.com/o/r/blob/1/a", "commit"},
				{test, "keygate_api_key", "https://github.com/o/r/issues/2", "issue_comment"},
				{gone, "keygate_api_key", "u", "content"},
				{unknown, "keygate_api_key", "u", "content"},
				{live[:len(live)-1] + "x", "keygate_api_key", "u", "content"},
				{"ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "github_token", "u", "content"},
				{live, "keygate_api_key", "https://github.com/o/r/blob/1/b", "commit"}, // again
			}
			res, err := sc.Process(context.Background(), alerts)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"true_positive", "true_positive", "true_positive", "false_positive", "false_positive", "false_positive", "true_positive"}
			for i, r := range res {
				if r.Label != want[i] || r.TokenHash != fmt.Sprintf("%x", sha256.Sum256([]byte(alerts[i].Token))) || r.TokenType != alerts[i].Type {
					t.Errorf("alert %d: %+v, want %s", i, r, want[i])
				}
			}
			key := func(in, id string) store.Key {
				k, err := e.s.Key(context.Background(), in, id)
				if err != nil {
					t.Fatal(err)
				}
				return k
			}
			if key("live", lk.ID).RevokedAt.IsZero() {
				t.Error("the leaked live key is active")
			}
			if got := key("test", tk.ID).RevokedAt.IsZero(); got != (mode == scanning.SandboxReport) {
				t.Errorf("sandbox key active=%v in mode %d", got, mode)
			}
			evs := e.leaked(t, "live")
			if len(evs) != 1 || evs[0].KeyID != lk.ID || evs[0].URL != "https://github.com/o/r/blob/1/a" || evs[0].Source != "commit" || evs[0].Actor != "github-secret-scanning" {
				t.Errorf("live leaked events: %+v", evs)
			}
			evs = e.leaked(t, "test")
			if len(evs) != 1 || evs[0].KeyID != tk.ID || evs[0].URL != "https://github.com/o/r/issues/2" || evs[0].Source != "issue_comment" {
				t.Errorf("sandbox leaked events: %+v", evs)
			}
			// Sent again, everything ours is still a true positive, with no new event (but in
			// report mode, where the sandbox key is reported again).
			if res, err = sc.Process(context.Background(), alerts[:3]); err != nil || res[0].Label != "true_positive" || res[2].Label != "true_positive" {
				t.Fatalf("again: %+v %v", res, err)
			}
			if evs := e.leaked(t, "live"); len(evs) != 1 {
				t.Errorf("a second alert made %d live events", len(evs))
			}
			for _, l := range logs.All() {
				b, _ := json.Marshal(l.ContextMap())
				for _, s := range []string{live, test, gone, unknown, live[8:], test[8:]} {
					if strings.Contains(l.Message+string(b), s) {
						t.Fatalf("a log line holds a token: %s %s", l.Message, b)
					}
				}
			}
			if logs.FilterMessage("leaked key revoked").Len() == 0 {
				t.Error("no log of the revocation")
			}
		})
	}
}

// slowStore answers lookups after a delay, or fails them.
type slowStore struct {
	scanning.Store
	delay time.Duration
	err   error
}

func (s slowStore) LookupHash(ctx context.Context, h apikey.Hash) (store.Lookup, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return store.Lookup{}, ctx.Err()
	}
	if s.err != nil {
		return store.Lookup{}, s.err
	}
	return store.Lookup{}, store.ErrKeyNotFound
}

func TestScanningIncompleteBatchIsRefused(t *testing.T) {
	var alerts []scanning.Alert
	for i := 0; i < 200; i++ {
		k, _ := apikey.Generate(apikey.Production)
		alerts = append(alerts, scanning.Alert{Token: k})
	}
	sc := &scanning.Scanner{Store: slowStore{delay: 10 * time.Millisecond}, Concurrency: 2, Timeout: 100 * time.Millisecond}
	if _, err := sc.Process(context.Background(), alerts); !errors.Is(err, scanning.ErrIncomplete) {
		t.Fatalf("over the deadline: %v, want ErrIncomplete", err)
	}
	sc = &scanning.Scanner{Store: slowStore{err: errors.New("connection refused")}}
	if _, err := sc.Process(context.Background(), alerts); !errors.Is(err, scanning.ErrIncomplete) {
		t.Fatalf("store failing: %v, want ErrIncomplete", err)
	}
	// 10,000 lookups of 1 ms each at the default width: well within the deadline.
	alerts = alerts[:0]
	for i := 0; i < 10000; i++ {
		k, _ := apikey.Generate(apikey.Sandbox)
		alerts = append(alerts, scanning.Alert{Token: k})
	}
	start := time.Now()
	res, err := (&scanning.Scanner{Store: slowStore{delay: time.Millisecond}}).Process(context.Background(), alerts)
	if err != nil || len(res) != 10000 {
		t.Fatalf("10,000 tokens at 1 ms a lookup: %v", err)
	}
	t.Logf("10,000 tokens, 1 ms a lookup, width %d: %v", scanning.DefaultConcurrency, time.Since(start))
}

// A slow fetch for an unknown identifier does not hold up alerts signed by a known key, and
// concurrent first alerts share one fetch.
func TestScanningSlowFetch(t *testing.T) {
	k := newKey(t)
	doc := keysDoc(t, map[string]*ecdsa.PrivateKey{"k": k})
	var calls atomic.Int64
	release := make(chan struct{})
	v := scanning.NewVerifier(func(ctx context.Context) ([]byte, error) {
		if calls.Add(1) > 1 {
			<-release
		}
		return doc, nil
	})
	clock := time.Unix(1_800_000_000, 0)
	var now atomic.Pointer[time.Time]
	now.Store(&clock)
	v.Now = func() time.Time { return *now.Load() }
	body := []byte(`[]`)
	sig := sign(t, k, body)
	ctx := context.Background()
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() { errs <- v.Verify(ctx, "k", sig, body) }()
	}
	for i := 0; i < 10; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent first alerts: %v", err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("10 concurrent first alerts made %d fetches", calls.Load())
	}
	later := clock.Add(2 * time.Minute)
	now.Store(&later)
	go v.Verify(ctx, "unknown", sig, body) // starts a fetch that hangs until released
	for calls.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := v.Verify(ctx, "k", sig, body); err != nil || time.Since(start) > time.Second {
		t.Fatalf("a known key during a slow fetch: %v after %v", err, time.Since(start))
	}
	close(release)
}
