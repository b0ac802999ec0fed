package store

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Restricted keys. A key may be limited to some scopes (the routes that require them) and
// to some client addresses, and carries metadata passed upstream. The zero values restrict
// nothing.

// Limits of the restrictions.
const (
	MaxScopes        = 50
	MaxAllowedIPs    = 100
	MaxMetadata      = 20
	MaxMetadataName  = 40
	MaxMetadataValue = 500
)

// EventKeyUpdated is recorded by UpdateKey, with the names of the fields it changed.
const EventKeyUpdated = "api_key.updated"

// ErrKeyRevoked: UpdateKey was asked to change a revoked key.
var ErrKeyRevoked = errors.New("the key is revoked")

// KeyUpdate says which fields UpdateKey changes: a nil field is left as it is.
type KeyUpdate struct {
	Name *string
	// ExpiresAt: a pointer to the zero time means never.
	ExpiresAt *time.Time
	// Scopes: a pointer to nil means any route.
	Scopes *[]string
	// AllowedIPs: a pointer to nil means any address.
	AllowedIPs *[]netip.Prefix
	// Metadata replaces the whole object; a pointer to nil or an empty map clears it.
	Metadata *map[string]string
	// RateLimit and Quota: a pointer to nil removes them.
	RateLimit **RateLimit
	Quota     **Quota
}

// The field names of the API, as api_key.updated events list them.
const (
	FieldName       = "name"
	FieldExpiresAt  = "expires_at"
	FieldScopes     = "scopes"
	FieldAllowedIPs = "allowed_ips"
	FieldMetadata   = "metadata"
)

// Apply returns k with u applied and the names of the fields that changed (in the order
// name, expires_at, scopes, allowed_ips, metadata, rate_limit, quota).
func (u KeyUpdate) Apply(k Key) (Key, []string) {
	var changed []string
	if u.Name != nil && *u.Name != k.Name {
		k.Name = *u.Name
		changed = append(changed, FieldName)
	}
	// Compared as stores keep times: an expiry within the same millisecond changes nothing.
	if at := u.ExpiresAt; at != nil && !FromMillis(Millis(*at)).Equal(k.ExpiresAt) {
		k.ExpiresAt = FromMillis(Millis(*at))
		changed = append(changed, FieldExpiresAt)
	}
	if u.Scopes != nil && !equalStrings(*u.Scopes, k.Scopes) {
		k.Scopes = cloneStrings(*u.Scopes)
		changed = append(changed, FieldScopes)
	}
	if u.AllowedIPs != nil && !equalPrefixes(*u.AllowedIPs, k.AllowedIPs) {
		k.AllowedIPs = clonePrefixes(*u.AllowedIPs)
		changed = append(changed, FieldAllowedIPs)
	}
	if u.Metadata != nil && !equalMaps(*u.Metadata, k.Metadata) {
		k.Metadata = cloneMap(*u.Metadata)
		changed = append(changed, FieldMetadata)
	}
	if u.RateLimit != nil && !equalPtr(*u.RateLimit, k.RateLimit) {
		k.RateLimit = clonePtr(*u.RateLimit)
		changed = append(changed, FieldRateLimit)
	}
	if u.Quota != nil && !equalPtr(*u.Quota, k.Quota) {
		k.Quota = clonePtr(*u.Quota)
		changed = append(changed, FieldQuota)
	}
	return k, changed
}

func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func equalStrings(a, b []string) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}

func clonePrefixes(p []netip.Prefix) []netip.Prefix {
	if p == nil {
		return nil
	}
	return append([]netip.Prefix{}, p...)
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

var scopePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}\*?$`)

// CheckScopes checks a key's scope list: nil (any route) or 1–50 scopes of the form
// [a-z0-9][a-z0-9_.:-]{0,63}, optionally ending in * (charges:* covers charges:read), each
// once.
func CheckScopes(scopes []string) error {
	if scopes == nil {
		return nil
	}
	if len(scopes) == 0 || len(scopes) > MaxScopes {
		return fmt.Errorf("scopes must be null or a list of 1 to %d scopes", MaxScopes)
	}
	seen := make(map[string]bool, len(scopes))
	for _, s := range scopes {
		if !scopePattern.MatchString(s) {
			return fmt.Errorf("scope %q is malformed: letters a-z, digits and _ . : -, at most 64, optionally ending in *", clip(s))
		}
		if seen[s] {
			return fmt.Errorf("scope %q is listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// ValidRouteScope reports whether s can be required by a route: a scope without *.
func ValidRouteScope(s string) bool {
	return scopePattern.MatchString(s) && !strings.HasSuffix(s, "*")
}

// ParseAllowedIPs reads a key's allowed addresses: nil (any) or 1–100 IPv4/IPv6 addresses
// or CIDR prefixes. An address is a prefix of its full length; IPv4-mapped IPv6 addresses
// are taken as IPv4; prefixes are kept masked (10.1.2.3/8 is 10.0.0.0/8).
func ParseAllowedIPs(list []string) ([]netip.Prefix, error) {
	if list == nil {
		return nil, nil
	}
	if len(list) == 0 || len(list) > MaxAllowedIPs {
		return nil, fmt.Errorf("allowed_ips must be null or a list of 1 to %d addresses or CIDR prefixes", MaxAllowedIPs)
	}
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		p, err := ParseAllowedIP(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseAllowedIP reads one address or CIDR prefix.
func ParseAllowedIP(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("allowed_ips: %q is not an IPv4 or IPv6 address or CIDR prefix", clip(s))
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return netip.Prefix{}, bad
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, bad
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// FormatAllowedIP writes a prefix as the API shows it: an address alone when the prefix
// is a single address.
func FormatAllowedIP(p netip.Prefix) string {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}

var metadataName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,40}$`)

// CheckMetadata checks a key's metadata: at most 20 string values, names 1–40 characters
// of [A-Za-z0-9_-], values at most 500 characters.
func CheckMetadata(m map[string]string) error {
	if len(m) > MaxMetadata {
		return fmt.Errorf("metadata holds at most %d values (it has %d)", MaxMetadata, len(m))
	}
	for k, v := range m {
		if !metadataName.MatchString(k) {
			return fmt.Errorf("metadata name %q is malformed: 1 to %d letters, digits, _ or -", clip(k), MaxMetadataName)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("metadata %s must be valid UTF-8", k)
		}
		if n := utf8.RuneCountInString(v); n > MaxMetadataValue {
			return fmt.Errorf("metadata %s is longer than %d characters (%d)", k, MaxMetadataValue, n)
		}
	}
	return nil
}

// clip shortens what a request sent before an error message repeats it.
func clip(s string) string {
	if r := []rune(s); len(r) > 40 {
		return string(r[:40]) + "…"
	}
	return s
}
