package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/bits"
	"time"
)

// Record encoding (version 2). Compact and allocation-light because every
// step transition rewrites the record:
//
//	byte    version (2)
//	byte    status
//	uvarint record version (bumped by every write; orders changelog replays)
//	str     name, trigger, topic
//	varint  partition, offset
//	varint  event time, created, updated (Unix ns, 0 = zero time)
//	str     idempotency key, error
//	bytes   context
//	uvarint step count, then per step:
//	        str name, byte status, uvarint attempts, varint started, ended,
//	        str error, uvarint comp attempts, str comp error, varint comp ended
//	uvarint extension count, then per extension: uvarint tag, bytes value
//	        tag 1: the origin (Saga.Origin): str topic, varint partition, offset
//	        tag 2: the wait (Saga.Wait): byte kind, uvarint step, uvarint attempt,
//	               byte flags (1: compensating), varint since, deadline,
//	               str topic, field, value
//	        tag 3: the uncertain steps (Saga.Uncertain): uvarint count, then
//	               uvarint step index each
//	        tag 4: the operator history (Saga.History) and the resolution:
//	               uvarint record version the resolution was written with
//	               (0: none), then the entries (history.go)
//	        tag 16: the definition (Saga.Definition): its fingerprint's bytes
//	        tag 17: the park (Saga.Park): uvarint record version, str reason,
//	                varint since
//	        tag 32: the concurrency key's value (Saga.ConcurrencyKey): its bytes
//	4 bytes CRC-32C (Castagnoli) of every byte before it, big-endian
//
// str and bytes are a uvarint length followed by the bytes.
//
// Compatibility: version 1 records (the same fields, no extensions, no
// checksum) are still read. Extensions carry fields added after version 2
// without a new version: a reader keeps the tags it does not know
// (Saga.Extensions) and writes them back unchanged, so a record passes
// through an older member without losing what a newer one wrote. A record
// of a version above 2 is refused with ErrNewerRecord. A checksum mismatch
// is ErrCorrupt: the bytes were damaged after they were written.
//
// Extension tags are taken in ranges, so that work in parallel does not
// collide: 1 to 15 fields of a saga's run (1 the origin, 2 the wait, 3 the
// uncertain steps, 4 the operator history and the resolution); 16 to 31 fields
// of definition versions and deploys (16 the definition, 17 the park); 32
// and up fields of group-wide limits (32 the concurrency key). A new field
// takes the next free tag of its range; a tag is never reused.
//
// Parking: the status byte holds only the six statuses every release
// reads. A parked saga is recorded in the status it was parked from, with
// tag 17; a release that does not know parking reads the saga as that
// status (and runs it if it has its definition). Tag 17 names the record
// version it was written with: a release that rewrites the record without
// knowing tag 17 keeps the tag but bumps the version, so the stale park is
// recognised and dropped.
//
// Resolved sagas, likewise: a resolved saga is recorded as failed, with
// tag 4 naming the record version its resolution was written with: a
// release that does not know resolved reads the saga as failed, and if it
// rewrites the record (a retry) it keeps tag 4 but bumps the version, so
// the stale resolution is recognised and dropped (the history stays).
const (
	recordVersion1 = 1
	recordVersion  = 2
)

// RecordVersion is the saga record format this release writes (in the
// store and in the changelog); it reads formats 1 and 2.
const RecordVersion = recordVersion

