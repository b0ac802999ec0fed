package redisstore

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/keygate/keygate/store"
)

// A key's restrictions are three optional fields, on its listed record and on its lookup
// entry alike (the gateway decides from the lookup entry): scopes (a JSON list of strings),
// ips (a JSON list of addresses and prefixes as the API writes them, store.FormatAllowedIP)
// and meta (a JSON object of strings). An absent field restricts nothing: keys written before
// the fields existed read as unrestricted. An empty list is kept as "[]" (it is not null).

// restrictFields are the names of the optional fields, in the order of restrictions.
var restrictFields = []string{"scopes", "ips", "meta"}

// restrictLua defines set_optional(key, names, values), which sets each field to its value,
// or deletes it when the value is empty.
const restrictLua = `
local function set_optional(key, names, values)
  for i, f in ipairs(names) do
    if values[i] == '' then redis.call('HDEL', key, f) else redis.call('HSET', key, f, values[i]) end
  end
end
`

// restrictions encodes k's restrictions as the values of restrictFields ("" for none).
func restrictions(k store.Key) ([]string, error) {
	out := make([]string, 3)
	if k.Scopes != nil {
		v, err := json.Marshal(k.Scopes)
		if err != nil {
			return nil, err
		}
		out[0] = string(v)
	}
	if k.AllowedIPs != nil {
		ips := make([]string, len(k.AllowedIPs))
		for i, p := range k.AllowedIPs {
			ips[i] = store.FormatAllowedIP(p)
		}
		v, err := json.Marshal(ips)
		if err != nil {
			return nil, err
		}
		out[1] = string(v)
	}
	if len(k.Metadata) > 0 {
		v, err := json.Marshal(k.Metadata)
		if err != nil {
			return nil, err
		}
		out[2] = string(v)
	}
	return out, nil
}

// decodeRestrictions reads the values of restrictFields (nil or "" for none).
func decodeRestrictions(v []any) (scopes []string, ips []netip.Prefix, meta map[string]string, err error) {
	str := func(i int) string { s, _ := v[i].(string); return s }
	if s := str(0); s != "" {
		if err := json.Unmarshal([]byte(s), &scopes); err != nil {
			return nil, nil, nil, fmt.Errorf("scopes: %v", err)
		}
	}
	if s := str(1); s != "" {
		var list []string
		if err := json.Unmarshal([]byte(s), &list); err != nil {
			return nil, nil, nil, fmt.Errorf("allowed ips: %v", err)
		}
		ips = make([]netip.Prefix, len(list))
		for i, a := range list {
			if ips[i], err = store.ParseAllowedIP(a); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	if s := str(2); s != "" {
		if err := json.Unmarshal([]byte(s), &meta); err != nil {
			return nil, nil, nil, fmt.Errorf("metadata: %v", err)
		}
		if len(meta) == 0 {
			meta = nil
		}
	}
	return scopes, ips, meta, nil
}

// lookupValues are the field-value pairs of k's new lookup entry.
func lookupValues(k store.Key) ([]any, error) {
	r, err := restrictions(k)
	if err != nil {
		return nil, err
	}
	vals := []any{"id", k.ID, "instance", k.Instance, "env", k.Environment.String(), "exp", store.Millis(k.ExpiresAt), "rev", 0}
	for i, f := range restrictFields {
		if r[i] != "" {
			vals = append(vals, f, r[i])
		}
	}
	return vals, nil
}
