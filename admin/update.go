package admin

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/keygate/keygate/store"
)

var errKeyRevoked = &apiError{http.StatusConflict, "invalid_request_error", "api_key_revoked",
	"This key is revoked: a revoked key cannot be changed."}

// updateKey is PATCH …/keys/{id}: it changes the fields the body names and leaves the rest.
// Every value is checked before the store is asked, so a refused update writes nothing; a
// body naming no field is refused too (it is more likely a mistake than a wish to change
// nothing).
func (a *API) updateKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	// Raw values: an absent field (nil) changes nothing, an explicit null clears.
	var body struct {
		Name       json.RawMessage `json:"name"`
		ExpiresAt  json.RawMessage `json:"expires_at"`
		Scopes     json.RawMessage `json:"scopes"`
		AllowedIPs json.RawMessage `json:"allowed_ips"`
		Metadata   json.RawMessage `json:"metadata"`
		RateLimit  json.RawMessage `json:"rate_limit"`
		Quota      json.RawMessage `json:"quota"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	now := a.Now()
	var u store.KeyUpdate
	if body.Name != nil {
		var name string
		if isNull(body.Name) || json.Unmarshal(body.Name, &name) != nil {
			return errInvalid("name must be a string.")
		}
		if err := checkName("name", name); err != nil {
			return err
		}
		u.Name = &name
	}
	if body.ExpiresAt != nil {
		var at time.Time // zero: never
		if !isNull(body.ExpiresAt) {
			var s string
			if json.Unmarshal(body.ExpiresAt, &s) != nil {
				return errInvalid("expires_at must be a date (YYYY-MM-DD), an RFC 3339 time or null.")
			}
			if at, err = parseExpiry(s, now); err != nil {
				return err
			}
		}
		u.ExpiresAt = &at
	}
	if body.Scopes != nil {
		scopes, err := parseScopes(body.Scopes)
		if err != nil {
			return err
		}
		u.Scopes = &scopes
	}
	if body.AllowedIPs != nil {
		ips, err := parseAllowedIPs(body.AllowedIPs)
		if err != nil {
			return err
		}
		u.AllowedIPs = &ips
	}
	if body.Metadata != nil {
		m, err := parseMetadata(body.Metadata)
		if err != nil {
			return err
		}
		u.Metadata = &m
	}
	if body.RateLimit != nil {
		rl, err := parseRateLimit(body.RateLimit)
		if err != nil {
			return err
		}
		u.RateLimit = &rl
	}
	if body.Quota != nil {
		q, err := parseQuota(body.Quota)
		if err != nil {
			return err
		}
		u.Quota = &q
	}
	if u == (store.KeyUpdate{}) {
		return errInvalid("Nothing to update: give at least one of name, expires_at, scopes, allowed_ips, metadata, rate_limit, quota.")
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	// The store records the event, with the names of the fields that changed, in the same
	// step as the change (and none when nothing changed).
	ev, err := newEvent(store.EventKeyUpdated, instance, id, "", t.Name, now)
	if err != nil {
		return err
	}
	k, err := a.Store.UpdateKey(ctx, instance, id, u, &ev)
	if err != nil {
		return err
	}
	// Every update is published as an invalidation (the store does not tell a narrowing
	// from a widening), so every update waits for the fleet to apply it.
	prop := a.confirm(ctx)
	out, _ := a.keyWithUse(ctx, k, now, true)
	out.Propagation = prop
	writeJSON(w, http.StatusOK, out)
	return nil
}
