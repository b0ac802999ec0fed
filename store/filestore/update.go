package filestore

import (
	"context"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/store"
)

// UpdateKey implements store.Store: the check that the key is not revoked, the change and
// its event are one transaction; the invalidation follows a change.
func (s *Store) UpdateKey(_ context.Context, instance, id string, u store.KeyUpdate, ev *store.Event) (store.Key, error) {
	if err := store.CheckEvent(ev, instance); err != nil {
		return store.Key{}, err
	}
	k, changed, err := s.update(instance, id, func(tx *bolt.Tx, r *keyRecord) (bool, error) {
		if r.RevokedAt != 0 {
			return false, store.ErrKeyRevoked
		}
		if r.ReplacedBy != "" {
			return false, store.ErrAlreadyRolled
		}
		old, err := r.key(instance)
		if err != nil {
			return false, err
		}
		k, fields := u.Apply(old)
		if len(fields) == 0 {
			return false, nil
		}
		r.Name = k.Name
		r.ExpiresAt = unixMilli(k.ExpiresAt)
		r.setRestrictions(k)
		if ev != nil {
			e := *ev
			e.Fields = fields
			if err := s.addEvent(tx, e); err != nil {
				return false, err
			}
			ev.Fields = fields
		}
		return true, nil
	})
	if err != nil {
		return store.Key{}, err
	}
	if changed {
		s.Invalidate(k.Hash)
		if ev != nil {
			s.Recorded(instance)
		}
	}
	return k, nil
}
