package deadletter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Query filters List.
type Query struct {
	// Reason and Topic, when set, keep only dead letters with that
	// sagaz.dlq.reason and that original topic.
	Reason string
	Topic  string
	// Limit is the page size (default 50, 1 to 1000).
	Limit int
	// Cursor continues a listing (Page.Next).
	Cursor string
	// Mask, if set, rewrites a dead letter's value before its preview is
	// cut: the HTTP API masks the fields its saga marks sensitive. Replay
	// always produces the value as stored.
	Mask func(saga string, value []byte) []byte
}

// Page is one page of dead letters, newest first.
type Page struct {
	Letters []Letter `json:"dead_letters"`
	// Next continues the listing with older dead letters; empty when the
	// whole topic has been read.
	Next string `json:"next_cursor,omitempty"`
	// Scanned counts the records read for this page. A page may hold fewer
	// than Limit dead letters (even none) and still have a Next: the scan
	// budget ran out before the filter matched enough.
	Scanned int `json:"scanned"`
}

// window is a range [lo, hi) of one partition read in one round.
type window struct{ lo, hi int64 }

// partState is one partition's progress in a List call.
type partState struct {
	p       int32
	start   int64 // log start offset
	bound   int64 // exclusive upper bound: the listing continues below it
	scanned int64 // lowest offset read (== bound until read)
	matches []Letter
}

// List returns the newest dead letters matching q. Each partition is read
// backwards from the cursor (the log end at first), in windows, until it has
// Limit matches or reaches its start, all within Config.MaxScan records;
// the partitions' matches are then merged by time. Paging by the cursor
// lists every dead letter once: letters written after the first page come
// in a new listing.
func (r *Reader) List(ctx context.Context, q Query) (Page, error) {
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Limit < 1 || q.Limit > 1000 {
		return Page{}, fmt.Errorf("%w: limit %d: want 1 to 1000", ErrInvalidQuery, q.Limit)
	}
	cur, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	starts, ends, err := r.offsets(ctx)
	if err != nil || len(ends) == 0 {
		return Page{Letters: []Letter{}}, err
	}
	parts := make([]*partState, 0, len(ends))
	for p, end := range ends {
		ps := &partState{p: p, start: starts[p], bound: end}
		if b, ok := cur[p]; ok && b < end {
			ps.bound = b
		}
		ps.bound = max(ps.bound, ps.start)
		ps.scanned = ps.bound
		parts = append(parts, ps)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].p < parts[j].p })

	page := Page{Letters: []Letter{}}
	budget := int64(r.cfg.MaxScan)
	for budget > 0 {
		var active []*partState
		for _, ps := range parts {
			if ps.scanned > ps.start && len(ps.matches) < q.Limit {
				active = append(active, ps)
			}
		}
		if len(active) == 0 {
			break
		}
		// Windows grow with the matches still wanted, within the budget.
		per := max(budget/int64(len(active)), 1)
		wins := map[int32]window{}
		for _, ps := range active {
			size := min(per, max(int64(2*(q.Limit-len(ps.matches))), 500), ps.scanned-ps.start)
			wins[ps.p] = window{ps.scanned - size, ps.scanned}
		}
		byPart := map[int32][]Letter{}
		n, err := r.read(ctx, wins, func(rec *kgo.Record) {
			l := r.letter(rec, q.Mask)
			if (q.Reason == "" || l.Reason == q.Reason) && (q.Topic == "" || l.Original.Topic == q.Topic) {
				byPart[rec.Partition] = append(byPart[rec.Partition], l)
			}
		})
		if err != nil {
			return Page{}, err
		}
		budget -= n
		page.Scanned += int(n)
		for _, ps := range active {
			got := byPart[ps.p] // oldest first within the window
			for i := len(got) - 1; i >= 0; i-- {
				ps.matches = append(ps.matches, got[i])
			}
			ps.scanned = wins[ps.p].lo
		}
	}

	// Merge newest first; every partition's matches are newest first already.
	var all []Letter
	for _, ps := range parts {
		all = append(all, ps.matches...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if !a.Timestamp.Equal(b.Timestamp) {
			return a.Timestamp.After(b.Timestamp)
		}
		if a.Partition != b.Partition {
			return a.Partition < b.Partition
		}
		return a.Offset > b.Offset
	})
	taken := min(q.Limit, len(all))
	page.Letters = append(page.Letters, all[:taken]...)
	lastTaken := map[int32]int64{}
	nTaken := map[int32]int{}
	for _, l := range page.Letters {
		lastTaken[l.Partition] = l.Offset
		nTaken[l.Partition]++
	}
	next := map[int32]int64{}
	more := false
	for _, ps := range parts {
		b := ps.bound // nothing of it taken: start again where this page did
		switch {
		case nTaken[ps.p] == len(ps.matches):
			b = ps.scanned // every match of the range read was taken
		case nTaken[ps.p] > 0:
			b = lastTaken[ps.p]
		}
		next[ps.p] = b
		if b > ps.start {
			more = true
		}
	}
	if more {
		page.Next = encodeCursor(next)
	}
	return page, nil
}

