package verify

import (
	"net/netip"
	"strings"

	"github.com/keygate/keygate/store"
)

// policy is a key's restrictions and metadata as the cache holds them, ready for the
// per-request checks: scopes as a set, allowed addresses as an ipSet, the placeholders'
// names and values already built. An unrestricted key's policy is the zero value.
type policy struct {
	scoped   bool                // false: any route
	exact    map[string]struct{} // the scopes without *
	prefixes []string            // the scopes ending in *, without it
	ips      *ipSet              // nil: any address
	joined   string              // the scopes, comma-separated
	meta     []Meta
	rl       *store.RateLimit // nil: the route's default, if any
	quota    *store.Quota
}

// Meta is a metadata value with the name of its placeholder,
// {http.auth.user.metadata.NAME}.
type Meta struct {
	Placeholder string
	Value       string
}

// MetadataPlaceholder is the placeholder prefix of metadata values.
const MetadataPlaceholder = "http.auth.user.metadata."

func newPolicy(scopes []string, allowed []netip.Prefix, metadata map[string]string) policy {
	var p policy
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

func policyOf(l store.Lookup) policy {
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
