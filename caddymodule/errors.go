package caddymodule

import (
	"encoding/json"
	"net/http"

	"github.com/keygate/keygate/verify"
)

// gwCode is a gateway answer: OK or one of SPEC §2's error codes.
type gwCode uint8

const (
	codeOK gwCode = iota
	codeMissing
	codeInvalid
	codeRevoked
	codeExpired
	codeWrongEnv
	codeUnavailable
	numGwCodes
)

func gatewayCode(c verify.Code) gwCode {
	switch c {
	case verify.OK:
		return codeOK
	case verify.Revoked:
		return codeRevoked
	case verify.Expired:
		return codeExpired
	case verify.WrongEnvironment:
		return codeWrongEnv
	case verify.Unavailable:
		return codeUnavailable
	}
	return codeInvalid
}

type errorBody struct {
	status int
	code   string
	body   []byte
	// credential: a credential was sent (WWW-Authenticate gets error="invalid_token").
	credential bool
}

// errorBodies are rendered once: a refusal costs no JSON encoding.
var errorBodies = func() [numGwCodes]errorBody {
	var out [numGwCodes]errorBody
	add := func(c gwCode, status int, typ, code, msg string, credential bool) {
		type detail struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		b, err := json.Marshal(struct {
			Error detail `json:"error"`
		}{detail{typ, code, msg}})
		if err != nil {
			panic(err)
		}
		out[c] = errorBody{status: status, code: code, body: append(b, '\n'), credential: credential}
	}
	const authn = "authentication_error"
	add(codeOK, http.StatusOK, "", "ok", "", true)
	add(codeMissing, http.StatusUnauthorized, authn, "missing_api_key",
		"No API key provided. Send it as 'Authorization: Bearer sk_...'.", false)
	add(codeInvalid, http.StatusUnauthorized, authn, "invalid_api_key", "Invalid API key provided.", true)
	add(codeRevoked, http.StatusUnauthorized, authn, "api_key_revoked", "This API key has been revoked.", true)
	add(codeExpired, http.StatusUnauthorized, authn, "api_key_expired", "This API key has expired.", true)
	add(codeWrongEnv, http.StatusUnauthorized, authn, "api_key_wrong_environment",
		"This API key belongs to the other environment: sk_live_ keys are for production, sk_test_ keys for sandbox.", true)
	add(codeUnavailable, http.StatusServiceUnavailable, "api_error", "auth_unavailable",
		"API keys cannot be checked right now. Retry shortly.", true)
	return out
}()

var (
	hdrJSON         = []string{"application/json"}
	hdrBearer       = []string{`Bearer realm="nora"`}
	hdrBearerErr    = []string{`Bearer realm="nora", error="invalid_token"`}
	hdrRetryOne     = []string{"1"}
	hdrNoStore      = []string{"no-store"}
	hdrContentTypes = "Content-Type"
)

// writeError answers a refused request. It returns nil: the answer is complete, and the
// request never reaches the upstream.
func writeError(w http.ResponseWriter, c gwCode) error {
	eb := &errorBodies[c]
	h := w.Header()
	h[hdrContentTypes] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	switch {
	case eb.status == http.StatusServiceUnavailable:
		h["Retry-After"] = hdrRetryOne
	case eb.credential:
		h["Www-Authenticate"] = hdrBearerErr
	default:
		h["Www-Authenticate"] = hdrBearer
	}
	w.WriteHeader(eb.status)
	_, err := w.Write(eb.body)
	return err
}
