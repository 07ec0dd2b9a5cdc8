package storage

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// Parked sagas. A parked saga's record carries the status it was parked
// from (record.go), and its status index entry stays under that status, so
// a release that does not know parking finds the saga where it always did.
// This release also lists the saga in its partition's "p" bucket, whose
// keys are those of the status index without the status byte (so they sort
// like an index range): listings, scans and counts of the parked status
// walk it, and the index ranges of the other statuses skip parked records.
//
// Every write of this release keeps "p" exact. A release that does not know
// parking may have written to the file since (a rollback on the same data
// directory: it may have resumed, finished or expired a parked saga, or
// restored a parked record from the changelog), so OpenBolt repairs "p"
// from the records (repairParked).

// parkKey is a saga's key in the "p" bucket.
func parkKey(name string, created, off int64) []byte {
	k := make([]byte, 0, len(name)+1+16)
	k = append(k, name...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(created)^1<<63)
	return binary.BigEndian.AppendUint64(k, uint64(off))
}

// parkedOrResolved reports whether the record old (nil: none) is in the
// partition's parked or resolved set, reading it only for a set the
// partition has (most have neither).
func (pb *partBuckets) parkedOrResolved(old []byte) (parked, resolved bool) {
	if pb.parked != nil {
		_, parked = parkedOfRecord(old)
	}
	if pb.resolved != nil {
		resolved = resolvedRecord(old)
	}
	return parked, resolved
}

// setParked records s in the partition's parked set, or takes it out, for
// a write that replaces a record that was parked or not (wasParked:
// parkedOfRecord of it, parkedOrResolved; false when there was none): "p"
// holds exactly the parked records (above), so when neither is parked
// there is nothing to take out, and no lookup.
func (pb *partBuckets) setParked(wasParked bool, s *Saga) error {
	parked := s.Status == StatusParked && s.Park != nil
	if !parked && !wasParked {
		return nil
	}
	if pb.parked == nil {
		if !parked {
			return nil
		}
		var err error
		if pb.parked, err = pb.root.CreateBucketIfNotExists(bucketPark); err != nil {
			return err
		}
	}
	k := parkKey(s.Name, unixNanos(s.CreatedAt), s.Source.Offset)
	if parked {
		return pb.parked.Put(k, []byte{byte(s.Park.From)})
	}
	return pb.parked.Delete(k)
}

// parkedOfRecord reports whether an encoded record is of a parked saga,
// and the status it was parked from, without decoding (nor allocating)
// the rest.
func parkedOfRecord(b []byte) (Status, bool) {
	_, _, st, ok := recordExtension(b, extPark, currentPark)
	if !ok || !st.resumable() {
		return 0, false
	}
	return st, true
}

// currentPark reports whether a park extension is of the record's version
// (a park of an older version is stale: a release that does not know
// parking rewrote the record since).
func currentPark(val []byte, version uint64) bool {
	d := decoder{b: val}
	return d.uvarint() == version && d.err == nil
}

// repairParked makes every partition's parked set match its records, in
// the caller's transaction: entries whose saga is gone or no longer parked
// are removed, parked records without an entry get one. It reads the
// records of the non-terminal statuses (those a saga is parked from).
func repairParked(tx *bolt.Tx) error {
	parts := tx.Bucket(bucketParts)
	return parts.ForEachBucket(func(name []byte) error {
		p, ok := parsePartName(name)
		if !ok {
			return nil
		}
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil || pb.sagas == nil || pb.index == nil {
			return err
		}
		type fix struct {
			key  []byte
			from Status // 0: delete
		}
		var fixes []fix
		if pb.parked != nil {
			c := pb.parked.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) < 1+16 {
					fixes = append(fixes, fix{key: append([]byte(nil), k...)})
					continue
				}
				n, off := string(k[:len(k)-17]), int64(binary.BigEndian.Uint64(k[len(k)-8:]))
				from, parked := parkedOfRecord(pb.sagas.Get(sagaKey(off, n)))
				switch {
				case !parked:
					fixes = append(fixes, fix{key: append([]byte(nil), k...)})
				case len(v) != 1 || Status(v[0]) != from:
					fixes = append(fixes, fix{key: append([]byte(nil), k...), from: from})
				}
			}
		}
		for _, st := range []Status{StatusPending, StatusExecuting, StatusCompensating} {
			c := pb.index.Cursor()
			for k, _ := c.Seek([]byte{byte(st)}); k != nil && k[0] == byte(st); k, _ = c.Next() {
				if len(k) < 1+1+16 {
					continue
				}
				n, off := string(k[1:len(k)-17]), int64(binary.BigEndian.Uint64(k[len(k)-8:]))
				from, parked := parkedOfRecord(pb.sagas.Get(sagaKey(off, n)))
				if !parked {
					continue
				}
				pk := k[1:]
				if pb.parked == nil || pb.parked.Get(pk) == nil {
					fixes = append(fixes, fix{key: append([]byte(nil), pk...), from: from})
				}
			}
		}
		if len(fixes) == 0 {
			return nil
		}
		if pb.parked == nil {
			if pb.parked, err = pb.root.CreateBucketIfNotExists(bucketPark); err != nil {
				return err
			}
		}
		for _, f := range fixes {
			if f.from == 0 {
				err = pb.parked.Delete(f.key)
			} else {
				err = pb.parked.Put(f.key, []byte{byte(f.from)})
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// parkedCounts counts the parked sagas of a partition by saga name and
// by the status each was parked from.
func parkedCounts(pb *partBuckets, fn func(name string, from Status)) {
	if pb.parked == nil {
		return
	}
	c := pb.parked.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) < 1+16 || len(v) != 1 {
			continue
		}
		fn(string(k[:len(k)-17]), Status(v[0]))
	}
}
