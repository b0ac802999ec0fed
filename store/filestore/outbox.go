package filestore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/store"
)

// The webhooks' outboxes (store.Outbox), in buckets made when first needed:
//
//	webhooks/<webhook>                            registration time (ms)
//	outbox/<webhook>/<id>/cursor                  the last event sequence moved (8 bytes BE)
//	outbox/<webhook>/<id>/items/<seq>             the item: outboxRecord JSON
//	outbox/<webhook>/<id>/due/<due ms><seq>       empty: the items by due time, then trail order
//	outbox/<webhook>/<id>/ids/<event id>          seq
//
// The cursor is the sequence of the instance's events bucket (events.go).
var (
	bWebhooks  = []byte("webhooks")
	bOutbox    = []byte("outbox")
	bItems     = []byte("items")
	bDue       = []byte("due")
	bItemIDs   = []byte("ids")
	kOutboxCur = []byte("cursor")
)

// outboxMoveBatch bounds how many events of the trail one claim moves into an outbox (one
// transaction stays short); the rest are moved by the next claims.
const outboxMoveBatch = 500

type outboxRecord struct {
	Event    json.RawMessage `json:"event"`
	Attempts int             `json:"attempts"`
	Queued   int64           `json:"queued"`
	Due      int64           `json:"due"`
}

func dueKey(due int64, seq uint64) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(max(due, 0)))
	binary.BigEndian.PutUint64(b[8:], seq)
	return b[:]
}

// outboxBucket returns outbox/<webhook>/<instance>, creating it when create is set (nil
// otherwise if it does not exist).
func outboxBucket(tx *bolt.Tx, webhook, instance string, create bool) (*bolt.Bucket, error) {
	if !create {
		b := tx.Bucket(bOutbox)
		if b != nil {
			b = b.Bucket([]byte(webhook))
		}
		if b != nil {
			b = b.Bucket([]byte(instance))
		}
		return b, nil
	}
	b, err := tx.CreateBucketIfNotExists(bOutbox)
	if err == nil {
		b, err = b.CreateBucketIfNotExists([]byte(webhook))
	}
	if err == nil {
		b, err = b.CreateBucketIfNotExists([]byte(instance))
	}
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bItems, bDue, bItemIDs} {
		if _, err := b.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// trailEnd is the sequence of an instance's last event (0: none yet).
func trailEnd(tx *bolt.Tx, instance string) uint64 {
	events, _, err := eventBuckets(tx, instance, false)
	if err != nil || events == nil {
		return 0
	}
	return events.Sequence()
}

// RegisterWebhook implements store.Outbox: the registration and the marks in every trail are
// one transaction.
func (s *Store) RegisterWebhook(_ context.Context, webhook string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		wb, err := tx.CreateBucketIfNotExists(bWebhooks)
		if err != nil {
			return err
		}
		if wb.Get([]byte(webhook)) != nil {
			return nil
		}
		if err := wb.Put([]byte(webhook), seqKey(uint64(time.Now().UnixMilli()))); err != nil {
			return err
		}
		return tx.Bucket(bInstances).ForEach(func(k, _ []byte) error {
			ob, err := outboxBucket(tx, webhook, string(k), true)
			if err != nil {
				return err
			}
			if ob.Get(kOutboxCur) != nil {
				return nil
			}
			return ob.Put(kOutboxCur, seqKey(trailEnd(tx, string(k))))
		})
	})
}

