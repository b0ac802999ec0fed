package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/store"
)

const secret = "whsec_0123456789abcdef"

func TestSignIsStripesScheme(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	at := time.Unix(1764633600, 0)
	got := Sign(secret, at, body)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("1764633600." + string(body)))
	want := "t=1764633600,v1=" + hex.EncodeToString(m.Sum(nil))
	if got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
	if err := Verify(secret, got, body, at.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("Verify of a fresh signature: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	body := []byte(`{"id":"evt_1"}`)
	at := time.Unix(1764633600, 0)
	good := Sign(secret, at, body)
	for _, tc := range []struct {
		name, secret, header string
		body                 string
		now                  time.Time
		want                 error
	}{
		{"wrong secret", "whsec_another_secret_x", good, string(body), at, ErrSignature},
		{"body changed", secret, good, `{"id":"evt_2"}`, at, ErrSignature},
		{"too old", secret, good, string(body), at.Add(6 * time.Minute), ErrTooOld},
		{"from the future", secret, good, string(body), at.Add(-6 * time.Minute), ErrTooOld},
		{"no v1", secret, "t=1764633600", string(body), at, ErrBadHeader},
		{"no t", secret, good[strings.Index(good, ",")+1:], string(body), at, ErrBadHeader},
		{"not hex", secret, "t=1764633600,v1=zz", string(body), at, ErrBadHeader},
		{"garbage", secret, "garbage", string(body), at, ErrBadHeader},
		{"empty", secret, "", string(body), at, ErrBadHeader},
	} {
		if err := Verify(tc.secret, tc.header, []byte(tc.body), tc.now, 5*time.Minute); err != tc.want {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.want)
		}
	}
	// A second signature (a receiver mid-rotation) is accepted when one matches.
	two := good + ",v1=" + strings.Repeat("ab", 32)
	if err := Verify(secret, two, body, at, 5*time.Minute); err != nil {
		t.Errorf("two v1 with one good: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("t=1,v1=00", []byte("x"))
	f.Add(Sign(secret, time.Unix(5, 0), []byte("b")), []byte("b"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_ = Verify(secret, header, body, time.Unix(5, 0), time.Hour) // never panics
	})
}

func TestCheck(t *testing.T) {
	ok := Webhook{URL: "https://hooks.example.com/keygate?token=abc", Secret: secret, Events: []string{store.EventKeyRevoked}}
	if err := ok.Check(); err != nil {
		t.Fatalf("a good webhook: %v", err)
	}
	for _, w := range []Webhook{
		{URL: "ftp://hooks.example.com/", Secret: secret},
		{URL: "/relative", Secret: secret},
		{URL: "https://user:pass@hooks.example.com/", Secret: secret},
		{URL: "https://hooks.example.com/", Secret: "short"},
		{URL: "https://hooks.example.com/", Secret: secret, Events: []string{"api_key.deleted"}},
	} {
		err := w.Check()
		if err == nil {
			t.Errorf("%+v passed Check", w)
			continue
		}
		if strings.Contains(err.Error(), w.Secret) || strings.Contains(err.Error(), "pass") {
			t.Errorf("Check's error shows a secret: %v", err)
		}
	}
	if r := ok.Redacted(); strings.Contains(r, "token") {
		t.Errorf("Redacted keeps the query: %s", r)
	}
	// The id follows the URL only.
	other := ok
	other.Secret, other.Events = "whsec_rotated_secret_1", nil
	if ok.ID() != other.ID() || len(ok.ID()) != 16 {
		t.Errorf("ids %q and %q: a new secret or filter must keep the id (16 hex)", ok.ID(), other.ID())
	}
	if (Webhook{URL: "https://hooks.example.com/other"}).ID() == ok.ID() {
		t.Error("two URLs share an id")
	}
}

func TestBodyIsTheEventObject(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 4_000_000, time.FixedZone("x", 3600))
	b, err := Body(store.Event{ID: "evt_1", Type: store.EventKeyRolled, Instance: "acme", KeyID: "key_a",
		NewKeyID: "key_b", Actor: "ops", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"object": "event", "id": "evt_1", "type": "api_key.rolled", "instance": "acme",
		"key_id": "key_a", "new_key_id": "key_b", "actor": "ops", "created_at": "2026-12-02T00:02:03.004Z"}
	if len(m) != len(want) {
		t.Fatalf("body %s, want the fields %v", b, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

func TestBackoff(t *testing.T) {
	prevMax := time.Duration(0)
	var total time.Duration
	for a := range 40 {
		d := Backoff(a)
		if d < 8*time.Second || d > 72*time.Minute {
			t.Fatalf("Backoff(%d) = %v, outside 8 s – 72 min", a, d)
		}
		if a < 8 && d < prevMax/2 {
			t.Fatalf("Backoff(%d) = %v does not grow (before: %v)", a, d, prevMax)
		}
		prevMax = max(prevMax, d)
		total += d
	}
	// 40 attempts span more than a day: at least 24 h of retries before GiveUpAfter.
	if total < 24*time.Hour {
		t.Fatalf("40 retries span only %v", total)
	}
}