// Extension tags this release knows.
const (
	extOrigin         = 1
	extWait           = 2
	extUncertain      = 3
	extHistory        = 4
	extDefinition     = 16
	extPark           = 17
	extConcurrencyKey = 32
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// statusOfRecord returns the status byte of an encoded record without
// decoding it (0 when the record is too short or of an unknown version).
func statusOfRecord(b []byte) Status {
	if len(b) < 2 || (b[0] != recordVersion && b[0] != recordVersion1) {
		return 0
	}
	return Status(b[1])
}

// EncodeSaga appends the binary encoding of s to dst.
func EncodeSaga(dst []byte, s *Saga) []byte {
	if need := encodedSizeBound(s); cap(dst)-len(dst) < need {
		dst = append(make([]byte, 0, len(dst)+need), dst...) // one allocation, not one per field
	}
	start := len(dst)
	dst = append(dst, recordVersion, byte(s.stored()))
	dst = binary.AppendUvarint(dst, s.Version)
	dst = appendStr(dst, s.Name)
	dst = appendStr(dst, s.Trigger)
	dst = appendStr(dst, s.Source.Topic)
	dst = binary.AppendVarint(dst, int64(s.Source.Partition))
	dst = binary.AppendVarint(dst, s.Source.Offset)
	dst = appendTime(dst, s.EventTime)
	dst = appendTime(dst, s.CreatedAt)
	dst = appendTime(dst, s.UpdatedAt)
	dst = appendStr(dst, s.IdempotencyKey)
	dst = appendStr(dst, s.Error)
	dst = binary.AppendUvarint(dst, uint64(len(s.Context)))
	dst = append(dst, s.Context...)
	dst = binary.AppendUvarint(dst, uint64(len(s.Steps)))
	for i := range s.Steps {
		st := &s.Steps[i]
		dst = appendStr(dst, st.Name)
		dst = append(dst, byte(st.Status))
		dst = binary.AppendUvarint(dst, uint64(st.Attempts))
		dst = appendTime(dst, st.StartedAt)
		dst = appendTime(dst, st.EndedAt)
		dst = appendStr(dst, st.Error)
		dst = binary.AppendUvarint(dst, uint64(st.CompAttempts))
		dst = appendStr(dst, st.CompError)
		dst = appendTime(dst, st.CompEndedAt)
	}
	parked := s.Status == StatusParked && s.Park != nil
	n := len(s.Extensions)
	if s.Origin.Topic != "" {
		n++
	}
	if s.Wait != nil {
		n++
	}
	if len(s.Uncertain) > 0 {
		n++
	}
	if s.ConcurrencyKey != "" {
		n++
	}
	if s.Definition != "" {
		n++
	}
	if parked {
		n++
	}
	history := len(s.History) > 0 || s.Status == StatusResolved
	if history {
		n++
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	if s.Origin.Topic != "" {
		var ob [96]byte // on the stack for topics of usual length
		o := appendStr(ob[:0], s.Origin.Topic)
		o = binary.AppendVarint(o, int64(s.Origin.Partition))
		o = binary.AppendVarint(o, s.Origin.Offset)
		dst = binary.AppendUvarint(dst, extOrigin)
		dst = binary.AppendUvarint(dst, uint64(len(o)))
		dst = append(dst, o...)
	}
	if s.Wait != nil { // written in place: its length first
		dst = binary.AppendUvarint(dst, extWait)
		dst = binary.AppendUvarint(dst, uint64(waitSize(s.Wait)))
		dst = appendWait(dst, s.Wait)
	}
	if len(s.Uncertain) > 0 {
		dst = binary.AppendUvarint(dst, extUncertain)
		dst = binary.AppendUvarint(dst, uint64(uncertainSize(s.Uncertain)))
		dst = appendUncertain(dst, s.Uncertain)
	}
	if s.ConcurrencyKey != "" {
		dst = binary.AppendUvarint(dst, extConcurrencyKey)
		dst = appendStr(dst, s.ConcurrencyKey)
	}
	if s.Definition != "" {
		dst = binary.AppendUvarint(dst, extDefinition)
		dst = appendStr(dst, s.Definition)
	}
	if parked { // written in place: its length first, then the fields
		since := int64(0)
		if !s.Park.Since.IsZero() {
			since = s.Park.Since.UnixNano()
		}
		var lb [3 * binary.MaxVarintLen64]byte
		l := len(binary.AppendUvarint(lb[:0], s.Version)) + len(binary.AppendUvarint(lb[:0], uint64(len(s.Park.Reason)))) +
			len(s.Park.Reason) + len(binary.AppendVarint(lb[:0], since))
		dst = binary.AppendUvarint(dst, extPark)
		dst = binary.AppendUvarint(dst, uint64(l))
		dst = binary.AppendUvarint(dst, s.Version)
		dst = appendStr(dst, s.Park.Reason)
		dst = binary.AppendVarint(dst, since)
	}
	if history { // rare (an operator acted): a buffer of its own
		hv := appendHistoryExt(nil, s)
		dst = binary.AppendUvarint(dst, extHistory)
		dst = binary.AppendUvarint(dst, uint64(len(hv)))
		dst = append(dst, hv...)
	}
	for _, x := range s.Extensions {
		dst = binary.AppendUvarint(dst, x.Tag)
		dst = binary.AppendUvarint(dst, uint64(len(x.Value)))
		dst = append(dst, x.Value...)
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

// recordHeadOf is the head of an encoded record (recordHead).
type recordHeadOf struct {
	version           uint64
	name, topic, idem []byte
	partition, offset int64
}

// isKey reports whether k is the changelog key of the record's saga
// (ChangeKey).
func (h recordHeadOf) isKey(k []byte) bool {
	return len(k) == 8+len(h.name) && int64(binary.BigEndian.Uint64(k)) == h.offset && bytes.Equal(k[8:], h.name)
}

// recordHead reads the head of a record of format 2 whose checksum holds
// and whose status byte is one DecodeSaga accepts — its version, name,
// position and idempotency key — without decoding the rest (nor
// allocating); false for any other record.
func recordHead(b []byte) (recordHeadOf, bool) {
	var h recordHeadOf
	if len(b) < 6 || b[0] != recordVersion || crc32.Checksum(b[:len(b)-4], crcTable) != binary.BigEndian.Uint32(b[len(b)-4:]) ||
		Status(b[1]) < StatusPending || Status(b[1]) > StatusFailed { // as DecodeSaga checks it
		return h, false
	}
	d := decoder{b: b[2 : len(b)-4]}
	h.version = d.uvarint()
	h.name = d.bytes()
	d.bytes() // trigger
	h.topic = d.bytes()
	h.partition = d.varint()
	h.offset = d.varint()
	d.varint() // event time
	d.varint() // created
	d.varint() // updated
	h.idem = d.bytes()
	return h, d.err == nil
}

// DecodeSaga decodes a record written by EncodeSaga. It never panics: any
// malformed input yields an error wrapping ErrCorrupt.
func DecodeSaga(b []byte) (*Saga, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty record", ErrCorrupt)
	}
	v := b[0]
	switch {
	case v == recordVersion:
		if len(b) < 6 {
			return nil, fmt.Errorf("%w: short record", ErrCorrupt)
		}
		body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
		if crc32.Checksum(body, crcTable) != sum {
			return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
		}
		b = body
	case v > recordVersion:
		return nil, fmt.Errorf("%w: record version %d (this release reads up to %d)", ErrNewerRecord, v, recordVersion)
	case v != recordVersion1:
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	d := decoder{b: b[1:]}
	s := &Saga{Status: Status(d.byte())}
	var park *Park
	var resolvedAt uint64
	s.Version = d.uvarint()
	s.Name = d.str()
	s.Trigger = d.str()
	s.Source.Topic = d.str()
	p := d.varint()
	if p < 0 || p > 1<<31-1 {
		d.fail("partition out of range")
	}
	s.Source.Partition = int32(p)
	s.Source.Offset = d.varint()
	s.EventTime = d.time()
	s.CreatedAt = d.time()
	s.UpdatedAt = d.time()
	s.IdempotencyKey = d.str()
	s.Error = d.str()
	if c := d.bytes(); len(c) > 0 {
		s.Context = append([]byte(nil), c...)
	}
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each step takes at least one byte
		d.fail("step count")
	}
	if d.err == nil && n > 0 {
		s.Steps = make([]Step, n)
		for i := range s.Steps {
			st := &s.Steps[i]
			st.Name = d.str()
			st.Status = StepStatus(d.byte())
			st.Attempts = d.uint32()
			st.StartedAt = d.time()
			st.EndedAt = d.time()
			st.Error = d.str()
			st.CompAttempts = d.uint32()
			st.CompError = d.str()
			st.CompEndedAt = d.time()
		}
	}
	if v == recordVersion {
		n := d.uvarint()
		if n > uint64(len(d.b)) { // each extension takes at least two bytes
			d.fail("extension count")
		}
		for i := uint64(0); d.err == nil && i < n; i++ {
			tag := d.uvarint()
			val := d.bytes()
			switch tag {
			case extWait:
				w, err := decodeWait(val)
				if err != nil {
					d.fail(err.Error())
				}
				s.Wait = w
				continue
			case extUncertain:
				u, err := decodeUncertain(val)
				if err != nil {
					d.fail(err.Error())
				}
				s.Uncertain = u
				continue
			case extConcurrencyKey:
				s.ConcurrencyKey = string(val)
				continue
			case extDefinition:
				s.Definition = string(val)
				continue
			case extPark:
				od := decoder{b: val}
				ver := od.uvarint()
				p := &Park{Reason: od.str(), Since: od.time()}
				if od.err != nil {
					d.fail("park: " + od.err.Error())
				}
				if ver == s.Version { // else written before a release that does not know parking rewrote the record
					park = p
				}
				continue
			case extHistory:
				h, at, err := decodeHistoryExt(val)
				if err != nil {
					d.fail("history")
				}
				s.History, resolvedAt = h, at
				continue
			}
			if tag == extOrigin {
				od := decoder{b: val}
				s.Origin.Topic = od.str()
				p := od.varint()
				if p < 0 || p > 1<<31-1 {
					od.fail("origin partition out of range")
				}
				s.Origin.Partition = int32(p)
				s.Origin.Offset = od.varint()
				if od.err == nil && len(od.b) != 0 {
					od.fail("trailing bytes in the origin")
				}
				if od.err != nil {
					d.fail(od.err.Error())
				}
				continue
			}
			s.Extensions = append(s.Extensions, Extension{Tag: tag, Value: append([]byte(nil), val...)})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err == nil && (s.Status < StatusPending || s.Status > StatusFailed) { // parked and resolved are never a status byte
		d.fail("status")
	}
	if d.err != nil {
		return nil, d.err
	}
	if resolvedAt != 0 && resolvedAt == s.Version && s.Status == StatusFailed {
		s.Status = StatusResolved // else written before a release that does not know resolved rewrote the record
	}
	if park != nil && s.Status.resumable() {
		park.From, s.Park, s.Status = s.Status, park, StatusParked
	}
	return s, nil
}

// encodedSizeBound is at least the size of s's encoding: exact for the
// fields every record has (and the checksum), up to 9 bytes over for the
// extension count, generous for the extensions.
func encodedSizeBound(s *Saga) int {
	// The fields every record has, sized exactly (each transition encodes
	// one, and the record stays in memory until the changelog has it): a
	// bound of 10 bytes per number would make the buffer twice the record.
	n := 2 + uvarintLen(s.Version) + strLen(s.Name) + strLen(s.Trigger) + strLen(s.Source.Topic) +
		varintLen(int64(s.Source.Partition)) + varintLen(s.Source.Offset) +
		timeSize(s.EventTime) + timeSize(s.CreatedAt) + timeSize(s.UpdatedAt) +
		strLen(s.IdempotencyKey) + strLen(s.Error) + uvarintLen(uint64(len(s.Context))) + len(s.Context) +
		uvarintLen(uint64(len(s.Steps))) + 10 + 4 // extension count, checksum
	for i := range s.Steps {
		st := &s.Steps[i]
		n += strLen(st.Name) + 1 + uvarintLen(uint64(st.Attempts)) + timeSize(st.StartedAt) + timeSize(st.EndedAt) +
			strLen(st.Error) + uvarintLen(uint64(st.CompAttempts)) + strLen(st.CompError) + timeSize(st.CompEndedAt)
	}
	// The extensions, rarer, with room to spare.
	if s.Origin.Topic != "" {
		n += 10 + 10 + 10 + len(s.Origin.Topic) + 10 + 10
	}
	if s.Wait != nil {
		n += 10 + 10 + waitSize(s.Wait)
	}
	if len(s.Uncertain) > 0 {
		n += 10 + 10 + uncertainSize(s.Uncertain)
	}
	if s.ConcurrencyKey != "" {
		n += 10 + 10 + len(s.ConcurrencyKey)
	}
	if s.Definition != "" {
		n += 10 + 10 + len(s.Definition)
	}
	if s.Park != nil {
		n += 10 + 10 + 10 + 10 + len(s.Park.Reason) + 10
	}
	if len(s.History) > 0 || s.Status == StatusResolved {
		n += 10 + 10 + historySize(s.History)
	}
	for _, x := range s.Extensions {
		n += 10 + 10 + len(x.Value)
	}
	return n
}

// uvarintLen is the length of binary.AppendUvarint's encoding of x.
func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// varintLen is the length of binary.AppendVarint's encoding of x.
func varintLen(x int64) int { return uvarintLen(uint64(x<<1) ^ uint64(x>>63)) }

// strLen is the length of appendStr's encoding of s.
func strLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(dst, 0)
	}
	return binary.AppendVarint(dst, t.UnixNano())
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short record")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("count out of range")
		return 0
	}
	return uint32(v)
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("length out of range")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.bytes()) }

func (d *decoder) time() time.Time {
	v := d.varint()
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

// createdOfRecord reads a record's CreatedAt (Unix ns, 0 for the zero
// time) without decoding the rest; false when the record is malformed.
func createdOfRecord(b []byte) (int64, bool) {
	if len(b) < 2 || (b[0] != recordVersion && b[0] != recordVersion1) {
		return 0, false
	}
	d := decoder{b: b[2:]}
	d.uvarint()           // record version
	d.bytes()             // name
	d.bytes()             // trigger
	d.bytes()             // topic
	d.varint()            // partition
	d.varint()            // offset
	d.varint()            // event time
	created := d.varint() // created
	return created, d.err == nil
}

// versionOfRecord reads a record's version without decoding it.
func versionOfRecord(b []byte) uint64 {
	if len(b) < 3 || (b[0] != recordVersion && b[0] != recordVersion1) {
		return 0
	}
	v, n := binary.Uvarint(b[2:])
	if n <= 0 {
		return 0
	}
	return v
}
