package e2e

// The OpenAPI description from the outside: a client generated from it by oapi-codegen
// (package openapiclient) drives a real gateway, and stays what the description generates.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/keygate/keygate/e2e/openapiclient"
	"github.com/keygate/keygate/internal/testutil"
)

// client.gen.go is what its //go:generate line makes of docs/openapi.yaml today: a change
// of the description without `go generate ./e2e/openapiclient/` fails here.
func TestOpenAPIClientIsFresh(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("openapiclient", "generate.go"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate "); ok {
			args = strings.Fields(rest)
		}
	}
	// The same command, writing to standard output rather than over client.gen.go.
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-o" {
			args = append(args[:i:i], args[i+2:]...)
			break
		}
	}
	if len(args) < 3 || args[0] != "go" || !strings.Contains(strings.Join(args, " "), "oapi-codegen@v2.8.2") {
		t.Fatalf("openapiclient/generate.go: no //go:generate line running oapi-codegen v2.8.2: %q", args)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "openapiclient"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	generated, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	have, err := os.ReadFile(filepath.Join("openapiclient", "client.gen.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(generated), bytes.TrimSpace(have)) {
		t.Fatal("e2e/openapiclient/client.gen.go is not what docs/openapi.yaml generates: run `go generate ./e2e/openapiclient/`")
	}
}

const (
	openAPIAdminToken = "openapi-e2e-admin-token-0123456789"
	openAPIReadToken  = "openapi-e2e-read-token-0123456789"
)

// A client generated from the description, against a keygate process on a file store:
// create a key, use it at the gateway, list, update, read its usage and events, revoke it,
// and be refused in the shapes the description gives.
func TestOpenAPIClient(t *testing.T) {
	gw, up, adm, caddyAdmin := freePort(t), freePort(t), freePort(t), freePort(t)
	cf := fmt.Sprintf(`{
	admin localhost:%d
	nora {
		store file %s
		instance acme-sandbox sandbox "Acme (sandbox)"
		usage {
			flush_interval 100ms
		}
	}
}
http://127.0.0.1:%d {
	nora_auth
	reverse_proxy 127.0.0.1:%d
}
http://127.0.0.1:%d {
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token %s apiKey.read apiKey.create apiKey.delete instance.manage {
			name openapi-e2e
		}
		token %s apiKey.read
	}
}
`, caddyAdmin, filepath.Join(t.TempDir(), "keys.db"), gw, up, up, adm, openAPIAdminToken, openAPIReadToken)
	g := startGateway(t, cf, gw)
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", adm)
	ctx := context.Background()
	c := openAPIClient(t, adminURL, openAPIAdminToken)
	reader := openAPIClient(t, adminURL, openAPIReadToken)
	testutil.WaitEvery(t, 10*time.Second, 20*time.Millisecond, "the admin endpoint to become healthy", func() bool {
		h, err := c.GetHealthWithResponse(ctx)
		return err == nil && h.JSON200 != nil && h.JSON200.Status == "ok"
	})

	// The description it was generated from is the one the gateway serves.
	doc, err := c.GetOpenAPIWithResponse(ctx)
	if err != nil || doc.YAML200 == nil || doc.YAML200.Openapi != "3.1.0" {
		t.Fatalf("GET /openapi.yaml: %v %+v", err, doc)
	}
	if want, _ := os.ReadFile("../docs/openapi.yaml"); !bytes.Equal(doc.Body, want) {
		t.Fatal("the gateway's /openapi.yaml is not docs/openapi.yaml")
	}

	// Create, and use the key at the gateway.
	scopes := []string{"charges:read"}
	created, err := c.CreateKeyWithResponse(ctx, "acme-sandbox", openapiclient.CreateKeyRequest{
		Name: "generated client", Scopes: &scopes, Metadata: &openapiclient.Metadata{"team": "payments"},
		Quota: &openapiclient.Quota{Limit: 1000, Period: "month"},
	})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("create: %v %s", err, created.Body)
	}
	k := created.JSON201
	if k.Secret == "" || k.Status != "active" || k.QuotaUsed == nil || *k.QuotaUsed != 0 || k.Metadata["team"] != "payments" {
		t.Fatalf("created key: %s", created.Body)
	}
	if a := get(t, g.url+"/charges", k.Secret); a.status != 200 {
		t.Fatalf("the new key at the gateway: %d %s", a.status, a.body)
	}

	// List, and page.
	limit := 10
	list, err := c.ListKeysWithResponse(ctx, "acme-sandbox", &openapiclient.ListKeysParams{Limit: &limit})
	if err != nil || list.JSON200 == nil || len(list.JSON200.Data) != 1 || list.JSON200.Data[0].Id != k.Id || list.JSON200.HasMore {
		t.Fatalf("list: %v %s", err, list.Body)
	}

	// Update: the answer says the one gateway (the file store's whole fleet) applied it.
	name := "generated client, renamed"
	changed, err := c.UpdateKeyWithResponse(ctx, "acme-sandbox", k.Id, openapiclient.UpdateKeyRequest{Name: &name})
	if err != nil || changed.JSON200 == nil || changed.JSON200.Name != name {
		t.Fatalf("update: %v %s", err, changed.Body)
	}
	if p := changed.JSON200.Propagation; p == nil || p.Gateways != 1 || p.Confirmed != 1 {
		t.Fatalf("update: propagation %s", changed.Body)
	}

	// Its usage: the request above, once the gateway has flushed its counts.
	minute := openapiclient.GetKeyUsageParamsGranularity("minute")
	testutil.WaitEvery(t, 15*time.Second, 100*time.Millisecond, "the key's request to show in its usage", func() bool {
		u, err := reader.GetKeyUsageWithResponse(ctx, "acme-sandbox", k.Id, &openapiclient.GetKeyUsageParams{Granularity: &minute})
		if err != nil || u.JSON200 == nil {
			t.Fatalf("usage: %v %s", err, u.Body)
		}
		if n := len(u.JSON200.Data); n != 60 && n != 61 {
			t.Fatalf("usage of the last hour in minutes: %d buckets", n)
		}
		return u.JSON200.Total.Ok == 1 && u.JSON200.KeyId != nil && *u.JSON200.KeyId == k.Id
	})

	// Revoke: the key stops at the gateway.
	revoked, err := c.RevokeKeyWithResponse(ctx, "acme-sandbox", k.Id)
	if err != nil || revoked.JSON200 == nil || revoked.JSON200.Status != "revoked" || revoked.JSON200.RevokedAt == nil {
		t.Fatalf("revoke: %v %s", err, revoked.Body)
	}
	if p := revoked.JSON200.Propagation; p == nil || p.Confirmed != p.Gateways {
		t.Fatalf("revoke: propagation %s", revoked.Body)
	}
	if a := get(t, g.url+"/charges", k.Secret); a.status != 401 || a.Error.Code != "api_key_revoked" {
		t.Fatalf("the revoked key at the gateway: %d %s", a.status, a.body)
	}
	evs, err := reader.ListEventsWithResponse(ctx, "acme-sandbox", nil)
	if err != nil || evs.JSON200 == nil || len(evs.JSON200.Data) != 3 {
		t.Fatalf("events: %v %s", err, evs.Body)
	}
	for i, want := range []openapiclient.EventType{"api_key.revoked", "api_key.updated", "api_key.created"} {
		if ev := evs.JSON200.Data[i]; ev.Type != want || ev.KeyId != k.Id || ev.Actor != "openapi-e2e" {
			t.Fatalf("event %d: %+v, want %s", i, ev, want)
		}
	}

	// Refusals arrive in the typed shapes of the description.
	again, err := c.UpdateKeyWithResponse(ctx, "acme-sandbox", k.Id, openapiclient.UpdateKeyRequest{Name: &name})
	if err != nil || again.JSON409 == nil || again.JSON409.Error.Code != "api_key_revoked" {
		t.Fatalf("update of a revoked key: %v %s", err, again.Body)
	}
	denied, err := reader.CreateKeyWithResponse(ctx, "acme-sandbox", openapiclient.CreateKeyRequest{Name: "no"})
	if err != nil || denied.JSON403 == nil || denied.JSON403.Error.Code != "forbidden" {
		t.Fatalf("create with a read-only token: %v %s", err, denied.Body)
	}
	missing, err := c.GetKeyWithResponse(ctx, "acme-sandbox", "key_000000000000000000000000")
	if err != nil || missing.JSON404 == nil || missing.JSON404.Error.Code != "api_key_not_found" {
		t.Fatalf("get of an unknown key: %v %s", err, missing.Body)
	}
	anonymous := openAPIClient(t, adminURL, "")
	if me, err := anonymous.GetMeWithResponse(ctx); err != nil || me.JSON401 == nil || me.HTTPResponse.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("/v1/me without a token: %v %+v", err, me)
	}
}

