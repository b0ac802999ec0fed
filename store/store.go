// Package store defines where keys live: the Store interface that the gateway and the admin
// endpoint use, the records it holds, and the invalidation events it delivers. Two
// implementations pass one contract suite (package storetest): store/redisstore and
// store/filestore.
package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"

	"github.com/keygate/keygate/apikey"
)

// Errors every Store returns for the same situations.
var (
	ErrInstanceNotFound = errors.New("instance not found")
	ErrInstanceExists   = errors.New("instance already exists")
	ErrKeyNotFound      = errors.New("api key not found")
	// ErrInvalidCursor means ListOptions.StartingAfter names no key of the instance.
	ErrInvalidCursor = errors.New("starting_after names no key of this instance")
	// ErrNotActive: RollKey was asked to roll a key that is revoked or expired.
	ErrNotActive = errors.New("only an active key can be rolled")
	// ErrAlreadyRolled: RollKey was asked to roll a key that another roll has already
	// replaced (its ReplacedBy names the replacement).
	ErrAlreadyRolled = errors.New("the key has already been rolled")
	// ErrWrongInstance: a roll's replacement or an audit event names another instance than
	// the key it goes with.
	ErrWrongInstance = errors.New("the key and its replacement or event must be in one instance")
	// ErrNoExpiry: ExpireKey needs a time (a key's expiry only ever moves earlier).
	ErrNoExpiry = errors.New("an expiry time is required")
)

// Instance is a Nora instance; every key belongs to one.
type Instance struct {
	ID          string
	Name        string
	Environment apikey.Environment
}

var instanceIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidInstanceID reports whether id is a well-formed instance id.
func ValidInstanceID(id string) bool { return instanceIDPattern.MatchString(id) }

// Status is a key's computed state.
type Status string

// The statuses a key can have. They are computed, never stored.
const (
	StatusActive  Status = "active"
	StatusExpired Status = "expired"
	StatusRevoked Status = "revoked"
)

// Key is the listed record of an API key. The secret itself is never stored: only its Hash.
type Key struct {
	ID          string
	Instance    string
	Environment apikey.Environment
	Name        string
	// Prefix is the part of the secret that may be shown: "sk_live_abc123".
	Prefix     string
	Hash       apikey.Hash
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never expires
	RevokedAt  time.Time // zero: not revoked
	LastUsedAt time.Time // zero: never used
	// ReplacedBy is the id of the key that replaced this one in a roll ("" if none). A key
	// is rolled at most once.
	ReplacedBy string
	// Scopes the key may use (nil: any route); see CheckScopes.
	Scopes []string
	// AllowedIPs are the client addresses the key works from (nil: any).
	AllowedIPs []netip.Prefix
	// Metadata is passed upstream with the key's requests (nil: none).
	Metadata map[string]string
	// RateLimit and Quota limit the key's requests (nil: none); see limits.go.
	RateLimit *RateLimit
	Quota     *Quota
}

// Status computes the key's status at now: revoked, else expired if ExpiresAt is not after
// now, else active.
func (k Key) Status(now time.Time) Status {
	return status(k.RevokedAt, k.ExpiresAt, now)
}

// Lookup is what the gateway needs to decide on a presented key, found by its hash.
type Lookup struct {
	ID          string
	Instance    string
	Environment apikey.Environment
	ExpiresAt   time.Time // zero: never
	RevokedAt   time.Time // zero: not revoked
	// The key's restrictions, metadata and limits, as on Key.
	Scopes     []string
	AllowedIPs []netip.Prefix
	Metadata   map[string]string
	RateLimit  *RateLimit
	Quota      *Quota
}

// Status computes the key's status at now, as Key.Status does.
func (l Lookup) Status(now time.Time) Status {
	return status(l.RevokedAt, l.ExpiresAt, now)
}

func status(revokedAt, expiresAt, now time.Time) Status {
	switch {
	case !revokedAt.IsZero():
		return StatusRevoked
	case !expiresAt.IsZero() && !expiresAt.After(now):
		return StatusExpired
	}
	return StatusActive
}

// MaxEvents is how many audit events a store keeps per instance; older ones are dropped.
const MaxEvents = 10000

// Event types of the audit trail.
const (
	EventKeyCreated = "api_key.created"
	EventKeyRevoked = "api_key.revoked"
	EventKeyRolled  = "api_key.rolled"
	// EventKeyLeaked: a key was reported leaked (by GitHub's secret scanning): revoked, or
	// recorded only for a sandbox key in report mode.
	EventKeyLeaked = "api_key.leaked"
)

