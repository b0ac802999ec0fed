package admin

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/keygate/keygate/internal/wire"
)

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
	wire.WriteError(w, status, wire.ErrorBody(typ, code, msg))
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
