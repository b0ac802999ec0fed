// Package filestore is the embedded Store: one bbolt file, for a single gateway process (the
// quick start, or a deployment that needs no Redis). Each write is one bbolt transaction, so a
// create or revoke is all or nothing; invalidations go to this process' watchers only.
package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Layout:
//
//	instances/<id>                      instance JSON
//	hashes/<sha256>                     instance id + "/" + key id (the lookup entry)
//	inst/<id>/keys/<key id>             key JSON
//	inst/<id>/order/<seq, 8 bytes BE>   key id (creation order)
//	counters/<id>/<key id>/<counter>    a limit counter of the key (see limits.go)
var (
	bInstances = []byte("instances")
	bHashes    = []byte("hashes")
	bInst      = []byte("inst")
	bKeys      = []byte("keys")
	bOrder     = []byte("order")
)

// Options tune a Store.
type Options struct {
	// MaxEvents is how many audit events are kept per instance (default store.MaxEvents).
	MaxEvents int
	// FailPoint, when set, is called at named points between the steps of a write; an error
	// it returns aborts the write there. It exists for tests of partial failures.
	FailPoint func(step string) error
}

// Store is a bbolt-backed store.Store.
type Store struct {
	db   *bolt.DB
	opts Options
	store.Watchers
	store.EventWatchers
	c     counters
	fleet gateways
}

// ErrHeld is Open's error when another process holds the file: bbolt locks it for one
// process at a time.
var ErrHeld = errors.New("the key store file is in use")

// lockWait is how long Open waits for another process to let go of the file.
const lockWait = time.Second

// Open opens (creating if needed) the store file at path. The file is locked: one process
// at a time (ErrHeld, after lockWait, if another holds it).
func Open(path string, opts Options) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating store directory: %v", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s is held by another keygate (or Caddy) process: stop that one, "+
			"give this gateway a file of its own (store file <path>), or run several gateways on one Redis (store redis <url>)",
			ErrHeld, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening store file %s: %v", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bInstances, bHashes, bInst, bCounters} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initializing store file %s: %v", path, err)
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = store.MaxEvents
	}
	s := &Store{db: db, opts: opts, c: counters{mem: make(map[string]counter), fileSwept: time.Now()}}
	if err := s.sweepFile(); err != nil {
		db.Close()
		return nil, fmt.Errorf("sweeping expired limit counters of %s: %v", path, err)
	}
	return s, nil
}

func (s *Store) fail(step string) error {
	if s.opts.FailPoint == nil {
		return nil
	}
	return s.opts.FailPoint(step)
}

type instanceRecord struct {
	Name        string `json:"name"`
	Environment string `json:"environment"`
}

