// Package admin is keygate's admin endpoint without Caddy: the JSON API of SPEC §5 over a
// store.Store, guarded by admin tokens, and a client for it (used by the `keys` CLI).
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// MaxBody is the largest request body accepted.
const MaxBody = 64 << 10

// MaxGrace is the longest a rolled key keeps working (seven days).
const MaxGrace = 7 * 24 * 60 * 60

// API serves the admin JSON API. Its zero value is not usable: set Store and Tokens.
type API struct {
	Store  store.Store
	Tokens []Token
	Hasher apikey.Hasher
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *zap.Logger

	mux *http.ServeMux
}

// NewAPI returns an API ready to serve.
func NewAPI(s store.Store, tokens []Token, hasher apikey.Hasher, logger *zap.Logger) (*API, error) {
	if len(tokens) == 0 {
		return nil, errors.New("no admin token configured")
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	a := &API{Store: s, Tokens: tokens, Hasher: hasher, Now: time.Now, Logger: logger}
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /v1/me", a.auth(a.me))
	m.HandleFunc("GET /v1/instances", a.auth(a.listInstances))
	m.HandleFunc("POST /v1/instances", a.auth(a.createInstance, PermInstance))
	m.HandleFunc("GET /v1/instances/{instance}/keys", a.auth(a.listKeys, PermRead))
	m.HandleFunc("POST /v1/instances/{instance}/keys", a.auth(a.createKey, PermCreate))
	m.HandleFunc("GET /v1/instances/{instance}/keys/{id}", a.auth(a.getKey, PermRead))
	m.HandleFunc("DELETE /v1/instances/{instance}/keys/{id}", a.auth(a.revokeKey, PermDelete))
	m.HandleFunc("POST /v1/instances/{instance}/keys/{id}/roll", a.auth(a.rollKey, PermCreate, PermDelete))
	m.HandleFunc("GET /v1/instances/{instance}/events", a.auth(a.listEvents, PermRead))
	m.HandleFunc("/v1/", a.noRoute)
	a.mux = m
	return a, nil
}

// noRoute answers a path no call has (404 not_found) or a method the path does not take
// (405 method_not_allowed, with Allow).
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.mux.Handler(probe); pattern != "/v1/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
			r.Method+" is not allowed here; use "+strings.Join(allowed, " or ")+".")
		return
	}
	writeError(w, http.StatusNotFound, "invalid_request_error", "not_found", "No such API call.")
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	a.mux.ServeHTTP(w, r)
}

// Handles reports whether the API answers this path (the rest is the web page's).
func Handles(path string) bool {
	return path == "/healthz" || path == "/v1" || strings.HasPrefix(path, "/v1/")
}

// apiError is an answer of the error shape.
type apiError struct {
	status         int
	typ, code, msg string
}

func (e *apiError) Error() string { return e.msg }

func errInvalid(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, "invalid_request_error", "invalid_request", fmt.Sprintf(format, args...)}
}

var (
	errUnauthorized = &apiError{http.StatusUnauthorized, "authentication_error", "unauthorized",
		"A valid admin token is required: send 'Authorization: Bearer <token>'."}
	errInstanceNotFound = &apiError{http.StatusNotFound, "invalid_request_error", "instance_not_found", "No such instance."}
	errKeyNotFound      = &apiError{http.StatusNotFound, "invalid_request_error", "api_key_not_found", "No such API key."}
	errInstanceExists   = &apiError{http.StatusConflict, "invalid_request_error", "instance_exists", "An instance with this id already exists."}
	errTooLarge         = &apiError{http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		fmt.Sprintf("The request body is larger than %d bytes.", MaxBody)}
	errUnavailable = &apiError{http.StatusServiceUnavailable, "api_error", "store_unavailable",
		"The key store cannot be reached right now. Retry shortly."}
)

// errEmptyBody is decode's answer to a body with no JSON value at all.
var errEmptyBody = errInvalid("The request body must be a JSON object.")

func errForbidden(msg string) *apiError {
	return &apiError{http.StatusForbidden, "permission_error", "forbidden", msg}
}

