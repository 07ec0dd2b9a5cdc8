package storage

import (
	"bytes"
	"encoding/binary"
	"strconv"

	bolt "go.etcd.io/bbolt"
)

// Layout (schema 1):
//
//	"meta"            schema version
//	"parts"           one nested bucket per topic-partition, named "<topic>/<partition>":
//	    "s"  sagas:       offset(8, big-endian) + name      -> record (record.go)
//	    "k"  idempotency: name + 0x00 + key                 -> offset(8)
//	    "i"  status index: status(1) + name + 0x00 + offset(8) -> empty
//	    "x"  meta records: name -> value (created on first use)
//	    "n"  next offset (8)
//	    "c"  next changelog offset (8): the changelog is applied below it
//
// Offsets arrive in order, so saga inserts are appends . The
// status index keys also grow at the end of each (status, name) range.
var (
	bucketMeta  = []byte("meta")
	bucketParts = []byte("parts")
	bucketSagas = []byte("s")
	bucketIdem  = []byte("k")
	bucketIndex = []byte("i")
	bucketMetaP = []byte("x")
	keyNext     = []byte("n")
	keyCLNext   = []byte("c")
	keySchema   = []byte("schema")
)

const schemaVersion = 1

func partName(p Partition) []byte {
	return []byte(p.Topic + "/" + strconv.FormatInt(int64(p.Partition), 10))
}

func parsePartName(n []byte) (Partition, bool) {
	i := bytes.LastIndexByte(n, '/')
	if i <= 0 {
		return Partition{}, false
	}
	v, err := strconv.ParseInt(string(n[i+1:]), 10, 32)
	if err != nil {
		return Partition{}, false
	}
	return Partition{Topic: string(n[:i]), Partition: int32(v)}, true
}

func sagaKey(off int64, name string) []byte {
	k := make([]byte, 8+len(name))
	binary.BigEndian.PutUint64(k, uint64(off))
	copy(k[8:], name)
	return k
}

func indexKey(st Status, name string, off int64) []byte {
	k := make([]byte, 0, 1+len(name)+1+8)
	k = append(k, byte(st))
	k = append(k, name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(off))
}

func idemKey(name, key string) []byte {
	k := make([]byte, 0, len(name)+1+len(key))
	k = append(k, name...)
	k = append(k, 0)
	return append(k, key...)
}

// partBuckets are the sub-buckets of one partition within a transaction,
// with its next offset read once.
type partBuckets struct {
	root, sagas, idem, index *bolt.Bucket
	nextOff                  int64
	nextRead, nextDirty      bool
}

// next returns the partition's recorded next offset (0 if none).
func (pb *partBuckets) next() int64 {
	if !pb.nextRead {
		pb.nextRead = true
		if v := pb.root.Get(keyNext); len(v) == 8 {
			pb.nextOff = int64(binary.BigEndian.Uint64(v))
		}
	}
	return pb.nextOff
}

// advance moves the partition's next offset to next unless it is already
// later: the next offset never moves backwards. flushNext writes it.
func (pb *partBuckets) advance(next int64) {
	if next > pb.next() {
		pb.nextOff, pb.nextDirty = next, true
	}
}

// changelogNext returns the recorded next changelog offset (0 if none).
func (pb *partBuckets) changelogNext() int64 {
	if v := pb.root.Get(keyCLNext); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// setChangelogNext records the next changelog offset; it never moves back.
func (pb *partBuckets) setChangelogNext(n int64) error {
	if n <= pb.changelogNext() {
		return nil
	}
	return pb.root.Put(keyCLNext, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

func (pb *partBuckets) flushNext() error {
	if !pb.nextDirty {
		return nil
	}
	pb.nextDirty = false
	return pb.root.Put(keyNext, binary.BigEndian.AppendUint64(nil, uint64(pb.nextOff)))
}

func openPart(tx *bolt.Tx, p Partition, create bool) (*partBuckets, error) {
	parts := tx.Bucket(bucketParts)
	name := partName(p)
	root := parts.Bucket(name)
	if root == nil {
		if !create {
			return nil, nil
		}
		var err error
		if root, err = parts.CreateBucket(name); err != nil {
			return nil, err
		}
		for _, n := range [][]byte{bucketSagas, bucketIdem, bucketIndex} {
			if _, err := root.CreateBucket(n); err != nil {
				return nil, err
			}
		}
	}
	return &partBuckets{root: root, sagas: root.Bucket(bucketSagas), idem: root.Bucket(bucketIdem), index: root.Bucket(bucketIndex)}, nil
}
