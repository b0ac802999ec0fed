package admin_test

// The OpenAPI description (docs/openapi.yaml, served at /openapi.yaml) held to the API: it is
// valid OpenAPI 3.1, it describes exactly the routes the API serves, and every answer the API
// gives (on both stores, errors included) is one it describes, to requests it describes.
//
// kin-openapi does the checking. For a 3.1 document it needs no option: doc.Validate turns
// on JSON Schema 2020-12 for the examples and defaults, and openapi3filter for the requests
// and answers (type arrays with "null", const, unevaluatedProperties, propertyNames).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/internal/admintest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/filestore"
)

// openAPIDoc loads the description the API serves and fails the test unless it is valid.
func openAPIDoc(t testing.TB) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(admin.OpenAPI())
	if err != nil {
		t.Fatalf("loading the OpenAPI description: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableMultiError()); err != nil {
		t.Fatalf("the OpenAPI description is not valid: %v", err)
	}
	return doc
}

func TestOpenAPIValidates(t *testing.T) {
	doc := openAPIDoc(t)
	if doc.OpenAPI != "3.1.0" || !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	ids := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q missing or used twice", method, path, op.OperationID)
			}
			ids[op.OperationID] = true
		}
	}
}

// docs/openapi.yaml is the file readers and generators find; admin/openapi.yaml is the
// copy the binary embeds.
func TestOpenAPIDocsCopyIsTheServedOne(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, admin.OpenAPI()) {
		t.Fatal("docs/openapi.yaml and admin/openapi.yaml differ: edit docs/openapi.yaml, then `go generate ./admin/` copies it")
	}
}

