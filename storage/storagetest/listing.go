package storagetest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Listing: the total order, the cursor, and paging while the store changes.

// all returns every stored saga.
func all(t *testing.T, s storage.Store) []*storage.Saga {
	t.Helper()
	var out []*storage.Saga
	if err := s.Scan(context.Background(), storage.Statuses, func(g *storage.Saga) error { out = append(out, g); return nil }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

// SetStatus gives g a status; a parked one gets its Park (parked from
// executing, or from the status it was in when that could be parked).
func SetStatus(g *storage.Saga, st storage.Status) {
	if st != storage.StatusParked {
		g.Status, g.Park = st, nil
		return
	}
	from := storage.StatusExecuting
	switch g.Status {
	case storage.StatusPending, storage.StatusCompensating:
		from = g.Status
	}
	g.Status, g.Park = st, &storage.Park{From: from, Reason: "definition not declared", Since: time.Unix(1700000000, 0).UTC()}
}

// matches reports whether g belongs to the listing q asks for.
func matches(q storage.Query, g *storage.Saga) bool {
	return (q.Status == 0 || g.Status == q.Status) && (q.Name == "" || g.Name == q.Name)
}

// expected is the listing q must return, computed from every stored saga.
func expected(t *testing.T, s storage.Store, q storage.Query) []string {
	t.Helper()
	var want []*storage.Saga
	for _, g := range all(t, s) {
		if matches(q, g) {
			want = append(want, g)
		}
	}
	slices.SortFunc(want, storage.ListOrder)
	return ids(want)
}

// pageAll pages through q and returns the IDs in the order listed,
// checking each page's size and order.
func pageAll(t *testing.T, s storage.Store, q storage.Query) []string {
	t.Helper()
	var out []string
	var prev *storage.Saga
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("%+v: paging does not end", q)
		}
		page, err := s.List(context.Background(), q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		if len(page.Sagas) > q.Limit || len(page.Sagas) == 0 && page.Next != "" {
			t.Fatalf("List(%+v): %d sagas, next %q", q, len(page.Sagas), page.Next)
		}
		for _, g := range page.Sagas {
			if prev != nil && storage.ListOrder(prev, g) >= 0 {
				t.Fatalf("List(%+v): %s (created %s) listed after %s (created %s)", q, g.ID(), g.CreatedAt, prev.ID(), prev.CreatedAt)
			}
			prev = g
			out = append(out, g.ID())
		}
		if page.Next == "" {
			return out
		}
		q.Cursor = page.Next
	}
}

// testListManyTies: the shape of a consumer's writes — batches of sagas
// over many partitions, each batch sharing one CreatedAt — paged at limits
// that do not divide the batches, lists every saga once, in order.
func testListManyTies(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	const parts, batches, perBatch = 16, 20, 1000
	next := map[int32]int64{}
	for b := range batches {
		var batch []*storage.Saga
		for i := range perBatch {
			p := int32((i*7 + b) % parts)
			batch = append(batch, NewSaga("order", "orders", p, next[p], ""))
			next[p]++
		}
		if _, err := s.Start(ctx, storage.StartBatch{Sagas: batch}); err != nil {
			t.Fatal(err)
		}
	}
	want := expected(t, s, storage.Query{})
	if len(want) != batches*perBatch {
		t.Fatalf("stored %d sagas, want %d", len(want), batches*perBatch)
	}
	for _, limit := range []int{1000, 333, 97} {
		if got := pageAll(t, s, storage.Query{Limit: limit}); !slices.Equal(got, want) {
			t.Fatalf("limit %d: %s", limit, difference(got, want))
		}
	}
}

// difference describes how a listing differs from the one expected.
func difference(got, want []string) string {
	in := map[string]bool{}
	for _, id := range got {
		in[id] = true
	}
	var missing []string
	for _, id := range want {
		if !in[id] {
			missing = append(missing, id)
		}
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("listed %d sagas (%d distinct), want %d; first difference at #%d; %d missing (first: %v)",
		len(got), len(in), len(want), i, len(missing), missing[:min(len(missing), 5)])
}

// world drives a store with random writes and knows what it holds.
type world struct {
	t     *testing.T
	rng   *rand.Rand
	open  Opener
	dir   string
	s     storage.Store
	parts []storage.Partition
	next  map[storage.Partition]int64 // next free offset
	clog  map[storage.Partition]int64 // changelog offsets given to Apply
	times []time.Time                 // CreatedAt values seen, to restore sagas at
	names []string
}

func newWorld(t *testing.T, open Opener, seed uint64) *world {
	dir := t.TempDir()
	w := &world{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), open: open, dir: dir,
		next: map[storage.Partition]int64{}, clog: map[storage.Partition]int64{}, names: []string{"order", "audit", "x-1"}}
	w.s = open(t, dir)
	t.Cleanup(func() { _ = w.s.Close() })
	// Up to 24 partitions of three topics: partition numbers above 9 sort
	// before 2 as strings, and "t" is a prefix of "t.b".
	n := 1 + w.rng.IntN(24)
	topics := []string{"t", "t.b", "u"}
	for i := range n {
		w.parts = append(w.parts, storage.Partition{Topic: topics[i%3], Partition: int32(w.rng.IntN(16))})
	}
	return w
}

// startBatch starts up to n sagas over random partitions in one Start:
// they share one CreatedAt. Some events start two sagas (same offset).
func (w *world) startBatch(n int) {
	w.t.Helper()
	var batch []*storage.Saga
	for range 1 + w.rng.IntN(n) {
		p := w.parts[w.rng.IntN(len(w.parts))]
		off := w.next[p] + int64(w.rng.IntN(3))
		name := w.names[w.rng.IntN(len(w.names))]
		batch = append(batch, NewSaga(name, p.Topic, p.Partition, off, ""))
		if w.rng.IntN(4) == 0 {
			other := w.names[(slices.Index(w.names, name)+1)%len(w.names)]
			batch = append(batch, NewSaga(other, p.Topic, p.Partition, off, ""))
		}
		w.next[p] = off + 1
	}
	res, err := w.s.Start(context.Background(), storage.StartBatch{Sagas: batch})
	if err != nil {
		w.t.Fatalf("Start: %v", err)
	}
	for _, r := range res {
		if r.Created {
			w.times = append(w.times, r.Saga.CreatedAt)
		}
	}
}

// restore applies changelog records of up to n sagas created at times
// already seen (ties with other partitions' sagas) or earlier, as a member
// that takes a partition over does.
func (w *world) restore(n int) {
	w.t.Helper()
	p := w.parts[w.rng.IntN(len(w.parts))]
	var changes []storage.Change
	for range 1 + w.rng.IntN(n) {
		g := NewSaga(w.names[w.rng.IntN(len(w.names))], p.Topic, p.Partition, w.next[p], "")
		w.next[p]++
		SetStatus(g, storage.Statuses[w.rng.IntN(len(storage.Statuses))])
		g.Version = 1
		g.CreatedAt = time.Unix(1700000000, 0).UTC()
		if len(w.times) > 0 {
			g.CreatedAt = w.times[w.rng.IntN(len(w.times))].Add(-time.Duration(w.rng.IntN(2)) * time.Second)
		}
		g.UpdatedAt = g.CreatedAt
		changes = append(changes, storage.Change{Key: storage.ChangeKey(g), Value: storage.EncodeSaga(nil, g)})
	}
	w.clog[p] += int64(len(changes))
	if _, err := w.s.Apply(context.Background(), p, changes, w.clog[p]); err != nil {
		w.t.Fatalf("Apply: %v", err)
	}
}

// moveStatuses gives up to n random stored sagas a random status, in one
// Update, and returns them as updated.
func (w *world) moveStatuses(n int) []*storage.Saga {
	w.t.Helper()
	stored := all(w.t, w.s)
	if len(stored) == 0 {
		return nil
	}
	var moved []*storage.Saga
	seen := map[string]bool{}
	for range 1 + w.rng.IntN(n) {
		g := stored[w.rng.IntN(len(stored))]
		if seen[g.ID()] {
			continue
		}
		seen[g.ID()] = true
		SetStatus(g, storage.Statuses[w.rng.IntN(len(storage.Statuses))])
		moved = append(moved, g)
	}
	if err := w.s.Update(context.Background(), moved...); err != nil {
		w.t.Fatalf("Update: %v", err)
	}
	return moved
}

// expire removes the terminal sagas of a random partition.
func (w *world) expire() []*storage.Saga {
	w.t.Helper()
	gone, err := w.s.Expire(context.Background(), w.parts[w.rng.IntN(len(w.parts))], time.Now().Add(time.Hour), 1000, nil)
	if err != nil {
		w.t.Fatalf("Expire: %v", err)
	}
	return gone
}

func (w *world) reopen() {
	w.t.Helper()
	if err := w.s.Close(); err != nil {
		w.t.Fatalf("Close: %v", err)
	}
	w.s = w.open(w.t, w.dir)
}

func (w *world) query() storage.Query {
	q := storage.Query{Limit: 1 + w.rng.IntN(40)}
	if w.rng.IntN(8) == 0 {
		q.Limit = 1000
	}
	if w.rng.IntN(2) == 0 {
		q.Status = storage.Statuses[w.rng.IntN(len(storage.Statuses))]
	}
	if w.rng.IntN(3) == 0 {
		q.Name = w.names[w.rng.IntN(len(w.names))]
	}
	return q
}

// testListProperties: random sagas over many partitions with equal
// CreatedAt, random filters and limits. Paged on a still store, a listing
// is exactly the filtered sagas in listing order. Paged while sagas are
// started, restored, moved between statuses and expired, and while the
// store is reopened, no saga is listed twice, every listed saga matched the
// filter when its page was read, the listing stays in order, and every
// saga that matched the filter from the first page to the last is listed.
func testListProperties(t *testing.T, open Opener) {
	seeds := []uint64{uint64(time.Now().UnixNano())} // a new one each run (its name says which)
	for i := range uint64(8) {
		seeds = append(seeds, i+1)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			w := newWorld(t, open, seed)
			for range 2 + w.rng.IntN(6) {
				w.startBatch(80)
				if w.rng.IntN(2) == 0 {
					w.restore(20)
				}
				if w.rng.IntN(2) == 0 {
					w.moveStatuses(30)
				}
			}
			ties := 0
			byTime := map[int64]map[storage.Partition]bool{}
			for _, g := range all(t, w.s) {
				k := g.CreatedAt.UnixNano()
				if byTime[k] == nil {
					byTime[k] = map[storage.Partition]bool{}
				}
				byTime[k][g.Source.TopicPartition()] = true
			}
			for _, ps := range byTime {
				if len(ps) > 1 {
					ties++
				}
			}
			if ties == 0 && len(w.parts) > 1 {
				t.Fatalf("set-up made no sagas of different partitions with equal created_at")
			}
			// A still store: exactly the expected listing.
			for range 4 {
				q := w.query()
				if got, want := pageAll(t, w.s, q), expected(t, w.s, q); !slices.Equal(got, want) {
					t.Fatalf("%+v: %s", q, difference(got, want))
				}
			}
			// A store that changes between pages.
			for range 6 {
				q := w.query()
				if w.rng.IntN(4) > 0 {
					q.Limit = 1 + w.rng.IntN(12) // many pages, many changes
				}
				w.pageWhileChanging(q)
			}
		})
	}
}

