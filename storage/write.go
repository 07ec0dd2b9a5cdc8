package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

func validTopic(t string) bool { return ValidName(strings.TrimPrefix(t, "~")) }

func validate(s *Saga) error {
	switch {
	case !ValidName(s.Name):
		return fmt.Errorf("%w: saga name %q", ErrInvalidSaga, s.Name)
	case !validTopic(s.Source.Topic):
		return fmt.Errorf("%w: topic %q", ErrInvalidSaga, s.Source.Topic)
	case s.Source.Partition < 0 || s.Source.Offset < 0:
		return fmt.Errorf("%w: position %d/%d", ErrInvalidSaga, s.Source.Partition, s.Source.Offset)
	}
	return nil
}

// Start implements Store.
func (b *Bolt) Start(ctx context.Context, batch StartBatch) ([]StartResult, error) {
	now := b.opts.Now().UTC()
	recs := make([][]byte, len(batch.Sagas))
	for i, s := range batch.Sagas {
		if err := validate(s); err != nil {
			return nil, err
		}
		s.Status = StatusPending
		s.Version = 1
		s.CreatedAt, s.UpdatedAt = now, now
		recs[i] = EncodeSaga(nil, s)
	}
	for _, o := range batch.Offsets {
		if !validTopic(o.Topic) || o.Partition < 0 || o.Next < 0 {
			return nil, fmt.Errorf("%w: offset %s/%d:%d", ErrInvalidSaga, o.Topic, o.Partition, o.Next)
		}
	}
	var results []StartResult
	err := b.submit(ctx, func(w *wtx) error {
		results = make([]StartResult, len(batch.Sagas))
		part := func(p Partition) (*partBuckets, error) { return w.part(p, true) }
		for i, s := range batch.Sagas {
			pb, err := part(s.Source.TopicPartition())
			if err != nil {
				return err
			}
			sk := sagaKey(s.Source.Offset, s.Name)
			// Every saga recorded so far sits below the partition's recorded
			// next offset (Start advances it past each saga it inserts), so a
			// saga at or above it is new: no lookup needed.
			if s.Source.Offset < pb.next() && pb.getSaga(sk) != nil {
				results[i] = StartResult{ID: s.ID()}
				continue
			}
			if s.IdempotencyKey != "" {
				ik := idemKey(s.Name, s.IdempotencyKey)
				if v := pb.getIdem(ik); len(v) == 8 {
					pos := s.Source
					pos.Offset = int64(binary.BigEndian.Uint64(v))
					id := FormatID(pos, s.Name)
					if s.Keyed() {
						id = s.ID()
					}
					results[i] = StartResult{ID: id}
					continue
				}
				if err := pb.idem.Put(ik, sk[:8]); err != nil {
					return err
				}
			}
			if err := pb.sagas.Put(sk, recs[i]); err != nil {
				return err
			}
			if err := pb.index.Put(indexKey(StatusPending, s.Name, unixNanos(now), s.Source.Offset), nil); err != nil {
				return err
			}
			pb.advance(s.Source.Offset + 1)
			results[i] = StartResult{ID: s.ID(), Created: true, Saga: s}
		}
		for _, o := range batch.Offsets {
			pb, err := part(o.TopicPartition())
			if err != nil {
				return err
			}
			pb.advance(o.Next)
		}
		for _, o := range batch.Changelog {
			pb, err := part(o.TopicPartition())
			if err != nil {
				return err
			}
			if err := pb.setChangelogNext(o.Next); err != nil {
				return err
			}
		}
		for _, m := range batch.Meta {
			pb, err := part(m.Partition)
			if err != nil {
				return err
			}
			if err := putMeta(pb, m.Key, m.Value); err != nil {
				return err
			}
		}
		for _, pb := range w.parts {
			if err := pb.flushNext(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, r := range results {
		if r.Created {
			r.Saga.keepRecord(recs[i])
		}
	}
	return results, nil
}

// Update implements Store.
func (b *Bolt) Update(ctx context.Context, sagas ...*Saga) error {
	ups, err := prepareUpdates(sagas)
	if err != nil {
		return err
	}
	err = b.submit(ctx, func(w *wtx) error {
		for _, u := range ups {
			if err := b.putUpdate(w, u); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		keepRecords(ups)
	}
	return err
}

// keepRecords keeps each written record on its saga (TakeRecord).
func keepRecords(ups []sagaUpdate) {
	for _, u := range ups {
		u.s.keepRecord(u.rec)
	}
}

// sagaUpdate is a saga's new state, encoded before the transaction.
type sagaUpdate struct {
	p       Partition
	key     []byte
	rec     []byte
	s       *Saga
	status  Status
	created int64
}

// prepareUpdates validates and encodes the new states (each Version
// bumped).
func prepareUpdates(sagas []*Saga) ([]sagaUpdate, error) {
	ups := make([]sagaUpdate, len(sagas))
	for i, s := range sagas {
		if err := validate(s); err != nil {
			return nil, err
		}
		if !s.Status.Valid() {
			return nil, fmt.Errorf("%w: status %d", ErrInvalidSaga, s.Status)
		}
		if s.Status == StatusParked && (s.Park == nil || !s.Park.From.resumable()) {
			return nil, fmt.Errorf("%w: a parked saga needs its Park, parked from pending, executing or compensating", ErrInvalidSaga)
		}
		s.Version++
		ups[i] = sagaUpdate{p: s.Source.TopicPartition(), key: sagaKey(s.Source.Offset, s.Name), rec: EncodeSaga(nil, s), s: s, status: s.stored(),
			created: unixNanos(s.CreatedAt)}
	}
	return ups, nil
}

// putUpdate replaces an existing saga's record and moves its index, park,
// resolution and timer entries.
func (b *Bolt) putUpdate(w *wtx, u sagaUpdate) error {
	pb, err := w.part(u.p, false)
	if err != nil {
		return err
	}
	var old []byte
	if pb != nil {
		old = pb.getSaga(u.key)
	}
	if old == nil {
		return fmt.Errorf("%w: update of %s", ErrNotFound, u.s.ID())
	}
	prev, ok := indexKeyOf(old, u.s.Name, u.s.Source.Offset)
	if !ok {
		return b.malformed(old, u.s.ID())
	}
	wasParked, wasResolved := pb.parkedOrResolved(old)
	if err := pb.sagas.Put(u.key, u.rec); err != nil {
		return err
	}
	if next := indexKey(u.status, u.s.Name, u.created, u.s.Source.Offset); !bytes.Equal(prev, next) {
		if err := pb.deleteIndex(prev); err != nil {
			return err
		}
		if err := pb.index.Put(next, nil); err != nil {
			return err
		}
	}
	if err := pb.setParked(wasParked, u.s); err != nil {
		return err
	}
	if err := pb.setResolved(wasResolved, u.s); err != nil {
		return err
	}
	return syncWait(pb, u.key, u.s)
}

// applyRecord is a changelog record Apply writes, checked and decoded.
type applyRecord struct {
	key    []byte
	value  []byte
	s      *Saga // nil for next-offset and tombstone records
	next   int64
	isNxt  bool
	isMeta bool
}

// inKeyOrder returns the order Apply writes ps in: each stretch of ps
// between tombstones and meta records with its saga records in the order
// of their saga keys (offset, then name; one saga's records in theirs),
// then its next-offset records. Apply uses it only when its batch's sagas
// are keysApart (supersededInBatch): then a saga record's writes touch
// that saga's own keys (its record, index, parked, resolved, wait and
// timer entries, and the idempotency key — of its name — no other saga of
// the batch carries), the waiting count moves by the sagas that start and
// stop waiting (the same sum in any order while the count is right; a
// damaged count, which sagaz store check reports, may end otherwise), and
// the next offset only rises, so the store ends as in the changelog's
// order (only the count of next-offset records that raised the offset can
// differ). A changelog holds a saga at its last transition, up to
// thousands of sagas after its start, and a next-offset record after
// every batch, so in that order bbolt inserts most sagas into the middle
// of a node that grows through the call (moving the entries behind each);
// in key order the sagas bucket appends (the other buckets' keys come in
// other orders).
func inKeyOrder(ps []applyRecord) []int32 {
	order := make([]int32, 0, len(ps))
	byKey := func(a, b int32) int {
		if c := bytes.Compare(ps[a].key, ps[b].key); c != 0 {
			return c
		}
		return int(a - b)
	}
	for i := 0; i < len(ps); {
		if ps[i].s == nil && !ps[i].isNxt { // a tombstone or a meta record: in place
			order = append(order, int32(i))
			i++
			continue
		}
		j, from := i, len(order)
		for ; j < len(ps) && (ps[j].s != nil || ps[j].isNxt); j++ {
			if ps[j].s != nil {
				order = append(order, int32(j))
			}
		}
		slices.SortFunc(order[from:], byKey)
		for k := i; k < j; k++ {
			if ps[k].isNxt {
				order = append(order, int32(k))
			}
		}
		i = j
	}
	return order
}

// Apply implements Store.
func (b *Bolt) Apply(ctx context.Context, p Partition, changes []Change, changelogNext int64) (int, error) {
	return b.apply(ctx, p, changes, changelogNext, true)
}

// apply is Apply; keyOrder false writes the records in the changelog's
// order always (tests compare the two).
func (b *Bolt) apply(ctx context.Context, p Partition, changes []Change, changelogNext int64, keyOrder bool) (int, error) {
	superseded, keysApart := supersededInBatch(p, changes)
	ps := make([]applyRecord, 0, len(changes))
	for i, c := range changes {
		if superseded[i] {
			continue
		}
		switch {
		case bytes.HasPrefix(c.Key, []byte(metaPrefix)):
			ps = append(ps, applyRecord{key: c.Key, value: c.Value, isMeta: true})
		case bytes.Equal(c.Key, NextOffsetKey):
			if len(c.Value) != 8 {
				return 0, fmt.Errorf("%w: next-offset changelog record of %d bytes", ErrCorrupt, len(c.Value))
			}
			ps = append(ps, applyRecord{isNxt: true, next: int64(binary.BigEndian.Uint64(c.Value))})
		case c.Value == nil:
			if len(c.Key) <= 8 {
				return 0, fmt.Errorf("%w: changelog key %x", ErrCorrupt, c.Key)
			}
			ps = append(ps, applyRecord{key: c.Key})
		default:
			s, err := DecodeSaga(c.Value)
			if err != nil {
				return 0, fmt.Errorf("changelog record %x: %w", c.Key, err)
			}
			if s.Source.TopicPartition() != p || !bytes.Equal(c.Key, ChangeKey(s)) {
				return 0, fmt.Errorf("%w: changelog record %x belongs to %s", ErrCorrupt, c.Key, s.ID())
			}
			ps = append(ps, applyRecord{key: c.Key, value: c.Value, s: s})
		}
	}
	var order []int32
	if keysApart && keyOrder {
		order = inKeyOrder(ps)
	}
	chunk := applyChunk
	if recreatesASaga(ps) { // written again after a cut, it could end otherwise (applyChunk)
		chunk = max(len(ps), 1)
	}
	applied := 0
	for from := 0; from == 0 || from < len(ps); from += chunk {
		to := min(from+chunk, len(ps))
		n := 0
		err := b.submit(ctx, func(w *wtx) error {
			n = 0
			pb, err := w.part(p, true)
			if err != nil {
				return err
			}
			for i := from; i < to; i++ {
				c := &ps[i]
				if order != nil {
					c = &ps[order[i]]
				}
				changed, err := b.applyOne(pb, c)
				if err != nil {
					return err
				}
				if changed {
					n++
				}
			}
			if err := pb.flushNext(); err != nil {
				return err
			}
			if to < len(ps) { // not the last: the changelog position stays until every record is in
				return nil
			}
			return pb.setChangelogNext(changelogNext)
		})
		if err != nil { // the op may still run (a cancelled wait): do not read what it writes
			return 0, err
		}
		applied += n
		if applyChunkDone != nil {
			if err := applyChunkDone(to, len(ps)); err != nil { // a test cutting the call short
				return 0, err
			}
		}
	}
	return applied, nil
}

// applyChunk bounds the records one transaction of an Apply call writes.
// A call is written in transactions of up to applyChunk records, each
// committed before the next is queued, so that the writes of the
// partitions that run here, queued meanwhile, commit between them instead
// of waiting behind the whole call; only the last records changelogNext
// (docs/architecture.md, invariant 2), so a call cut short is applied
// again whole by the next restore. That ends as one call does unless the
// call re-creates a saga after its own tombstone: the second pass then
// writes the saga anew where the first found it stored, against the
// idempotency keys the first pass freed after it (a key another saga held
// until its tombstone, later in the call), and the saga may take a key
// one call never gives it. Such a call is written in one transaction. A
// var: tests set less.
var applyChunk = 4096

// recreatesASaga reports whether ps, in changelog order, holds a saga
// record after a tombstone of the same saga.
func recreatesASaga(ps []applyRecord) bool {
	var gone map[string]bool
	for i := range ps {
		c := &ps[i]
		switch {
		case c.isMeta || c.isNxt:
		case c.s == nil:
			if gone == nil {
				gone = map[string]bool{}
			}
			gone[string(c.key)] = true
		case gone[string(c.key)]:
			return true
		}
	}
	return false
}

// applyChunkDone, when set (tests), is called after each of an Apply
// call's transactions has committed, with how many of its records are in;
// an error it returns ends the call there, as a crash would.
var applyChunkDone func(done, total int) error

// applyOne writes one changelog record of an Apply call; it reports
// whether the record changed the store.
func (b *Bolt) applyOne(pb *partBuckets, c *applyRecord) (bool, error) {
	switch {
	case c.isMeta:
		if err := putMeta(pb, string(c.key[len(metaPrefix):]), c.value); err != nil {
			return false, err
		}
		return true, nil
	case c.isNxt:
		if c.next > pb.next() {
			pb.advance(c.next)
			return true, nil
		}
	case c.s == nil: // tombstone
		old := pb.getSaga(c.key)
		if old == nil {
			return false, nil
		}
		os, err := b.decodeStored(old)
		if err != nil {
			return false, err
		}
		if err := deleteSaga(pb, os); err != nil {
			return false, err
		}
		return true, nil
	default:
		old := pb.getSaga(c.key)
		if old != nil && versionOfRecord(old) >= c.s.Version {
			return false, nil
		}
		wasParked, wasResolved := pb.parkedOrResolved(old)
		if err := pb.sagas.Put(c.key, c.value); err != nil {
			return false, err
		}
		if old != nil {
			prev, ok := indexKeyOf(old, c.s.Name, c.s.Source.Offset)
			if !ok {
				return false, b.malformed(old, c.s.ID())
			}
			if err := pb.deleteIndex(prev); err != nil {
				return false, err
			}
		}
		if err := pb.index.Put(indexKey(c.s.stored(), c.s.Name, unixNanos(c.s.CreatedAt), c.s.Source.Offset), nil); err != nil {
			return false, err
		}
		if err := pb.setParked(wasParked, c.s); err != nil {
			return false, err
		}
		if err := pb.setResolved(wasResolved, c.s); err != nil {
			return false, err
		}
		if err := syncWait(pb, c.key, c.s); err != nil {
			return false, err
		}
		if c.s.IdempotencyKey != "" {
			ik := idemKey(c.s.Name, c.s.IdempotencyKey)
			if pb.getIdem(ik) == nil {
				if err := pb.idem.Put(ik, c.key[:8]); err != nil {
					return false, err
				}
			}
		}
		pb.advance(c.s.Source.Offset + 1)
		return true, nil
	}
	return false, nil
}

// supersededInBatch marks the saga records of a changelog batch of
// partition p that a later record of the same saga in the batch replaces
// anyway, so Apply skips them: not decoded, written nor indexed. A restore
// reads every transition of a saga written more than one flush interval
// apart, so most of its records are skipped. Applying the batch without
// them leaves the store as applying every record in turn does (a record
// only replaces an older version): record i is skipped only when
//   - a later record of the same saga has a higher version (equal versions
//     are left to the version check, which keeps the first, as one by one
//     does);
//   - no tombstone, of any saga, lies between them (a tombstone frees the
//     idempotency key of the saga it deletes);
//   - no other saga's record in the batch carries the same saga name and
//     idempotency key (which of them holds the key depends on the order the
//     records are applied in);
//   - if it carries a key, every record of its saga in the batch carries
//     that key (a record that claims a key and a later one that does not,
//     or claims another, leave the saga holding both; the engine sets a
//     saga's key once, at its start, so its records all carry it);
//   - it is sound: format 2, its checksum holds, its status byte is valid,
//     and its key, topic and partition are its own. A damaged or misplaced
//     record is decoded, and refused, as before — even when a later one
//     replaces it. (A record whose checksum holds but whose body a full
//     decode would refuse further on — a writer's bug, not damage — is
//     skipped when a later one replaces it.)
//
// keysApart reports that every saga record of the batch is sound and that
// no two sagas of it carry the same name and idempotency key and no saga
// carries two: then the order its sagas are applied in cannot change who
// holds a key (inKeyOrder).
func supersededInBatch(p Partition, changes []Change) (out []bool, keysApart bool) {
	out, keysApart = make([]bool, len(changes)), true
	// One entry per saga of the batch, found through one map lookup per
	// record (first pass); the second pass reaches it by index.
	type sagaOf struct {
		name    []byte // its key after the offset: the saga's name
		sameAt  int32  // the next entry of another saga at the same offset; -1: none
		holder  int32  // the first saga of the batch with its name and idempotency key (itself if it is); -1: no key
		idem    []byte // that key
		shared  bool   // (on a holder) another saga of the batch carries its key
		keyless bool   // one of its records carries no key
		twoKeys bool   // its records carry two keys
		seen    bool   // a later record of it was met (second pass)
		version uint64
		tombs   int // tombstones after its later record
	}
	type head struct {
		version uint64 // 0: not sound (versions start at 1), never skipped
		saga    int32
		keyed   bool
	}
	heads := make([]head, len(changes))
	sagas := make([]sagaOf, 0, len(changes)/2)
	at := newOffsetIndex(changes) // saga key's offset -> the first entry at it (sagas of one event share it)
	var holder map[string]int32   // name and idempotency key -> the entry of the first saga with it
	for i, c := range changes {
		if c.Value == nil || !isSagaKey(c.Key) {
			continue
		}
		h, ok := recordHead(c.Value)
		if !ok || string(h.topic) != p.Topic || h.partition != int64(p.Partition) || !h.isKey(c.Key) {
			keysApart = false // whatever key it carries is not looked at here
			continue
		}
		off, name := binary.BigEndian.Uint64(c.Key), c.Key[8:]
		j, seen := at.get(off)
		for seen && !bytes.Equal(sagas[j].name, name) {
			if sagas[j].sameAt < 0 {
				seen = false
				sagas[j].sameAt = int32(len(sagas)) // the entry made below
				break
			}
			j = sagas[j].sameAt
		}
		if !seen {
			j = int32(len(sagas))
			if _, taken := at.get(off); !taken {
				at.set(off, j)
			}
			sagas = append(sagas, sagaOf{name: name, sameAt: -1, holder: -1})
		}
		// A saga's key is the one its first keyed record carries; another
		// key a later record carries is checked for sharing too.
		switch {
		case len(h.idem) == 0:
			sagas[j].keyless = true
		case sagas[j].holder < 0: // its first key
			sagas[j].idem = h.idem
			if holder == nil {
				holder = make(map[string]int32, len(changes)/2)
			}
			ik := string(idemKey(string(h.name), string(h.idem)))
			if first, taken := holder[ik]; taken {
				sagas[j].holder = first
				sagas[first].shared = true
				keysApart = false
			} else {
				holder[ik] = j
				sagas[j].holder = j
			}
		case !bytes.Equal(h.idem, sagas[j].idem): // a second key (the engine writes none): shared with whoever else carries it
			sagas[j].twoKeys, keysApart = true, false
			ik := string(idemKey(string(h.name), string(h.idem)))
			if first, taken := holder[ik]; !taken {
				holder[ik] = j
			} else if first != j {
				sagas[first].shared, sagas[j].shared = true, true
			}
		}
		heads[i] = head{version: h.version, saga: j, keyed: len(h.idem) > 0}
	}
	tombs := 0
	for i := len(changes) - 1; i >= 0; i-- {
		c := changes[i]
		if !isSagaKey(c.Key) {
			continue
		}
		if c.Value == nil {
			tombs++
			continue
		}
		v := heads[i].version
		if v == 0 {
			continue
		}
		a := &sagas[heads[i].saga]
		if a.seen && a.version > v && a.tombs == tombs && (!heads[i].keyed || !sagas[a.holder].shared && !a.keyless && !a.twoKeys) {
			out[i] = true
			continue
		}
		if !a.seen || a.version < v || a.tombs != tombs {
			a.seen, a.version, a.tombs = true, max(v, a.version), tombs
		}
	}
	return out, keysApart
}

// offsetIndex maps the offsets in a batch's saga keys to int32s: a slice
// when they are dense (a restore's batch: the sagas of a stretch of its
// partition), a map otherwise.
type offsetIndex struct {
	lo    uint64
	dense []int32 // value+1; 0: none
	m     map[uint64]int32
}

func newOffsetIndex(changes []Change) offsetIndex {
	lo, hi, n := uint64(math.MaxUint64), uint64(0), 0
	for _, c := range changes {
		if c.Value != nil && isSagaKey(c.Key) {
			off := binary.BigEndian.Uint64(c.Key)
			lo, hi, n = min(lo, off), max(hi, off), n+1
		}
	}
	if n > 0 && hi-lo < uint64(4*n) {
		return offsetIndex{lo: lo, dense: make([]int32, hi-lo+1)}
	}
	return offsetIndex{m: make(map[uint64]int32, n/2)}
}

func (x *offsetIndex) get(off uint64) (int32, bool) {
	if x.m != nil {
		v, ok := x.m[off]
		return v, ok
	}
	if off < x.lo || off-x.lo >= uint64(len(x.dense)) {
		return 0, false
	}
	v := x.dense[off-x.lo]
	return v - 1, v != 0
}

// set records v for off; off is one newOffsetIndex saw.
func (x *offsetIndex) set(off uint64, v int32) {
	if x.m != nil {
		x.m[off] = v
		return
	}
	x.dense[off-x.lo] = v + 1
}

// isSagaKey reports whether a changelog key is a saga's (not a next
// offset's nor a meta record's).
func isSagaKey(k []byte) bool {
	return len(k) > 8 && !bytes.Equal(k, NextOffsetKey) && !bytes.HasPrefix(k, []byte(metaPrefix))
}

// malformed is the error for a stored record that an index update could
// not read: damage (reported as such by decodeStored when it is).
func (b *Bolt) malformed(rec []byte, id string) error {
	if _, err := b.decodeStored(rec); err != nil {
		return err
	}
	return fmt.Errorf("%w: the stored record of %s", ErrCorrupt, id)
}

// deleteSaga removes a saga, its index entry and its idempotency key (if
// the key still points at it).
func deleteSaga(pb *partBuckets, s *Saga) error {
	k := sagaKey(s.Source.Offset, s.Name)
	if err := pb.sagas.Delete(k); err != nil {
		return err
	}
	if err := pb.index.Delete(indexKey(s.stored(), s.Name, unixNanos(s.CreatedAt), s.Source.Offset)); err != nil {
		return err
	}
	if pb.parked != nil {
		if err := pb.parked.Delete(parkKey(s.Name, unixNanos(s.CreatedAt), s.Source.Offset)); err != nil {
			return err
		}
	}
	if pb.resolved != nil {
		if err := pb.resolved.Delete(parkKey(s.Name, unixNanos(s.CreatedAt), s.Source.Offset)); err != nil {
			return err
		}
	}
	if err := syncWait(pb, k, nil); err != nil {
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

// Expire implements Store.
func (b *Bolt) Expire(ctx context.Context, p Partition, cutoff time.Time, limit int, gone func(*Saga)) ([]*Saga, error) {
	var out []*Saga
	err := b.submit(ctx, func(w *wtx) error {
		out = out[:0]
		pb, err := w.part(p, false)
		if err != nil || pb == nil {
			return err
		}
		var victims []*Saga
		for _, it := range ranges(pb, p, []Status{StatusCompleted, StatusRolledBack, StatusFailed, StatusResolved}, "", false) {
			for it.first(); it.k != nil && len(victims) < limit; it.next() {
				s, err := it.saga(b)
				if err != nil {
					return err
				}
				if s == nil {
					continue
				}
				if !s.UpdatedAt.Before(cutoff) {
					break // ranges are in creation order, which updates mostly follow: the rest is newer
				}
				victims = append(victims, s)
			}
		}
		for _, s := range victims {
			if err := deleteSaga(pb, s); err != nil {
				return err
			}
		}
		if gone != nil {
			for _, s := range victims { // inside the transaction: before the deletions commit
				gone(s)
			}
		}
		out = victims
		return nil
	})
	if err != nil { // the op may still run (a cancelled wait): do not read what it writes
		return nil, err
	}
	return out, nil
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

// ExpireMeta deletes up to limit meta records of p whose key starts with
// prefix and whose value begins with a time (8 bytes, Unix ns, big-endian)
// before cutoff, walking the keys in order and stopping at the first that
// is not expired (the keys of such records must follow time: e.g. offsets).
// It returns the keys deleted, so their changelog records can be
// tombstoned.
func (b *Bolt) ExpireMeta(ctx context.Context, p Partition, prefix string, cutoff time.Time, limit int) ([]string, error) {
	var out []string
	err := b.submit(ctx, func(w *wtx) error {
		out = out[:0]
		pb, err := w.part(p, false)
		if err != nil || pb == nil {
			return err
		}
		mb := pb.root.Bucket(bucketMetaP)
		if mb == nil {
			return nil
		}
		c := mb.Cursor()
		var keys [][]byte
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)) && len(keys) < limit; k, v = c.Next() {
			if len(v) < 8 || !time.Unix(0, int64(binary.BigEndian.Uint64(v))).Before(cutoff) {
				break
			}
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := mb.Delete(k); err != nil {
				return err
			}
			out = append(out, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
