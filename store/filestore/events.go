package filestore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/store"
)

// Events live in inst/<id>/events (seq → event JSON) and inst/<id>/evidx (event id → seq).
var (
	bEvents   = []byte("events")
	bEventIdx = []byte("evidx")
)

func eventBuckets(tx *bolt.Tx, instance string, create bool) (events, idx *bolt.Bucket, err error) {
	ib := tx.Bucket(bInst).Bucket([]byte(instance))
	if ib == nil {
		return nil, nil, store.ErrInstanceNotFound
	}
	if !create {
		return ib.Bucket(bEvents), ib.Bucket(bEventIdx), nil
	}
	if events, err = ib.CreateBucketIfNotExists(bEvents); err != nil {
		return nil, nil, err
	}
	idx, err = ib.CreateBucketIfNotExists(bEventIdx)
	return events, idx, err
}

// AddEvent implements store.Store.
func (s *Store) AddEvent(_ context.Context, e store.Event) error {
	if err := s.db.Update(func(tx *bolt.Tx) error { return s.addEvent(tx, e) }); err != nil {
		return err
	}
	s.Recorded(e.Instance)
	return nil
}

// addEvent appends e to its instance's trail within tx, dropping the oldest beyond MaxEvents.
func (s *Store) addEvent(tx *bolt.Tx, e store.Event) error {
	e.CreatedAt = store.FromMillis(store.Millis(e.CreatedAt))
	events, idx, err := eventBuckets(tx, e.Instance, true)
	if err != nil {
		return err
	}
	seq, err := events.NextSequence()
	if err != nil {
		return err
	}
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := events.Put(seqKey(seq), v); err != nil {
		return err
	}
	if err := idx.Put([]byte(e.ID), seqKey(seq)); err != nil {
		return err
	}
	// Keep the newest MaxEvents: sequences are contiguous, so drop those below the line.
	max := uint64(s.opts.MaxEvents)
	if seq <= max {
		return nil
	}
	keep := seq - max + 1
	c := events.Cursor()
	for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) < keep; k, v = c.First() {
		var old store.Event
		if json.Unmarshal(v, &old) == nil {
			idx.Delete([]byte(old.ID))
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(_ context.Context, instance string, opt store.ListOptions) (out []store.Event, more bool, err error) {
	if opt.Limit < 1 {
		return nil, false, errors.New("limit must be at least 1")
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		events, idx, err := eventBuckets(tx, instance, false)
		if err != nil {
			return err
		}
		if events == nil { // no event yet
			if opt.StartingAfter != "" {
				return store.ErrInvalidCursor
			}
			return nil
		}
		c := events.Cursor()
		var k, v []byte
		if opt.StartingAfter != "" {
			seq := idx.Get([]byte(opt.StartingAfter))
			if seq == nil {
				return store.ErrInvalidCursor
			}
			c.Seek(seq)
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
		for ; k != nil; k, v = c.Prev() {
			if len(out) == opt.Limit {
				more = true
				return nil
			}
			var e store.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decoding event: %v", err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, more, err
}
