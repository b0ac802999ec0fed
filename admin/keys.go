package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"go.uber.org/zap"
)

// Key is the API's key object.
type Key struct {
	Object      string     `json:"object"`
	ID          string     `json:"id"`
	Instance    string     `json:"instance"`
	Environment string     `json:"environment"`
	Name        string     `json:"name"`
	Prefix      string     `json:"prefix"`
	Status      string     `json:"status"`
	CreatedAt   *time.Time `json:"created_at"`
	ExpiresAt   *time.Time `json:"expires_at"`
	RevokedAt   *time.Time `json:"revoked_at"`
	LastUsedAt  *time.Time `json:"last_used_at"`
	// Scopes the key may use; nil (null): any route.
	Scopes []string `json:"scopes"`
	// AllowedIPs are the addresses and CIDR prefixes the key works from (an address alone
	// without /32 or /128); nil (null): any address.
	AllowedIPs []string `json:"allowed_ips"`
	// Metadata is never null in an answer: {} when the key has none.
	Metadata map[string]string `json:"metadata"`
	// RateLimit and Quota limit the key's requests; nil (null): no limit.
	RateLimit *RateLimit `json:"rate_limit"`
	Quota     *Quota     `json:"quota"`
	// QuotaUsed is how much of the current period's quota gateways have taken (they lease
	// units ahead of use, so it may run slightly ahead of the requests served); null
	// without a quota.
	QuotaUsed *int64 `json:"quota_used"`
	// QuotaResetsAt is the end of the quota's current period; null for a "total" quota and
	// without a quota.
	QuotaResetsAt *time.Time `json:"quota_resets_at"`
	// Secret is set only in the answer to a create or roll.
	Secret string `json:"secret,omitempty"`
	// Propagation is set in the answers to a revoke, a roll with no grace and an update:
	// how many gateways had applied the change when the answer was sent.
	Propagation *Propagation `json:"propagation,omitempty"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// scopesJSON is how a key object shows its scopes: null for any route.
func scopesJSON(scopes []string) []string {
	if len(scopes) == 0 {
		return nil
	}
	return append([]string{}, scopes...)
}

func keyJSON(k store.Key, now time.Time) Key {
	return Key{Object: "api_key", ID: k.ID, Instance: k.Instance, Environment: k.Environment.String(),
		Name: k.Name, Prefix: k.Prefix, Status: string(k.Status(now)),
		CreatedAt: timePtr(k.CreatedAt), ExpiresAt: timePtr(k.ExpiresAt),
		RevokedAt: timePtr(k.RevokedAt), LastUsedAt: timePtr(k.LastUsedAt),
		Scopes: scopesJSON(k.Scopes), AllowedIPs: allowedIPsJSON(k.AllowedIPs), Metadata: metadataJSON(k.Metadata),
		RateLimit: rateLimitJSON(k.RateLimit), Quota: quotaJSON(k.Quota)}
}

func (a *API) listKeys(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, _, err := pathIDs(r)
	if err != nil {
		return err
	}
	opt, err := listOptions(r, true)
	if err != nil {
		return err
	}
	now := a.Now()
	opt.Now = now
	ctx, cancel := a.ctx(r)
	defer cancel()
	keys, more, err := a.Store.ListKeys(ctx, instance, opt)
	if err != nil {
		return err
	}
	out := List[Key]{Object: "list", Data: make([]Key, 0, len(keys)), HasMore: more}
	// The quota use of every key with a quota, in one read of the store (one MGET on Redis).
	var refs []store.CounterRef
	var at []int
	for i, k := range keys {
		out.Data = append(out.Data, keyJSON(k, now))
		if k.Quota != nil {
			_, end, counter := store.QuotaPeriod(*k.Quota, now)
			out.Data[i].QuotaResetsAt = timePtr(end)
			refs = append(refs, store.CounterRef{KeyID: k.ID, Counter: counter})
			at = append(at, i)
		}
	}
	if len(refs) > 0 {
		used, err := store.UsedMany(ctx, a.Store, instance, refs)
		if err != nil {
			return err
		}
		for j, i := range at {
			out.Data[i].QuotaUsed = &used[j]
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) createKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, _, err := pathIDs(r)
	if err != nil {
		return err
	}
	var body struct {
		Name       *string         `json:"name"`
		ExpiresAt  *string         `json:"expires_at"`
		Scopes     json.RawMessage `json:"scopes"`
		AllowedIPs json.RawMessage `json:"allowed_ips"`
		Metadata   json.RawMessage `json:"metadata"`
		RateLimit  json.RawMessage `json:"rate_limit"`
		Quota      json.RawMessage `json:"quota"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if body.Name == nil {
		return errInvalid("name is required.")
	}
	if err := checkName("name", *body.Name); err != nil {
		return err
	}
	now := a.Now()
	expires, err := optionalExpiry(body.ExpiresAt, now)
	if err != nil {
		return err
	}
	// Absent and null are the same here: unrestricted, no metadata, no limits.
	var restricted store.Key
	for _, parse := range []func() error{
		func() error { return parseOptional(body.Scopes, parseScopes, &restricted.Scopes) },
		func() error { return parseOptional(body.AllowedIPs, parseAllowedIPs, &restricted.AllowedIPs) },
		func() error { return parseOptional(body.Metadata, parseMetadata, &restricted.Metadata) },
		func() error { return parseOptional(body.RateLimit, parseRateLimit, &restricted.RateLimit) },
		func() error { return parseOptional(body.Quota, parseQuota, &restricted.Quota) },
	} {
		if err := parse(); err != nil {
			return err
		}
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	in, err := a.instance(ctx, instance)
	if err != nil {
		return err
	}
	secret, k, err := a.minter().Mint(in, *body.Name, expires, now)
	if err != nil {
		return err
	}
	k.Scopes, k.AllowedIPs, k.Metadata = restricted.Scopes, restricted.AllowedIPs, restricted.Metadata
	k.RateLimit, k.Quota = restricted.RateLimit, restricted.Quota
	if err := a.Store.CreateKey(ctx, k); err != nil {
		return err
	}
	a.event(ctx, store.Event{Type: store.EventKeyCreated, Instance: instance, KeyID: k.ID, Actor: t.Name, CreatedAt: now})
	writeCreated(w, k, secret, now, nil)
	return nil
}

// event records an audit event. The change it records has happened: a failure to record it
// is logged, not returned.
func (a *API) event(ctx context.Context, e store.Event) {
	id, err := apikey.NewID("evt_", 24)
	if err == nil {
		e.ID = id
		err = a.Store.AddEvent(ctx, e)
	}
	if err != nil {
		a.Logger.Error("recording audit event", zap.String("type", e.Type), zap.String("key_id", e.KeyID), zap.Error(err))
	}
}

func (a *API) getKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	k, err := a.Store.Key(ctx, instance, id)
	if err != nil {
		return err
	}
	out, err := a.keyWithUse(ctx, k, a.Now(), false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	now := a.Now()
	// The store records the event only if this call is the one that revoked the key, in the
	// same step: concurrent revokes make one event.
	ev, err := newEvent(store.EventKeyRevoked, instance, id, "", t.Name, now)
	if err != nil {
		return err
	}
	k, _, err := a.Store.RevokeKey(ctx, instance, id, now, &ev)
	if err != nil {
		return err
	}
	prop := a.confirm(ctx)
	out, _ := a.keyWithUse(ctx, k, now, true)
	out.Propagation = prop
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) rollKey(w http.ResponseWriter, r *http.Request, t *Token) error {
	instance, id, err := pathIDs(r)
	if err != nil {
		return err
	}
	var body struct {
		Grace     *int64  `json:"expire_old_in_seconds"`
		Name      *string `json:"name"`
		ExpiresAt *string `json:"expires_at"`
	}
	// The body is optional: none at all (even sent chunked, without Content-Length) is {}.
	if r.ContentLength != 0 {
		if err := decode(w, r, &body); err != nil && err != errEmptyBody {
			return err
		}
	}
	var grace int64
	if body.Grace != nil {
		grace = *body.Grace
		if grace < 0 || grace > MaxGrace {
			return errInvalid("expire_old_in_seconds must be from 0 to %d (seven days).", MaxGrace)
		}
	}
	if body.Name != nil {
		if err := checkName("name", *body.Name); err != nil {
			return err
		}
	}
	now := a.Now()
	newExpiry, err := optionalExpiry(body.ExpiresAt, now)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(r)
	defer cancel()
	in, err := a.instance(ctx, instance)
	if err != nil {
		return err
	}
	old, err := a.Store.Key(ctx, instance, id)
	if err != nil {
		return err
	}
	if err := rollRefusal(old, now); err != nil {
		return err
	}
	name := old.Name
	if body.Name != nil {
		name = *body.Name
	}
	if body.ExpiresAt == nil {
		newExpiry = old.ExpiresAt
	}
	secret, next, err := a.minter().Mint(in, name, newExpiry, now)
	if err != nil {
		return err
	}
	// The replacement may do what the old key could, no more and no less, within the same
	// limits. Its quota is counted afresh: quota counters belong to a key (its id).
	next.Scopes, next.AllowedIPs, next.Metadata = old.Scopes, old.AllowedIPs, old.Metadata
	next.RateLimit, next.Quota = old.RateLimit, old.Quota
	ev, err := newEvent(store.EventKeyRolled, instance, id, next.ID, t.Name, now)
	if err != nil {
		return err
	}
	// The store claims the old key, creates the replacement and records the event in one
	// step: of concurrent rolls one succeeds, the others are refused here.
	cur, err := a.Store.RollKey(ctx, instance, id, next, now.Add(time.Duration(grace)*time.Second), &ev)
	if errors.Is(err, store.ErrNotActive) || errors.Is(err, store.ErrAlreadyRolled) {
		if ae := rollRefusal(cur, now); ae != nil {
			return ae
		}
	}
	if err != nil {
		return err
	}
	// An update of the old key between the read above and the roll would otherwise leave
	// the replacement with the restrictions it had before (a narrowed scope list or a lowered
	// limit lost): give the replacement the old key's restrictions and limits as the roll
	// found them.
	if u, changed := sameRestrictions(cur, next); changed {
		if next, err = a.Store.UpdateKey(ctx, instance, next.ID, u, nil); err != nil {
			return err
		}
	}
	var prop *Propagation
	if grace == 0 { // the old key stopped working: say where
		prop = a.confirm(ctx)
	}
	writeCreated(w, next, secret, now, prop)
	return nil
}

// sameRestrictions returns the update that gives next the restrictions and limits of old,
// and whether one is needed.
func sameRestrictions(old, next store.Key) (store.KeyUpdate, bool) {
	u := store.KeyUpdate{Scopes: &old.Scopes, AllowedIPs: &old.AllowedIPs, Metadata: &old.Metadata,
		RateLimit: &old.RateLimit, Quota: &old.Quota}
	_, changed := u.Apply(next)
	return u, len(changed) > 0
}

// rollRefusal says why old cannot be rolled at now, or returns nil: only an active key
// rolls (400 invalid_request), and only once (409 api_key_already_rolled, naming the
// replacement so the caller can find the key that is in use now).
func rollRefusal(old store.Key, now time.Time) error {
	if st := old.Status(now); st != store.StatusActive {
		return errInvalid("Only an active key can be rolled; this one is %s.", st)
	}
	if old.ReplacedBy != "" {
		return errAlreadyRolled(old.ReplacedBy)
	}
	return nil
}

func errAlreadyRolled(replacement string) *apiError {
	msg := "This key has already been rolled."
	if replacement != "" {
		msg = fmt.Sprintf("This key has already been rolled into %s; roll that key instead.", replacement)
	}
	return &apiError{http.StatusConflict, "invalid_request_error", "api_key_already_rolled", msg}
}

// newEvent makes an audit event with a fresh id; the store writes it with the change.
func newEvent(typ, instance, keyID, newKeyID, actor string, at time.Time) (store.Event, error) {
	id, err := apikey.NewID("evt_", 24)
	if err != nil {
		return store.Event{}, err
	}
	return store.Event{ID: id, Type: typ, Instance: instance, KeyID: keyID, NewKeyID: newKeyID, Actor: actor, CreatedAt: at}, nil
}

// writeCreated answers a create or roll: 201, the new key and, this once, its secret. A new
// key has used none of its quota (its counters are its own).
func writeCreated(w http.ResponseWriter, k store.Key, secret string, now time.Time, prop *Propagation) {
	out := keyJSON(k, now)
	if k.Quota != nil {
		var zero int64
		_, end, _ := store.QuotaPeriod(*k.Quota, now)
		out.QuotaUsed, out.QuotaResetsAt = &zero, timePtr(end)
	}
	out.Secret = secret
	out.Propagation = prop
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) minter() store.Minter { return store.Minter{Hasher: a.Hasher, Signer: a.Signer} }

// parseOptional parses raw into dst with parse, when the field was sent.
func parseOptional[T any](raw json.RawMessage, parse func(json.RawMessage) (T, error), dst *T) error {
	if raw == nil {
		return nil
	}
	v, err := parse(raw)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}