// offsets returns the dead-letter topic's start and end offset per
// partition; none when the topic does not exist.
func (r *Reader) offsets(ctx context.Context) (starts, ends map[int32]int64, err error) {
	cl, err := kgo.NewClient(r.cfg.Client...)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrKafka, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	starts, ends = map[int32]int64{}, map[int32]int64{}
	for _, l := range []struct {
		m    map[int32]int64
		list func(context.Context, ...string) (kadm.ListedOffsets, error)
	}{{starts, adm.ListStartOffsets}, {ends, adm.ListEndOffsets}} {
		lo, err := l.list(ctx, r.cfg.Topic)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: offsets of %s: %v", ErrKafka, r.cfg.Topic, err)
		}
		var perr error
		lo.Each(func(o kadm.ListedOffset) {
			switch {
			case errors.Is(o.Err, kerr.UnknownTopicOrPartition):
			case o.Err != nil:
				perr = o.Err
			default:
				l.m[o.Partition] = o.Offset
			}
		})
		if perr != nil {
			return nil, nil, fmt.Errorf("%w: offsets of %s: %v", ErrKafka, r.cfg.Topic, perr)
		}
	}
	return starts, ends, nil
}

// read consumes every window at once and calls fn for each record in it,
// in offset order per partition. It returns how many records it read.
func (r *Reader) read(ctx context.Context, wins map[int32]window, fn func(*kgo.Record)) (int64, error) {
	at := map[int32]kgo.Offset{}
	next := map[int32]int64{}
	for p, w := range wins {
		if w.hi > w.lo {
			at[p] = kgo.NewOffset().At(w.lo)
			next[p] = w.lo
		}
	}
	if len(at) == 0 {
		return 0, nil
	}
	opts := append(append([]kgo.Opt(nil), r.cfg.Client...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.cfg.Topic: at}),
		kgo.FetchMaxBytes(16<<20), kgo.FetchMaxPartitionBytes(4<<20))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrKafka, err)
	}
	defer cl.Close()
	var n int64
	for len(next) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			for p, o := range next {
				return n, fmt.Errorf("%w: reading %s partition %d stopped at offset %d of %d: %v", ErrKafka, r.cfg.Topic, p, o, wins[p].hi, err)
			}
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if !kerr.IsRetriable(err) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("%w: reading %s partition %d: %v", ErrKafka, t, p, err)
			}
		})
		if ferr != nil {
			return n, ferr
		}
		var done []int32
		fs.EachRecord(func(rec *kgo.Record) {
			o, reading := next[rec.Partition]
			w := wins[rec.Partition]
			if !reading || rec.Offset < o {
				return
			}
			if rec.Offset < w.hi {
				fn(rec)
				n++
			}
			next[rec.Partition] = rec.Offset + 1
			if rec.Offset+1 >= w.hi {
				delete(next, rec.Partition)
				done = append(done, rec.Partition)
			}
		})
		if len(done) > 0 {
			cl.PauseFetchPartitions(map[string][]int32{r.cfg.Topic: done})
		}
	}
	return n, nil
}

func encodeCursor(m map[int32]int64) string {
	raw := map[string]int64{}
	for p, o := range m {
		raw[strconv.Itoa(int(p))] = o
	}
	b, _ := json.Marshal(raw)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (map[int32]int64, error) {
	out := map[int32]int64{}
	if s == "" {
		return out, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	var raw map[string]int64
	if err != nil || json.Unmarshal(b, &raw) != nil {
		return nil, fmt.Errorf("%w: %q does not come from a dead-letter listing", ErrInvalidCursor, s)
	}
	for k, o := range raw {
		p, err := strconv.ParseInt(k, 10, 32)
		if err != nil || p < 0 || o < 0 {
			return nil, fmt.Errorf("%w: %q does not come from a dead-letter listing", ErrInvalidCursor, s)
		}
		out[int32(p)] = o
	}
	return out, nil
}