func (w *world) pageWhileChanging(q storage.Query) {
	t := w.t
	t.Helper()
	must := map[string]bool{} // matched when paging began, and ever since
	for _, g := range all(t, w.s) {
		if matches(q, g) {
			must[g.ID()] = true
		}
	}
	listed := map[string]bool{}
	var prev *storage.Saga
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("%+v: paging does not end", q)
		}
		page, err := w.s.List(context.Background(), q)
		if err != nil {
			t.Fatalf("List(%+v): %v", q, err)
		}
		if len(page.Sagas) > q.Limit {
			t.Fatalf("List(%+v): %d sagas", q, len(page.Sagas))
		}
		for _, g := range page.Sagas {
			switch {
			case listed[g.ID()]:
				t.Fatalf("%+v: %s listed twice", q, g.ID())
			case !matches(q, g):
				t.Fatalf("%+v: %s (%s %s) does not match", q, g.ID(), g.Name, g.Status)
			case prev != nil && storage.ListOrder(prev, g) >= 0:
				t.Fatalf("%+v: %s listed after %s", q, g.ID(), prev.ID())
			}
			listed[g.ID()] = true
			prev = g
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
		// Change the store before the next page (before every other page:
		// each change is a durable write).
		switch w.rng.IntN(12) {
		case 0:
			w.startBatch(30)
		case 1:
			w.restore(10)
		case 2, 3:
			for _, g := range w.moveStatuses(10) {
				if !matches(q, g) {
					delete(must, g.ID()) // it left the listing
				}
			}
		case 4:
			for _, g := range w.expire() {
				delete(must, g.ID())
			}
		case 5:
			w.reopen()
		}
	}
	for id := range must {
		if !listed[id] {
			t.Fatalf("%+v: %s matched the filter all along but was not listed (%d listed)", q, id, len(listed))
		}
	}
}

