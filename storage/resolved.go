package storage

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// Resolved sagas. A resolved saga's record carries the status byte of
// failed (record.go), and its status index entry stays under failed, so a
// release that does not know resolved finds the saga where it always did.
// This release also lists the saga in its partition's "r" bucket, whose
// keys are those of the status index without the status byte, as in the
// parked set (parked.go; so they sort like an index range): listings, scans and counts of the resolved status
// walk it, and the failed range skips resolved records.
//
// Every write of this release keeps "r" exact. A release that does not know
// resolved may have written to the file since (a rollback on the same data
// directory: it may have retried or expired a resolved saga, or restored a
// resolved record from the changelog), so OpenBolt repairs "r" from the
// records (repairResolved).

// bucketResolved is a partition's resolved set (see the layout).
var bucketResolved = []byte("r")

// setResolved records s in the partition's resolved set, or takes it out,
// for a write that replaces a record that was resolved or not
// (wasResolved: resolvedRecord of it), as setParked: "r" holds exactly the
// resolved records.
func (pb *partBuckets) setResolved(wasResolved bool, s *Saga) error {
	resolved := s.Status == StatusResolved
	if !resolved && !wasResolved {
		return nil
	}
	if pb.resolved == nil {
		if !resolved {
			return nil
		}
		var err error
		if pb.resolved, err = pb.root.CreateBucketIfNotExists(bucketResolved); err != nil {
			return err
		}
	}
	k := parkKey(s.Name, unixNanos(s.CreatedAt), s.Source.Offset) // the key form of the parked set
	if resolved {
		return pb.resolved.Put(k, nil)
	}
	return pb.resolved.Delete(k)
}

// recordExtension returns the value of extension tag of an encoded record
// with its version and status byte, without decoding (nor allocating) the
// rest; ok is false when the record is not of format 2, is malformed, or
// has no such extension. Of several extensions with tag it returns the
// last one pick accepts (nil: the last one), as DecodeSaga reads them (the
// last history; a park of the record's version wherever it is), so that
// the parked and resolved sets, DecodeSaga and Check agree on any record.
func recordExtension(b []byte, tag uint64, pick func(val []byte, version uint64) bool) (val []byte, version uint64, st Status, ok bool) {
	if len(b) < 6 || b[0] != recordVersion {
		return nil, 0, 0, false // format 1 records have no extensions
	}
	st = Status(b[1])
	d := decoder{b: b[2 : len(b)-4]}
	version = d.uvarint()
	d.bytes() // name
	d.bytes() // trigger
	d.bytes() // topic
	d.varint()
	d.varint()
	d.varint()
	d.varint()
	d.varint()
	d.bytes() // idempotency key
	d.bytes() // error
	d.bytes() // context
	n := d.uvarint()
	for i := uint64(0); d.err == nil && i < n; i++ {
		d.bytes()
		d.byte()
		d.uvarint()
		d.varint()
		d.varint()
		d.bytes()
		d.uvarint()
		d.bytes()
		d.varint()
	}
	n = d.uvarint()
	for i := uint64(0); d.err == nil && i < n; i++ {
		t, v := d.uvarint(), d.bytes()
		if t == tag && d.err == nil && (pick == nil || pick(v, version)) {
			val, ok = v, true
		}
	}
	if !ok || d.err != nil {
		return nil, 0, 0, false
	}
	return val, version, st, true
}

// resolvedRecord reports whether an encoded record is of a resolved saga.
func resolvedRecord(b []byte) bool {
	val, version, st, ok := recordExtension(b, extHistory, nil)
	if !ok || st != StatusFailed {
		return false
	}
	at, n := binary.Uvarint(val)
	return n > 0 && at != 0 && at == version
}

// repairResolved makes every partition's resolved set match its records,
// in the caller's transaction: entries whose saga is gone or no longer
// resolved are removed, resolved records without an entry get one. It
// reads the records of the failed status only.
func repairResolved(tx *bolt.Tx) error {
	return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
		p, ok := parsePartName(name)
		if !ok {
			return nil
		}
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil || pb.sagas == nil || pb.index == nil {
			return err
		}
		var drop, add [][]byte
		if pb.resolved != nil {
			c := pb.resolved.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if len(k) < 1+16 || !resolvedRecord(pb.sagas.Get(sagaKey(int64(binary.BigEndian.Uint64(k[len(k)-8:])), string(k[:len(k)-17])))) {
					drop = append(drop, append([]byte(nil), k...))
				}
			}
		}
		c := pb.index.Cursor()
		for k, _ := c.Seek([]byte{byte(StatusFailed)}); k != nil && k[0] == byte(StatusFailed); k, _ = c.Next() {
			if len(k) < 1+1+16 {
				continue
			}
			n, off := string(k[1:len(k)-17]), int64(binary.BigEndian.Uint64(k[len(k)-8:]))
			if !resolvedRecord(pb.sagas.Get(sagaKey(off, n))) {
				continue
			}
			if pb.resolved == nil || pb.resolved.Get(k[1:]) == nil {
				add = append(add, append([]byte(nil), k[1:]...))
			}
		}
		if len(drop)+len(add) == 0 {
			return nil
		}
		if pb.resolved == nil {
			if pb.resolved, err = pb.root.CreateBucketIfNotExists(bucketResolved); err != nil {
				return err
			}
		}
		for _, k := range drop {
			if err := pb.resolved.Delete(k); err != nil {
				return err
			}
		}
		for _, k := range add {
			if err := pb.resolved.Put(k, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// resolvedCounts calls fn with the saga name of each resolved saga of a
// partition.
func resolvedCounts(pb *partBuckets, fn func(name string)) {
	if pb.resolved == nil {
		return
	}
	c := pb.resolved.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) >= 1+16 {
			fn(string(k[:len(k)-17]))
		}
	}
}
