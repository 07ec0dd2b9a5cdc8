package storage

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Count is how many sagas of one name are in one status in one partition.
type Count struct {
	Partition Partition `json:"partition"`
	Saga      string    `json:"saga"`
	Status    Status    `json:"status"`
	N         int       `json:"n"`
}

// Counts counts the stored sagas per partition, saga name and status. It
// walks the keys of the status index, never the records: its cost grows
// with the number of stored sagas (see docs/console.md for a measurement),
// so callers that poll should cache it.
func (b *Bolt) Counts(ctx context.Context) ([]Count, error) {
	var out []Count
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := mustPart(name)
			pb, err := openPart(tx, p, false)
			if err != nil || pb == nil {
				return err
			}
			c := pb.index.Cursor()
			var cur *Count
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if len(k) < 1+1+1+16 {
					continue
				}
				st, n := Status(k[0]), k[1:len(k)-17]
				if cur == nil || cur.Status != st || cur.Saga != string(n) {
					out = append(out, Count{Partition: p, Saga: string(n), Status: st})
					cur = &out[len(out)-1]
				}
				cur.N++
			}
			// Parked sagas are indexed under the status they were parked
			// from, resolved ones under failed: count them as parked and
			// resolved instead.
			parked, resolved := map[string]int{}, map[string]int{}
			uncount := func(name string, st Status) {
				for i := len(out) - 1; i >= 0 && out[i].Partition == p; i-- {
					if out[i].Saga == name && out[i].Status == st {
						out[i].N--
						break
					}
				}
			}
			parkedCounts(pb, func(name string, from Status) {
				parked[name]++
				uncount(name, from)
			})
			resolvedCounts(pb, func(name string) {
				resolved[name]++
				uncount(name, StatusFailed)
			})
			if len(parked)+len(resolved) == 0 {
				return nil
			}
			for _, name := range slices.Sorted(maps.Keys(parked)) {
				out = append(out, Count{Partition: p, Saga: name, Status: StatusParked, N: parked[name]})
			}
			for _, name := range slices.Sorted(maps.Keys(resolved)) {
				out = append(out, Count{Partition: p, Saga: name, Status: StatusResolved, N: resolved[name]})
			}
			kept := out[:0]
			for _, c := range out {
				if c.N > 0 || c.Partition != p {
					kept = append(kept, c)
				}
			}
			out = kept
			return nil
		})
	})
	return out, err
}

// FindKey returns the sagas whose idempotency key is key, for each of the
// given saga names, in every partition of the store (a lookup in each
// partition's key index, no scan).
func (b *Bolt) FindKey(ctx context.Context, names []string, key string) ([]*Saga, error) {
	var out []*Saga
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			pb, err := openPart(tx, mustPart(name), false)
			if err != nil || pb == nil {
				return err
			}
			for _, n := range names {
				v := pb.idem.Get(idemKey(n, key))
				if len(v) != 8 {
					continue
				}
				off := int64(binary.BigEndian.Uint64(v))
				rec := pb.sagas.Get(sagaKey(off, n))
				if rec == nil {
					continue
				}
				s, err := b.decodeStored(rec)
				if err != nil {
					return fmt.Errorf("partition %s offset %d: %w", name, off, err)
				}
				out = append(out, s)
			}
			return nil
		})
	})
	return out, err
}
