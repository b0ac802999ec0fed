package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/store"
)

// snapshot is what the store holds of the instance's keys and events, to check that a
// refusal wrote nothing.
func (e *cliEnv) snapshot() string {
	e.t.Helper()
	ctx := context.Background()
	keys, _, err := e.store.ListKeys(ctx, instanceID, store.ListOptions{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	evs, _, err := e.store.ListEvents(ctx, instanceID, store.ListOptions{Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %q %d %q %v %v\n", k.ID, k.Name, store.Millis(k.ExpiresAt), k.Scopes, k.AllowedIPs, k.Metadata)
	}
	fmt.Fprintf(&b, "%d events\n", len(evs))
	return b.String()
}

func TestKeysCreateRestricted(t *testing.T) {
	e := newCLIEnv(t)
	r := e.ok("create", "--instance", instanceID, "--name", "narrow", "--scope", "charges:read", "--scope", "refunds:*",
		"--allow-ip", "192.0.2.7", "--allow-ip", "10.0.0.0/8", "--meta", "customer=cus_1", "--meta", "note=a=b, c")
	t.Logf("keys create, stderr:\n%s", r.stderr)
	for _, want := range []string{"scopes:  charges:read, refunds:*", "from:    192.0.2.7, 10.0.0.0/8", "meta:    customer=cus_1, note=a=b, c"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	keys, _, _ := e.store.ListKeys(context.Background(), instanceID, store.ListOptions{Limit: 10})
	if len(keys) != 1 {
		t.Fatalf("%d keys", len(keys))
	}
	k := keys[0]
	if !slices.Equal(k.Scopes, []string{"charges:read", "refunds:*"}) || len(k.AllowedIPs) != 2 ||
		k.AllowedIPs[1].String() != "10.0.0.0/8" || k.Metadata["note"] != "a=b, c" || k.Metadata["customer"] != "cus_1" {
		t.Errorf("stored %+v", k)
	}

	// --json prints the fields; an unrestricted key shows null, null, {}.
	plain, _ := e.createKey("plain")
	if plain.Scopes != nil || plain.AllowedIPs != nil || plain.Metadata == nil || len(plain.Metadata) != 0 {
		t.Errorf("plain key %+v", plain)
	}
	r = e.ok("create", "--json", "--instance", instanceID, "--name", "j", "--scope", "a")
	var raw map[string]any
	json.Unmarshal([]byte(r.stdout), &raw)
	if s, _ := raw["scopes"].([]any); len(s) != 1 || s[0] != "a" || raw["allowed_ips"] != nil {
		t.Errorf("create --json = %s", r.stdout)
	}

	// The table marks restricted keys.
	r = e.ok("list", "--instance", instanceID)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 4 || !regexp.MustCompile(`  1 scope +-$`).MatchString(lines[1]) || !regexp.MustCompile(`Never +- +-$`).MatchString(lines[2]) || !strings.HasSuffix(lines[3], "  2 scopes, 2 ips  -") {
		t.Errorf("table = %q", r.stdout)
	}
}

func TestKeysCreateRestrictedRefused(t *testing.T) {
	e := newCLIEnv(t)
	base := []string{"create", "--instance", instanceID, "--name", "x"}
	many := func(flag string, n int, f func(int) string) []string {
		var out []string
		for i := range n {
			out = append(out, flag, f(i))
		}
		return out
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--scope", "Charges"}, `--scope: scope "Charges" is malformed`},
		{[]string{"--scope", ""}, "--scope: scope"},
		{[]string{"--scope", "a", "--scope", "a"}, "listed twice"},
		{many("--scope", 51, func(i int) string { return fmt.Sprintf("s%d", i) }), "1 to 50 scopes"},
		{[]string{"--allow-ip", "10.0.0.256"}, `--allow-ip: allowed_ips: "10.0.0.256" is not`},
		{[]string{"--allow-ip", "example.com"}, "is not an IPv4 or IPv6 address"},
		{many("--allow-ip", 101, func(i int) string { return fmt.Sprintf("10.0.0.%d", i) }), "1 to 100 addresses"},
		{[]string{"--meta", "novalue"}, `--meta "novalue" is not NAME=VALUE`},
		{[]string{"--meta", "=v"}, "is not NAME=VALUE"},
		{[]string{"--meta", "bad name=v"}, "metadata name"},
		{[]string{"--meta", "a=1", "--meta", "a=2"}, "--meta a is given twice"},
		{[]string{"--meta", "a=" + strings.Repeat("v", 501)}, "longer than 500"},
		{many("--meta", 21, func(i int) string { return fmt.Sprintf("k%d=v", i) }), "at most 20 values"},
		{[]string{"--no-scopes"}, "unknown flag: --no-scopes"},
	} {
		r := e.run(append(base, tt.args...)...)
		refused(t, r, "create", tt.want)
		if strings.Contains(r.stderr, strings.Repeat("v", 100)) {
			t.Errorf("the error repeats the value: %q", r.stderr)
		}
	}
	if keys, _, _ := e.store.ListKeys(context.Background(), instanceID, store.ListOptions{Limit: 10}); len(keys) != 0 {
		t.Errorf("%d keys created by refused commands", len(keys))
	}
}

func TestKeysUpdate(t *testing.T) {
	e := newCLIEnv(t)
	k, _ := e.createKey("before", "--scope", "a", "--meta", "m=1")
	date := time.Now().UTC().AddDate(0, 0, 4).Format("2006-01-02")

	r := e.ok("update", "--instance", instanceID, k.ID, "--name", "after", "--expires", date,
		"--scope", "charges:read", "--scope", "charges:write", "--allow-ip", "2001:db8::/48", "--meta", "tier=gold")
	t.Logf("keys update:\n%s", r.stdout)
	if !strings.HasPrefix(r.stdout, "updated "+k.ID+" (after)\n") || r.stderr != "" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	for _, want := range []string{"expires: " + date, "scopes:  charges:read, charges:write", "from:    2001:db8::/48", "meta:    tier=gold"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("update output lacks %q", want)
		}
	}
	stored, err := e.store.Key(context.Background(), instanceID, k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Name != "after" || stored.ExpiresAt.Format("2006-01-02") != date || !slices.Equal(stored.Scopes, []string{"charges:read", "charges:write"}) ||
		len(stored.AllowedIPs) != 1 || len(stored.Metadata) != 1 || stored.Metadata["tier"] != "gold" {
		t.Errorf("stored %+v", stored)
	}

	// One flag changes one field; the rest stays.
	r = e.ok("update", "--json", "--instance", instanceID, k.ID, "--no-scopes")
	var got admin.Key
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("update --json printed %q", r.stdout)
	}
	if got.Scopes != nil || got.Name != "after" || got.ExpiresAt == nil || len(got.AllowedIPs) != 1 || got.Metadata["tier"] != "gold" {
		t.Errorf("after --no-scopes: %+v", got)
	}
	e.ok("update", "--instance", instanceID, k.ID, "--any-ip", "--no-meta", "--expires", "never")
	stored, _ = e.store.Key(context.Background(), instanceID, k.ID)
	if stored.AllowedIPs != nil || len(stored.Metadata) != 0 || !stored.ExpiresAt.IsZero() || stored.Scopes != nil || stored.Name != "after" {
		t.Errorf("after --any-ip --no-meta --expires never: %+v", stored)
	}
	r = e.ok("list", "--instance", instanceID)
	if !regexp.MustCompile(`(?m)^` + k.ID + ` +after .* Never +- +-$`).MatchString(r.stdout) {
		t.Errorf("list = %q", r.stdout)
	}

	// The events name what changed.
	evs, _, _ := e.store.ListEvents(context.Background(), instanceID, store.ListOptions{Limit: 10})
	var fields []string
	for _, ev := range evs {
		if ev.Type == store.EventKeyUpdated {
			fields = append(fields, strings.Join(ev.Fields, "+"))
			if ev.Actor != "ops" {
				t.Errorf("update event by %q", ev.Actor)
			}
		}
	}
	if want := "expires_at+allowed_ips+metadata scopes name+expires_at+scopes+allowed_ips+metadata"; strings.Join(fields, " ") != want {
		t.Errorf("update events %q, want %q", fields, want)
	}
}

func TestKeysUpdateRefused(t *testing.T) {
	e := newCLIEnv(t)
	k, _ := e.createKey("target", "--scope", "keep")
	gone, _ := e.createKey("revoked")
	e.ok("revoke", "--instance", instanceID, gone.ID)
	before := e.snapshot()
	up := func(args ...string) []string {
		return append([]string{"update", "--instance", instanceID, k.ID}, args...)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{up(), "nothing to update"},
		{up("--name", " "), "--name must not be empty"},
		{up("--expires", ""), "--expires must be a date"},
		{up("--expires", "2001-01-01"), "invalid_expiration"},
		{up("--expires", "soon"), "invalid_expiration"},
		{up("--name", strings.Repeat("n", 101)), "invalid_request"},
		{up("--scope", "a", "--no-scopes"), "--scope and --no-scopes cannot be used together"},
		{up("--allow-ip", "10.0.0.1", "--any-ip"), "--allow-ip and --any-ip cannot be used together"},
		{up("--meta", "a=b", "--no-meta"), "--meta and --no-meta cannot be used together"},
		{up("--scope", "BAD"), "--scope: scope"},
		{up("--allow-ip", "10.0.0.0/40"), "--allow-ip:"},
		{up("--meta", "x"), "is not NAME=VALUE"},
		{up("--no-scopes=maybe"), "invalid argument"},
		{up("--bogus"), "unknown flag: --bogus"},
		{[]string{"update", "--instance", instanceID, "--name", "x"}, "KEY_ID argument is required"},
		{[]string{"update", k.ID, "--name", "x"}, "--instance is required"},
		{[]string{"update", "--instance", instanceID, gone.ID, "--name", "x"}, "api_key_revoked"},
		{[]string{"update", "--instance", instanceID, "key_" + strings.Repeat("0", 24), "--name", "x"}, "api_key_not_found"},
	} {
		refused(t, e.run(tt.args...), "update", tt.want)
	}
	// A token without apiKey.create.
	env := map[string]string{envToken: readToken, envAdminURL: e.url}
	refused(t, e.runWith(env, "update", "--instance", instanceID, k.ID, "--name", "x"), "update", "forbidden")
	if after := e.snapshot(); after != before {
		t.Errorf("refused updates wrote:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
