package storage

import "encoding/binary"

// The changelog record format. Every state change of a partition's store
// is mirrored as one record of its changelog partition (see the consumer
// package's Changelog), and Apply replays them:
//
//	key ChangeKey(saga) = offset(8, big-endian) + saga name   value EncodeSaga(saga), or nil (tombstone: expired)
//	key NextOffsetKey ("\xffnext")                            value EncodeNext(next offset)
//	key MetaKey(name)   ("\xfemeta/" + name)                   value the meta record, or nil (deleted)
//
// A saga record replaces the stored one only when its Version is newer, so
// replaying a changelog twice, or out of date, changes nothing.

// Change is one changelog record: Key is ChangeKey(saga) or NextOffsetKey;
// Value is EncodeSaga(saga), EncodeNext(offset), or nil (a tombstone).
type Change struct {
	Key, Value []byte
}

// NextOffsetKey is the changelog key of a partition's next offset.
var NextOffsetKey = []byte("\xffnext")

// metaPrefix starts the changelog keys of meta records.
const metaPrefix = "\xfemeta/"

// MetaKey is the changelog key of a partition's meta record.
func MetaKey(key string) []byte { return []byte(metaPrefix + key) }

// ChangeKey is the changelog key of a saga (its position and name).
func ChangeKey(s *Saga) []byte { return sagaKey(s.Source.Offset, s.Name) }

// EncodeNext is the changelog value of a next offset.
func EncodeNext(next int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(next)) }
