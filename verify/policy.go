package verify

import (
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/keygate/keygate/limit"
	"github.com/keygate/keygate/store"
)

// policy is a key's restrictions and metadata as the cache holds them, ready for the
// per-request checks: scopes as a set, allowed addresses as an ipSet, the placeholders'
// names and values already built. An unrestricted key's policy is the zero value.
//
// An entry of an unrestricted, unlimited key has no policy (nil): the zero policy, which
// restricts nothing, stands for it. A policy is immutable but for meter.
type policy struct {
	scoped   bool                // false: any route
	exact    map[string]struct{} // the scopes without *
	prefixes []string            // the scopes ending in *, without it
	ips      *ipSet              // nil: any address
	joined   string              // the scopes, comma-separated
	meta     []Meta
	rl       *store.RateLimit // nil: the route's default, if any
	quota    *store.Quota
	// id is the key id when it does not fit the entry's fixed-size field (ids not of the
	// form key_ and 24 characters); "" otherwise.
	id string
	// meter is the key's limit state, found on first need.
	meter atomic.Pointer[limit.KeyMeter]
}

// openPolicy is the policy of the entries that have none.
var openPolicy policy

// Meta is a metadata value with the name of its placeholder,
// {http.auth.user.metadata.NAME}.
type Meta struct {
	Placeholder string
	Value       string
}

// MetadataPlaceholder is the placeholder prefix of metadata values.
const MetadataPlaceholder = "http.auth.user.metadata."

func newPolicy(scopes []string, allowed []netip.Prefix, metadata map[string]string) *policy {
	p := new(policy)
	if scopes != nil {
		p.scoped = true
		p.exact = make(map[string]struct{}, len(scopes))
		for _, s := range scopes {
			if pre, ok := strings.CutSuffix(s, "*"); ok {
				p.prefixes = append(p.prefixes, pre)
			} else {
				p.exact[s] = struct{}{}
			}
		}
		p.joined = strings.Join(scopes, ",")
	}
	p.ips = newIPSet(allowed)
	for name, v := range metadata {
		p.meta = append(p.meta, Meta{Placeholder: MetadataPlaceholder + name, Value: v})
	}
	return p
}

// policyOf is the policy of a lookup: nil for a key with no restriction, no metadata and no
// limit (the common case costs no allocation and no memory in the cache).
func policyOf(l store.Lookup) *policy {
	if l.Scopes == nil && l.AllowedIPs == nil && len(l.Metadata) == 0 && l.RateLimit == nil && l.Quota == nil {
		return nil
	}
	p := newPolicy(l.Scopes, l.AllowedIPs, l.Metadata)
	p.rl, p.quota = l.RateLimit, l.Quota
	return p
}

// allows reports whether the key may use scope s: listed, or covered by a wildcard
// (charges:* covers charges:read).
func (p *policy) allows(s string) bool {
	if !p.scoped {
		return true
	}
	if _, ok := p.exact[s]; ok {
		return true
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(s, pre) && len(s) > len(pre) {
			return true
		}
	}
	return false
}
