package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/keygate/keygate/store"
)

// Usage counts (store.UsageStore):
//
//	usage/swept                                   when the last sweep ran (Unix ms, 8 bytes BE)
//	usage/inst/<id>/<key id>/m<Unix minute, 8 BE>  a minute's counts
//	usage/inst/<id>/<key id>/h<Unix hour, 8 BE>    an hour's counts
//
// the instance's sum under the key id "_" (store.UsageInstanceKey); each value is the JSON of
// usageRecord. Days are summed from hours. The buckets are created by the first AddUsage.
//
// A bucket is hidden from Usage from its expiry on (store.UsageExpiry, the same as the Redis
// store's), and deleted by the sweep that AddUsage runs, within its transaction, when the
// last one (kept in the file, so restarts do not repeat it) is usageSweepEvery ago.
var (
	bUsage      = []byte("usage")
	bUsageInst  = []byte("inst")
	kUsageSwept = []byte("swept")
)

// usageSweepEvery is how often AddUsage sweeps the expired usage buckets.
const usageSweepEvery = time.Hour

// usageRecord is the value of one bucket.
type usageRecord struct {
	OK      int64            `json:"ok,omitempty"`
	Refused map[string]int64 `json:"refused,omitempty"`
}

// usageKey is the bolt key of the bucket of g (Minute or Hour) starting at start.
func usageKey(g store.Granularity, start time.Time) []byte {
	k := make([]byte, 9)
	if g == store.Minute {
		k[0] = 'm'
		binary.BigEndian.PutUint64(k[1:], uint64(start.Unix()/60))
	} else {
		k[0] = 'h'
		binary.BigEndian.PutUint64(k[1:], uint64(start.Unix()/3600))
	}
	return k
}

// usageStart returns the start of the bucket a bolt key names.
func usageStart(k []byte) (time.Time, bool) {
	if len(k) != 9 {
		return time.Time{}, false
	}
	n := int64(binary.BigEndian.Uint64(k[1:]))
	switch k[0] {
	case 'm':
		return time.Unix(n*60, 0).UTC(), true
	case 'h':
		return time.Unix(n*3600, 0).UTC(), true
	}
	return time.Time{}, false
}

// AddUsage implements store.UsageStore: one transaction, reading and rewriting each bucket.
func (s *Store) AddUsage(_ context.Context, counts []store.UsageCount) error {
	adds, err := store.SumUsageCounts(counts)
	if err != nil {
		return err
	}
	now := time.Now()
	var live []store.UsageAdd
	for _, a := range adds {
		if store.UsageExpiry(a.G, a.Bucket.Start).After(now) {
			live = append(live, a)
		}
	}
	if len(live) == 0 {
		return nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		ub, err := tx.CreateBucketIfNotExists(bUsage)
		if err != nil {
			return err
		}
		insts, err := ub.CreateBucketIfNotExists(bUsageInst)
		if err != nil {
			return err
		}
		var kb *bolt.Bucket
		var kbInst, kbKey string
		for _, a := range live { // sorted: one key's buckets follow each other
			if kb == nil || a.Instance != kbInst || a.KeyID != kbKey {
				ib, err := insts.CreateBucketIfNotExists([]byte(a.Instance))
				if err != nil {
					return err
				}
				if kb, err = ib.CreateBucketIfNotExists([]byte(a.KeyID)); err != nil {
					return err
				}
				kbInst, kbKey = a.Instance, a.KeyID
			}
			k := usageKey(a.G, a.Bucket.Start)
			var r usageRecord
			if v := kb.Get(k); v != nil {
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("decoding usage of %s: %v", a.KeyID, err)
				}
			}
			r.OK += a.Bucket.OK
			for code, n := range a.Bucket.Refused {
				if r.Refused == nil {
					r.Refused = make(map[string]int64)
				}
				r.Refused[code] += n
			}
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := kb.Put(k, v); err != nil {
				return err
			}
		}
		return sweepUsage(ub, now)
	})
	if err != nil {
		return fmt.Errorf("adding usage counts: %v", err)
	}
	return nil
}