// Every route the API serves is described, and every operation described is served: a route
// added without its description (or the reverse) fails here.
func TestOpenAPIRoutes(t *testing.T) {
	doc := openAPIDoc(t)
	described := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			described[method+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, r := range admin.Routes() {
		served[r] = true
		if !described[r] {
			t.Errorf("the API serves %s, which docs/openapi.yaml does not describe", r)
		}
	}
	for r := range described {
		if !served[r] {
			t.Errorf("docs/openapi.yaml describes %s, which the API does not serve", r)
		}
	}

	// And the mux does serve them: each answers something other than "no such call" and
	// "not this method", while every other method of a described path is 405 with an Allow
	// that lists exactly the described ones.
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := newAPIEnv(t, s, nil)
	fill := strings.NewReplacer("{instance}", sandboxInst, "{id}", randomKeyID(t))
	for path, item := range doc.Paths.Map() {
		var methods []string
		for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
			if item.GetOperation(m) != nil {
				methods = append(methods, m)
			}
		}
		allow := strings.Join(methods, ", ")
		if path == "/healthz" {
			allow = "GET, HEAD" // ServeMux's own 405 (in plain text), as the description says
		}
		for _, m := range []string{"GET", "POST", "PATCH", "DELETE", "PUT"} {
			req, _ := http.NewRequest(m, e.Base+fill.Replace(path), nil)
			req.Header.Set("Authorization", "Bearer "+e.Tok["ops"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Error struct{ Code string } `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			if item.GetOperation(m) != nil {
				if got.Error.Code == "not_found" || resp.StatusCode == 405 {
					t.Errorf("%s %s is described but the API answers %d %s", m, path, resp.StatusCode, got.Error.Code)
				}
				continue
			}
			if resp.StatusCode != 405 || resp.Header.Get("Allow") != allow {
				t.Errorf("%s %s is not described: got %d %s, Allow %q; want 405 with Allow %q", m, path, resp.StatusCode, got.Error.Code, resp.Header.Get("Allow"), allow)
			}
		}
	}
}

// GET /openapi.yaml answers the description to anyone; it is the API's, not the page's.
func TestOpenAPIServed(t *testing.T) {
	s, err := filestore.Open(filepath.Join(t.TempDir(), "keys.db"), filestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := newAPIEnv(t, s, nil)
	if !admin.Handles(admin.OpenAPIPath) {
		t.Fatal("admin.Handles leaves /openapi.yaml to the web page")
	}
	for _, method := range []string{"GET", "HEAD"} {
		req, _ := http.NewRequest(method, e.Base+admin.OpenAPIPath, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/yaml" ||
			resp.Header.Get("Content-Length") != fmt.Sprint(len(admin.OpenAPI())) {
			t.Fatalf("%s /openapi.yaml without a token: %d, Content-Type %q, Content-Length %q", method, resp.StatusCode,
				resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"))
		}
		if method == "GET" && !bytes.Equal(body, admin.OpenAPI()) {
			t.Fatal("GET /openapi.yaml is not the description")
		}
	}
	// A token changes nothing; another method is the API's 405.
	r := e.Send(t, "POST", admin.OpenAPIPath, nil, admintest.Bearer(e.Tok["ops"]))
	admintest.Want(t, r, 405, "method_not_allowed")
	if r.Header.Get("Allow") != "GET" {
		t.Fatalf("POST /openapi.yaml: Allow %q", r.Header.Get("Allow"))
	}
}

// The description refuses answers that are not the API's: the checks below have teeth.
func TestOpenAPIRefusesWrongAnswers(t *testing.T) {
	doc := openAPIDoc(t)
	doc.Servers = openapi3.Servers{{URL: "http://admin.test"}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://admin.test/v1/instances/demo-sandbox/keys/key_WJJMew7bAbCflVTexelnshfH", nil)
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Fatal(err)
	}
	key := doc.Components.Examples["Key"].Value.Value.(map[string]any)
	answer := func(change func(h http.Header, k map[string]any)) error {
		h := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}}
		k := map[string]any{}
		for name, v := range key {
			k[name] = v
		}
		change(h, k)
		b, _ := json.Marshal(k)
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 200, Header: h, Options: &openapi3filter.Options{IncludeResponseStatus: true},
		}
		in.SetBodyBytes(b)
		return openapi3filter.ValidateResponse(context.Background(), in)
	}
	if err := answer(func(http.Header, map[string]any) {}); err != nil {
		t.Fatalf("the example key does not pass: %v", err)
	}
	for name, change := range map[string]func(h http.Header, k map[string]any){
		"an extra member":         func(_ http.Header, k map[string]any) { k["secret"] = "sk_test_" + strings.Repeat("a", 38) },
		"a member missing":        func(_ http.Header, k map[string]any) { delete(k, "quota_used") },
		"an unknown status":       func(_ http.Header, k map[string]any) { k["status"] = "paused" },
		"a time that is not one":  func(_ http.Header, k map[string]any) { k["created_at"] = "yesterday" },
		"null metadata":           func(_ http.Header, k map[string]any) { k["metadata"] = nil },
		"an empty scope list":     func(_ http.Header, k map[string]any) { k["scopes"] = []any{} },
		"a rate limit member":     func(_ http.Header, k map[string]any) { k["rate_limit"] = map[string]any{"limit": 1} },
		"no Cache-Control":        func(h http.Header, _ map[string]any) { h.Del("Cache-Control") },
		"another Content-Type":    func(h http.Header, _ map[string]any) { h.Set("Content-Type", "text/plain") },
		"a malformed key id":      func(_ http.Header, k map[string]any) { k["id"] = "key_short" },
		"a null quota_resets_at?": func(_ http.Header, k map[string]any) { k["quota_resets_at"] = 5 },
	} {
		if answer(change) == nil {
			t.Errorf("a key answer with %s passes the description", name)
		}
	}
}

// The API's answers, on both stores, are the description's: every operation, every status it
// documents, every error code.
func TestOpenAPIReplay(t *testing.T) {
	cov := &openAPICoverage{ops: map[string]bool{}, codes: map[string]bool{}}
	eachStore(t, func(t *testing.T, e *apiEnv) {
		replayAdminAPI(t, newReplayEnv(t, e, cov))
	})
	if t.Failed() {
		return
	}
	doc := openAPIDoc(t)
	// Answers only nora_admin gives (the Caddy handler, not this API): before its store is
	// open, and with every admin token unset. e2e's TestOpenAPIClient sees admin_disabled.
	elsewhere := map[string]bool{
		"GET /openapi.yaml 503": true, "GET /v1/me 503": true, "code admin_disabled": true,
	}
	for _, want := range describedAnswers(doc) {
		if !cov.ops[want.op] && !elsewhere[want.op] {
			t.Errorf("no replayed answer was %s (documented)", want.op)
		}
		for _, code := range want.codes {
			if !cov.codes[code] && !elsewhere["code "+code] {
				t.Errorf("no replayed answer had the code %s (documented for %s)", code, want.op)
			}
		}
	}
}

// describedAnswer is one documented answer: "METHOD /path STATUS" and the error codes its
// body may carry.
type describedAnswer struct {
	op    string
	codes []string
}

func describedAnswers(doc *openapi3.T) []describedAnswer {
	var out []describedAnswer
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, resp := range op.Responses.Map() {
				a := describedAnswer{op: method + " " + path + " " + status}
				for _, mt := range resp.Value.Content {
					a.codes = append(a.codes, errorCodes(mt.Schema)...)
				}
				out = append(out, a)
			}
		}
	}
	for _, name := range []string{"NotFound", "MethodNotAllowed"} {
		for _, mt := range doc.Components.Responses[name].Value.Content {
			out = append(out, describedAnswer{op: "response " + name, codes: errorCodes(mt.Schema)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].op < out[j].op })
	return out
}

// errorCodes are the codes an error schema allows (its error.code's const or enum), through
// oneOf; none for a schema that is not an error.
func errorCodes(s *openapi3.SchemaRef) []string {
	if s == nil || s.Value == nil {
		return nil
	}
	var out []string
	for _, alt := range s.Value.OneOf {
		out = append(out, errorCodes(alt)...)
	}
	detail := s.Value.Properties["error"]
	if detail == nil {
		return out
	}
	code := detail.Value.Properties["code"].Value
	if c, ok := code.Const.(string); ok {
		out = append(out, c)
	}
	for _, c := range code.Enum {
		out = append(out, c.(string))
	}
	return out
}

type openAPICoverage struct {
	mu    sync.Mutex
	ops   map[string]bool // "METHOD /path STATUS" answered
	codes map[string]bool // error codes answered
}

func (c *openAPICoverage) add(op, code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if op != "" {
		c.ops[op] = true
	}
	if code != "" {
		c.codes[code] = true
	}
}

// replayEnv is an admin API over one store, a member of the store's fleet (so answers carry
// propagation), and the description to hold it to.
type replayEnv struct {
	e      *apiEnv
	base   string
	tok    map[string]string // role → token, adminRoles' plus "wrong" (configured nowhere)
	ready  *atomic.Bool
	doc    *openapi3.T
	router routers.Router
	cov    *openAPICoverage
}

func newReplayEnv(t *testing.T, e *apiEnv, cov *openAPICoverage) *replayEnv {
	t.Helper()
	r := &replayEnv{e: e, tok: map[string]string{"wrong": admintest.RandomToken()}, ready: new(atomic.Bool), cov: cov}
	var tokens []admin.Token
	for _, role := range adminRoles {
		r.tok[role.role] = e.Tok[role.role]
		h, err := admin.TokenHash(e.Tok[role.role])
		if err != nil {
			t.Fatal(err)
		}
		tk := admin.Token{Name: role.role, Hash: h, Instances: role.scope}
		for _, p := range role.perms {
			tk.Permissions = append(tk.Permissions, admin.Permission(p))
		}
		tokens = append(tokens, tk)
	}
	api, err := admin.NewAPI(e.s, tokens, apikey.Hasher{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := fleet.Join(e.s.(fleet.Registry), fleet.Options{Hostname: "replay"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	api.Fleet = m
	r.ready.Store(true)
	api.Ready = r.ready.Load
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	r.base = srv.URL
	r.doc = openAPIDoc(t)
	r.doc.Servers = openapi3.Servers{{URL: srv.URL}}
	if r.router, err = gorillamux.NewRouter(r.doc); err != nil {
		t.Fatal(err)
	}
	return r
}

// exchange is one request and the answer it must get.
type exchange struct {
	method, path string
	role         string // "" sends no token
	body         any    // nil: none; string: sent as is; anything else: as JSON
	status       int
	code         string // the error code ("" for a success)
	// offDescription: the description, too, says the request is wrong (ValidateRequest
	// refuses it). The other refused requests are ones only the API can judge (an expiry in
	// the past, a revoked key, an unknown cursor, a semantic rule).
	offDescription bool
}

// bearerShape is the description's security check: a bearer token is there (whether the
// API knows it is the API's business).
func bearerShape(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if in.SecuritySchemeName != "adminToken" {
		return fmt.Errorf("unknown security scheme %q", in.SecuritySchemeName)
	}
	if tok, ok := strings.CutPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer "); !ok || tok == "" {
		return errors.New("no bearer token")
	}
	return nil
}

func (r *replayEnv) request(t *testing.T, x exchange) *http.Request {
	t.Helper()
	var raw []byte
	switch b := x.body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	var body io.Reader
	if x.body != nil {
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(x.method, r.base+x.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if x.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if x.role != "" {
		req.Header.Set("Authorization", "Bearer "+r.tok[x.role])
	}
	return req
}

// do checks the request against the description, sends it, checks the answer's status and
// code, checks the answer against the description, and returns its body decoded.
func (r *replayEnv) do(t *testing.T, x exchange) map[string]any {
	t.Helper()
	ctx := context.Background()
	what := x.method + " " + x.path
	req := r.request(t, x)
	route, params, err := r.router.FindRoute(req)
	var op string
	switch {
	case err == nil:
		op = route.Method + " " + route.Path
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: bearerShape}}
		err := openapi3filter.ValidateRequest(ctx, in)
		if x.offDescription && err == nil {
			t.Fatalf("%s: the description accepts this request, which the API refuses with %d %s", what, x.status, x.code)
		}
		if !x.offDescription && err != nil {
			t.Fatalf("%s: the description refuses this request: %v", what, err)
		}
	case errors.Is(err, routers.ErrPathNotFound), errors.Is(err, routers.ErrMethodNotAllowed):
		// Not an operation: the answer must be the NotFound or MethodNotAllowed response.
		name := "NotFound"
		if errors.Is(err, routers.ErrMethodNotAllowed) {
			name = "MethodNotAllowed"
		}
		op = "response " + name
		resp := r.doc.Components.Responses[name]
		route = &routers.Route{Spec: r.doc, Method: x.method, Path: x.path, Operation: &openapi3.Operation{
			Responses: openapi3.NewResponses(openapi3.WithStatus(x.status, resp))}}
	default:
		t.Fatalf("%s: finding the operation: %v", what, err)
	}

	resp, err := http.DefaultClient.Do(r.request(t, x))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(raw, &obj); err != nil {
			t.Fatalf("%s: %v: %s", what, err, raw)
		}
	}
	var got struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(raw, &got)
	if resp.StatusCode != x.status || got.Error.Code != x.code {
		t.Fatalf("%s: got %d %.400s; want %d %s", what, resp.StatusCode, raw, x.status, x.code)
	}

	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(raw)
	if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
		t.Fatalf("%s: the answer is not the description's: %v\n%.800s", what, err, raw)
	}
	if strings.HasPrefix(op, "response ") {
		r.cov.add(op, x.code)
	} else {
		r.cov.add(fmt.Sprintf("%s %d", op, resp.StatusCode), x.code)
	}
	return obj
}

func (r *replayEnv) id(t *testing.T, obj map[string]any) string {
	t.Helper()
	id, ok := obj["id"].(string)
	if !ok {
		t.Fatalf("no id in %v", obj)
	}
	return id
}

// replayAdminAPI drives every operation of the API through its answers and refusals.
func replayAdminAPI(t *testing.T, r *replayEnv) {
	ctx := context.Background()
	big := `{"name":"` + strings.Repeat("x", admin.MaxBody) + `"}`
	keys := keysPath(sandboxInst)
	ghostKeys := keysPath(ghostInst)
	unknown := randomKeyID(t)
	past := time.Now().AddDate(0, 0, -1).UTC().Format("2006-01-02")
	future := time.Now().AddDate(0, 3, 0).UTC().Format("2006-01-02")

	// Meta: health, the description, the token.
	r.do(t, exchange{method: "GET", path: "/healthz", status: 200})
	r.ready.Store(false)
	r.do(t, exchange{method: "GET", path: "/healthz", status: 503})
	r.ready.Store(true)
	r.do(t, exchange{method: "GET", path: "/openapi.yaml", status: 200})
	r.do(t, exchange{method: "GET", path: "/v1/me", role: "ops", status: 200})
	r.do(t, exchange{method: "GET", path: "/v1/me", role: "scoped", status: 200})
	r.do(t, exchange{method: "GET", path: "/v1/me", status: 401, code: "unauthorized", offDescription: true})
	r.do(t, exchange{method: "GET", path: "/v1/me", role: "wrong", status: 401, code: "unauthorized"})

	// Gateways and instances.
	r.do(t, exchange{method: "GET", path: "/v1/gateways", role: "nothing", status: 200})
	r.do(t, exchange{method: "GET", path: "/v1/gateways", status: 401, code: "unauthorized", offDescription: true})
	r.do(t, exchange{method: "GET", path: "/v1/instances", role: "scoped", status: 200})
	r.do(t, exchange{method: "GET", path: "/v1/instances", role: "wrong", status: 401, code: "unauthorized"})
	inst := map[string]string{"id": "replay-prod", "name": "Replay (production)", "environment": "production"}
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "instancer", body: inst, status: 201})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "ops", body: inst, status: 409, code: "instance_exists"})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "reader", body: map[string]string{"id": "x", "name": "x", "environment": "sandbox"}, status: 403, code: "forbidden"})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "scoped", body: map[string]string{"id": "not-mine", "name": "x", "environment": "sandbox"}, status: 403, code: "forbidden"})
	r.do(t, exchange{method: "POST", path: "/v1/instances", body: inst, status: 401, code: "unauthorized", offDescription: true})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "ops", body: map[string]string{"id": "Not An Id", "name": "x", "environment": "sandbox"}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "ops", body: map[string]string{"id": "x", "name": "x", "environment": "staging"}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "ops", body: map[string]string{"id": "x", "name": "  ", "environment": "sandbox"}, status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "POST", path: "/v1/instances", role: "ops", body: big, status: 413, code: "request_too_large", offDescription: true})

	// Create keys.
	plain := r.do(t, exchange{method: "POST", path: keys, role: "creator", body: map[string]any{"name": "plain"}, status: 201})
	full := r.do(t, exchange{method: "POST", path: keys, role: "ops", status: 201, body: map[string]any{
		"name": "charges reader", "expires_at": future, "scopes": []string{"charges:read", "customers:*"},
		"allowed_ips": []string{"10.1.2.3/8", "2001:db8::1"}, "metadata": map[string]string{"team": "payments"},
		"rate_limit": map[string]any{"limit": 100, "window_seconds": 1}, "quota": map[string]any{"limit": 1000, "period": "month"},
	}})
	r.do(t, exchange{method: "POST", path: keysPath(prodInst), role: "ops", status: 201, body: map[string]any{
		"name": "nulls", "expires_at": nil, "scopes": nil, "allowed_ips": nil, "metadata": nil, "rate_limit": nil,
		"quota": map[string]any{"limit": 5, "period": "total"}}})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: map[string]any{"name": "x", "expires_at": past}, status: 400, code: "invalid_expiration"})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: map[string]any{"name": "x", "expires_at": "soon"}, status: 400, code: "invalid_expiration", offDescription: true})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: map[string]any{"nmae": "x"}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: `{"name":`, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: map[string]any{"name": "x", "scopes": []string{}}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: map[string]any{"name": "x", "allowed_ips": []string{"not-an-address"}}, status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: map[string]any{"name": "x", "rate_limit": map[string]any{"limit": 10}}, status: 400, code: "invalid_request", offDescription: true})
	// The description cannot say "no fraction written": JSON Schema takes 10.0 for an integer.
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: `{"name":"x","quota":{"limit":10.0,"period":"day"}}`, status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "POST", path: keys, role: "reader", body: map[string]any{"name": "x"}, status: 403, code: "forbidden"})
	r.do(t, exchange{method: "POST", path: keysPath(prodInst), role: "scoped", body: map[string]any{"name": "x"}, status: 403, code: "forbidden"})
	r.do(t, exchange{method: "POST", path: keys, body: map[string]any{"name": "x"}, status: 401, code: "unauthorized", offDescription: true})
	r.do(t, exchange{method: "POST", path: ghostKeys, role: "ops", body: map[string]any{"name": "x"}, status: 404, code: "instance_not_found"})
	r.do(t, exchange{method: "POST", path: keys, role: "ops", body: big, status: 413, code: "request_too_large", offDescription: true})
	plainID, fullID := r.id(t, plain), r.id(t, full)

	// List and get.
	r.do(t, exchange{method: "GET", path: keys, role: "reader", status: 200})
	page := r.do(t, exchange{method: "GET", path: keys + "?limit=1&status=active", role: "reader", status: 200})
	if page["has_more"] != true {
		t.Fatalf("a page of 1 of several keys: has_more %v", page["has_more"])
	}
	r.do(t, exchange{method: "GET", path: keys + "?starting_after=" + fullID, role: "reader", status: 200})
	r.do(t, exchange{method: "GET", path: keys + "?limit=0", role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: keys + "?status=paused", role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: keys + "?starting_after=" + unknown, role: "reader", status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "GET", path: keysPath("Not_An_Id"), role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: ghostKeys, role: "reader", status: 404, code: "instance_not_found"})
	r.do(t, exchange{method: "GET", path: keys, role: "nothing", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "GET", path: keys, status: 401, code: "unauthorized", offDescription: true})
	r.do(t, exchange{method: "GET", path: keys + "/" + fullID, role: "reader", status: 200})
	r.do(t, exchange{method: "GET", path: keys + "/" + unknown, role: "reader", status: 404, code: "api_key_not_found"})
	r.do(t, exchange{method: "GET", path: keys + "/key_malformed", role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: keys + "/" + fullID, role: "creator", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "GET", path: keys + "/" + fullID, status: 401, code: "unauthorized", offDescription: true})

	// Update.
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", status: 200, body: map[string]any{
		"name": "plain, renamed", "scopes": []string{"charges:read"}, "allowed_ips": []string{"203.0.113.7"}, "metadata": map[string]string{"a": "b"}}})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + fullID, role: "creator", status: 200, body: map[string]any{
		"expires_at": nil, "scopes": nil, "allowed_ips": nil, "metadata": nil, "rate_limit": nil, "quota": nil}})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: map[string]any{}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: map[string]any{"expires_at": past}, status: 400, code: "invalid_expiration"})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: map[string]any{"name": nil}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: map[string]any{"scopes": []string{"a", "a"}}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: map[string]any{"metadata": map[string]string{"bad name": "x"}}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: big, status: 413, code: "request_too_large", offDescription: true})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + unknown, role: "creator", body: map[string]any{"name": "x"}, status: 404, code: "api_key_not_found"})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "deleter", body: map[string]any{"name": "x"}, status: 403, code: "forbidden"})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, body: map[string]any{"name": "x"}, status: 401, code: "unauthorized", offDescription: true})

	// Roll: with a grace, again (409), the old key's update (409), without grace and body.
	rolled := r.do(t, exchange{method: "POST", path: keys + "/" + plainID + "/roll", role: "roller", body: map[string]any{"expire_old_in_seconds": 60, "name": nil}, status: 201})
	r.do(t, exchange{method: "POST", path: keys + "/" + plainID + "/roll", role: "roller", status: 409, code: "api_key_already_rolled"})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + plainID, role: "creator", body: map[string]any{"name": "x"}, status: 409, code: "api_key_already_rolled"})
	rolledID := r.id(t, rolled)
	if p := r.do(t, exchange{method: "POST", path: keys + "/" + rolledID + "/roll", role: "roller", status: 201}); p["propagation"] == nil {
		t.Fatalf("a roll without grace answered no propagation: %v", p)
	}
	r.do(t, exchange{method: "POST", path: keys + "/" + fullID + "/roll", role: "roller", body: map[string]any{"expire_old_in_seconds": admin.MaxGrace + 1}, status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "POST", path: keys + "/" + fullID + "/roll", role: "roller", body: map[string]any{"expires_at": past}, status: 400, code: "invalid_expiration"})
	r.do(t, exchange{method: "POST", path: keys + "/" + fullID + "/roll", role: "roller", body: big, status: 413, code: "request_too_large", offDescription: true})
	r.do(t, exchange{method: "POST", path: ghostKeys + "/" + unknown + "/roll", role: "roller", status: 404, code: "instance_not_found"})
	r.do(t, exchange{method: "POST", path: keys + "/" + unknown + "/roll", role: "roller", status: 404, code: "api_key_not_found"})
	r.do(t, exchange{method: "POST", path: keys + "/" + fullID + "/roll", role: "creator", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "POST", path: keys + "/" + fullID + "/roll", status: 401, code: "unauthorized", offDescription: true})

	// Revoke, twice; a revoked key can be neither changed (409) nor rolled (400).
	if k := r.do(t, exchange{method: "DELETE", path: keys + "/" + fullID, role: "deleter", status: 200}); k["status"] != "revoked" || k["propagation"] == nil {
		t.Fatalf("revoke answered %v", k)
	}
	r.do(t, exchange{method: "DELETE", path: keys + "/" + fullID, role: "deleter", status: 200})
	r.do(t, exchange{method: "PATCH", path: keys + "/" + fullID, role: "creator", body: map[string]any{"name": "x"}, status: 409, code: "api_key_revoked"})
	r.do(t, exchange{method: "POST", path: keys + "/" + fullID + "/roll", role: "roller", status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "DELETE", path: keys + "/" + unknown, role: "deleter", status: 404, code: "api_key_not_found"})
	r.do(t, exchange{method: "DELETE", path: keys + "/nope", role: "deleter", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "DELETE", path: keys + "/" + fullID, role: "creator", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "DELETE", path: keys + "/" + fullID, status: 401, code: "unauthorized", offDescription: true})

	// Usage, counted as gateways add it.
	now := time.Now().UTC()
	if err := r.e.s.AddUsage(ctx, []store.UsageCount{
		{Instance: sandboxInst, KeyID: plainID, Minute: now.Add(-2 * time.Hour).Truncate(time.Minute), OK: 10,
			Refused: map[string]int64{"api_key_ip_not_allowed": 2, "rate_limit_exceeded": 1}},
		{Instance: sandboxInst, KeyID: fullID, Minute: now.Add(-time.Minute).Truncate(time.Minute), OK: 3,
			Refused: map[string]int64{"api_key_revoked": 4, "quota_exceeded": 1, "api_key_expired": 1, "api_key_insufficient_scope": 1}},
	}); err != nil {
		t.Fatal(err)
	}
	usage := keys + "/" + plainID + "/usage"
	r.do(t, exchange{method: "GET", path: usage, role: "reader", status: 200})
	r.do(t, exchange{method: "GET", path: usage + "?granularity=minute&from=" + now.Add(-3*time.Hour).Format(time.RFC3339), role: "reader", status: 200})
	r.do(t, exchange{method: "GET", path: usage + "?granularity=week", role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: usage + "?from=yesterday", role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: usage + "?from=2026-12-02&to=2026-12-01", role: "reader", status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "GET", path: keys + "/" + unknown + "/usage", role: "reader", status: 404, code: "api_key_not_found"})
	r.do(t, exchange{method: "GET", path: keys + "/" + unknown + "/usage", role: "nothing", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "GET", path: usage, status: 401, code: "unauthorized", offDescription: true})
	iusage := "/v1/instances/" + sandboxInst + "/usage"
	r.do(t, exchange{method: "GET", path: iusage + "?granularity=day&from=" + now.AddDate(0, 0, -3).Format("2006-01-02"), role: "reader", status: 200})
	// An unknown query parameter: refused by the API; the description cannot forbid it.
	r.do(t, exchange{method: "GET", path: iusage + "?since=1h", role: "reader", status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "GET", path: "/v1/instances/" + ghostInst + "/usage", role: "reader", status: 404, code: "instance_not_found"})
	r.do(t, exchange{method: "GET", path: "/v1/instances/" + prodInst + "/usage", role: "scoped", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "GET", path: iusage, role: "wrong", status: 401, code: "unauthorized"})

	// Events, every type (a leak as secret scanning records it).
	leak, err := apikey.NewID("evt_", 24)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.s.AddEvent(ctx, store.Event{ID: leak, Type: "api_key.leaked", Instance: sandboxInst, KeyID: rolledID,
		URL: "https://github.com/acme/app/blob/main/.env", Source: "content", Actor: "github-secret-scanning", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	events := "/v1/instances/" + sandboxInst + "/events"
	evs := r.do(t, exchange{method: "GET", path: events, role: "reader", status: 200})
	types := map[string]bool{}
	for _, ev := range evs["data"].([]any) {
		types[ev.(map[string]any)["type"].(string)] = true
	}
	if len(types) != 5 {
		t.Fatalf("replayed events of the types %v, want all 5", types)
	}
	r.do(t, exchange{method: "GET", path: events + "?limit=2&starting_after=" + leak, role: "reader", status: 200})
	r.do(t, exchange{method: "GET", path: events + "?limit=1001", role: "reader", status: 400, code: "invalid_request", offDescription: true})
	r.do(t, exchange{method: "GET", path: events + "?starting_after=evt_" + strings.Repeat("0", 24), role: "reader", status: 400, code: "invalid_request"})
	r.do(t, exchange{method: "GET", path: "/v1/instances/" + ghostInst + "/events", role: "reader", status: 404, code: "instance_not_found"})
	r.do(t, exchange{method: "GET", path: events, role: "creator", status: 403, code: "forbidden"})
	r.do(t, exchange{method: "GET", path: events, status: 401, code: "unauthorized", offDescription: true})

	// No such call, no such method: answered without a token.
	r.do(t, exchange{method: "GET", path: "/v1/nope", status: 404, code: "not_found"})
	r.do(t, exchange{method: "GET", path: keys + "/" + plainID + "/nope", role: "ops", status: 404, code: "not_found"})
	r.do(t, exchange{method: "PUT", path: "/v1/instances", status: 405, code: "method_not_allowed"})
	r.do(t, exchange{method: "DELETE", path: "/openapi.yaml", status: 405, code: "method_not_allowed"})
	r.do(t, exchange{method: "POST", path: events, role: "ops", status: 405, code: "method_not_allowed"})

	// A gateway that never confirms: the revoke waits for it and names it.
	gw, err := fleet.NewID()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.e.s.(fleet.Registry).Heartbeat(ctx, fleet.Gateway{ID: gw, Hostname: "frozen", StartedAt: now}); err != nil {
		t.Fatal(err)
	}
	if gws := r.do(t, exchange{method: "GET", path: "/v1/gateways", role: "ops", status: 200}); len(gws["data"].([]any)) != 2 {
		t.Fatalf("gateways: %v, want this one and the frozen one", gws)
	}
	k := r.do(t, exchange{method: "DELETE", path: keys + "/" + rolledID, role: "deleter", status: 200})
	if p := k["propagation"].(map[string]any); r.e.srv != nil && p["missing"] == nil {
		t.Fatalf("revoke with a frozen gateway: propagation %v", p)
	}

	// The store down: every call that needs it is 503 store_unavailable; /healthz says so.
	r.e.storeDown(t)
	r.do(t, exchange{method: "GET", path: "/healthz", status: 503})
	gateways := exchange{method: "GET", path: "/v1/gateways", role: "ops", status: 503, code: "store_unavailable"}
	if r.e.srv == nil {
		gateways.status, gateways.code = 200, "" // the file store keeps its fleet in memory
	}
	r.do(t, gateways)
	down := func(method, path string, body any) {
		t.Helper()
		r.do(t, exchange{method: method, path: path, role: "ops", body: body, status: 503, code: "store_unavailable"})
	}
	down("GET", "/v1/instances", nil)
	down("POST", "/v1/instances", map[string]string{"id": "down", "name": "Down", "environment": "sandbox"})
	down("GET", keys, nil)
	down("POST", keys, map[string]any{"name": "x"})
	down("GET", keys+"/"+plainID, nil)
	down("PATCH", keys+"/"+plainID, map[string]any{"name": "x"})
	down("DELETE", keys+"/"+plainID, nil)
	down("POST", keys+"/"+rolledID+"/roll", nil)
	down("GET", usage, nil)
	down("GET", iusage, nil)
	down("GET", events, nil)
	// What needs no store still answers.
	r.do(t, exchange{method: "GET", path: "/v1/me", role: "reader", status: 200})
	r.do(t, exchange{method: "GET", path: "/openapi.yaml", status: 200})
	if !slices.Contains(admin.Routes(), "GET /openapi.yaml") {
		t.Fatal("Routes lacks GET /openapi.yaml")
	}
}
