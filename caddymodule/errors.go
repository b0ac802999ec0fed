package caddymodule

import (
	"net/http"
	"strconv"
	"time"

	"github.com/keygate/keygate/internal/wire"
	"github.com/keygate/keygate/verify"
)

// refusals are the gateway's error bodies, rendered once from verify's outcome table: a
// refusal costs no JSON encoding.
var refusals = func() (out [verify.NumCodes][]byte) {
	for c := verify.Code(0); c < verify.NumCodes; c++ {
		out[c] = wire.ErrorBody(c.Type(), c.String(), c.Message())
	}
	return out
}()

// The challenges of a 401: Bearer (with error="invalid_token" when a credential was sent),
// and Basic, so that clients which send Basic credentials only once challenged (wget --user,
// Python's HTTPBasicAuthHandler) send the key.
var (
	hdrChallenge    = []string{`Bearer realm="nora"`, `Basic realm="nora"`}
	hdrChallengeErr = []string{`Bearer realm="nora", error="invalid_token"`, `Basic realm="nora"`}
	hdrRetryOne     = []string{"1"}
)

// writeRefusal answers a refused request with c's status and body. It returns nil but for a
// write error: the answer is complete, and the request never reaches the upstream.
func writeRefusal(w http.ResponseWriter, c verify.Code) error {
	h := w.Header()
	switch c.Status() {
	case http.StatusUnauthorized:
		if c == verify.Missing {
			h["Www-Authenticate"] = hdrChallenge
		} else {
			h["Www-Authenticate"] = hdrChallengeErr
		}
	case http.StatusServiceUnavailable:
		h["Retry-After"] = hdrRetryOne
	}
	return wire.WriteError(w, c.Status(), refusals[c])
}

// retryHeaders holds the Retry-After values of the first minutes, so that a 429 allocates
// nothing.
var retryHeaders = func() (out [301][]string) {
	for i := range out {
		out[i] = []string{strconv.Itoa(i)}
	}
	return out
}()

// writeRefusalRetry answers a refusal that the client may retry after wait, in whole
// seconds (rounded up, at least 1).
func writeRefusalRetry(w http.ResponseWriter, c verify.Code, wait time.Duration) error {
	secs := int((wait + time.Second - 1) / time.Second)
	secs = max(secs, 1)
	if secs < len(retryHeaders) {
		w.Header()["Retry-After"] = retryHeaders[secs]
	} else {
		w.Header()["Retry-After"] = []string{strconv.Itoa(secs)}
	}
	return wire.WriteError(w, c.Status(), refusals[c])
}
