package scanning

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
)

// MaxBody is the largest alert batch we read: 1 MiB, about 10,000 tokens.
const MaxBody = 1 << 20

// Alert is one token GitHub found.
type Alert struct {
	Token string `json:"token"`
	// Type is the token type we registered with GitHub; echoed in the answer.
	Type string `json:"type"`
	// URL and Source say where it was found (a commit, an issue, content…).
	URL    string `json:"url"`
	Source string `json:"source"`
}

// The labels of an answer.
const (
	TruePositive  = "true_positive"
	FalsePositive = "false_positive"
)

// Result is the answer for one alert.
type Result struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// ErrBatch is the error of a body that is not a JSON array of alerts.
var ErrBatch = errors.New("the body must be a JSON array of {token, type, url, source} objects")

// DecodeBatch reads a batch: a JSON array of objects whose fields are strings (unknown
// fields ignored). null, a non-array, a null or non-object element, or trailing data is
// ErrBatch.
func DecodeBatch(body []byte) ([]Alert, error) {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) == 0 || b[0] != '[' {
		return nil, ErrBatch
	}
	var raw []*Alert
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, ErrBatch
	}
	out := make([]Alert, len(raw))
	for i, a := range raw {
		if a == nil {
			return nil, ErrBatch
		}
		out[i] = *a
	}
	return out, nil
}

// TokenHash is the token_hash of an answer: hex SHA-256 of the token as GitHub sent it
// (plain SHA-256, whatever pepper the store hashes keys with). It is also the only thing
// about a token that may be logged.
func TokenHash(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}
