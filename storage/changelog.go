package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// versionOfRecord reads a record's version without decoding it.
func versionOfRecord(b []byte) uint64 {
	if len(b) < 3 || b[0] != recordVersion {
		return 0
	}
	v, n := binary.Uvarint(b[2:])
	if n <= 0 {
		return 0
	}
	return v
}

// Apply implements Store.
func (b *Bolt) Apply(ctx context.Context, p Partition, changes []Change, changelogNext int64) (int, error) {
	type prepared struct {
		key    []byte
		value  []byte
		s      *Saga // nil for next-offset and tombstone records
		next   int64
		isNxt  bool
		isMeta bool
	}
	ps := make([]prepared, 0, len(changes))
	for _, c := range changes {
		switch {
		case bytes.HasPrefix(c.Key, []byte(metaPrefix)):
			ps = append(ps, prepared{key: c.Key, value: c.Value, isMeta: true})
		case bytes.Equal(c.Key, NextOffsetKey):
			if len(c.Value) != 8 {
				return 0, fmt.Errorf("%w: next-offset changelog record of %d bytes", ErrCorrupt, len(c.Value))
			}
			ps = append(ps, prepared{isNxt: true, next: int64(binary.BigEndian.Uint64(c.Value))})
		case c.Value == nil:
			if len(c.Key) <= 8 {
				return 0, fmt.Errorf("%w: changelog key %x", ErrCorrupt, c.Key)
			}
			ps = append(ps, prepared{key: c.Key})
		default:
			s, err := DecodeSaga(c.Value)
			if err != nil {
				return 0, fmt.Errorf("changelog record %x: %w", c.Key, err)
			}
			if s.Source.TopicPartition() != p || !bytes.Equal(c.Key, ChangeKey(s)) {
				return 0, fmt.Errorf("%w: changelog record %x belongs to %s", ErrCorrupt, c.Key, s.ID())
			}
			ps = append(ps, prepared{key: c.Key, value: c.Value, s: s})
		}
	}
	var applied int
	err := b.submit(ctx, func(w *wtx) error {
		applied = 0
		pb, err := w.part(p, true)
		if err != nil {
			return err
		}
		for _, c := range ps {
			switch {
			case c.isMeta:
				if err := putMeta(pb, string(c.key[len(metaPrefix):]), c.value); err != nil {
					return err
				}
				applied++
			case c.isNxt:
				if c.next > pb.next() {
					pb.advance(c.next)
					applied++
				}
			case c.s == nil: // tombstone
				old := pb.sagas.Get(c.key)
				if old == nil {
					continue
				}
				os, err := DecodeSaga(old)
				if err != nil {
					return err
				}
				if err := deleteSaga(pb, os); err != nil {
					return err
				}
				applied++
			default:
				old := pb.sagas.Get(c.key)
				if old != nil && versionOfRecord(old) >= c.s.Version {
					continue
				}
				if err := pb.sagas.Put(c.key, c.value); err != nil {
					return err
				}
				if old != nil {
					if err := pb.index.Delete(indexKey(statusOfRecord(old), c.s.Name, c.s.Source.Offset)); err != nil {
						return err
					}
				}
				if err := pb.index.Put(indexKey(c.s.Status, c.s.Name, c.s.Source.Offset), nil); err != nil {
					return err
				}
				if c.s.IdempotencyKey != "" {
					ik := idemKey(c.s.Name, c.s.IdempotencyKey)
					if pb.idem.Get(ik) == nil {
						if err := pb.idem.Put(ik, c.key[:8]); err != nil {
							return err
						}
					}
				}
				pb.advance(c.s.Source.Offset + 1)
				applied++
			}
		}
		if err := pb.flushNext(); err != nil {
			return err
		}
		return pb.setChangelogNext(changelogNext)
	})
	return applied, err
}

// deleteSaga removes a saga, its index entry and its idempotency key (if
// the key still points at it).
func deleteSaga(pb *partBuckets, s *Saga) error {
	k := sagaKey(s.Source.Offset, s.Name)
	if err := pb.sagas.Delete(k); err != nil {
		return err
	}
	if err := pb.index.Delete(indexKey(s.Status, s.Name, s.Source.Offset)); err != nil {
		return err
	}
	if s.IdempotencyKey != "" {
		ik := idemKey(s.Name, s.IdempotencyKey)
		if v := pb.idem.Get(ik); bytes.Equal(v, k[:8]) {
			return pb.idem.Delete(ik)
		}
	}
	return nil
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

// Expire implements Store.
func (b *Bolt) Expire(ctx context.Context, p Partition, cutoff time.Time, limit int) ([]*Saga, error) {
	var out []*Saga
	err := b.submit(ctx, func(w *wtx) error {
		out = out[:0]
		pb, err := w.part(p, false)
		if err != nil || pb == nil {
			return err
		}
		var victims []*Saga
		for _, it := range iters(pb, []Status{StatusCompleted, StatusRolledBack, StatusFailed}, "", false) {
			it.seekAfter(nil)
			for ; it.k != nil && len(victims) < limit; it.next() {
				at := it.cur()
				s, err := DecodeSaga(pb.sagas.Get(sagaKey(at.off, at.name)))
				if err != nil {
					return err
				}
				if !s.UpdatedAt.Before(cutoff) {
					break // offsets follow time: the rest of this range is newer
				}
				victims = append(victims, s)
			}
		}
		for _, s := range victims {
			if err := deleteSaga(pb, s); err != nil {
				return err
			}
		}
		out = victims
		return nil
	})
	return out, err
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
		return scanPart(ctx, pb, statuses, fn)
	})
}

func scanPart(ctx context.Context, pb *partBuckets, statuses []Status, fn func(*Saga) error) error {
	m := &merged{its: iters(pb, statuses, "", false)}
	m.seekAfter(nil)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		at, ok := m.next()
		if !ok {
			return nil
		}
		s, err := DecodeSaga(pb.sagas.Get(sagaKey(at.off, at.name)))
		if err != nil {
			return fmt.Errorf("offset %d: %w", at.off, err)
		}
		if err := fn(s); err != nil {
			return err
		}
	}
}

func putMeta(pb *partBuckets, key string, value []byte) error {
	mb, err := pb.root.CreateBucketIfNotExists(bucketMetaP)
	if err != nil {
		return err
	}
	if value == nil {
		return mb.Delete([]byte(key))
	}
	return mb.Put([]byte(key), value)
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

// PutMeta implements Store.
func (b *Bolt) PutMeta(ctx context.Context, p Partition, key string, value []byte) error {
	if !validTopic(p.Topic) || p.Partition < 0 {
		return fmt.Errorf("%w: partition %s", ErrInvalidSaga, p)
	}
	v := append([]byte(nil), value...)
	if value == nil {
		v = nil
	}
	return b.submit(ctx, func(w *wtx) error {
		pb, err := w.part(p, true)
		if err != nil {
			return err
		}
		return putMeta(pb, key, v)
	})
}