// A gateway whose every admin token is unset still serves /healthz and /openapi.yaml, and
// answers the rest 503 admin_disabled, as the description has it.
func TestOpenAPIAdminDisabled(t *testing.T) {
	gw, adm, caddyAdmin := freePort(t), freePort(t), freePort(t)
	cf := fmt.Sprintf(`{
	admin localhost:%d
	nora {
		store file %s
	}
}
http://127.0.0.1:%d {
	nora_auth
	respond "ok"
}
http://127.0.0.1:%d {
	nora_admin {
		token {env.KEYGATE_OPENAPI_E2E_UNSET} apiKey.read
	}
}
`, caddyAdmin, filepath.Join(t.TempDir(), "keys.db"), gw, adm)
	startGateway(t, cf, gw, "KEYGATE_OPENAPI_E2E_UNSET=")
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", adm)
	ctx := context.Background()
	c := openAPIClient(t, adminURL, openAPIAdminToken)
	testutil.WaitEvery(t, 10*time.Second, 20*time.Millisecond, "the admin endpoint to become healthy", func() bool {
		h, err := c.GetHealthWithResponse(ctx)
		return err == nil && h.JSON200 != nil
	})
	doc, err := c.GetOpenAPIWithResponse(ctx)
	if err != nil || doc.YAML200 == nil {
		t.Fatalf("GET /openapi.yaml with the admin endpoint disabled: %v %+v", err, doc)
	}
	me, err := c.GetMeWithResponse(ctx)
	if err != nil || me.JSON503 == nil || me.JSON503.Error.Code != "admin_disabled" {
		t.Fatalf("/v1/me with the admin endpoint disabled: %v %s", err, me.Body)
	}
	// And the answer is the description's, headers included.
	loader := openapi3.NewLoader()
	spec, err := loader.LoadFromData(doc.Body)
	if err != nil {
		t.Fatal(err)
	}
	spec.Servers = openapi3.Servers{{URL: adminURL}}
	router, err := gorillamux.NewRouter(spec)
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := router.FindRoute(me.HTTPResponse.Request)
	if err != nil {
		t.Fatal(err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: me.HTTPResponse.Request, PathParams: params, Route: route},
		Status:                 me.StatusCode(), Header: me.HTTPResponse.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	in.SetBodyBytes(me.Body)
	if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
		t.Fatalf("the admin_disabled answer is not the description's: %v", err)
	}
}

// openAPIClient is a generated client of the admin API at base, sending token ("" none).
func openAPIClient(t *testing.T, base, token string) *openapiclient.ClientWithResponses {
	t.Helper()
	c, err := openapiclient.NewClientWithResponses(base, openapiclient.WithHTTPClient(client),
		openapiclient.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