// Event is an entry of an instance's audit trail.
type Event struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Instance string `json:"instance"`
	KeyID    string `json:"key_id"`
	NewKeyID string `json:"new_key_id,omitempty"` // rolls only
	// Fields are the names of the fields an update changed (api_key.updated only).
	Fields []string `json:"fields,omitempty"`
	// URL and Source say where a leaked key was found (api_key.leaked only).
	URL       string    `json:"url,omitempty"`
	Source    string    `json:"source,omitempty"`
	Actor     string    `json:"actor"` // the admin token's name, or who else acted
	CreatedAt time.Time `json:"created_at"`
}

// Touch is one use of a key, for Store.TouchKeys: the key (its instance and id) was used at At.
type Touch struct {
	Instance, ID string
	At           time.Time
}

// ListOptions select a page of an instance's keys, newest (last created) first.
type ListOptions struct {
	// Limit is the page size; it must be at least 1.
	Limit int
	// StartingAfter is the id of the last key of the previous page, or "".
	StartingAfter string
	// Status keeps only keys with this status at Now; "" keeps all.
	Status Status
	Now    time.Time
}

// Store holds instances and keys. Implementations are safe for concurrent use.
//
// Writes that can make a key refuse (RevokeKey, RollKey, ExpireKey, UpdateKey) deliver an
// invalidation of the key's hash to every Watcher subscribed in this process before they return, and to the
// watchers of every other process sharing the store soon after.
type Store interface {
	// CreateInstance adds an instance; ErrInstanceExists if its id is taken.
	CreateInstance(ctx context.Context, in Instance) error
	// Instance returns one instance, or ErrInstanceNotFound.
	Instance(ctx context.Context, id string) (Instance, error)
	// Instances returns all instances, ordered by id.
	Instances(ctx context.Context) ([]Instance, error)

	// CreateKey stores a new key (its ID, Hash, Prefix, Name, CreatedAt, ExpiresAt set by
	// the caller) in an existing instance. The listed record is written first and the
	// lookup entry last: a failure half-way leaves no working key.
	CreateKey(ctx context.Context, k Key) error
	// Key returns one key of an instance, or ErrKeyNotFound.
	Key(ctx context.Context, instance, id string) (Key, error)
	// LookupHash finds a key by the hash of its secret, or ErrKeyNotFound.
	LookupHash(ctx context.Context, h apikey.Hash) (Lookup, error)
	// ListKeys returns a page of an instance's keys, newest first, and whether more follow.
	ListKeys(ctx context.Context, instance string, opt ListOptions) (keys []Key, hasMore bool, err error)
	// RevokeKey marks a key revoked at `at` and returns it, and whether this call revoked
	// it. Revoking a revoked key changes nothing and returns it with its first RevokedAt
	// (changed false). When ev is not nil and this call revoked the key, ev (every field set
	// by the caller) joins the instance's audit trail in the same atomic step, so concurrent
	// revokes of one key record one event. The lookup entry is marked first.
	RevokeKey(ctx context.Context, instance, id string, at time.Time, ev *Event) (k Key, changed bool, err error)
	// RollKey replaces the key `id` by next (a new key of the same instance, its fields set
	// by the caller; next.CreatedAt is the time of the roll) and makes the old key expire at
	// oldExpiresAt unless it already expires earlier. In one atomic step it claims the old
	// key, which must be neither revoked nor expired at next.CreatedAt (ErrNotActive) nor
	// rolled before (ErrAlreadyRolled), records next.ID as its ReplacedBy, lists next and,
	// when ev is not nil, adds ev to the audit trail: of concurrent rolls of one key, one
	// succeeds. It returns the old key as it is afterwards; refused with ErrNotActive or
	// ErrAlreadyRolled, the old key as it is (for its status and ReplacedBy). A roll that
	// fails half-way leaves at worst a listed replacement that does not work.
	RollKey(ctx context.Context, instance, id string, next Key, oldExpiresAt time.Time, ev *Event) (old Key, err error)
	// UpdateKey changes the fields u sets and returns the key as it is afterwards. In the
	// same step it records ev (when not nil, and only if something changed), its Fields set
	// to the names of the changed fields (KeyUpdate.Apply; also on *ev). A change is delivered as an
	// invalidation of the key's hash, like a revocation, whatever it changed. A revoked key is
	// refused with ErrKeyRevoked, and a key replaced by a roll with ErrAlreadyRolled (update
	// the replacement; an update could otherwise bring a rolled-out key back), nothing
	// written.
	UpdateKey(ctx context.Context, instance, id string, u KeyUpdate, ev *Event) (Key, error)
	// ExpireKey moves a key's expiry earlier to `at` (never later) and returns it.
	ExpireKey(ctx context.Context, instance, id string, at time.Time) (Key, error)
	// TouchKey records a use of the key at `at` (last_used_at), never moving it back. A key
	// that does not exist (an unknown id, or an instance that does not exist) is ignored.
	TouchKey(ctx context.Context, instance, id string, at time.Time) error
	// TouchKeys records many uses at once, each exactly as TouchKey would: a key's
	// last_used_at never moves back (of several uses of one key, the latest counts) and keys
	// that do not exist are ignored. However many uses it records, it is one pipeline on
	// Redis (on Cluster, one per master that holds some of the keys) and one transaction of
	// the file store. When some uses fail, the others may still have been recorded; the
	// first error is returned. ts is not kept after the call returns; an empty ts does
	// nothing.
	TouchKeys(ctx context.Context, ts []Touch) error

	// AddEvent appends an audit event (its ID, Type, KeyID, Actor and CreatedAt set by the
	// caller) to its instance's trail, which keeps the newest MaxEvents (by default).
	AddEvent(ctx context.Context, e Event) error
	// ListEvents returns a page of an instance's events, newest first (Status is ignored).
	ListEvents(ctx context.Context, instance string, opt ListOptions) (events []Event, hasMore bool, err error)

	// Subscribe registers w to receive invalidations until the returned function is called.
	Subscribe(w Watcher) (unsubscribe func())
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Close releases the store's connections and goroutines.
	Close() error

	// Leaser keeps the keys' rate-limit and quota counters (limits.go).
	Leaser
	// Outbox keeps the webhooks' deliveries (outbox.go).
	Outbox
	// UsageStore keeps the keys' usage counts (usage.go).
	UsageStore
}