func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nora-admin"`)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]any{"error": map[string]string{"type": typ, "code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"type":"api_error","code":"internal","message":"encoding the answer failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// fail answers err: an *apiError as it is, a store error as its API code, anything else as
// 503 store_unavailable (logged without request data).
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, store.ErrInstanceNotFound):
		ae = errInstanceNotFound
	case errors.Is(err, store.ErrKeyNotFound):
		ae = errKeyNotFound
	case errors.Is(err, store.ErrInstanceExists):
		ae = errInstanceExists
	case errors.Is(err, store.ErrRevokedDuringRoll):
		ae = errInvalid("The key was revoked while it was being rolled; the new key was revoked too.")
	case errors.Is(err, store.ErrInvalidCursor):
		ae = errInvalid("starting_after names no item of this list.")
	default:
		a.Logger.Warn("admin request failed at the store", zap.String("method", r.Method),
			zap.String("pattern", r.Pattern), zap.Error(err))
		ae = errUnavailable
	}
	writeError(w, ae.status, ae.typ, ae.code, ae.msg)
}

type handler func(w http.ResponseWriter, r *http.Request, t *Token) error

// auth checks the admin token, the permissions and the instance scope of the path, in that
// order, before the call does anything.
func (a *API) auth(h handler, perms ...Permission) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		t := a.token(r)
		if t == nil {
			a.fail(w, r, errUnauthorized)
			return
		}
		for _, p := range perms {
			if !t.Has(p) {
				a.fail(w, r, errForbidden(fmt.Sprintf("This token lacks the %s permission.", p)))
				return
			}
		}
		if in := r.PathValue("instance"); in != "" && !t.Covers(in) {
			a.fail(w, r, errForbidden("This token may not act on this instance."))
			return
		}
		if err := h(w, r, t); err != nil {
			a.fail(w, r, err)
		}
	}
}

// token returns the admin token a request carries, or nil. Only the Authorization header
// counts: cookies are never read.
func (a *API) token(r *http.Request) *Token {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 {
		return nil
	}
	scheme, secret, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	secret = strings.TrimSpace(secret)
	if !ok || !strings.EqualFold(scheme, "Bearer") || secret == "" {
		return nil
	}
	return authenticate(a.Tokens, secret)
}

