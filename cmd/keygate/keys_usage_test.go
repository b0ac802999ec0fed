package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/store"
)

func TestKeysUsage(t *testing.T) {
	e := newCLIEnv(t)
	k, _ := e.createKey("metered")
	other, _ := e.createKey("other")
	now := time.Now().UTC()
	recent := now.Add(-10 * time.Minute).Truncate(time.Minute)
	old := now.Add(-30 * time.Hour).Truncate(time.Minute)
	if err := e.store.AddUsage(context.Background(), []store.UsageCount{
		{Instance: instanceID, KeyID: k.ID, Minute: recent, OK: 1234, Refused: map[string]int64{"api_key_revoked": 3, "rate_limit_exceeded": 50}},
		{Instance: instanceID, KeyID: k.ID, Minute: old, OK: 7},
		{Instance: instanceID, KeyID: other.ID, Minute: recent, OK: 99},
	}); err != nil {
		t.Fatal(err)
	}

	// Default: the last 24 hours, by hour; the old count is outside.
	r := e.ok("usage", "--instance", instanceID, k.ID)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if !strings.HasPrefix(lines[0], "START") || !strings.Contains(lines[0], "BY CODE") {
		t.Fatalf("header %q", lines[0])
	}
	if n := len(lines) - 2; n != 24 && n != 25 {
		t.Fatalf("%d rows for 24 h by hour:\n%s", n, r.stdout)
	}
	if want := "total: 1,234 let through, 53 refused (rate_limit_exceeded 50, api_key_revoked 3)"; lines[len(lines)-1] != want {
		t.Fatalf("last line %q, want %q", lines[len(lines)-1], want)
	}
	row := recent.Truncate(time.Hour).Format("2006-01-02 15:04Z")
	if !strings.Contains(r.stdout, row) || !strings.Contains(r.stdout, "1,234") {
		t.Fatalf("no row %s with 1,234:\n%s", row, r.stdout)
	}

	// --since 2d by hour takes the old count too; 2h is by minute; --json is the usage object.
	r = e.ok("usage", "--instance", instanceID, k.ID, "--since", "2d")
	if !strings.HasSuffix(strings.TrimSpace(r.stdout), "total: 1,241 let through, 53 refused (rate_limit_exceeded 50, api_key_revoked 3)") {
		t.Fatalf("--since 2d:\n%s", r.stdout)
	}
	r = e.ok("usage", "--json", "--instance", instanceID, k.ID, "--since", "2h")
	var u admin.Usage
	if err := json.Unmarshal([]byte(r.stdout), &u); err != nil {
		t.Fatal(err)
	}
	if u.Granularity != "minute" || len(u.Data) < 120 || u.Total.OK != 1234 || u.KeyID == nil || *u.KeyID != k.ID {
		t.Fatalf("--json --since 2h: granularity %s, %d buckets, total %+v", u.Granularity, len(u.Data), u.Total)
	}
	r = e.ok("usage", "--json", "--instance", instanceID, k.ID, "--since", "30d")
	if err := json.Unmarshal([]byte(r.stdout), &u); err != nil || u.Granularity != "day" || u.Total.OK != 1241 {
		t.Fatalf("--since 30d: %s %+v (%v)", u.Granularity, u.Total, err)
	}
	r = e.ok("usage", "--instance", instanceID, k.ID, "--since", "30d", "--granularity", "hour")
	if !strings.Contains(r.stdout, ":00Z") {
		t.Fatalf("--granularity hour printed no hours:\n%.300s", r.stdout)
	}
	// The read-only token may read usage.
	if r := e.runWith(map[string]string{envToken: readToken, envAdminURL: e.url}, "usage", "--instance", instanceID, other.ID); r.code != 0 || !strings.Contains(r.stdout, "total: 99 let through") {
		t.Fatalf("the read-only token: %+v", r)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"usage", "--instance", instanceID}, "KEY_ID"},
		{[]string{"usage", k.ID}, "--instance"},
		{[]string{"usage", "--instance", instanceID, k.ID, "--since", "0s"}, "--since"},
		{[]string{"usage", "--instance", instanceID, k.ID, "--since", "91d"}, "90d"},
		{[]string{"usage", "--instance", instanceID, k.ID, "--since", "yesterday"}, "--since"},
		{[]string{"usage", "--instance", instanceID, k.ID, "--granularity", "week"}, "--granularity"},
		{[]string{"usage", "--instance", instanceID, k.ID, "--since", "72h", "--granularity", "minute"}, "buckets"},
		{[]string{"usage", "--instance", instanceID, "key_000000000000000000000000"}, "No such API key"},
	} {
		refused(t, e.run(tc.args...), "usage", tc.want)
	}
}
