package engine

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sagaz-go/sagaz/storage"
)

// The keys topic. A saga with an idempotency key is one saga per (saga,
// key) in the whole group, whatever topic, partition, record key or source
// its events come from: the member that consumes an event does not record
// its keyed sagas but produces one start record each to the keys topic, to
// the partition that owns the key (KeyPartition). The owner of that
// partition records the start there (PrepareStart) — the check and the
// insert are one transaction in the one partition that owns the key — and
// runs the saga. The source offsets are committed only after the start
// records are acknowledged, so nothing is lost between the two.
//
// A start record: key StartKey(saga, key), value the saga's initial
// context, timestamp the event's, and the headers below.
const (
	HeaderStartSaga    = "sagaz.start.saga"    // the saga's name
	HeaderStartTrigger = "sagaz.start.trigger" // the trigger that started it
	HeaderStartKey     = "sagaz.start.key"     // the idempotency key
	HeaderStartOrigin  = "sagaz.start.origin"  // the event's position: topic:partition:offset
	HeaderStartConc    = "sagaz.start.concurrency_key"
)

// Placement is what decides the partition of the keys topic a saga starts
// in: its concurrency key's value when its trigger declares one (all sagas
// of one value in one partition, so the limit per value is exact), else its
// idempotency key.
func Placement(s *storage.Saga) string {
	if s.ConcurrencyKey != "" {
		return "\x01" + s.ConcurrencyKey
	}
	return s.IdempotencyKey
}

// StartKey is the record key of a start record: the saga's name, a zero
// byte, the idempotency key.
func StartKey(saga, key string) []byte {
	b := make([]byte, 0, len(saga)+1+len(key))
	b = append(b, saga...)
	b = append(b, 0)
	return append(b, key...)
}

// KeyPartition is the partition of a keys topic with n partitions that
// owns (saga, key): murmur2 of StartKey, as Kafka's Java client and
// franz-go place keyed records. n must not change while keyed sagas are in
// their de-duplication window (it would move keys).
func KeyPartition(saga, key string, n int32) int32 {
	return int32(murmur2(StartKey(saga, key))&0x7fffffff) % n
}

// murmur2 is Kafka's record-key hash (org.apache.kafka.common.utils.Utils).
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		b = b[4:]
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// StartHeaders are the headers of a keyed saga's start record.
func StartHeaders(s *storage.Saga) []Header {
	o := s.Origin
	hs := []Header{
		{Key: HeaderStartSaga, Value: []byte(s.Name)},
		{Key: HeaderStartTrigger, Value: []byte(s.Trigger)},
		{Key: HeaderStartKey, Value: []byte(s.IdempotencyKey)},
		{Key: HeaderStartOrigin, Value: []byte(o.Topic + ":" + strconv.FormatInt(int64(o.Partition), 10) + ":" + strconv.FormatInt(o.Offset, 10))},
	}
	if s.ConcurrencyKey != "" {
		hs = append(hs, Header{Key: HeaderStartConc, Value: []byte(s.ConcurrencyKey)})
	}
	return hs
}

// PrepareStart adds the keyed saga a start record (a record of the keys
// topic, ev) asks for to b: it lives at the record's position. A start of a
// saga this binary does not declare, or a malformed start, is a reject.
func (e *Engine) PrepareStart(b *Batch, ev *Event) {
	if kind, ok := ev.Header(HeaderKeysKind); ok { // an await step's registration or signal
		e.prepareAwaitRecord(b, ev, string(kind))
		return
	}
	s, err := e.startOf(ev)
	if err != nil {
		b.Rejects = append(b.Rejects, Reject{Event: ev, Reason: ReasonNoRoute, Err: err})
		return
	}
	b.Sagas = append(b.Sagas, s)
}

func (e *Engine) startOf(ev *Event) (*storage.Saga, error) {
	name, _ := ev.Header(HeaderStartSaga)
	trigger, _ := ev.Header(HeaderStartTrigger)
	key, _ := ev.Header(HeaderStartKey)
	origin, _ := ev.Header(HeaderStartOrigin)
	conc, _ := ev.Header(HeaderStartConc)
	if e.routes.Saga(string(name)) == nil {
		return nil, fmt.Errorf("%w: a start of saga %q, which this binary does not declare", ErrNoRoute, name)
	}
	if (len(key) == 0 && len(conc) == 0) || len(key) > MaxKeyBytes || len(conc) > MaxKeyBytes {
		return nil, fmt.Errorf("start of saga %q: idempotency key of %d bytes, concurrency key of %d", name, len(key), len(conc))
	}
	o, err := parseOrigin(string(origin))
	if err != nil {
		return nil, fmt.Errorf("start of saga %q: origin %q: %w", name, origin, err)
	}
	return &storage.Saga{
		Name:           string(name),
		Trigger:        string(trigger),
		Source:         storage.Position{Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset},
		Origin:         o,
		EventTime:      ev.Timestamp,
		IdempotencyKey: string(key),
		ConcurrencyKey: string(conc),
		Context:        ev.Value,
	}, nil
}

func parseOrigin(s string) (storage.Position, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return storage.Position{}, fmt.Errorf("want topic:partition:offset")
	}
	p, err1 := strconv.ParseInt(parts[1], 10, 32)
	o, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || p < 0 || o < 0 {
		return storage.Position{}, fmt.Errorf("want topic:partition:offset")
	}
	return storage.Position{Topic: parts[0], Partition: int32(p), Offset: o}, nil
}
