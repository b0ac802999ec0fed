package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

const (
	allToken    = "keys-cli-test-token-all-00000000"
	readToken   = "keys-cli-test-token-read-0000000"
	wrongToken  = "keys-cli-test-token-wrong-000000"
	instanceID  = "acme-sandbox"
	keyIDFormat = `key_[0-9A-Za-z]{24}`
)

var tokens = []string{allToken, readToken, wrongToken}

// cliEnv is a running admin API (the real one, over a file store with the sandbox instance
// acme-sandbox) and what the CLI needs to reach it.
type cliEnv struct {
	t     *testing.T
	url   string
	store store.Store
	env   map[string]string
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.CreateInstance(context.Background(), store.Instance{ID: instanceID, Name: "Acme (sandbox)", Environment: apikey.Sandbox}); err != nil {
		t.Fatal(err)
	}
	api, err := admin.NewAPI(s, []admin.Token{
		{Name: "ops", Hash: sha256.Sum256([]byte(allToken)), Permissions: []admin.Permission{admin.PermRead, admin.PermCreate, admin.PermDelete}},
		{Name: "viewer", Hash: sha256.Sum256([]byte(readToken)), Permissions: []admin.Permission{admin.PermRead}},
	}, apikey.Hasher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &cliEnv{t: t, url: srv.URL, store: s, env: map[string]string{envToken: allToken, envAdminURL: srv.URL}}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs `keygate keys args…` in-process with the environment's variables.
func (e *cliEnv) run(args ...string) result {
	return e.runWith(e.env, args...)
}

func (e *cliEnv) runWith(env map[string]string, args ...string) result {
	e.t.Helper()
	var out, errOut bytes.Buffer
	code := runKeys(args, env, &out, &errOut)
	r := result{code, out.String(), errOut.String()}
	noToken(e.t, r.stdout+r.stderr)
	return r
}

// ok runs the command and fails the test unless it succeeded.
func (e *cliEnv) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("keys %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

func noToken(t *testing.T, s string) {
	t.Helper()
	for _, tok := range tokens {
		if strings.Contains(s, tok) {
			t.Errorf("output contains an admin token: %q", s)
		}
	}
}

// refused checks the refusal contract: exit 1, nothing on stdout, exactly one line on
// stderr, starting "keygate keys <sub>: " and containing want.
func refused(t *testing.T, r result, sub, want string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("exit status %d, want 1", r.code)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr = %q, want exactly one line", r.stderr)
	}
	prefix := "keygate keys " + sub + ": "
	if sub == "" {
		prefix = "keygate keys: "
	}
	if !strings.HasPrefix(r.stderr, prefix) || !strings.Contains(r.stderr, want) {
		t.Errorf("stderr = %q, want %q… containing %q", r.stderr, prefix, want)
	}
}

func (e *cliEnv) createKey(name string, extra ...string) (admin.Key, string) {
	e.t.Helper()
	r := e.ok(append([]string{"create", "--json", "--instance", instanceID, "--name", name}, extra...)...)
	var k admin.Key
	if err := json.Unmarshal([]byte(r.stdout), &k); err != nil {
		e.t.Fatalf("create --json printed %q: %v", r.stdout, err)
	}
	return k, k.Secret
}

func TestKeysCreatePrintsOnlyTheSecret(t *testing.T) {
	e := newCLIEnv(t)
	r := e.ok("create", "--instance", instanceID, "--name", "CI deploy")
	secret := strings.TrimSuffix(r.stdout, "\n")
	if r.stdout != secret+"\n" || strings.Contains(secret, "\n") {
		t.Fatalf("stdout = %q, want the secret and one newline", r.stdout)
	}
	if env, err := apikey.Parse(secret); err != nil || env != apikey.Sandbox {
		t.Fatalf("stdout %q is not a sandbox key: %v", secret, err)
	}
	keys, _, err := e.store.ListKeys(context.Background(), instanceID, store.ListOptions{Limit: 10})
	if err != nil || len(keys) != 1 {
		t.Fatalf("store holds %d keys, %v", len(keys), err)
	}
	k := keys[0]
	t.Logf("keys create, stderr:\n%s", r.stderr)
	if k.Hash != apikey.Hash(sha256.Sum256([]byte(secret))) {
		t.Error("the printed secret is not the stored key's")
	}
	for _, want := range []string{k.ID, `"CI deploy"`, instanceID, apikey.DisplayPrefix(secret) + "…", "expires: Never", "shown only once"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("summary %q lacks %q", r.stderr, want)
		}
	}
	if strings.Contains(r.stderr, secret) {
		t.Error("the summary on stderr repeats the secret")
	}
}

func TestKeysCreateJSON(t *testing.T) {
	e := newCLIEnv(t)
	date := time.Now().UTC().AddDate(0, 0, 2).Format("2006-01-02")
	r := e.ok("--json", "create", "--instance", instanceID, "--name", "scripted", "--expires", date)
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing with --json", r.stderr)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("stdout is not JSON: %q", r.stdout)
	}
	for _, field := range []string{"object", "id", "instance", "environment", "name", "prefix", "status", "created_at", "expires_at", "revoked_at", "last_used_at", "scopes", "allowed_ips", "metadata", "secret"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("key object lacks %q: %s", field, r.stdout)
		}
	}
	var k admin.Key
	json.Unmarshal([]byte(r.stdout), &k)
	if _, err := apikey.Parse(k.Secret); err != nil {
		t.Errorf("secret %q does not parse: %v", k.Secret, err)
	}
	if k.Object != "api_key" || k.Name != "scripted" || k.Instance != instanceID || k.Environment != "sandbox" || k.Status != "active" ||
		!strings.HasPrefix(k.Secret, k.Prefix) || k.ExpiresAt == nil || k.ExpiresAt.Format(time.RFC3339) != date+"T00:00:00Z" {
		t.Errorf("key = %+v", k)
	}
}

