package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"

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
	return StartKeyPartition(StartKey(saga, key), n)
}

// StartKeyPartition is KeyPartition of a StartKey.
func StartKeyPartition(startKey []byte, n int32) int32 {
	return int32(murmur2(startKey)&0x7fffffff) % n
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
	// Every value in one buffer, the headers in one slice.
	buf := make([]byte, 0, len(s.Name)+len(s.Trigger)+len(s.IdempotencyKey)+len(o.Topic)+len(s.ConcurrencyKey)+2+10+19)
	hs := make([]Header, 0, 5)
	add := func(key string, from int) {
		hs = append(hs, Header{Key: key, Value: buf[from:len(buf):len(buf)]})
	}
	buf = append(buf, s.Name...)
	add(HeaderStartSaga, 0)
	n := len(buf)
	buf = append(buf, s.Trigger...)
	add(HeaderStartTrigger, n)
	n = len(buf)
	buf = append(buf, s.IdempotencyKey...)
	add(HeaderStartKey, n)
	n = len(buf)
	buf = append(buf, o.Topic...)
	buf = append(strconv.AppendInt(append(buf, ':'), int64(o.Partition), 10), ':')
	buf = strconv.AppendInt(buf, o.Offset, 10)
	add(HeaderStartOrigin, n)
	if s.ConcurrencyKey != "" {
		n = len(buf)
		buf = append(buf, s.ConcurrencyKey...)
		add(HeaderStartConc, n)
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
	def := e.routes.Saga(string(name))
	if def == nil {
		return nil, fmt.Errorf("%w: a start of saga %q, which this binary does not declare", ErrNoRoute, name)
	}
	if (len(key) == 0 && len(conc) == 0) || len(key) > MaxKeyBytes || len(conc) > MaxKeyBytes {
		return nil, fmt.Errorf("start of saga %q: idempotency key of %d bytes, concurrency key of %d", name, len(key), len(conc))
	}
	o, err := e.parseOrigin(origin)
	if err != nil {
		return nil, fmt.Errorf("start of saga %q: origin %q: %w", name, origin, err)
	}
	// The declared saga's and route's strings where they are the same (no
	// string made per start record for them).
	var triggerID string
	if rt := routeOf(e.routes, name, trigger); rt != nil {
		triggerID = rt.TriggerID()
	} else {
		triggerID = string(trigger)
	}
	return &storage.Saga{
		Name:           def.Name,
		Trigger:        triggerID,
		Source:         storage.Position{Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset},
		Origin:         o,
		EventTime:      ev.Timestamp,
		IdempotencyKey: string(key),
		ConcurrencyKey: string(conc),
		Context:        ev.Value,
	}, nil
}

// parseOrigin reads a start record's origin, "topic:partition:offset".
// A topic a Kafka trigger names is that trigger's string (the usual origin:
// no string made per start record).
func (e *Engine) parseOrigin(b []byte) (storage.Position, error) {
	topic, p, o, ok := splitPosition(b)
	if !ok {
		return storage.Position{}, errPosition
	}
	var t string
	if rts := e.routes.match[SourceKafka][string(topic)]; len(rts) > 0 {
		t = rts[0].Trigger.target
	} else {
		t = string(topic)
	}
	return storage.Position{Topic: t, Partition: p, Offset: o}, nil
}

var errPosition = errors.New("want topic:partition:offset")

// splitPosition splits "topic:partition:offset" (a topic has no colon; the
// partition and offset are not negative).
func splitPosition(b []byte) (topic []byte, partition int32, offset int64, ok bool) {
	j := bytes.LastIndexByte(b, ':')
	if j < 0 {
		return nil, 0, 0, false
	}
	i := bytes.LastIndexByte(b[:j], ':')
	if i <= 0 || bytes.IndexByte(b[:i], ':') >= 0 {
		return nil, 0, 0, false
	}
	p, ok1 := digits(b[i+1:j], math.MaxInt32)
	o, ok2 := digits(b[j+1:], math.MaxInt64)
	if !ok1 || !ok2 {
		return nil, 0, 0, false
	}
	return b[:i], int32(p), o, true
}

// digits parses a decimal number of at most limit (digits only, no sign).
func digits(b []byte, limit int64) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