// sweepUsage deletes the expired buckets (and the key and instance buckets it leaves empty),
// if the last sweep is usageSweepEvery ago, and records when it ran.
func sweepUsage(ub *bolt.Bucket, now time.Time) error {
	if v := ub.Get(kUsageSwept); len(v) == 8 &&
		now.Sub(time.UnixMilli(int64(binary.BigEndian.Uint64(v)))) < usageSweepEvery {
		return nil
	}
	var stamp [8]byte
	binary.BigEndian.PutUint64(stamp[:], uint64(now.UnixMilli()))
	if err := ub.Put(kUsageSwept, stamp[:]); err != nil {
		return err
	}
	insts := ub.Bucket(bUsageInst)
	if insts == nil {
		return nil
	}
	// The names first: the buckets change as they are swept.
	type name struct{ inst, key []byte }
	var names []name
	err := insts.ForEachBucket(func(inst []byte) error {
		return insts.Bucket(inst).ForEachBucket(func(key []byte) error {
			names = append(names, name{bytes.Clone(inst), bytes.Clone(key)})
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, n := range names {
		ib := insts.Bucket(n.inst)
		if ib == nil {
			continue
		}
		kb := ib.Bucket(n.key)
		if kb == nil {
			continue
		}
		// Within each kind the buckets are sorted by time: the expired ones come first.
		var gone [][]byte
		for _, kind := range []store.Granularity{store.Minute, store.Hour} {
			prefix := usageKey(kind, time.Unix(0, 0))[:1]
			c := kb.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if start, ok := usageStart(k); ok && store.UsageExpiry(kind, start).After(now) {
					break
				}
				gone = append(gone, bytes.Clone(k))
			}
		}
		for _, k := range gone {
			if err := kb.Delete(k); err != nil {
				return err
			}
		}
		if k, _ := kb.Cursor().First(); k == nil {
			if err := ib.DeleteBucket(n.key); err != nil {
				return err
			}
		}
		if k, _ := ib.Cursor().First(); k == nil {
			if err := insts.DeleteBucket(n.inst); err != nil {
				return err
			}
		}
	}
	return nil
}

// Usage implements store.UsageStore: a cursor over the key's minutes, or hours, in the range,
// leaving out those expired.
func (s *Store) Usage(_ context.Context, instance, keyID string, g store.Granularity, from, to time.Time) ([]store.UsageBucket, error) {
	first, _, err := store.UsageRange(g, from, to)
	if err != nil {
		return nil, err
	}
	if keyID == "" {
		keyID = store.UsageInstanceKey
	} else if keyID == store.UsageInstanceKey {
		return nil, fmt.Errorf("%q is not a key id", keyID)
	}
	held := store.Minute // the stored buckets read
	if g != store.Minute {
		held = store.Hour
	}
	now := time.Now()
	seek := first
	if seek.Unix() < 0 {
		seek = time.Unix(0, 0)
	}
	sum := store.NewUsageSum(g)
	err = s.db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket(bUsage)
		for _, name := range [][]byte{bUsageInst, []byte(instance), []byte(keyID)} {
			if kb == nil {
				return nil
			}
			kb = kb.Bucket(name)
		}
		if kb == nil {
			return nil
		}
		k0 := usageKey(held, seek)
		c := kb.Cursor()
		for k, v := c.Seek(k0); k != nil && k[0] == k0[0]; k, v = c.Next() {
			start, ok := usageStart(k)
			if !ok {
				return fmt.Errorf("reading usage of %s: bad key %x", keyID, k)
			}
			if !g.Truncate(start).Before(to) {
				break
			}
			if !store.UsageExpiry(held, start).After(now) {
				continue
			}
			var r usageRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decoding usage of %s: %v", keyID, err)
			}
			sum.Add(start, "", r.OK)
			for code, n := range r.Refused {
				sum.Add(start, code, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sum.Buckets(), nil
}

// Interface guards
var _ store.UsageStore = (*Store)(nil)