func TestKeysListTable(t *testing.T) {
	e := newCLIEnv(t)
	date := time.Now().UTC().AddDate(0, 0, 2).Format("2006-01-02")
	never, s1 := e.createKey("never expires")
	dated, s2 := e.createKey("dated", "--expires", date)
	used := time.Now().UTC().Add(-time.Minute).Truncate(time.Millisecond)
	if err := e.store.TouchKey(context.Background(), instanceID, dated.ID, used); err != nil {
		t.Fatal(err)
	}

	r := e.ok("list", "--instance", instanceID)
	t.Logf("keys list:\n%s", r.stdout)
	for _, s := range []string{s1, s2} {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Fatal("list output contains a secret")
		}
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table = %q, want a header and two rows", r.stdout)
	}
	header := regexp.MustCompile(`^ID +NAME +KEY +STATUS +EXPIRES +CREATED +LAST USED +RESTRICTED +LIMITS$`)
	if !header.MatchString(lines[0]) {
		t.Errorf("header = %q", lines[0])
	}
	// Newest first: the dated key, then the one that never expires.
	row := func(k admin.Key, rest string) *regexp.Regexp {
		return regexp.MustCompile("^" + k.ID + " +" + regexp.QuoteMeta(k.Name) + " +" + regexp.QuoteMeta(k.Prefix+"…") + " +active +" + rest + "$")
	}
	created := `\d{4}-\d\d-\d\d \d\d:\d\d UTC`
	if !row(dated, date+" +"+created+" +"+regexp.QuoteMeta(used.Format("2006-01-02 15:04 UTC"))+" +- +-").MatchString(lines[1]) {
		t.Errorf("row 1 = %q", lines[1])
	}
	if !row(never, "Never +"+created+" +Never +- +-").MatchString(lines[2]) {
		t.Errorf("row 2 = %q", lines[2])
	}
	if !regexp.MustCompile(`sk_test_[0-9A-Za-z]{6}…`).MatchString(lines[2]) {
		t.Errorf("row 2 = %q, want the masked prefix sk_test_xxxxxx…", lines[2])
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q", r.stderr)
	}

	// A status filter with nothing to show says so on stderr.
	r = e.ok("list", "--instance", instanceID, "--status", "revoked")
	if r.stdout != "" || r.stderr != "No revoked keys in acme-sandbox.\n" {
		t.Errorf("empty list: stdout %q stderr %q", r.stdout, r.stderr)
	}
	refused(t, e.run("list", "--instance", instanceID, "--status", "bogus"), "list", "invalid_request")
}

