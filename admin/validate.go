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
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

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

// pathIDs checks the instance and key ids of a request's path.
func pathIDs(r *http.Request) (instance, id string, err error) {
	instance = r.PathValue("instance")
	if !store.ValidInstanceID(instance) {
		return "", "", errInvalid("The instance id in the path is malformed.")
	}
	id = r.PathValue("id")
	if id != "" && !apikey.ValidKeyID(id) {
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

// optionalExpiry reads an optional expires_at (nil: never expires).
func optionalExpiry(s *string, now time.Time) (time.Time, error) {
	if s == nil {
		return time.Time{}, nil
	}
	return parseExpiry(*s, now)
}
