package admin

import (
	"bytes"
	"encoding/json"
	"net/netip"

	"github.com/keygate/keygate/store"
)

// The restrictions of a key (scopes, allowed_ips, metadata) as requests send them. Each is
// kept as raw JSON by the body structs and read here, so that an absent field, an explicit
// null and a value of the wrong type can each be told apart and answered with a message
// that names the field.

// isNull reports whether a field present in the body is the JSON null.
func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// stringList reads a field that must be null (nil, true) or a list of strings.
func stringList(field string, raw json.RawMessage) (list []string, null bool, err error) {
	if isNull(raw) {
		return nil, true, nil
	}
	var items []*string
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, false, errInvalid("%s must be null or a list of strings.", field)
	}
	list = make([]string, 0, len(items))
	for _, s := range items {
		if s == nil {
			return nil, false, errInvalid("%s must be null or a list of strings (it holds a null).", field)
		}
		list = append(list, *s)
	}
	return list, false, nil
}

// parseScopes reads scopes: null (any route) or 1 to store.MaxScopes scopes.
func parseScopes(raw json.RawMessage) ([]string, error) {
	list, null, err := stringList("scopes", raw)
	if err != nil || null {
		return nil, err
	}
	if err := store.CheckScopes(list); err != nil {
		return nil, errInvalid("%v.", err)
	}
	return list, nil
}

// parseAllowedIPs reads allowed_ips: null (any address) or 1 to store.MaxAllowedIPs
// addresses or CIDR prefixes.
func parseAllowedIPs(raw json.RawMessage) ([]netip.Prefix, error) {
	list, null, err := stringList("allowed_ips", raw)
	if err != nil || null {
		return nil, err
	}
	ips, err := store.ParseAllowedIPs(list)
	if err != nil {
		return nil, errInvalid("%v.", err)
	}
	return ips, nil
}

// parseMetadata reads metadata: an object of string values; null and {} both mean none
// (nil).
func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var values map[string]*string
	if err := json.Unmarshal(raw, &values); err != nil {
		return nil, errInvalid("metadata must be an object of string values (or null).")
	}
	if len(values) > store.MaxMetadata {
		// Said before the names are looked at: the count is the problem.
		return nil, errInvalid("metadata holds at most %d values (it has %d).", store.MaxMetadata, len(values))
	}
	m := make(map[string]string, len(values))
	for k, v := range values {
		if v == nil {
			return nil, errInvalid("metadata values must be strings (one is null).")
		}
		m[k] = *v
	}
	if err := store.CheckMetadata(m); err != nil {
		return nil, errInvalid("%v.", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// allowedIPsJSON is how a key object shows its allowed addresses: null for any address.
func allowedIPsJSON(ips []netip.Prefix) []string {
	if len(ips) == 0 {
		return nil
	}
	out := make([]string, 0, len(ips))
	for _, p := range ips {
		out = append(out, store.FormatAllowedIP(p))
	}
	return out
}

// metadataJSON is how a key object shows its metadata: {} when it has none.
func metadataJSON(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