func TestKeysListPagesThroughEverything(t *testing.T) {
	e := newCLIEnv(t)
	var ids []string
	for i := range 5 {
		k, _ := e.createKey("k" + string(rune('a'+i)))
		ids = append([]string{k.ID}, ids...) // newest first
	}
	runPaged := func(args ...string) result {
		var out, errOut bytes.Buffer
		c := &keysCLI{getenv: func(k string) string { return e.env[k] }, stdout: &out, stderr: &errOut, pageSize: 2}
		code := c.run(args)
		return result{code, out.String(), errOut.String()}
	}

	r := runPaged("list", "--instance", instanceID)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] {
		got = append(got, strings.Fields(line)[0])
	}
	if strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Errorf("table ids = %v, want all five newest first %v", got, ids)
	}

	r = runPaged("list", "--json", "--instance", instanceID)
	var all admin.List[admin.Key]
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || r.code != 0 {
		t.Fatalf("list --json: %v, %q", err, r.stdout)
	}
	if all.Object != "list" || all.HasMore || len(all.Data) != 5 || all.Data[0].ID != ids[0] || all.Data[4].ID != ids[4] {
		t.Errorf("list --json = %+v", all)
	}
	if strings.Count(r.stdout, `"object": "list"`) != 1 {
		t.Errorf("want one list object, got %s", r.stdout)
	}

	// --limit: one page, and where the next starts.
	r = e.ok("list", "--json", "--instance", instanceID, "--limit", "2")
	var page admin.List[admin.Key]
	json.Unmarshal([]byte(r.stdout), &page)
	if len(page.Data) != 2 || !page.HasMore || page.Data[1].ID != ids[1] {
		t.Errorf("--limit 2 = %+v", page)
	}
	r = e.ok("list", "--instance", instanceID, "--limit", "2", "--starting-after", ids[1])
	if !strings.Contains(r.stdout, ids[2]) || !strings.Contains(r.stdout, ids[3]) || strings.Contains(r.stdout, ids[1]) {
		t.Errorf("second page = %q", r.stdout)
	}
	if r.stderr != "More keys follow: add --starting-after "+ids[3]+" for the next page.\n" {
		t.Errorf("stderr = %q", r.stderr)
	}
	refused(t, e.run("list", "--instance", instanceID, "--limit", "0"), "list", "--limit must be from 1 to 1000")
	refused(t, e.run("list", "--instance", instanceID, "--limit", "x"), "list", `invalid argument "x" for "--limit"`)
	refused(t, e.run("list", "--instance", instanceID, "--starting-after", ids[1]), "list", "--starting-after needs --limit")
}

func TestKeysRevoke(t *testing.T) {
	e := newCLIEnv(t)
	k, _ := e.createKey("to revoke")
	r := e.ok("revoke", "--instance", instanceID, k.ID)
	if r.stdout != "revoked "+k.ID+" (to revoke)\n" || r.stderr != "" {
		t.Errorf("revoke: stdout %q stderr %q", r.stdout, r.stderr)
	}
	first, err := e.store.Key(context.Background(), instanceID, k.ID)
	if err != nil || first.Status(time.Now()) != store.StatusRevoked {
		t.Fatalf("stored key %+v, %v: want revoked", first, err)
	}

	// Again: still a success, same revoked_at.
	r = e.ok("revoke", k.ID, "--instance", instanceID, "--json")
	var again admin.Key
	if err := json.Unmarshal([]byte(r.stdout), &again); err != nil {
		t.Fatalf("revoke --json printed %q", r.stdout)
	}
	if again.Status != "revoked" || again.RevokedAt == nil || !again.RevokedAt.Equal(first.RevokedAt) || again.Secret != "" {
		t.Errorf("second revoke = %+v", again)
	}

	r = e.ok("list", "--instance", instanceID)
	if !regexp.MustCompile(`(?m)^` + k.ID + ` +to revoke +\S+ +revoked `).MatchString(r.stdout) {
		t.Errorf("list after revoke = %q", r.stdout)
	}

	refused(t, e.run("revoke", "--instance", instanceID), "revoke", "KEY_ID argument is required")
	refused(t, e.run("revoke", "--instance", instanceID, k.ID, k.ID), "revoke", "one KEY_ID is expected")
	refused(t, e.run("revoke", "--instance", instanceID, "key_"+strings.Repeat("0", 24)), "revoke", "api_key_not_found")
}