// Watcher receives the invalidation events of a store. Its methods must not block for long:
// they run on the writer's goroutine (local writes) or on the store's listener goroutine.
type Watcher interface {
	// Invalidate says that the keys with these hashes changed in a way that can refuse them.
	Invalidate(hashes ...apikey.Hash)
	// Flush says that any key may have changed: invalidations may have been lost.
	Flush()
	// SetHealthy says whether invalidations are being delivered. While it is false, a
	// watcher must not trust what it cached; when it turns true again, everything missed
	// has already been delivered (or Flush called).
	SetHealthy(ok bool)
}

// CheckRoll is the refusal every store gives a roll of old at `at` (nil when it may go on):
// ErrNotActive for a revoked or expired key, ErrAlreadyRolled for a key rolled before.
func CheckRoll(old Key, at time.Time) error {
	if st := old.Status(at); st != StatusActive {
		return fmt.Errorf("%w: the key is %s", ErrNotActive, st)
	}
	if old.ReplacedBy != "" {
		return fmt.Errorf("%w into %s", ErrAlreadyRolled, old.ReplacedBy)
	}
	return nil
}

// CheckEvent refuses an audit event that would land in another instance's trail than the
// key's.
func CheckEvent(ev *Event, instance string) error {
	if ev != nil && ev.Instance != instance {
		return fmt.Errorf("%w: event of instance %q for a key of %q", ErrWrongInstance, ev.Instance, instance)
	}
	return nil
}

// Millis is how stores keep times: Unix milliseconds, 0 for the zero time. Every time a store
// returns is in UTC and truncated to the millisecond.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMillis is the inverse of Millis.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// Minter makes new keys: a secret to show once (signed when Signer is set) and the record
// to store with CreateKey.
type Minter struct {
	Hasher apikey.Hasher
	Signer *apikey.Signer // nil: unsigned keys
}

// Mint makes a new key for instance in. Times are truncated to the millisecond, as stores
// keep them.
func (m Minter) Mint(in Instance, name string, expiresAt, now time.Time) (secret string, k Key, err error) {
	secret, err = m.Signer.Generate(in.Environment)
	if err != nil {
		return "", Key{}, err
	}
	id, err := apikey.NewKeyID()
	if err != nil {
		return "", Key{}, err
	}
	return secret, Key{
		ID: id, Instance: in.ID, Environment: in.Environment, Name: name,
		Prefix:    apikey.DisplayPrefix(secret),
		Hash:      m.Hasher.Sum(secret),
		CreatedAt: FromMillis(Millis(now)),
		ExpiresAt: FromMillis(Millis(expiresAt)),
	}, nil
}

// Mint makes an unsigned key: Minter{Hasher: h}.Mint.
func Mint(h apikey.Hasher, in Instance, name string, expiresAt, now time.Time) (secret string, k Key, err error) {
	return Minter{Hasher: h}.Mint(in, name, expiresAt, now)
}
