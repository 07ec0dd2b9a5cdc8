package storage

import (
	"bytes"
	"cmp"
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The listing order (see Store.List): newest first by CreatedAt, then by
// partition (topic, then partition number), offset and saga name, each
// descending. No two sagas share a partition, offset and name, so this is a
// total order, and a position in it (a cursor) means the same thing on every
// store: a listing can resume anywhere, and listings of several stores
// (members) can be merged.

// listPos is a saga's place in the listing order.
type listPos struct {
	created int64 // Unix ns of CreatedAt, 0 for the zero time (as records store it)
	topic   string
	part    int32
	off     int64
	name    string
}

func posOf(s *Saga) listPos {
	return listPos{unixNanos(s.CreatedAt), s.Source.Topic, s.Source.Partition, s.Source.Offset, s.Name}
}

// unixNanos is t as records and index keys store it: Unix nanoseconds, 0
// for the zero time.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// cmpPart compares partitions in ascending order: topic, then number.
func cmpPart(topicA string, a int32, topicB string, b int32) int {
	if c := strings.Compare(topicA, topicB); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

// cmpList compares a and b in listing order: negative when a is listed
// before b.
func cmpList(a, b listPos) int {
	if c := cmp.Compare(b.created, a.created); c != 0 {
		return c
	}
	if c := cmpPart(b.topic, b.part, a.topic, a.part); c != 0 {
		return c
	}
	if c := cmp.Compare(b.off, a.off); c != 0 {
		return c
	}
	return strings.Compare(b.name, a.name)
}

// ListOrder compares two sagas in the listing order of Store.List: it is
// negative when a is listed before b (a is newer), positive when after,
// zero only for the same saga (same position and name). Use it to merge
// the listings of several stores.
func ListOrder(a, b *Saga) int { return cmpList(posOf(a), posOf(b)) }

// Cursors. A cursor is a position in the listing order, encoded:
//
//	byte    cursor version (2)
//	varint  created (Unix ns)
//	str     topic
//	varint  partition, offset
//	str     saga name
//
// in unpadded base64url. It holds no state of the store that made it.
const cursorVersion = 2

// CursorAfter returns the cursor of a listing that goes on after s: the
// next page starts with the saga that follows s in the listing order
// (whether or not s itself is still stored). Page.Next is CursorAfter of
// the page's last saga.
func CursorAfter(s *Saga) string { return encodeCursor(posOf(s)) }

// CursorBefore returns a cursor from which a listing continues with the
// sagas created before t, newest first: List with it answers what an
// "until t" filter on CreatedAt would, using the index.
func CursorBefore(t time.Time) string {
	// At created == t every saga (its topic is never empty) is listed before
	// this position; every older one after it.
	return encodeCursor(listPos{created: unixNanos(t)})
}

func encodeCursor(p listPos) string {
	b := make([]byte, 0, 32+len(p.topic)+len(p.name))
	b = append(b, cursorVersion)
	b = binary.AppendVarint(b, p.created)
	b = appendStr(b, p.topic)
	b = binary.AppendVarint(b, int64(p.part))
	b = binary.AppendVarint(b, p.off)
	b = appendStr(b, p.name)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (*listPos, error) {
	if s == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("%w: not a listing cursor", ErrInvalidCursor)
	}
	if raw[0] != cursorVersion {
		return nil, fmt.Errorf("%w: a cursor of another release's listing (list again from the first page)", ErrInvalidCursor)
	}
	d := decoder{b: raw[1:]}
	p := &listPos{created: d.varint(), topic: d.str()}
	part := d.varint()
	p.off = d.varint()
	p.name = d.str()
	switch {
	case d.err != nil || len(d.b) != 0:
		return nil, fmt.Errorf("%w: malformed", ErrInvalidCursor)
	case part < 0 || part > 1<<31-1 || p.off < 0:
		return nil, fmt.Errorf("%w: position out of range", ErrInvalidCursor)
	case p.topic != "" && !validTopic(p.topic), p.name != "" && !ValidName(p.name):
		return nil, fmt.Errorf("%w: bad topic or saga name", ErrInvalidCursor)
	}
	p.part = int32(part)
	return p, nil
}

// rangeIter walks one (status, name) range of a partition's status index
// (or, for the parked status, of its parked set: parked.go; for the
// resolved status, of its resolved set: resolved.go), whose keys sort by
// (created, offset): ascending, or descending in the listing order. A
// record the range holds but whose status is not the range's — a parked
// saga, indexed under the status it was parked from; a resolved saga,
// indexed under failed — is skipped by the readers (want).
type rangeIter struct {
	pb     *partBuckets
	part   Partition
	name   string
	status Status
	prefix []byte // status + name + 0x00 (parked and resolved sets: name + 0x00)
	c      *bolt.Cursor
	desc   bool
	k      []byte // current key; nil when exhausted
	at     listPos
}

// settle clears r.k unless it is a key of the range, and caches its
// position.
func (r *rangeIter) settle() {
	if r.k == nil || len(r.k) != len(r.prefix)+16 || !bytes.HasPrefix(r.k, r.prefix) {
		r.k = nil
		return
	}
	t := r.k[len(r.prefix):]
	r.at = listPos{
		created: int64(binary.BigEndian.Uint64(t[:8]) ^ 1<<63),
		topic:   r.part.Topic,
		part:    r.part.Partition,
		off:     int64(binary.BigEndian.Uint64(t[8:])),
		name:    r.name,
	}
}

// first places an ascending iterator on the range's oldest entry.
func (r *rangeIter) first() {
	r.k, _ = r.c.Seek(r.prefix)
	r.settle()
}

// lastBelow places a descending iterator on the range's last entry whose
// (created, offset) key is below bound (16 bytes), or at most bound when
// inclusive; a nil bound means the range's newest entry.
func (r *rangeIter) lastBelow(bound []byte, inclusive bool) {
	seek := append([]byte(nil), r.prefix...)
	switch {
	case bound == nil:
		seek = append(seek, bytes.Repeat([]byte{0xff}, 17)...) // above every key of the range
	case inclusive:
		seek = append(append(seek, bound...), 0) // the smallest key above bound
	default:
		seek = append(seek, bound...)
	}
	if k, _ := r.c.Seek(seek); k == nil {
		r.k, _ = r.c.Last()
	} else {
		r.k, _ = r.c.Prev()
	}
	r.settle()
}

// seekAfter places a descending iterator on the first entry of the range
// that the listing order puts after cur (nil: the range's newest entry).
func (r *rangeIter) seekAfter(cur *listPos) {
	if cur == nil {
		r.lastBelow(nil, false)
		return
	}
	bound := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(cur.created)^1<<63)
	switch c := cmpPart(r.part.Topic, r.part.Partition, cur.topic, cur.part); {
	case c == 0:
		// Same partition: below (created, offset), and at equal ones the
		// names that sort before cur's.
		bound = binary.BigEndian.AppendUint64(bound, uint64(cur.off))
		r.lastBelow(bound, r.name < cur.name)
	case c > 0:
		// Listed before cur's partition at equal times: only older sagas.
		r.lastBelow(binary.BigEndian.AppendUint64(bound, 0), false)
	default:
		// Listed after cur's partition at equal times: cur's time included.
		r.lastBelow(binary.BigEndian.AppendUint64(bound, 1<<64-1), true)
	}
}

func (r *rangeIter) next() {
	if r.desc {
		r.k, _ = r.c.Prev()
	} else {
		r.k, _ = r.c.Next()
	}
	r.settle()
}

// saga reads the record the iterator is on. A nil saga with a nil error
// means the range does not list it (want): a parked saga in the range of
// the status it was parked from, a resolved saga in the range of failed,
// or an entry of the parked or resolved set whose saga is gone.
func (r *rangeIter) saga(b *Bolt) (*Saga, error) {
	v := r.pb.sagas.Get(sagaKey(r.at.off, r.at.name))
	if v == nil && (r.status == StatusParked || r.status == StatusResolved) {
		return nil, nil
	}
	s, err := b.decodeStored(v)
	if err != nil {
		return nil, fmt.Errorf("partition %s offset %d saga %s: %w", r.part, r.at.off, r.at.name, err)
	}
	if s.Status != r.status {
		return nil, nil
	}
	return s, nil
}

// names lists the distinct saga names present under prefix in an index
// bucket whose keys are prefix + name + 0x00 + 16 bytes.
func names(bucket *bolt.Bucket, prefix []byte) []string {
	var out []string
	c := bucket.Cursor()
	k, _ := c.Seek(prefix)
	for k != nil && bytes.HasPrefix(k, prefix) && len(k) >= len(prefix)+1+1+16 {
		n := string(k[len(prefix) : len(k)-17])
		out = append(out, n)
		k, _ = c.Seek(append(append(append([]byte(nil), prefix...), n...), 1))
	}
	return out
}

// ranges returns the index ranges of one partition for a status/name
// filter (no status: every status; no name: every name present).
func ranges(pb *partBuckets, p Partition, statuses []Status, name string, desc bool) []*rangeIter {
	if len(statuses) == 0 {
		statuses = Statuses
	}
	var its []*rangeIter
	for _, st := range statuses {
		bucket, prefix := pb.index, []byte{byte(st)}
		switch st {
		case StatusParked:
			if pb.parked == nil {
				continue
			}
			bucket, prefix = pb.parked, nil
		case StatusResolved:
			if pb.resolved == nil {
				continue
			}
			bucket, prefix = pb.resolved, nil
		}
		ns := []string{name}
		if name == "" {
			ns = names(bucket, prefix)
		}
		for _, n := range ns {
			its = append(its, &rangeIter{pb: pb, part: p, name: n, status: st, prefix: append(append(append([]byte(nil), prefix...), n...), 0),
				c: bucket.Cursor(), desc: desc})
		}
	}
	return its
}

// iterHeap merges range iterators: in listing order (desc), or oldest
// first (ascending, within one partition).
type iterHeap []*rangeIter

func (h iterHeap) Len() int { return len(h) }
func (h iterHeap) Less(i, j int) bool {
	if h[i].desc {
		return cmpList(h[i].at, h[j].at) < 0
	}
	return cmpList(h[i].at, h[j].at) > 0
}
func (h iterHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *iterHeap) Push(x any)   { *h = append(*h, x.(*rangeIter)) }
func (h *iterHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

// merge yields the entries of the positioned iterators in their order.
type merge struct{ h iterHeap }

func newMerge(its []*rangeIter) *merge {
	m := &merge{h: make(iterHeap, 0, len(its))}
	for _, it := range its {
		if it.k != nil {
			m.h = append(m.h, it)
		}
	}
	heap.Init(&m.h)
	return m
}

func (m *merge) empty() bool { return len(m.h) == 0 }

// peek returns the iterator holding the next entry; advance moves past it.
func (m *merge) peek() *rangeIter { return m.h[0] }

func (m *merge) advance() {
	it := m.h[0]
	it.next()
	if it.k == nil {
		heap.Pop(&m.h)
	} else {
		heap.Fix(&m.h, 0)
	}
}

// List implements Store: one k-way merge, in the listing order, of the
// index ranges that match the filter in every partition, each positioned
// just after the cursor with one seek. A page reads only the records it
// returns.
func (b *Bolt) List(ctx context.Context, q Query) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	if q.Limit > 1000 {
		q.Limit = 1000
	}
	if q.Status != 0 && !q.Status.Valid() {
		return Page{}, fmt.Errorf("%w: %d", ErrInvalidStatus, q.Status)
	}
	cur, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	var statuses []Status
	if q.Status != 0 {
		statuses = []Status{q.Status}
	}
	var page Page
	err = b.view(func(tx *bolt.Tx) error {
		var its []*rangeIter
		err := tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			p := mustPart(name)
			if q.Partitions != nil && !q.Partitions(p) {
				return nil
			}
			pb, err := openPart(tx, p, false)
			if err != nil || pb == nil {
				return err
			}
			for _, it := range ranges(pb, p, statuses, q.Name, true) {
				it.seekAfter(cur)
				its = append(its, it)
			}
			return nil
		})
		if err != nil {
			return err
		}
		m := newMerge(its)
		var last listPos
		for !m.empty() && len(page.Sagas) < q.Limit {
			if err := ctx.Err(); err != nil {
				return err
			}
			s, err := m.peek().saga(b)
			if err != nil {
				return err
			}
			if s != nil {
				page.Sagas = append(page.Sagas, s)
				last = m.peek().at
			}
			m.advance()
		}
		if !m.empty() {
			page.Next = encodeCursor(last)
		}
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

// CountStatus counts the sagas in status st per saga name, over the
// partitions include accepts (nil: all), from the status index: no record
// is read. Metrics use it at scrape time (sagaz_sagas_failed).
func (b *Bolt) CountStatus(ctx context.Context, st Status, include func(Partition) bool) (map[string]int, error) {
	if !st.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrInvalidStatus, st)
	}
	out := map[string]int{}
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := mustPart(name)
			if include != nil && !include(p) {
				return nil
			}
			pb, err := openPart(tx, p, false)
			if err != nil || pb == nil {
				return err
			}
			if st != StatusParked && st != StatusResolved {
				c := pb.index.Cursor()
				for k, _ := c.Seek([]byte{byte(st)}); k != nil && k[0] == byte(st) && len(k) >= 18; k, _ = c.Next() {
					out[string(k[1:len(k)-17])]++ // status, name, 0, created (8), offset (8)
				}
			}
			parkedCounts(pb, func(name string, from Status) { // indexed under the status they were parked from
				switch st {
				case StatusParked:
					out[name]++
				case from:
					if out[name]--; out[name] == 0 {
						delete(out, name)
					}
				}
			})
			if st == StatusResolved || st == StatusFailed {
				resolvedCounts(pb, func(name string) { // indexed under failed
					if st == StatusResolved {
						out[name]++
					} else if out[name]--; out[name] <= 0 {
						delete(out, name)
					}
				})
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