func TestKeysRoll(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	old, oldSecret := e.createKey("rolled", "--expires", time.Now().UTC().AddDate(0, 0, 3).Format("2006-01-02"))

	before := time.Now()
	r := e.ok("roll", "--instance", instanceID, old.ID, "--grace", "24h")
	secret := strings.TrimSuffix(r.stdout, "\n")
	t.Logf("keys roll, stderr:\n%s", r.stderr)
	if _, err := apikey.Parse(secret); err != nil || r.stdout != secret+"\n" {
		t.Fatalf("roll stdout = %q, want the new secret alone", r.stdout)
	}
	if secret == oldSecret {
		t.Fatal("the rolled key has the old secret")
	}
	if !strings.Contains(r.stderr, "Rolled "+old.ID+" into key_") || !strings.Contains(r.stderr, "The old key "+old.ID+" keeps working until about ") ||
		!strings.Contains(r.stderr, "(grace 24h)") || !strings.Contains(r.stderr, "shown only once") {
		t.Errorf("roll summary = %q", r.stderr)
	}
	stored, err := e.store.Key(ctx, instanceID, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := stored.ExpiresAt.Sub(before.Add(24 * time.Hour)); d < -time.Second || d > 10*time.Second {
		t.Errorf("old key expires at %v, want about now+24h (%v)", stored.ExpiresAt, before.Add(24*time.Hour))
	}
	l, err := e.store.LookupHash(ctx, sha256.Sum256([]byte(secret)))
	if err != nil || l.Status(time.Now()) != store.StatusActive {
		t.Errorf("new key lookup = %+v, %v", l, err)
	}

	// --json, no grace: the old key stops at once.
	r = e.ok("roll", "--json", "--instance", instanceID, l.ID)
	var next admin.Key
	if err := json.Unmarshal([]byte(r.stdout), &next); err != nil || r.stderr != "" {
		t.Fatalf("roll --json: %q %q", r.stdout, r.stderr)
	}
	if _, err := apikey.Parse(next.Secret); err != nil || next.Secret == secret || next.Name != "rolled" || next.ID == l.ID {
		t.Errorf("roll --json = %+v", next)
	}
	prev, _ := e.store.Key(ctx, instanceID, l.ID)
	if prev.Status(time.Now()) != store.StatusExpired {
		t.Errorf("after a roll without grace the old key is %s", prev.Status(time.Now()))
	}

	for _, tt := range []struct{ grace, want string }{
		{"169h", "at most 168h"},
		{"-1s", "must not be negative"},
		{"1.5s", "whole number of seconds"},
		{"tomorrow", `--grace "tomorrow" is not a duration`},
		{"7d", "is not a duration"},
	} {
		refused(t, e.run("roll", "--instance", instanceID, next.ID, "--grace", tt.grace), "roll", tt.want)
	}
	refused(t, e.run("roll", "--instance", instanceID, l.ID), "roll", "invalid_request") // already expired
	if got := e.ok("roll", "--instance", instanceID, next.ID, "--grace", "168h"); !strings.Contains(got.stderr, "(grace 168h)") {
		t.Errorf("168h summary = %q", got.stderr)
	}
}

func TestKeysRefusals(t *testing.T) {
	e := newCLIEnv(t)
	k, _ := e.createKey("existing")
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close()

	tests := []struct {
		name string
		env  map[string]string
		args []string
		sub  string
		want string
	}{
		{"missing token", with(envAdminURL, e.url), []string{"list", "--instance", instanceID}, "list", "NORA_ADMIN_TOKEN is not set"},
		{"blank token", with(envAdminURL, e.url, envToken, "  "), []string{"create", "--instance", instanceID, "--name", "x"}, "create", "NORA_ADMIN_TOKEN is not set"},
		{"wrong token", with(envAdminURL, e.url, envToken, wrongToken), []string{"list", "--instance", instanceID}, "list", "unauthorized"},
		{"token without apiKey.create", with(envAdminURL, e.url, envToken, readToken), []string{"create", "--instance", instanceID, "--name", "x"}, "create", "forbidden"},
		{"token without apiKey.delete", with(envAdminURL, e.url, envToken, readToken), []string{"revoke", "--instance", instanceID, k.ID}, "revoke", "forbidden"},
		{"unknown instance", e.env, []string{"create", "--instance", "nope", "--name", "x"}, "create", "instance_not_found"},
		{"unknown instance list", e.env, []string{"list", "--instance", "nope"}, "list", "instance_not_found"},
		{"past expiry", e.env, []string{"create", "--instance", instanceID, "--name", "x", "--expires", "2001-01-01"}, "create", "invalid_expiration"},
		{"today", e.env, []string{"create", "--instance", instanceID, "--name", "x", "--expires", time.Now().UTC().Format("2006-01-02")}, "create", "invalid_expiration"},
		{"bad expiry", e.env, []string{"create", "--instance", instanceID, "--name", "x", "--expires", "next week"}, "create", "invalid_expiration"},
		{"name too long", e.env, []string{"create", "--instance", instanceID, "--name", strings.Repeat("n", 101)}, "create", "invalid_request"},
		{"unreachable --admin", e.env, []string{"list", "--admin", deadURL, "--instance", instanceID}, "list", "cannot reach the admin endpoint at " + deadURL + ": connection refused"},
		{"unreachable NORA_ADMIN_URL", with(envToken, allToken, envAdminURL, deadURL), []string{"revoke", "--instance", instanceID, k.ID}, "revoke", "cannot reach the admin endpoint at " + deadURL},
		{"bad --admin", e.env, []string{"list", "--admin", "localhost:9180", "--instance", instanceID}, "list", "admin URL"},
		{"missing --instance", e.env, []string{"list"}, "list", "--instance is required"},
		{"missing --name", e.env, []string{"create", "--instance", instanceID}, "create", "--name is required"},
		{"stray argument", e.env, []string{"create", "--instance", instanceID, "--name", "x", "extra"}, "create", `unexpected argument "extra"`},
		{"unknown flag", e.env, []string{"create", "--instance", instanceID, "--token", allToken}, "create", "unknown flag: --token"},
		{"flag without value", e.env, []string{"list", "--instance"}, "list", "flag needs an argument"},
		{"unknown subcommand", e.env, []string{"delete", k.ID}, "", `unknown command "delete"`},
		{"unknown group flag", e.env, []string{"--verbose", "list"}, "", "unknown flag: --verbose"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.runWith(tt.env, tt.args...)
			refused(t, r, tt.sub, tt.want)
		})
	}

	// Nothing was written by any refusal.
	keys, _, _ := e.store.ListKeys(context.Background(), instanceID, store.ListOptions{Limit: 10})
	if len(keys) != 1 {
		t.Errorf("store holds %d keys after refusals, want 1", len(keys))
	}
}