func (a *API) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.Store.Ping(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) me(w http.ResponseWriter, r *http.Request, t *Token) error {
	instances := t.Instances
	if instances == nil {
		instances = []string{"*"}
	}
	perms := t.Permissions
	if perms == nil {
		perms = []Permission{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": t.Name, "permissions": perms, "instances": instances})
	return nil
}

// Instance is the API's instance object.
type Instance struct {
	Object      string `json:"object"`
	ID          string `json:"id"`
	Name        string `json:"name"`
	Environment string `json:"environment"`
}

func instanceJSON(in store.Instance) Instance {
	return Instance{Object: "instance", ID: in.ID, Name: in.Name, Environment: in.Environment.String()}
}

// List is the API's list object.
type List[T any] struct {
	Object  string `json:"object"`
	Data    []T    `json:"data"`
	HasMore bool   `json:"has_more"`
}

func (a *API) listInstances(w http.ResponseWriter, r *http.Request, t *Token) error {
	ctx, cancel := a.ctx(r)
	defer cancel()
	all, err := a.Store.Instances(ctx)
	if err != nil {
		return err
	}
	out := List[Instance]{Object: "list", Data: []Instance{}}
	for _, in := range all {
		if t.Covers(in.ID) {
			out.Data = append(out.Data, instanceJSON(in))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// decode reads a JSON object body into v: at most MaxBody bytes, only the fields v names
// (spelled exactly: encoding/json alone would also take "NAME" for "name"), nothing after the
// object.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errTooLarge
		}
		return errInvalid("Could not read the request body.")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return errEmptyBody
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return errInvalid("Invalid JSON body: %s.", jsonProblem(err))
	}
	known := jsonFieldNames(v)
	for name := range fields {
		if !known[name] {
			return errInvalid("Invalid JSON body: %s.", jsonProblem(fmt.Errorf("json: unknown field %q", name)))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errInvalid("Invalid JSON body: %s.", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errInvalid("The request body must hold one JSON object and nothing after it.")
	}
	return nil
}

// jsonFieldNames returns the JSON names of the fields of the struct v points to.
func jsonFieldNames(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	names := make(map[string]bool, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)
		}
		return "the body must be a JSON object"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The field name comes from the body: name it, but never echo more than a little.
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if f, err := strconv.Unquote(field); err == nil {
			field = f
		}
		if r := []rune(field); len(r) > 40 {
			field = string(r[:40]) + "…"
		}
		return fmt.Sprintf("unknown field %q", field)
	}
	return "malformed JSON"
}

// checkName applies the naming rule: 1–100 characters, not all white space, no control
// characters.
func checkName(what, name string) error {
	n := utf8.RuneCountInString(name)
	switch {
	case !utf8.ValidString(name):
		return errInvalid("%s must be valid UTF-8.", what)
	case n == 0 || strings.TrimFunc(name, unicode.IsSpace) == "":
		return errInvalid("%s must not be empty.", what)
	case n > 100:
		return errInvalid("%s must be at most 100 characters (it has %d).", what, n)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errInvalid("%s must not contain control characters.", what)
	}
	return nil
}

func (a *API) createInstance(w http.ResponseWriter, r *http.Request, t *Token) error {
	var body struct {
		ID          *string `json:"id"`
		Name        *string `json:"name"`
		Environment *string `json:"environment"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.ID == nil || !store.ValidInstanceID(*body.ID) {
		return errInvalid("id is required and must match [a-z0-9][a-z0-9_-]{0,62}.")
	}
	if body.Name == nil {
		return errInvalid("name is required.")
	}
	if err := checkName("name", *body.Name); err != nil {
		return err
	}
	if body.Environment == nil {
		return errInvalid(`environment is required: "sandbox" or "production".`)
	}
	env, err := apikey.ParseEnvironment(*body.Environment)
	if err != nil {
		return errInvalid(`environment must be "sandbox" or "production".`)
	}
	if !t.Covers(*body.ID) {
		return errForbidden("This token may not act on this instance.")
	}
	in := store.Instance{ID: *body.ID, Name: *body.Name, Environment: env}
	ctx, cancel := a.ctx(r)
	defer cancel()
	if err := a.Store.CreateInstance(ctx, in); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, instanceJSON(in))
	return nil
}

// Key is the API's key object.
type Key struct {
	Object      string     `json:"object"`
	ID          string     `json:"id"`
	Instance    string     `json:"instance"`
	Environment string     `json:"environment"`
	Name        string     `json:"name"`
	Prefix      string     `json:"prefix"`
	Status      string     `json:"status"`
	CreatedAt   *time.Time `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	// Secret is set only in the answer to a create or roll.
	Secret string `json:"secret,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func keyJSON(k store.Key, now time.Time) Key {
	return Key{Object: "api_key", ID: k.ID, Instance: k.Instance, Environment: k.Environment.String(),
		Name: k.Name, Prefix: k.Prefix, Status: string(k.Status(now)),
		CreatedAt: timePtr(k.CreatedAt), ExpiresAt: timePtr(k.ExpiresAt),
		RevokedAt: timePtr(k.RevokedAt), LastUsedAt: timePtr(k.LastUsedAt)}
}

var keyIDPattern = regexp.MustCompile(`^key_[0-9A-Za-z]{24}$`)

// pathIDs checks the instance and key ids of a request's path.
func pathIDs(r *http.Request) (instance, id string, err error) {
	instance = r.PathValue("instance")
	if !store.ValidInstanceID(instance) {
		return "", "", errInvalid("The instance id in the path is malformed.")
	}
	id = r.PathValue("id")
	if id != "" && !keyIDPattern.MatchString(id) {
		return "", "", errInvalid("The key id in the path is malformed (key_ and 24 letters or digits).")
	}
	return instance, id, nil
}

// listOptions reads limit and starting_after (and status when allowed).
func listOptions(r *http.Request, withStatus bool) (store.ListOptions, error) {
	q := r.URL.Query()
	opt := store.ListOptions{Limit: 100}
	for name := range q {
		switch name {
		case "limit", "starting_after":
		case "status":
			if withStatus {
				continue
			}
			fallthrough
		default:
			return opt, errInvalid("Unknown query parameter %q.", name)
		}
	}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > 1000 {
			return opt, errInvalid("limit must be a whole number from 1 to 1000.")
		}
		opt.Limit = n
	}
	opt.StartingAfter = q.Get("starting_after")
	if q.Has("starting_after") && opt.StartingAfter == "" {
		return opt, errInvalid("starting_after must not be empty.")
	}
	if q.Has("status") {
		switch s := store.Status(q.Get("status")); s {
		case store.StatusActive, store.StatusExpired, store.StatusRevoked:
			opt.Status = s
		default:
			return opt, errInvalid("status must be active, expired or revoked.")
		}
	}
	return opt, nil
}

func (a *API) instance(ctx context.Context, id string) (store.Instance, error) {
	return a.Store.Instance(ctx, id)
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, _, err := pathIDs(r)
	if err != nil {
		return err
	}
	opt, err := listOptions(r, true)
	if err != nil {
		return err
	}
	now := a.Now()
	opt.Now = now
	ctx, cancel := a.ctx(r)
	defer cancel()
	keys, more, err := a.Store.ListKeys(ctx, instance, opt)
	if err != nil {
		return err
	}
	out := List[Key]{Object: "list", Data: make([]Key, 0, len(keys)), HasMore: more}
	for _, k := range keys {
		out.Data = append(out.Data, keyJSON(k, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseExpiry reads an expires_at: a date YYYY-MM-DD (the key stops at 00:00 UTC that day)
// or an RFC 3339 instant, not before the start of tomorrow (UTC).
func parseExpiry(s string, now time.Time) (time.Time, error) {
	bad := &apiError{http.StatusBadRequest, "invalid_request_error", "invalid_expiration", ""}
	var t time.Time
	var err error
	if len(s) == len("2006-01-02") {
		t, err = time.Parse("2006-01-02", s)
	} else {
		t, err = time.Parse(time.RFC3339Nano, s)
	}
	if err != nil {
		bad.msg = "expires_at must be a date (YYYY-MM-DD) or an RFC 3339 time."
		return time.Time{}, bad
	}
	y, m, d := now.UTC().Date()
	tomorrow := time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	if t.Before(tomorrow) {
		bad.msg = "expires_at must be tomorrow (UTC) or later: " + tomorrow.Format("2006-01-02") + " at the earliest."
		return time.Time{}, bad
	}
	if t.Year() > 9999 {
		bad.msg = "expires_at is too far in the future."
		return time.Time{}, bad
	}
	return t.UTC(), nil
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, _, err := pathIDs(r)
	if err != nil {
		return err
	}
	var body struct {
		Name      *string `json:"name"`
		ExpiresAt *string `json:"expires_at"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Name == nil {
		return errInvalid("name is required.")
	}
	if err := checkName("name", *body.Name); err != nil {
		return err
	}
	now := a.Now()
	expires, err := optionalExpiry(body.ExpiresAt, now)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	in, err := a.instance(ctx, instance)
	if err != nil {
		return err
	}
	secret, k, err := store.Mint(a.Hasher, in, *body.Name, expires, now)
	if err != nil {
		return err
	}
	if err := a.Store.CreateKey(ctx, k); err != nil {
		return err
	}
	a.event(ctx, store.Event{Type: store.EventKeyCreated, Instance: instance, KeyID: k.ID, Actor: t.Name, CreatedAt: now})
	writeCreated(w, k, secret, now)
	return nil
}

// event records an audit event. The change it records has happened: a failure to record it
// is logged, not returned.
func (a *API) event(ctx context.Context, e store.Event) {
	id, err := apikey.NewID("evt_", 24)
	if err == nil {
		e.ID = id
		err = a.Store.AddEvent(ctx, e)
	}
	if err != nil {
		a.Logger.Error("recording audit event", zap.String("type", e.Type), zap.String("key_id", e.KeyID), zap.Error(err))
	}
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	k, err := a.Store.Key(ctx, instance, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, keyJSON(k, a.Now()))
	return nil
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	before, err := a.Store.Key(ctx, instance, id)
	if err != nil {
		return err
	}
	now := a.Now()
	k, err := a.Store.RevokeKey(ctx, instance, id, now)
	if err != nil {
		return err
	}
	if before.RevokedAt.IsZero() {
		a.event(ctx, store.Event{Type: store.EventKeyRevoked, Instance: instance, KeyID: id, Actor: t.Name, CreatedAt: now})
	}
	writeJSON(w, http.StatusOK, keyJSON(k, now))
	return nil
}

func (a *API) rollKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	var body struct {
		Grace     *int64  `json:"expire_old_in_seconds"`
		Name      *string `json:"name"`
		ExpiresAt *string `json:"expires_at"`
	}
	// The body is optional: none at all (even sent chunked, without Content-Length) is {}.
	if r.ContentLength != 0 {
		if err := decode(w, r, &body); err != nil && err != errEmptyBody {
			return err
		}
	}
	var grace int64
	if body.Grace != nil {
		grace = *body.Grace
		if grace < 0 || grace > MaxGrace {
			return errInvalid("expire_old_in_seconds must be from 0 to %d (seven days).", MaxGrace)
		}
	}
	if body.Name != nil {
		if err := checkName("name", *body.Name); err != nil {
			return err
		}
	}
	now := a.Now()
	newExpiry, err := optionalExpiry(body.ExpiresAt, now)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	in, err := a.instance(ctx, instance)
	if err != nil {
		return err
	}
	old, err := a.Store.Key(ctx, instance, id)
	if err != nil {
		return err
	}
	if st := old.Status(now); st != store.StatusActive {
		return errInvalid("Only an active key can be rolled; this one is %s.", st)
	}
	name := old.Name
	if body.Name != nil {
		name = *body.Name
	}
	if body.ExpiresAt == nil {
		newExpiry = old.ExpiresAt
	}
	secret, next, err := store.Mint(a.Hasher, in, name, newExpiry, now)
	if err != nil {
		return err
	}
	if _, err := store.Roll(ctx, a.Store, instance, id, next, now.Add(time.Duration(grace)*time.Second)); err != nil {
		return err
	}
	a.event(ctx, store.Event{Type: store.EventKeyRolled, Instance: instance, KeyID: id, NewKeyID: next.ID, Actor: t.Name, CreatedAt: now})
	writeCreated(w, next, secret, now)
	return nil
}

// optionalExpiry reads an optional expires_at (nil: never expires).
func optionalExpiry(s *string, now time.Time) (time.Time, error) {
	if s == nil {
		return time.Time{}, nil
	}
	return parseExpiry(*s, now)
}

// writeCreated answers a create or roll: 201, the new key and, this once, its secret.
func writeCreated(w http.ResponseWriter, k store.Key, secret string, now time.Time) {
	out := keyJSON(k, now)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
}

// Event is the API's event object.
type Event struct {
	Object    string    `json:"object"`
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Instance  string    `json:"instance"`
	KeyID     string    `json:"key_id"`
	NewKeyID  string    `json:"new_key_id,omitempty"`
	Actor     string    `json:"actor"`
	CreatedAt time.Time `json:"created_at"`
}

func (a *API) listEvents(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, _, err := pathIDs(r)
	if err != nil {
		return err
	}
	opt, err := listOptions(r, false)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	events, more, err := a.Store.ListEvents(ctx, instance, opt)
	if err != nil {
		return err
	}
	out := List[Event]{Object: "list", Data: make([]Event, 0, len(events)), HasMore: more}
	for _, e := range events {
		out.Data = append(out.Data, Event{Object: "event", ID: e.ID, Type: e.Type, Instance: e.Instance,
			KeyID: e.KeyID, NewKeyID: e.NewKeyID, Actor: e.Actor, CreatedAt: e.CreatedAt.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