// testListCursors: CursorBefore lists the sagas created before a time
// (ties at that time excluded); CursorAfter of a saga goes on after it,
// also once the saga is gone; cursors of other releases and malformed ones
// are refused with ErrInvalidCursor.
func testListCursors(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for p := range int32(12) {
		var changes []storage.Change
		for off := range int64(5) {
			g := NewSaga("order", "t", p, off, "")
			g.Version, g.Status = 1, storage.StatusPending
			g.CreatedAt = t0.Add(time.Duration(off) * time.Second) // equal across partitions
			g.UpdatedAt = g.CreatedAt
			changes = append(changes, storage.Change{Key: storage.ChangeKey(g), Value: storage.EncodeSaga(nil, g)})
		}
		if _, err := s.Apply(ctx, storage.Partition{Topic: "t", Partition: p}, changes, int64(len(changes))); err != nil {
			t.Fatal(err)
		}
	}
	until := t0.Add(2 * time.Second)
	var want []*storage.Saga
	for _, g := range all(t, s) {
		if g.CreatedAt.Before(until) {
			want = append(want, g)
		}
	}
	slices.SortFunc(want, storage.ListOrder)
	if len(want) != 24 {
		t.Fatalf("set-up: %d sagas before %s, want 24", len(want), until)
	}
	got := pageAll(t, s, storage.Query{Limit: 5, Cursor: storage.CursorBefore(until)})
	if !slices.Equal(got, ids(want)) {
		t.Fatalf("CursorBefore(%s): %s", until, difference(got, ids(want)))
	}
	// After a saga that is gone: the listing goes on where it was.
	gone := want[3]
	gone.Status = storage.StatusCompleted
	if err := s.Update(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expire(ctx, gone.Source.TopicPartition(), time.Now().Add(time.Hour), 10, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, gone.ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("set-up: %s not expired: %v", gone.ID(), err)
	}
	page, err := s.List(ctx, storage.Query{Limit: 2, Cursor: storage.CursorAfter(gone)})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(page.Sagas)) != fmt.Sprint(ids(want[4:6])) {
		t.Fatalf("after %s: %v, want %v", gone.ID(), ids(page.Sagas), ids(want[4:6]))
	}
	old := base64.RawURLEncoding.EncodeToString([]byte(`{"t/0":[4,"order"]}`)) // the format of an earlier release
	raw, err := base64.RawURLEncoding.DecodeString(storage.CursorAfter(want[0]))
	if err != nil {
		t.Fatal(err)
	}
	trailing := base64.RawURLEncoding.EncodeToString(append(raw, 0))
	for _, c := range []string{"!!", old, "Ag", trailing} {
		if _, err := s.List(ctx, storage.Query{Cursor: c}); !errors.Is(err, storage.ErrInvalidCursor) {
			t.Errorf("List with cursor %q = %v, want ErrInvalidCursor", c, err)
		}
	}
}