func TestKeysAdminURL(t *testing.T) {
	e := newCLIEnv(t)
	// --admin wins over NORA_ADMIN_URL.
	env := map[string]string{envToken: allToken, envAdminURL: "http://127.0.0.1:1"}
	if r := e.runWith(env, "list", "--admin", e.url+"/", "--instance", instanceID); r.code != 0 {
		t.Errorf("--admin: exit %d %q", r.code, r.stderr)
	}
	// No flag, no variable: localhost:9180.
	r := e.runWith(map[string]string{envToken: allToken}, "list", "--instance", instanceID)
	if r.code != 1 || !strings.Contains(r.stderr, "http://localhost:9180") {
		t.Errorf("default URL: %+v", r)
	}
}

func TestKeysHelp(t *testing.T) {
	e := newCLIEnv(t)
	for _, args := range [][]string{{}, {"--help"}, {"help", "roll"}, {"roll", "--help"}} {
		r := e.runWith(map[string]string{}, args...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("keys %v: %+v", args, r)
		}
	}
	if r := e.runWith(map[string]string{}, "roll", "--help"); !strings.Contains(r.stdout, "--grace") {
		t.Errorf("roll --help = %q", r.stdout)
	}
}

func TestTableHelpers(t *testing.T) {
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	for _, tt := range []struct {
		t    *time.Time
		want string
	}{
		{nil, "Never"},
		{at("2030-01-02T00:00:00Z"), "2030-01-02"},
		{at("2030-01-02T01:00:00+01:00"), "2030-01-02"},
		{at("2030-01-02T13:45:10Z"), "2030-01-02 13:45 UTC"},
	} {
		if got := fmtExpiry(tt.t); got != tt.want {
			t.Errorf("fmtExpiry(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 45 * time.Second: "45s", time.Hour + time.Second: "1h0m1s", 30 * time.Minute: "30m",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
	if got := clean("a\x1b[31mb\u202ec\nd"); got != "a\uFFFD[31mb\uFFFDc\uFFFDd" {
		t.Errorf("clean = %q", got)
	}
	if got := oneLine("a\nb\r\n  c"); got != "a b c" {
		t.Errorf("oneLine = %q", got)
	}
	var buf bytes.Buffer
	err := writeKeyTable(&buf, []admin.Key{{ID: "key_1", Name: "evil\x1b]0;x\x07", Prefix: "sk_test_abc123", Status: "active"}})
	if err != nil || strings.ContainsAny(buf.String(), "\x1b\x07") {
		t.Errorf("table = %q, %v", buf.String(), err)
	}
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestKeysCreateLostSecretNamesTheKey(t *testing.T) {
	e := newCLIEnv(t)
	var errOut bytes.Buffer
	code := runKeys([]string{"create", "--instance", instanceID, "--name", "x"}, e.env, failWriter{}, &errOut)
	if code != 1 || strings.Count(errOut.String(), "\n") != 1 ||
		!regexp.MustCompile(`^keygate keys create: writing the secret: broken pipe; key `+keyIDFormat+` was created but its secret is lost: revoke it\n$`).MatchString(errOut.String()) {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

// TestKeysBinary builds the real keygate binary and runs it: the command is registered
// with Caddy's command line, and exit statuses and stderr hold there too.
func TestKeysBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	bin := filepath.Join(t.TempDir(), "keygate")
	build := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e := newCLIEnv(t)
	run := func(token string, args ...string) result {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"keys"}, args...)...)
		env := []string{}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "NORA_") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, envAdminURL+"="+e.url)
		if token != "" {
			cmd.Env = append(cmd.Env, envToken+"="+token)
		}
		cmd.Dir = t.TempDir()
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		r := result{code, out.String(), errOut.String()}
		noToken(t, r.stdout+r.stderr)
		return r
	}

	refused(t, run(wrongToken, "list", "--instance", "x"), "list", "unauthorized")
	refused(t, run(allToken, "list", "--instance", "x"), "list", "instance_not_found")
	refused(t, run("", "list", "--instance", instanceID), "list", "NORA_ADMIN_TOKEN is not set")
	refused(t, run(allToken, "roll", "--instance", instanceID, "key_x", "--grace", "8d"), "roll", "--grace")
	refused(t, run(allToken, "list", "--bogus"), "list", "unknown flag: --bogus")
	refused(t, run(allToken, "bogus"), "", `unknown command "bogus"`)

	r := run(allToken, "create", "--instance", instanceID, "--name", "from the binary")
	if r.code != 0 {
		t.Fatalf("create: exit %d, %q", r.code, r.stderr)
	}
	if _, err := apikey.Parse(strings.TrimSuffix(r.stdout, "\n")); err != nil {
		t.Errorf("create stdout = %q", r.stdout)
	}
	r = run(allToken, "list", "--instance", instanceID)
	if r.code != 0 || !strings.Contains(r.stdout, "from the binary") || r.stderr != "" {
		t.Errorf("list: %+v", r)
	}
	if r := run("", "--help"); r.code != 0 || !strings.Contains(r.stdout, "roll") {
		t.Errorf("keys --help: %+v", r)
	}
}

