package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

// FuzzCreateKeyBody feeds arbitrary bodies to POST /v1/instances/{instance}/keys: no panic,
// only 201, 400 or 413, no 400 that echoes the body back, and a 201 only for a body that
// decodes to a valid name.
func FuzzCreateKeyBody(f *testing.F) {
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format("2006-01-02")
	for _, seed := range []string{
		`{"name":"ok"}`,
		`{"name":"ok","expires_at":"` + tomorrow + `"}`,
		`{"name":"ok","expires_at":"` + tomorrow + `T10:00:00+02:00"}`,
		`{"name":"ok","expires_at":"2001-01-01"}`,
		`{"name":"ok","expires_at":null}`,
		`{"name":""}`,
		`{"name":"   "}`,
		`{"name":"` + strings.Repeat("é", 100) + `"}`,
		`{"name":"` + strings.Repeat("é", 101) + `"}`,
		`{"name":"a\u0000b"}`,
		`{"name":"\ud800"}`,
		"{\"name\":\"\xff\xfe\"}",
		`{"NAME":"upper"}`,
		`{"name":"a","name":"b"}`,
		`{"name":"x","` + strings.Repeat("q", 300) + `":1}`,
		`{"name":"x","` + strings.Repeat("é", 300) + `":1}`,
		`{"name":"` + strings.Repeat("w", 300) + `"}`,
		`{"name":"x","expires_at":"` + strings.Repeat("7", 300) + `"}`,
		`{"name":` + strings.Repeat("[", 300),
		`{"name":"x"} {"name":"y"}`,
		`[]`, `null`, `""`, ``, `{`, `}`, `{"name":1e999}`,
		// Bodies over MaxBody: TestCreateKeyBodyLimit (as seeds they make the fuzzing
		// engine spend its time minimizing them).
	} {
		f.Add([]byte(seed))
	}
	api := fuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) { checkCreateKeyBody(t, api, body) })
}

// TestCreateKeyBodyLimit runs the fuzz target's checks on bodies around MaxBody.
func TestCreateKeyBodyLimit(t *testing.T) {
	api := fuzzAPI(t)
	exact := `{"name":"exact"}`
	exact += strings.Repeat(" ", MaxBody-len(exact))
	for _, tc := range []struct {
		body   string
		status int
	}{
		{exact, http.StatusCreated},
		{exact + " ", http.StatusRequestEntityTooLarge},
		{`{"name":"x"}` + strings.Repeat(" ", 70000), http.StatusRequestEntityTooLarge},
		{strings.Repeat(" ", 70000) + `{"name":"x"}`, http.StatusRequestEntityTooLarge},
		{`{"name":"` + strings.Repeat("a", 70000) + `"}`, http.StatusRequestEntityTooLarge},
		{`{"name":"x","` + strings.Repeat("q", 70000) + `":1}`, http.StatusRequestEntityTooLarge},
		{`{"name":"x","` + strings.Repeat("q", 60000) + `":1}`, http.StatusBadRequest},
	} {
		if got := checkCreateKeyBody(t, api, []byte(tc.body)); got != tc.status {
			t.Errorf("body of %d bytes: %d, want %d", len(tc.body), got, tc.status)
		}
	}
}

const fuzzToken = "fuzz-admin-token-0123456789abcdef"

// fuzzAPI is an admin API over a file store holding the instance "acme", with one token
// that may create keys.
func fuzzAPI(tb testing.TB) *API {
	// On tmpfs when there is one: every 201 is a bbolt commit, and the fuzzing engine's
	// minimizer runs thousands of them; on disk their fsyncs stall it for seconds.
	dir := tb.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "keygate-fuzz-"); err == nil {
			dir = d
			tb.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	s, err := filestore.Open(filepath.Join(dir, "keys.db"), filestore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	if err := s.CreateInstance(context.Background(), store.Instance{ID: "acme", Name: "Acme", Environment: apikey.Sandbox}); err != nil {
		tb.Fatal(err)
	}
	h, err := TokenHash(fuzzToken)
	if err != nil {
		tb.Fatal(err)
	}
	api, err := NewAPI(s, []Token{{Name: "fuzzer", Hash: h, Permissions: []Permission{PermCreate}}}, apikey.Hasher{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return api
}

// checkCreateKeyBody posts body as a new key and checks the answer; it returns the status.
func checkCreateKeyBody(t *testing.T, api *API, body []byte) int {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/instances/acme/keys", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+fuzzToken)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	out := rec.Body.Bytes()

	var answer struct {
		Name      string  `json:"name"`
		Secret    string  `json:"secret"`
		ExpiresAt *string `json:"expires_at"`
		Error     struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(out, &answer); err != nil {
		t.Fatalf("answer is not JSON: %q", out)
	}
	if bytes.Contains(out, []byte(fuzzToken)) {
		t.Fatal("the answer carries the admin token")
	}

	switch rec.Code {
	case http.StatusCreated:
		// The body decodes (as encoding/json reads it) to a valid name, and that name
		// is the key's.
		var in struct {
			Name *string `json:"name"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("201 for a body that does not decode: %q (%v)", body, err)
		}
		if in.Name == nil {
			t.Fatalf("201 without a name: %q", body)
		}
		n := utf8.RuneCountInString(*in.Name)
		if n < 1 || n > 100 || strings.TrimSpace(*in.Name) == "" || !utf8.ValidString(*in.Name) {
			t.Fatalf("201 for the invalid name %q", *in.Name)
		}
		if answer.Name != *in.Name {
			t.Fatalf("created key named %q, body named %q", answer.Name, *in.Name)
		}
		if _, err := apikey.Parse(answer.Secret); err != nil {
			t.Fatalf("created key's secret: %v", err)
		}
		if answer.ExpiresAt != nil {
			exp, err := time.Parse(time.RFC3339Nano, *answer.ExpiresAt)
			y, m, d := time.Now().UTC().Date()
			if err != nil || !strings.HasSuffix(*answer.ExpiresAt, "Z") || exp.Before(time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC).Add(-time.Minute)) {
				t.Fatalf("created key expires %q", *answer.ExpiresAt)
			}
		}
	case http.StatusBadRequest:
		if answer.Error.Code != "invalid_request" && answer.Error.Code != "invalid_expiration" {
			t.Fatalf("400 with code %q", answer.Error.Code)
		}
		for _, a := range [][]byte{out, []byte(answer.Error.Message)} {
			if n := echoed(body, a); n > 200 {
				t.Fatalf("a 400 echoes %d bytes of the body: %s", n, out)
			}
		}
	case http.StatusRequestEntityTooLarge:
		if answer.Error.Code != "request_too_large" || len(body) <= MaxBody {
			t.Fatalf("413 (%q) for a body of %d bytes", answer.Error.Code, len(body))
		}
	default:
		t.Fatalf("status %d for %q: %s", rec.Code, body, out)
	}
	if len(body) > MaxBody && rec.Code != http.StatusRequestEntityTooLarge && rec.Code != http.StatusBadRequest {
		t.Fatalf("%d for a body of %d bytes", rec.Code, len(body))
	}
	return rec.Code
}

// echoed reports how much of body answer repeats, as far as it matters here: 201 when some
// 201-byte run of body appears in answer, else 0.
func echoed(body, answer []byte) int {
	const window = 201
	for i := 0; i+window <= len(answer) && len(body) >= window; i++ {
		if bytes.Contains(body, answer[i:i+window]) {
			return window
		}
	}
	return 0
}
