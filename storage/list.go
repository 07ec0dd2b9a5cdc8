package storage

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// pos is a position inside one partition: offset, then saga name.
type pos struct {
	off  int64
	name string
}

func (a pos) less(b pos) bool { return a.off < b.off || a.off == b.off && a.name < b.name }

// rangeIter walks one (status, name) range of the status index, or the
// whole sagas bucket when prefix is nil, in either direction.
type rangeIter struct {
	c      *bolt.Cursor
	prefix []byte // status + name + 0x00; nil for the sagas bucket
	desc   bool
	k      []byte
}

func (r *rangeIter) cur() pos {
	if r.prefix == nil {
		return pos{int64(binary.BigEndian.Uint64(r.k[:8])), string(r.k[8:])}
	}
	return pos{int64(binary.BigEndian.Uint64(r.k[len(r.k)-8:])), string(r.k[1 : len(r.k)-9])}
}

func (r *rangeIter) keyFor(p pos) []byte {
	if r.prefix == nil {
		return sagaKey(p.off, p.name)
	}
	return binary.BigEndian.AppendUint64(append([]byte(nil), r.prefix...), uint64(p.off))
}

func (r *rangeIter) valid() bool {
	if r.k == nil {
		return false
	}
	if r.prefix == nil {
		return len(r.k) > 8
	}
	return len(r.k) == len(r.prefix)+8 && bytes.HasPrefix(r.k, r.prefix)
}

// seekAfter places the iterator on the first entry that comes after bound
// in its direction (bound itself excluded); a nil bound starts at the end
// (descending) or the beginning (ascending).
func (r *rangeIter) seekAfter(bound *pos) {
	if !r.desc {
		r.k, _ = r.c.Seek(r.prefix)
		if bound != nil {
			for r.valid() && !bound.less(r.cur()) {
				r.k, _ = r.c.Next()
			}
		}
	} else {
		var seek []byte
		switch {
		case bound == nil && r.prefix == nil:
			r.k, _ = r.c.Last()
			goto check
		case bound == nil:
			seek = binary.BigEndian.AppendUint64(append([]byte(nil), r.prefix...), math.MaxUint64)
		default:
			seek = r.keyFor(*bound)
		}
		if k, _ := r.c.Seek(seek); k == nil {
			r.k, _ = r.c.Last()
		} else {
			r.k, _ = r.c.Prev()
		}
		// Entries with the bound's offset but a later name sort after the
		// bound in (offset, name) order: skip them.
		for bound != nil && r.valid() && !r.cur().less(*bound) {
			r.k, _ = r.c.Prev()
		}
	}
check:
	if !r.valid() {
		r.k = nil
	}
}

func (r *rangeIter) next() {
	if r.desc {
		r.k, _ = r.c.Prev()
	} else {
		r.k, _ = r.c.Next()
	}
	if !r.valid() {
		r.k = nil
	}
}

// names lists the distinct saga names present in the index under status.
func names(index *bolt.Bucket, st Status) []string {
	var out []string
	c := index.Cursor()
	k, _ := c.Seek([]byte{byte(st)})
	for k != nil && k[0] == byte(st) && len(k) >= 10 {
		n := string(k[1 : len(k)-9])
		out = append(out, n)
		k, _ = c.Seek(append(append([]byte{byte(st)}, n...), 1))
	}
	return out
}

// iters builds the merged iterators of one partition for a status/name filter.
func iters(pb *partBuckets, statuses []Status, name string, desc bool) []*rangeIter {
	if len(statuses) == 0 && name == "" {
		return []*rangeIter{{c: pb.sagas.Cursor(), desc: desc}}
	}
	if len(statuses) == 0 {
		statuses = Statuses
	}
	var its []*rangeIter
	for _, st := range statuses {
		ns := []string{name}
		if name == "" {
			ns = names(pb.index, st)
		}
		for _, n := range ns {
			p := append(append([]byte{byte(st)}, n...), 0)
			its = append(its, &rangeIter{c: pb.index.Cursor(), prefix: p, desc: desc})
		}
	}
	return its
}

// merged yields positions from several iterators in one order.
type merged struct {
	its  []*rangeIter
	desc bool
}

func (m *merged) seekAfter(bound *pos) {
	for _, it := range m.its {
		it.seekAfter(bound)
	}
}

func (m *merged) next() (pos, bool) {
	var best *rangeIter
	var bp pos
	for _, it := range m.its {
		if it.k == nil {
			continue
		}
		p := it.cur()
		if best == nil || (m.desc && bp.less(p)) || (!m.desc && p.less(bp)) {
			best, bp = it, p
		}
	}
	if best == nil {
		return pos{}, false
	}
	best.next()
	return bp, true
}

// List implements Store. Within a partition sagas come newest (highest
// offset) first; partitions are merged by creation time. The cursor records
// where each partition stopped.
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
	type cand struct {
		part string
		p    pos
		s    *Saga
	}
	var cands []cand
	full := map[string]bool{}
	err = b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			pn := string(name)
			bound, seen := cur[pn]
			pb, err := openPart(tx, mustPart(name), false)
			if err != nil {
				return err
			}
			m := &merged{its: iters(pb, statuses, q.Name, true), desc: true}
			if seen {
				m.seekAfter(&bound)
			} else {
				m.seekAfter(nil)
			}
			for n := 0; n < q.Limit; n++ {
				p, ok := m.next()
				if !ok {
					return nil
				}
				s, err := b.decodeStored(pb.sagas.Get(sagaKey(p.off, p.name)))
				if err != nil {
					return fmt.Errorf("partition %s offset %d: %w", name, p.off, err)
				}
				cands = append(cands, cand{pn, p, s})
			}
			full[pn] = true
			return nil
		})
	})
	if err != nil {
		return Page{}, err
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i].s, cands[j].s
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.ID() > b.ID()
	})
	page := Page{}
	n := min(q.Limit, len(cands))
	next := map[string]pos{}
	for k, v := range cur {
		next[k] = v
	}
	for _, c := range cands[:n] {
		page.Sagas = append(page.Sagas, c.s)
		next[c.part] = c.p
	}
	// A partition that filled its quota may hold more.
	if len(cands) > n || len(full) > 0 {
		page.Next = encodeCursor(next)
	}
	return page, nil
}

func encodeCursor(m map[string]pos) string {
	raw := map[string][2]any{}
	for k, v := range m {
		raw[k] = [2]any{v.off, v.name}
	}
	b, _ := json.Marshal(raw)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (map[string]pos, error) {
	out := map[string]pos{}
	if s == "" {
		return out, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrInvalidCursor
	}
	var raw map[string][2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, ErrInvalidCursor
	}
	for k, v := range raw {
		var p pos
		if json.Unmarshal(v[0], &p.off) != nil || json.Unmarshal(v[1], &p.name) != nil {
			return nil, ErrInvalidCursor
		}
		out[k] = p
	}
	return out, nil
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
			c := pb.index.Cursor()
			for k, _ := c.Seek([]byte{byte(st)}); k != nil && k[0] == byte(st) && len(k) >= 10; k, _ = c.Next() {
				out[string(k[1:len(k)-9])]++
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