func TestKeysLimits(t *testing.T) {
	e := newCLIEnv(t)
	r := e.ok("create", "--instance", instanceID, "--name", "limited", "--rate-limit", "100/1s", "--quota", "10000/day")
	t.Logf("keys create, stderr:\n%s", r.stderr)
	for _, want := range []string{"rate:    100 requests per 1s", "quota:   10000 per UTC day; 0 used today, resets "} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	keys, _, _ := e.store.ListKeys(context.Background(), instanceID, store.ListOptions{Limit: 10})
	if len(keys) != 1 {
		t.Fatalf("%d keys", len(keys))
	}
	k := keys[0]
	if k.RateLimit == nil || *k.RateLimit != (store.RateLimit{Limit: 100, Window: time.Second}) ||
		k.Quota == nil || *k.Quota != (store.Quota{Limit: 10000, Period: "day"}) {
		t.Fatalf("stored %+v %+v", k.RateLimit, k.Quota)
	}
	// The window spellings.
	for _, c := range []struct {
		flag   string
		limit  int64
		window int64
	}{{"1000/1m", 1000, 60}, {"50/s", 50, 1}, {"7/90s", 7, 90}, {"1/24h", 1, 86400}, {"1000000/day", 1000000, 86400}, {" 5 / 1h ", 5, 3600}} {
		got, _ := e.createKey("w", "--rate-limit", c.flag)
		if got.RateLimit == nil || got.RateLimit.Limit != c.limit || got.RateLimit.WindowSeconds != c.window {
			t.Errorf("--rate-limit %s: %+v", c.flag, got.RateLimit)
		}
	}
	month, _ := e.createKey("m", "--quota", "5/month")
	total, _ := e.createKey("t", "--quota", "1000000000000/total")
	if month.Quota == nil || *month.Quota != (admin.Quota{Limit: 5, Period: "month"}) || month.QuotaUsed == nil || *month.QuotaUsed != 0 || month.QuotaResetsAt == nil {
		t.Errorf("month quota %+v", month)
	}
	if total.Quota == nil || total.Quota.Limit != 1e12 || total.QuotaResetsAt != nil {
		t.Errorf("total quota %+v", total)
	}

	// The LIMITS column.
	r = e.ok("list", "--instance", instanceID)
	t.Logf("keys list:\n%s", r.stdout)
	for _, re := range []string{
		`(?m)^` + k.ID + ` .* +- +100/1s, 0/10000 today$`,
		`(?m)^` + month.ID + ` .* +- +0/5 this month$`,
		`(?m)^` + total.ID + ` .* +- +0/1000000000000 in total$`,
		`(?m) +- +7/1m30s$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("list lacks %s", re)
		}
	}

	// update sets, changes and removes each.
	r = e.ok("update", "--instance", instanceID, k.ID, "--rate-limit", "10/1m", "--no-quota")
	if !strings.Contains(r.stdout, "rate:    10 requests per 1m") || !strings.Contains(r.stdout, "quota:   none") {
		t.Errorf("update output %q", r.stdout)
	}
	stored, _ := e.store.Key(context.Background(), instanceID, k.ID)
	if stored.RateLimit == nil || *stored.RateLimit != (store.RateLimit{Limit: 10, Window: time.Minute}) || stored.Quota != nil {
		t.Errorf("stored %+v %+v", stored.RateLimit, stored.Quota)
	}
	e.ok("update", "--instance", instanceID, k.ID, "--no-rate-limit", "--quota", "3/total")
	stored, _ = e.store.Key(context.Background(), instanceID, k.ID)
	if stored.RateLimit != nil || stored.Quota == nil || *stored.Quota != (store.Quota{Limit: 3, Period: "total"}) {
		t.Errorf("stored %+v %+v", stored.RateLimit, stored.Quota)
	}
	evs, _, _ := e.store.ListEvents(context.Background(), instanceID, store.ListOptions{Limit: 1})
	if len(evs) != 1 || strings.Join(evs[0].Fields, "+") != "rate_limit+quota" {
		t.Errorf("last event %+v", evs)
	}
}

func TestKeysLimitsRefused(t *testing.T) {
	e := newCLIEnv(t)
	k, _ := e.createKey("target", "--rate-limit", "5/1s")
	before := e.snapshotLimits()
	create := func(args ...string) []string {
		return append([]string{"create", "--instance", instanceID, "--name", "x"}, args...)
	}
	update := func(args ...string) []string {
		return append([]string{"update", "--instance", instanceID, k.ID}, args...)
	}
	for _, tt := range []struct {
		args      []string
		sub, want string
	}{
		{create("--rate-limit", "100"), "create", `--rate-limit "100" is not N/DURATION`},
		{create("--rate-limit", ""), "create", `--rate-limit "" is not N/DURATION`},
		{create("--rate-limit", "0/1s"), "create", "from 1 to 1000000"},
		{create("--rate-limit", "1000001/1s"), "create", "from 1 to 1000000"},
		{create("--rate-limit", "1.5/1s"), "create", "is not N/DURATION"},
		{create("--rate-limit", "-1/1s"), "create", "from 1 to 1000000"},
		{create("--rate-limit", "10/0s"), "create", "the window must be a whole number of seconds from 1s to 24h"},
		{create("--rate-limit", "10/500ms"), "create", "the window must be"},
		{create("--rate-limit", "10/1500ms"), "create", "the window must be"},
		{create("--rate-limit", "10/24h1s"), "create", "the window must be"},
		{create("--rate-limit", "10/week"), "create", "is not N/DURATION"},
		{create("--rate-limit", "ten/1s"), "create", "is not N/DURATION"},
		{create("--rate-limit", strings.Repeat("9", 200)+"/1s"), "create", "is not N/DURATION"},
		{create("--quota", "100"), "create", `--quota "100" is not N/day, N/month or N/total`},
		{create("--quota", "100/week"), "create", `quota.period must be "day", "month" or "total"`},
		{create("--quota", "0/day"), "create", "quota.limit must be from 1 to 1000000000000"},
		{create("--quota", "1000000000001/day"), "create", "quota.limit must be from 1"},
		{create("--quota", "1.5/day"), "create", "is not N/day"},
		{create("--no-quota"), "create", "unknown flag: --no-quota"},
		{create("--no-rate-limit"), "create", "unknown flag: --no-rate-limit"},
		{update("--rate-limit", "10/1s", "--no-rate-limit"), "update", "--rate-limit and --no-rate-limit cannot be used together"},
		{update("--quota", "10/day", "--no-quota"), "update", "--quota and --no-quota cannot be used together"},
		{update("--rate-limit", "10/1d"), "update", "is not N/DURATION"},
		{update("--quota", "x/day"), "update", "is not N/day"},
		{update("--no-quota=perhaps"), "update", "invalid argument"},
	} {
		r := e.run(tt.args...)
		refused(t, r, tt.sub, tt.want)
		if strings.Contains(r.stderr, strings.Repeat("9", 100)) {
			t.Errorf("the error repeats the value: %q", r.stderr)
		}
	}
	if after := e.snapshotLimits(); after != before {
		t.Errorf("refused commands wrote:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// snapshotLimits is the store's keys with their limits, and the number of events.
func (e *cliEnv) snapshotLimits() string {
	e.t.Helper()
	ctx := context.Background()
	keys, _, err := e.store.ListKeys(ctx, instanceID, store.ListOptions{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	evs, _, _ := e.store.ListEvents(ctx, instanceID, store.ListOptions{Limit: 1000})
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k.ID + " " + k.Name)
		if k.RateLimit != nil {
			b.WriteString(" rate " + k.RateLimit.Window.String())
		}
		if k.Quota != nil {
			b.WriteString(" quota " + k.Quota.Period)
		}
		b.WriteString("\n")
	}
	return b.String() + strings.Repeat("e", len(evs))
}
