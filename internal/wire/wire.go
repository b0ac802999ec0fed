// Package wire is what the gateway and the admin API share on the wire: reading the
// credential of an Authorization header, and writing a JSON error answer. One parser and one
// writer, so both endpoints read tokens and answer errors the same way.
package wire

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
)

// Problem says what is wrong with the credential of a request.
type Problem uint8

const (
	// OK: a credential was read.
	OK Problem = iota
	// Missing: no Authorization header, or a scheme with nothing after it.
	Missing
	// Invalid: several Authorization headers, an unknown scheme, extra words, bad base64, a
	// Basic password…
	Invalid
)

// Bearer reads "Bearer <token>" (scheme case-insensitive) from a request's Authorization
// header values. No header or an empty token is Missing; anything else unusable is Invalid.
// It checks the shape only and does not allocate.
func Bearer(values []string) (string, Problem) {
	return read(values, false, 0)
}

// BearerOrBasic is Bearer that also takes "Basic base64(<user>:)", a user with an empty
// password, as `curl -u sk_test_…:` sends it. A user longer than maxUser bytes is Invalid
// (a base64 too long to hold one is refused before decoding).
func BearerOrBasic(values []string, maxUser int) (string, Problem) {
	return read(values, true, maxUser)
}

// maxBasicUser bounds BearerOrBasic's maxUser: the decoding buffer lives on the stack.
const maxBasicUser = 128

func read(values []string, basic bool, maxUser int) (string, Problem) {
	switch len(values) {
	case 0:
		return "", Missing
	case 1:
	default:
		return "", Invalid
	}
	h := strings.TrimSpace(values[0])
	if h == "" {
		return "", Missing
	}
	scheme, rest, _ := strings.Cut(h, " ")
	rest = strings.TrimLeft(rest, " ")
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		if rest == "" {
			return "", Missing
		}
		if strings.ContainsAny(rest, " \t") {
			return "", Invalid
		}
		return rest, OK
	case basic && strings.EqualFold(scheme, "Basic"):
		if rest == "" {
			return "", Missing
		}
		maxUser = min(maxUser, maxBasicUser)
		// user + ":" encoded, with padding.
		if len(rest) > base64.StdEncoding.EncodedLen(maxUser+1) || strings.ContainsAny(rest, " \t") {
			return "", Invalid
		}
		var buf [maxBasicUser + 3]byte
		n, err := base64.StdEncoding.Decode(buf[:], []byte(rest))
		if err != nil {
			return "", Invalid
		}
		user, pass, ok := strings.Cut(string(buf[:n]), ":")
		if !ok || pass != "" || len(user) > maxUser {
			return "", Invalid
		}
		if user == "" {
			return "", Missing
		}
		return user, OK
	}
	return "", Invalid
}

// ErrorBody renders the JSON error answer {"error":{"type","code","message"}} with a final
// newline. Render fixed answers once, at start-up, so a refusal costs no encoding.
func ErrorBody(typ, code, message string) []byte {
	type detail struct {
		Type    string `json:"type"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	b, err := json.Marshal(struct {
		Error detail `json:"error"`
	}{detail{typ, code, message}})
	if err != nil { // cannot happen: three strings
		panic(err)
	}
	return append(b, '\n')
}

var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
)

// WriteError answers with a rendered error body: Content-Type application/json,
// Cache-Control no-store, and the status. Other headers (WWW-Authenticate, Retry-After) are
// the caller's, set before.
func WriteError(w http.ResponseWriter, status int, body []byte) error {
	h := w.Header()
	h["Content-Type"] = hdrJSON
	h["Cache-Control"] = hdrNoStore
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}
