package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Layout (schema 2):
//
//	"meta"            schema version
//	"parts"           one nested bucket per topic-partition, named "<topic>/<partition>":
//	    "s"  sagas:       offset(8, big-endian) + name      -> record (record.go)
//	    "k"  idempotency: name + 0x00 + key                 -> offset(8)
//	    "i"  status index: status(1) + name + 0x00 + created(8) + offset(8) -> empty
//	    "x"  meta records: name -> value (created on first use)
//	    "p"  parked sagas: name + 0x00 + created(8) + offset(8) -> status parked from (1)
//	         (created on first use; see parked.go)
//	    "r"  resolved sagas: name + 0x00 + created(8) + offset(8) -> empty
//	         (created on first use; see resolved.go)
//	    "w"  waiting sagas: offset(8) + name -> deadline(8), or empty (created on first use; wait.go)
//	    "t"  timer index: deadline(8) + offset(8) + name -> empty (created on first use; wait.go)
//	    "n"  next offset (8)
//	    "c"  next changelog offset (8): the changelog is applied below it
//	    "wn" how many sagas wait (8; the entries of "w")
//
// created is the saga's CreatedAt in Unix ns with the sign bit flipped, so
// that the big-endian bytes sort in time order: each (status, name) range
// of the index is in (created, offset) order, the order of listings
// (list.go). Schema 1 keyed the index by offset alone; OpenBolt rebuilds
// such an index once (migrateIndex).
//
// Offsets arrive in order and time moves forward, so saga inserts are
// appends, and status index keys mostly grow at the end of their range.
var (
	bucketMeta   = []byte("meta")
	bucketParts  = []byte("parts")
	bucketSagas  = []byte("s")
	bucketIdem   = []byte("k")
	bucketIndex  = []byte("i")
	bucketMetaP  = []byte("x")
	bucketPark   = []byte("p")
	bucketWaits  = []byte("w")
	bucketTimers = []byte("t")
	keyNext      = []byte("n")
	keyCLNext    = []byte("c")
	keyWaiting   = []byte("wn")
	keySchema    = []byte("schema")
)

const schemaVersion = 2

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

// indexKey is the status index key of a saga; created is its CreatedAt as
// unixNanos gives it.
func indexKey(st Status, name string, created, off int64) []byte {
	k := make([]byte, 0, 1+len(name)+1+16)
	k = append(k, byte(st))
	k = append(k, name...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(created)^1<<63)
	return binary.BigEndian.AppendUint64(k, uint64(off))
}

// indexKeyOf is the status index key of an encoded record, read without
// decoding the whole record; false when the record is malformed.
func indexKeyOf(rec []byte, name string, off int64) ([]byte, bool) {
	st := statusOfRecord(rec)
	created, ok := createdOfRecord(rec)
	if !ok || !st.Valid() {
		return nil, false
	}
	return indexKey(st, name, created, off), true
}

// migrateIndex rebuilds a schema 1 store's status indexes in the schema 2
// form, from the records, in the caller's transaction.
func migrateIndex(tx *bolt.Tx) error {
	return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
		root := tx.Bucket(bucketParts).Bucket(name)
		if err := root.DeleteBucket(bucketIndex); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
		index, err := root.CreateBucket(bucketIndex)
		if err != nil {
			return err
		}
		sagas := root.Bucket(bucketSagas)
		if sagas == nil {
			return fmt.Errorf("%w: partition %s has no sagas bucket", ErrDamaged, name)
		}
		return sagas.ForEach(func(k, v []byte) error {
			if len(k) <= 8 {
				return fmt.Errorf("%w: partition %s: saga key %x", ErrDamaged, name, k)
			}
			ik, ok := indexKeyOf(v, string(k[8:]), int64(binary.BigEndian.Uint64(k[:8])))
			if !ok {
				return fmt.Errorf("%w: partition %s: the record at %x does not decode", ErrDamaged, name, k)
			}
			return index.Put(ik, nil)
		})
	})
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
	parked                   *bolt.Bucket // nil until a saga of the partition is parked
	resolved                 *bolt.Bucket // nil until a saga of the partition is resolved
	nextOff                  int64
	nextRead, nextDirty      bool
	// the timer index (wait.go), looked up on first use
	waits, timers *bolt.Bucket
	waitsChecked  bool
	// cursors kept for the transaction's lookups (getSaga, getIdem,
	// deleteIndex), made on first use
	sagasCur, idemCur, indexCur *bolt.Cursor
}

// getSaga is pb.sagas.Get(key) through a cursor kept for the transaction:
// bbolt's Get makes a cursor and grows its stack on every call. Seek
// starts from the bucket's root each time, so it sees every write the
// transaction made before it (docs/architecture.md, Writes and
// durability).
func (pb *partBuckets) getSaga(key []byte) []byte { return seekGet(&pb.sagasCur, pb.sagas, key) }

// getIdem is pb.idem.Get(key), as getSaga.
func (pb *partBuckets) getIdem(key []byte) []byte { return seekGet(&pb.idemCur, pb.idem, key) }

// deleteIndex is pb.index.Delete(key) through a cursor kept for the
// transaction, as getSaga.
func (pb *partBuckets) deleteIndex(key []byte) error {
	if pb.indexCur == nil {
		pb.indexCur = pb.index.Cursor()
	}
	if k, _ := pb.indexCur.Seek(key); !bytes.Equal(k, key) {
		return nil
	}
	return pb.indexCur.Delete()
}

func seekGet(c **bolt.Cursor, b *bolt.Bucket, key []byte) []byte {
	if *c == nil {
		*c = b.Cursor()
	}
	k, v := (*c).Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
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
	return &partBuckets{root: root, sagas: root.Bucket(bucketSagas), idem: root.Bucket(bucketIdem), index: root.Bucket(bucketIndex),
		parked: root.Bucket(bucketPark), resolved: root.Bucket(bucketResolved)}, nil
}
