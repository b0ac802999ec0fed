package redisstore

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/keygate/keygate/store"
)

// A key's restrictions and limits are five optional fields, on its listed record and on its
// lookup entry alike (the gateway decides from the lookup entry): scopes (a JSON list of
// strings), ips (a JSON list of addresses and prefixes as the API writes them,
// store.FormatAllowedIP), meta (a JSON object of strings), rl (the rate limit,
// {"limit":100,"window":60}, the window in seconds) and quota ({"limit":1000,"period":"day"}).
// An absent field restricts nothing: keys written before the fields existed read as
// unrestricted and unlimited. An empty list is kept as "[]" (it is not null).

// restrictFields are the names of the optional fields, in the order of restrictions.
var restrictFields = []string{"scopes", "ips", "meta", "rl", "quota"}

// restrictLua defines set_optional(key, names, values), which sets each field to its value,
// or deletes it when the value is empty, and RESTRICT_FIELDS, the names of restrictFields.
const restrictLua = `
local RESTRICT_FIELDS = {'scopes', 'ips', 'meta', 'rl', 'quota'}
local function set_optional(key, names, values)
  for i, f in ipairs(names) do
    if values[i] == '' then redis.call('HDEL', key, f) else redis.call('HSET', key, f, values[i]) end
  end
end
`

// rateLimitJSON and quotaJSON are the encodings of the rl and quota fields.
type rateLimitJSON struct {
	Limit  int64 `json:"limit"`
	Window int64 `json:"window"` // seconds
}

type quotaJSON struct {
	Limit  int64  `json:"limit"`
	Period string `json:"period"`
}

// restrictions encodes k's restrictions and limits as the values of restrictFields ("" for
// none).
func restrictions(k store.Key) ([]string, error) {
	out := make([]string, len(restrictFields))
	enc := func(i int, v any) error {
		b, err := json.Marshal(v)
		out[i] = string(b)
		return err
	}
	if k.Scopes != nil {
		if err := enc(0, k.Scopes); err != nil {
			return nil, err
		}
	}
	if k.AllowedIPs != nil {
		ips := make([]string, len(k.AllowedIPs))
		for i, p := range k.AllowedIPs {
			ips[i] = store.FormatAllowedIP(p)
		}
		if err := enc(1, ips); err != nil {
			return nil, err
		}
	}
	if len(k.Metadata) > 0 {
		if err := enc(2, k.Metadata); err != nil {
			return nil, err
		}
	}
	if r := k.RateLimit; r != nil {
		if err := enc(3, rateLimitJSON{Limit: r.Limit, Window: int64(r.Window / time.Second)}); err != nil {
			return nil, err
		}
	}
	if q := k.Quota; q != nil {
		if err := enc(4, quotaJSON{Limit: q.Limit, Period: q.Period}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeRestrictions reads the values of restrictFields (nil or "" for none) into a Key
// that holds only them.
func decodeRestrictions(v []any) (k store.Key, err error) {
	str := func(i int) string { s, _ := v[i].(string); return s }
	if s := str(0); s != "" {
		if err := json.Unmarshal([]byte(s), &k.Scopes); err != nil {
			return store.Key{}, fmt.Errorf("scopes: %v", err)
		}
	}
	if s := str(1); s != "" {
		var list []string
		if err := json.Unmarshal([]byte(s), &list); err != nil {
			return store.Key{}, fmt.Errorf("allowed ips: %v", err)
		}
		k.AllowedIPs = make([]netip.Prefix, len(list))
		for i, a := range list {
			if k.AllowedIPs[i], err = store.ParseAllowedIP(a); err != nil {
				return store.Key{}, err
			}
		}
	}
	if s := str(2); s != "" {
		if err := json.Unmarshal([]byte(s), &k.Metadata); err != nil {
			return store.Key{}, fmt.Errorf("metadata: %v", err)
		}
		if len(k.Metadata) == 0 {
			k.Metadata = nil
		}
	}
	if s := str(3); s != "" {
		var r rateLimitJSON
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			return store.Key{}, fmt.Errorf("rate limit: %v", err)
		}
		k.RateLimit = &store.RateLimit{Limit: r.Limit, Window: time.Duration(r.Window) * time.Second}
	}
	if s := str(4); s != "" {
		var q quotaJSON
		if err := json.Unmarshal([]byte(s), &q); err != nil {
			return store.Key{}, fmt.Errorf("quota: %v", err)
		}
		k.Quota = &store.Quota{Limit: q.Limit, Period: q.Period}
	}
	return k, nil
}

// setRestrictions copies the restrictions and limits of r (decodeRestrictions) onto k.
func setRestrictions(k *store.Key, r store.Key) {
	k.Scopes, k.AllowedIPs, k.Metadata, k.RateLimit, k.Quota = r.Scopes, r.AllowedIPs, r.Metadata, r.RateLimit, r.Quota
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

// restrictArgs are the values of restrictFields as script arguments.
func restrictArgs(r []string) []any {
	out := make([]any, len(r))
	for i, v := range r {
		out[i] = v
	}
	return out
}