type keyRecord struct {
	ID          string `json:"id"`
	Environment string `json:"environment"`
	Name        string `json:"name"`
	Prefix      string `json:"prefix"`
	Hash        []byte `json:"hash"`
	Seq         uint64 `json:"seq"`
	CreatedAt   int64  `json:"created_at"`
	ExpiresAt   int64  `json:"expires_at,omitempty"`
	RevokedAt   int64  `json:"revoked_at,omitempty"`
	LastUsedAt  int64  `json:"last_used_at,omitempty"`
	ReplacedBy  string `json:"replaced_by,omitempty"`
	// The restrictions: null (or absent, in records written before they existed) restricts
	// nothing. Addresses are kept as the API writes them (store.FormatAllowedIP).
	Scopes     []string          `json:"scopes"`
	AllowedIPs []string          `json:"allowed_ips"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// The limits: absent is none.
	RateLimit *rateLimitRecord `json:"rate_limit,omitempty"`
	Quota     *quotaRecord     `json:"quota,omitempty"`
}

type rateLimitRecord struct {
	Limit  int64 `json:"limit"`
	Window int64 `json:"window_seconds"`
}

type quotaRecord struct {
	Limit  int64  `json:"limit"`
	Period string `json:"period"`
}

// Times are kept in Unix milliseconds, like the Redis store (store.Millis).
func unixMilli(t time.Time) int64 { return store.Millis(t) }

func fromUnixMilli(n int64) time.Time { return store.FromMillis(n) }

func (r keyRecord) key(instance string) (store.Key, error) {
	env, _ := apikey.ParseEnvironment(r.Environment)
	k := store.Key{
		ID: r.ID, Instance: instance, Environment: env, Name: r.Name, Prefix: r.Prefix,
		CreatedAt:  fromUnixMilli(r.CreatedAt),
		ExpiresAt:  fromUnixMilli(r.ExpiresAt),
		RevokedAt:  fromUnixMilli(r.RevokedAt),
		LastUsedAt: fromUnixMilli(r.LastUsedAt),
		ReplacedBy: r.ReplacedBy,
		Scopes:     r.Scopes,
		Metadata:   r.Metadata,
	}
	if len(k.Metadata) == 0 {
		k.Metadata = nil
	}
	if r.RateLimit != nil {
		k.RateLimit = &store.RateLimit{Limit: r.RateLimit.Limit, Window: time.Duration(r.RateLimit.Window) * time.Second}
	}
	if r.Quota != nil {
		k.Quota = &store.Quota{Limit: r.Quota.Limit, Period: r.Quota.Period}
	}
	copy(k.Hash[:], r.Hash)
	if r.AllowedIPs != nil {
		k.AllowedIPs = make([]netip.Prefix, len(r.AllowedIPs))
		for i, s := range r.AllowedIPs {
			p, err := store.ParseAllowedIP(s)
			if err != nil {
				return store.Key{}, fmt.Errorf("decoding key %s: %v", r.ID, err)
			}
			k.AllowedIPs[i] = p
		}
	}
	return k, nil
}

// setRestrictions copies k's restrictions and limits into the record.
func (r *keyRecord) setRestrictions(k store.Key) {
	r.Scopes = k.Scopes
	r.AllowedIPs = nil
	if k.AllowedIPs != nil {
		r.AllowedIPs = make([]string, len(k.AllowedIPs))
		for i, p := range k.AllowedIPs {
			r.AllowedIPs[i] = store.FormatAllowedIP(p)
		}
	}
	r.Metadata = k.Metadata
	if len(r.Metadata) == 0 {
		r.Metadata = nil
	}
	r.RateLimit, r.Quota = nil, nil
	if l := k.RateLimit; l != nil {
		r.RateLimit = &rateLimitRecord{Limit: l.Limit, Window: int64(l.Window / time.Second)}
	}
	if q := k.Quota; q != nil {
		r.Quota = &quotaRecord{Limit: q.Limit, Period: q.Period}
	}
}

// CreateInstance implements store.Store.
func (s *Store) CreateInstance(_ context.Context, in store.Instance) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bInstances)
		if b.Get([]byte(in.ID)) != nil {
			return store.ErrInstanceExists
		}
		v, err := json.Marshal(instanceRecord{Name: in.Name, Environment: in.Environment.String()})
		if err != nil {
			return err
		}
		if err := b.Put([]byte(in.ID), v); err != nil {
			return err
		}
		ib, err := tx.Bucket(bInst).CreateBucket([]byte(in.ID))
		if err != nil {
			return err
		}
		if _, err := ib.CreateBucket(bKeys); err != nil {
			return err
		}
		_, err = ib.CreateBucket(bOrder)
		return err
	})
}

func decodeInstance(id string, v []byte) (store.Instance, error) {
	var r instanceRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return store.Instance{}, fmt.Errorf("decoding instance %q: %v", id, err)
	}
	env, err := apikey.ParseEnvironment(r.Environment)
	if err != nil {
		return store.Instance{}, fmt.Errorf("decoding instance %q: %v", id, err)
	}
	return store.Instance{ID: id, Name: r.Name, Environment: env}, nil
}

// Instance implements store.Store.
func (s *Store) Instance(_ context.Context, id string) (in store.Instance, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bInstances).Get([]byte(id))
		if v == nil {
			return store.ErrInstanceNotFound
		}
		in, err = decodeInstance(id, v)
		return err
	})
	return in, err
}

// Instances implements store.Store.
func (s *Store) Instances(_ context.Context) (out []store.Instance, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bInstances).ForEach(func(k, v []byte) error {
			in, err := decodeInstance(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, in)
			return nil
		})
	})
	return out, err
}

// instanceBuckets returns the keys and order buckets of an instance.
func instanceBuckets(tx *bolt.Tx, instance string) (keys, order *bolt.Bucket, err error) {
	ib := tx.Bucket(bInst).Bucket([]byte(instance))
	if ib == nil {
		return nil, nil, store.ErrInstanceNotFound
	}
	return ib.Bucket(bKeys), ib.Bucket(bOrder), nil
}

// CreateKey implements store.Store.
func (s *Store) CreateKey(_ context.Context, k store.Key) error {
	return s.db.Update(func(tx *bolt.Tx) error { return s.createKey(tx, k) })
}

// createKey writes k within tx: the listed record, then the lookup entry.
func (s *Store) createKey(tx *bolt.Tx, k store.Key) error {
	keys, order, err := instanceBuckets(tx, k.Instance)
	if err != nil {
		return err
	}
	if keys.Get([]byte(k.ID)) != nil {
		return fmt.Errorf("key id %s already exists", k.ID)
	}
	hashes := tx.Bucket(bHashes)
	if hashes.Get(k.Hash[:]) != nil {
		return errors.New("a key with this hash already exists")
	}
	seq, err := order.NextSequence()
	if err != nil {
		return err
	}
	rec := keyRecord{
		ID: k.ID, Environment: k.Environment.String(), Name: k.Name, Prefix: k.Prefix,
		Hash: k.Hash[:], Seq: seq, CreatedAt: unixMilli(k.CreatedAt), ExpiresAt: unixMilli(k.ExpiresAt),
	}
	rec.setRestrictions(k)
	if err := putKey(keys, rec); err != nil {
		return err
	}
	if err := order.Put(seqKey(seq), []byte(k.ID)); err != nil {
		return err
	}
	if err := s.fail("create:listed"); err != nil {
		return err
	}
	return hashes.Put(k.Hash[:], []byte(k.Instance+"/"+k.ID))
}

func seqKey(seq uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return b[:]
}

func putKey(keys *bolt.Bucket, rec keyRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return keys.Put([]byte(rec.ID), v)
}

func getKey(keys *bolt.Bucket, id string) (keyRecord, error) {
	v := keys.Get([]byte(id))
	if v == nil {
		return keyRecord{}, store.ErrKeyNotFound
	}
	var rec keyRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return keyRecord{}, fmt.Errorf("decoding key %s: %v", id, err)
	}
	return rec, nil
}

// Key implements store.Store.
func (s *Store) Key(_ context.Context, instance, id string) (k store.Key, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		keys, _, err := instanceBuckets(tx, instance)
		if err != nil {
			return err
		}
		rec, err := getKey(keys, id)
		if err != nil {
			return err
		}
		k, err = rec.key(instance)
		return err
	})
	return k, err
}

// LookupHash implements store.Store.
func (s *Store) LookupHash(_ context.Context, h apikey.Hash) (l store.Lookup, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bHashes).Get(h[:])
		if v == nil {
			return store.ErrKeyNotFound
		}
		instance, id, ok := bytes.Cut(v, []byte("/"))
		if !ok {
			return errors.New("corrupt lookup entry")
		}
		keys, _, err := instanceBuckets(tx, string(instance))
		if err != nil {
			return err
		}
		rec, err := getKey(keys, string(id))
		if err != nil {
			return err
		}
		k, err := rec.key(string(instance))
		if err != nil {
			return err
		}
		l = store.Lookup{ID: k.ID, Instance: k.Instance, Environment: k.Environment, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt,
			Scopes: k.Scopes, AllowedIPs: k.AllowedIPs, Metadata: k.Metadata, RateLimit: k.RateLimit, Quota: k.Quota}
		return nil
	})
	return l, err
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(_ context.Context, instance string, opt store.ListOptions) (out []store.Key, more bool, err error) {
	if opt.Limit < 1 {
		return nil, false, errors.New("limit must be at least 1")
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		keys, order, err := instanceBuckets(tx, instance)
		if err != nil {
			return err
		}
		c := order.Cursor()
		var k, v []byte
		if opt.StartingAfter != "" {
			rec, err := getKey(keys, opt.StartingAfter)
			if errors.Is(err, store.ErrKeyNotFound) {
				return store.ErrInvalidCursor
			} else if err != nil {
				return err
			}
			c.Seek(seqKey(rec.Seq))
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
		for ; k != nil; k, v = c.Prev() {
			rec, err := getKey(keys, string(v))
			if err != nil {
				return err
			}
			key, err := rec.key(instance)
			if err != nil {
				return err
			}
			if opt.Status != "" && key.Status(opt.Now) != opt.Status {
				continue
			}
			if len(out) == opt.Limit {
				more = true
				return nil
			}
			out = append(out, key)
		}
		return nil
	})
	return out, more, err
}

// update applies f to a key record in one transaction and returns the key afterwards. f may
// write more in the same transaction (an audit event, a replacement key).
func (s *Store) update(instance, id string, f func(tx *bolt.Tx, r *keyRecord) (changed bool, err error)) (k store.Key, changed bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		rec, c, err := updateIn(tx, instance, id, f)
		changed = c
		if rec == nil {
			return err
		}
		var kerr error
		k, kerr = rec.key(instance)
		if err != nil {
			// f refused (or the write failed): the key as it is, for the caller's error.
			return err
		}
		return kerr
	})
	return k, changed, err
}

// updateIn applies f to a key record within tx and writes the record back when f changed
// it. It returns the record as f left it, or nil when there is none (the instance's or the
// key's not-found error).
func updateIn(tx *bolt.Tx, instance, id string, f func(tx *bolt.Tx, r *keyRecord) (changed bool, err error)) (*keyRecord, bool, error) {
	keys, _, err := instanceBuckets(tx, instance)
	if err != nil {
		return nil, false, err
	}
	rec, err := getKey(keys, id)
	if err != nil {
		return nil, false, err
	}
	changed, err := f(tx, &rec)
	if err == nil && changed {
		err = putKey(keys, rec)
	}
	return &rec, changed, err
}

// RevokeKey implements store.Store: the revocation and its event are one transaction.
func (s *Store) RevokeKey(_ context.Context, instance, id string, at time.Time, ev *store.Event) (store.Key, bool, error) {
	if err := store.CheckEvent(ev, instance); err != nil {
		return store.Key{}, false, err
	}
	k, changed, err := s.update(instance, id, func(tx *bolt.Tx, r *keyRecord) (bool, error) {
		if r.RevokedAt != 0 {
			return false, nil
		}
		r.RevokedAt = unixMilli(at)
		if err := s.fail("revoke:lookup"); err != nil {
			return false, err
		}
		if ev != nil {
			return true, s.addEvent(tx, *ev)
		}
		return true, nil
	})
	if err != nil {
		return store.Key{}, false, err
	}
	// Also on a repeated revoke: a caller retrying after an error gets the invalidation out.
	s.Invalidate(k.Hash)
	if changed && ev != nil {
		s.Recorded(instance)
	}
	return k, changed, nil
}

// RollKey implements store.Store: the claim of the old key, its new expiry, the replacement
// and the event are one transaction.
func (s *Store) RollKey(_ context.Context, instance, id string, next store.Key, oldExpiresAt time.Time, ev *store.Event) (store.Key, error) {
	if next.Instance != instance {
		return store.Key{}, fmt.Errorf("%w: replacement of instance %q for a key of %q", store.ErrWrongInstance, next.Instance, instance)
	}
	if err := store.CheckEvent(ev, instance); err != nil {
		return store.Key{}, err
	}
	if oldExpiresAt.IsZero() {
		return store.Key{}, store.ErrNoExpiry
	}
	k, _, err := s.update(instance, id, func(tx *bolt.Tx, r *keyRecord) (bool, error) {
		old, err := r.key(instance)
		if err != nil {
			return false, err
		}
		if err := store.CheckRoll(old, next.CreatedAt); err != nil {
			return false, err
		}
		r.ReplacedBy = next.ID
		if err := s.fail("roll:claimed"); err != nil {
			return false, err
		}
		if r.ExpiresAt == 0 || r.ExpiresAt > unixMilli(oldExpiresAt) {
			r.ExpiresAt = unixMilli(oldExpiresAt)
		}
		// The old record is written by update after this; the replacement goes first so that
		// its order sequence is taken in the same transaction.
		if err := s.createKey(tx, next); err != nil {
			return false, err
		}
		if ev != nil {
			return true, s.addEvent(tx, *ev)
		}
		return true, nil
	})
	if errors.Is(err, store.ErrNotActive) || errors.Is(err, store.ErrAlreadyRolled) {
		return k, err
	}
	if err != nil {
		return store.Key{}, err
	}
	s.Invalidate(k.Hash)
	if ev != nil {
		s.Recorded(instance)
	}
	return k, nil
}

// ExpireKey implements store.Store.
func (s *Store) ExpireKey(_ context.Context, instance, id string, at time.Time) (store.Key, error) {
	if at.IsZero() {
		return store.Key{}, store.ErrNoExpiry
	}
	k, changed, err := s.update(instance, id, func(_ *bolt.Tx, r *keyRecord) (bool, error) {
		if r.ExpiresAt != 0 && r.ExpiresAt <= unixMilli(at) {
			return false, nil
		}
		r.ExpiresAt = unixMilli(at)
		return true, nil
	})
	if err != nil {
		return store.Key{}, err
	}
	if changed {
		s.Invalidate(k.Hash)
	}
	return k, nil
}

// TouchKey implements store.Store.
func (s *Store) TouchKey(ctx context.Context, instance, id string, at time.Time) error {
	return s.TouchKeys(ctx, []store.Touch{{Instance: instance, ID: id, At: at}})
}

// TouchKeys implements store.Store: every use of the batch in one transaction (one write of
// the file). A record that cannot be updated does not keep the others from being written.
func (s *Store) TouchKeys(_ context.Context, ts []store.Touch) error {
	if len(ts) == 0 {
		return nil
	}
	var first error
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, t := range ts {
			at := unixMilli(t.At)
			_, _, err := updateIn(tx, t.Instance, t.ID, func(_ *bolt.Tx, r *keyRecord) (bool, error) {
				if r.LastUsedAt >= at {
					return false, nil
				}
				r.LastUsedAt = at
				return true, nil
			})
			if err != nil && first == nil && !errors.Is(err, store.ErrKeyNotFound) && !errors.Is(err, store.ErrInstanceNotFound) {
				first = fmt.Errorf("recording the last use of key %s: %w", t.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return first
}

// Subscribe implements store.Store. The file store has one process, so its invalidation
// channel is always healthy.
func (s *Store) Subscribe(w store.Watcher) func() {
	w.SetHealthy(true)
	return s.Watchers.Subscribe(w)
}

// Ping implements store.Store.
func (s *Store) Ping(context.Context) error {
	return s.db.View(func(*bolt.Tx) error { return nil })
}

// Close implements store.Store.
func (s *Store) Close() error { return s.db.Close() }

// Interface guards
var _ store.Store = (*Store)(nil)
