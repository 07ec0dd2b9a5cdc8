package storage

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, id string) (*Saga, error) {
	ref, err := ParseRef(id)
	if err != nil {
		return nil, err
	}
	if ref.Keyed {
		return b.getKeyed(ref, id)
	}
	pos, name := ref.Pos, ref.Name
	var s *Saga
	err = b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, pos.TopicPartition(), false)
		if err != nil {
			return err
		}
		if pb == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		v := pb.sagas.Get(sagaKey(pos.Offset, name))
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		s, err = b.decodeStored(v)
		return err
	})
	return s, err
}

// NextOffset implements Store.
func (b *Bolt) NextOffset(ctx context.Context, p Partition) (int64, bool, error) {
	var (
		next int64
		ok   bool
	)
	err := b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		if v := pb.root.Get(keyNext); len(v) == 8 {
			next, ok = int64(binary.BigEndian.Uint64(v)), true
		}
		return nil
	})
	return next, ok, err
}

// Scan implements Store.
func (b *Bolt) Scan(ctx context.Context, statuses []Status, fn func(*Saga) error) error {
	return b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			pb, err := openPart(tx, mustPart(name), false)
			if err != nil {
				return err
			}
			if err := b.scanPart(ctx, pb, mustPart(name), statuses, fn); err != nil {
				return fmt.Errorf("partition %s: %w", name, err)
			}
			return nil
		})
	})
}

func mustPart(name []byte) Partition {
	p, _ := parsePartName(name)
	return p
}

// ChangelogNext implements Store.
func (b *Bolt) ChangelogNext(ctx context.Context, p Partition) (int64, error) {
	var n int64
	err := b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		n = pb.changelogNext()
		return nil
	})
	return n, err
}

// Partitions implements Store.
func (b *Bolt) Partitions(ctx context.Context) ([]Partition, error) {
	var out []Partition
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			if p, ok := parsePartName(name); ok {
				out = append(out, p)
			}
			return nil
		})
	})
	return out, err
}

// ScanPartition implements Store.
func (b *Bolt) ScanPartition(ctx context.Context, p Partition, statuses []Status, fn func(*Saga) error) error {
	return b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		return b.scanPart(ctx, pb, p, statuses, fn)
	})
}

func (b *Bolt) scanPart(ctx context.Context, pb *partBuckets, p Partition, statuses []Status, fn func(*Saga) error) error {
	its := ranges(pb, p, statuses, "", false)
	for _, it := range its {
		it.first()
	}
	for m := newMerge(its); !m.empty(); m.advance() {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := m.peek().saga(b)
		if err != nil {
			return err
		}
		if s == nil {
			continue
		}
		if err := fn(s); err != nil {
			return err
		}
	}
	return nil
}

// GetMeta implements Store.
func (b *Bolt) GetMeta(ctx context.Context, p Partition, key string) ([]byte, bool, error) {
	var out []byte
	var ok bool
	err := b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		if mb := pb.root.Bucket(bucketMetaP); mb != nil {
			if v := mb.Get([]byte(key)); v != nil {
				out, ok = append([]byte(nil), v...), true
			}
		}
		return nil
	})
	return out, ok, err
}

// getKeyed finds a keyed saga by its key: a lookup in each partition's key
// index (the saga lives in the one keys-topic partition that owns its key).
func (b *Bolt) getKeyed(ref Ref, id string) (*Saga, error) {
	var s *Saga
	err := b.view(func(tx *bolt.Tx) error {
		ik := idemKey(ref.Name, ref.Key)
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			if s != nil {
				return nil
			}
			pb, err := openPart(tx, mustPart(name), false)
			if err != nil || pb == nil {
				return err
			}
			off := pb.idem.Get(ik)
			if len(off) != 8 {
				return nil
			}
			v := pb.sagas.Get(sagaKey(int64(binary.BigEndian.Uint64(off)), ref.Name))
			if v == nil {
				return nil
			}
			got, err := b.decodeStored(v)
			if err != nil {
				return err
			}
			if got.Keyed() {
				s = got
			}
			return nil
		})
	})
	if err == nil && s == nil {
		err = fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return s, err
}