// ClaimOutbox implements store.Outbox: the move and the claim are one transaction.
func (s *Store) ClaimOutbox(_ context.Context, webhook, instance string, types []string, max int, lease time.Duration) (out []store.OutboxItem, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		wb := tx.Bucket(bWebhooks)
		if wb == nil || wb.Get([]byte(webhook)) == nil || tx.Bucket(bInstances).Get([]byte(instance)) == nil {
			return nil
		}
		now := time.Now().UnixMilli()
		ob, err := outboxBucket(tx, webhook, instance, true)
		if err != nil {
			return err
		}
		items, due := ob.Bucket(bItems), ob.Bucket(bDue)
		if err := moveEvents(tx, ob, instance, types, now); err != nil {
			return err
		}
		if max < 1 {
			return nil
		}
		var claim [][]byte
		c := due.Cursor()
		for k, _ := c.First(); k != nil && len(claim) < max && int64(binary.BigEndian.Uint64(k[:8])) <= now; k, _ = c.Next() {
			claim = append(claim, append([]byte(nil), k...))
		}
		for _, k := range claim {
			seq := k[8:]
			var r outboxRecord
			if err := json.Unmarshal(items.Get(seq), &r); err != nil {
				return fmt.Errorf("decoding an outbox item of instance %s: %v", instance, err)
			}
			it := store.OutboxItem{Attempts: r.Attempts, QueuedAt: store.FromMillis(r.Queued)}
			if err := json.Unmarshal(r.Event, &it.Event); err != nil {
				return fmt.Errorf("decoding an outbox item of instance %s: %v", instance, err)
			}
			out = append(out, it)
			r.Attempts++
			r.Due = now + lease.Milliseconds()
			if err := due.Delete(k); err != nil {
				return err
			}
			if err := putOutboxRecord(items, due, binary.BigEndian.Uint64(seq), r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// moveEvents moves the events of the trail after ob's cursor (up to outboxMoveBatch) whose
// type is among types (any, when empty) into the outbox ob, due at now, and moves the cursor
// past every event it read.
func moveEvents(tx *bolt.Tx, ob *bolt.Bucket, instance string, types []string, now int64) error {
	events, _, err := eventBuckets(tx, instance, false)
	if err != nil || events == nil {
		return err
	}
	cursor := uint64(0)
	if v := ob.Get(kOutboxCur); v != nil {
		cursor = binary.BigEndian.Uint64(v)
	}
	items, due, ids := ob.Bucket(bItems), ob.Bucket(bDue), ob.Bucket(bItemIDs)
	last := cursor
	c := events.Cursor()
	n := 0
	for k, v := c.Seek(seqKey(cursor + 1)); k != nil && n < outboxMoveBatch; k, v = c.Next() {
		n++
		seq := binary.BigEndian.Uint64(k)
		last = seq
		var e struct{ ID, Type string }
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("decoding event: %v", err)
		}
		if len(types) > 0 && !slices.Contains(types, e.Type) || ids.Get([]byte(e.ID)) != nil {
			continue
		}
		r := outboxRecord{Event: append(json.RawMessage(nil), v...), Queued: now, Due: now}
		if err := putOutboxRecord(items, due, seq, r); err != nil {
			return err
		}
		if err := ids.Put([]byte(e.ID), seqKey(seq)); err != nil {
			return err
		}
	}
	if last == cursor {
		return nil
	}
	return ob.Put(kOutboxCur, seqKey(last))
}

// putOutboxRecord writes item seq and its entry by due time (the caller removed the old one).
func putOutboxRecord(items, due *bolt.Bucket, seq uint64, r outboxRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := items.Put(seqKey(seq), v); err != nil {
		return err
	}
	return due.Put(dueKey(r.Due, seq), []byte{})
}

// settle applies f to the item of eventID in webhook's outbox of instance, if there is one.
func (s *Store) settle(webhook, instance, eventID string, f func(items, due, ids *bolt.Bucket, seq uint64, r outboxRecord) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		ob, err := outboxBucket(tx, webhook, instance, false)
		if err != nil || ob == nil {
			return err
		}
		items, due, ids := ob.Bucket(bItems), ob.Bucket(bDue), ob.Bucket(bItemIDs)
		sk := ids.Get([]byte(eventID))
		if sk == nil {
			return nil
		}
		seq := binary.BigEndian.Uint64(sk)
		var r outboxRecord
		if err := json.Unmarshal(items.Get(sk), &r); err != nil {
			return fmt.Errorf("decoding an outbox item of instance %s: %v", instance, err)
		}
		if err := due.Delete(dueKey(r.Due, seq)); err != nil {
			return err
		}
		return f(items, due, ids, seq, r)
	})
}

// AckOutbox implements store.Outbox.
func (s *Store) AckOutbox(_ context.Context, webhook, instance, eventID string) error {
	return s.settle(webhook, instance, eventID, func(items, _, ids *bolt.Bucket, seq uint64, _ outboxRecord) error {
		if err := items.Delete(seqKey(seq)); err != nil {
			return err
		}
		return ids.Delete([]byte(eventID))
	})
}

// RetryOutbox implements store.Outbox.
func (s *Store) RetryOutbox(_ context.Context, webhook, instance, eventID string, delay time.Duration) error {
	return s.settle(webhook, instance, eventID, func(items, due, _ *bolt.Bucket, seq uint64, r outboxRecord) error {
		r.Due = time.Now().UnixMilli() + max(delay, 0).Milliseconds()
		return putOutboxRecord(items, due, seq, r)
	})
}

// OutboxDepth implements store.Outbox.
func (s *Store) OutboxDepth(_ context.Context, webhook string) (n int64, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bOutbox)
		if b != nil {
			b = b.Bucket([]byte(webhook))
		}
		if b == nil {
			return nil
		}
		return b.ForEachBucket(func(k []byte) error {
			c := b.Bucket(k).Bucket(bItemIDs).Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				n++
			}
			return nil
		})
	})
	return n, err
}

// Interface guards
var _ store.Outbox = (*Store)(nil)
