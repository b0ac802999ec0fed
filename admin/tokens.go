package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Permission is what an admin token may do.
type Permission string

// The permissions an admin token can hold.
const (
	PermRead     Permission = "apiKey.read"
	PermCreate   Permission = "apiKey.create"
	PermDelete   Permission = "apiKey.delete"
	PermInstance Permission = "instance.manage"
)

// ParsePermission checks a permission's name.
func ParsePermission(s string) (Permission, error) {
	switch p := Permission(s); p {
	case PermRead, PermCreate, PermDelete, PermInstance:
		return p, nil
	}
	return "", fmt.Errorf("unknown permission %q (apiKey.read, apiKey.create, apiKey.delete, instance.manage)", s)
}

// Token is an admin token as configured: only the SHA-256 of its secret is kept.
type Token struct {
	Name        string
	Hash        [sha256.Size]byte
	Permissions []Permission
	// Instances limits the token to these instances; nil means all.
	Instances []string
}

// TokenHash reads a configured token: "sha256:<64 hex>" is a hash, anything else the token
// itself. Errors never repeat the value.
func TokenHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	if rest, ok := strings.CutPrefix(s, "sha256:"); ok {
		b, err := hex.DecodeString(rest)
		if err != nil || len(b) != sha256.Size {
			return h, errors.New("a sha256: token must be followed by 64 hex characters")
		}
		copy(h[:], b)
		return h, nil
	}
	if s == "" {
		return h, errors.New("the token is empty")
	}
	if len(s) < 16 {
		return h, errors.New("the token is too short: use at least 16 characters (e.g. openssl rand -hex 32)")
	}
	return sha256.Sum256([]byte(s)), nil
}

// DefaultTokenName is the name of a token configured without one: "token-" and the first
// 8 hex characters of its SHA-256.
func DefaultTokenName(h [sha256.Size]byte) string {
	return "token-" + hex.EncodeToString(h[:4])
}

// Has reports whether the token holds p.
func (t *Token) Has(p Permission) bool {
	for _, q := range t.Permissions {
		if q == p {
			return true
		}
	}
	return false
}

// Covers reports whether the token may act on the instance.
func (t *Token) Covers(instance string) bool {
	if t.Instances == nil {
		return true
	}
	for _, in := range t.Instances {
		if in == instance {
			return true
		}
	}
	return false
}

// authenticate finds the token whose hash matches the presented secret. It compares against
// every configured token in constant time, so timing tells nothing about which matched.
func authenticate(tokens []Token, presented string) *Token {
	h := sha256.Sum256([]byte(presented))
	var found *Token
	for i := range tokens {
		if subtle.ConstantTimeCompare(h[:], tokens[i].Hash[:]) == 1 {
			found = &tokens[i]
		}
	}
	return found
}
