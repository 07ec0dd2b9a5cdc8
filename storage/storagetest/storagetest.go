// Package storagetest holds the conformance tests every storage.Store
// implementation must pass. An implementation's test calls Run with a
// function that opens (or re-opens) a store in a directory.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Opener opens the store kept in dir. Called twice with the same dir it must
// open the same data (the first store is closed before).
type Opener func(t *testing.T, dir string) storage.Store

// Run runs the conformance suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"StartInsertsPending", testStartInsertsPending},
		{"RedeliveryMatchesExisting", testRedelivery},
		{"IdempotencyKeyScopedPerSaga", testIdempotencyKey},
		{"SameKeyInOneBatch", testSameKeyInOneBatch},
		{"ConcurrentSameKeyStartsOne", testConcurrentSameKey},
		{"NextOffsetNeverMovesBack", testNextOffset},
		{"UpdateMovesIndexes", testUpdate},
		{"UpdateUnknownIsNotFound", testUpdateUnknown},
		{"InvalidInput", testInvalidInput},
		{"ListPagesNewestFirst", testListPages},
		{"ScanOldestFirst", testScan},
		{"DurableAcrossReopen", testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func mustOpen(t *testing.T, open Opener) (storage.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s := open(t, dir)
	t.Cleanup(func() { _ = s.Close() })
	return s, dir
}

// NewSaga returns a saga ready for Start.
func NewSaga(name, topic string, partition int32, offset int64, key string) *storage.Saga {
	return &storage.Saga{
		Name:           name,
		Trigger:        "kafka:" + topic,
		Source:         storage.Position{Topic: topic, Partition: partition, Offset: offset},
		EventTime:      time.Unix(1700000000, 0).UTC(),
		IdempotencyKey: key,
		Context:        []byte(fmt.Sprintf(`{"n":%d}`, offset)),
		Steps:          []storage.Step{{Name: "a", Status: storage.StepPending}, {Name: "b", Status: storage.StepPending}},
	}
}

func start(t *testing.T, s storage.Store, sagas ...*storage.Saga) []storage.StartResult {
	t.Helper()
	res, err := s.Start(context.Background(), storage.StartBatch{Sagas: sagas})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if len(res) != len(sagas) {
		t.Fatalf("Start returned %d results for %d sagas", len(res), len(sagas))
	}
	return res
}

func get(t *testing.T, s storage.Store, id string) *storage.Saga {
	t.Helper()
	g, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return g
}

func testStartInsertsPending(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	in := NewSaga("order", "orders.created", 3, 42, "")
	res := start(t, s, in)
	if !res[0].Created || res[0].ID != "orders.created:3:42:order" {
		t.Fatalf("result = %+v, want created orders.created:3:42:order", res[0])
	}
	g := get(t, s, res[0].ID)
	if g.Status != storage.StatusPending || g.Name != "order" || string(g.Context) != `{"n":42}` || len(g.Steps) != 2 {
		t.Fatalf("stored saga = %+v", g)
	}
	if g.CreatedAt.IsZero() || !g.EventTime.Equal(in.EventTime) {
		t.Fatalf("times not recorded: %+v", g)
	}
}

func testRedelivery(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	first := start(t, s, NewSaga("order", "t", 0, 7, ""))[0]
	again := start(t, s, NewSaga("order", "t", 0, 7, ""))[0]
	if again.Created || again.ID != first.ID {
		t.Fatalf("re-delivery: %+v, want existing %s", again, first.ID)
	}
	// A different saga on the same record is a different saga.
	other := start(t, s, NewSaga("audit", "t", 0, 7, ""))[0]
	if !other.Created || other.ID == first.ID {
		t.Fatalf("second saga on same record: %+v", other)
	}
}

func testIdempotencyKey(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	a := start(t, s, NewSaga("order", "t", 0, 1, "o-1"))[0]
	b := start(t, s, NewSaga("order", "t", 0, 2, "o-1"))[0]
	if b.Created || b.ID != a.ID {
		t.Fatalf("same key, other record: %+v, want existing %s", b, a.ID)
	}
	c := start(t, s, NewSaga("order", "t", 0, 3, "o-2"))[0]
	if !c.Created || c.ID == a.ID {
		t.Fatalf("different key: %+v", c)
	}
	d := start(t, s, NewSaga("refund", "t", 0, 4, "o-1"))[0]
	if !d.Created {
		t.Fatalf("same key value, other saga must not collide: %+v", d)
	}
	if _, err := s.Get(context.Background(), "t:0:2:order"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("duplicate record was stored: %v", err)
	}
}

func testSameKeyInOneBatch(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	res := start(t, s, NewSaga("order", "t", 0, 1, "k"), NewSaga("order", "t", 0, 2, "k"), NewSaga("order", "t", 0, 3, "j"))
	if !res[0].Created || res[1].Created || res[1].ID != res[0].ID || !res[2].Created {
		t.Fatalf("results = %+v", res)
	}
}

func testConcurrentSameKey(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	const n = 64
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		ids     = map[string]bool{}
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{NewSaga("order", "t", 0, int64(i), "same")}})
			if err != nil {
				t.Errorf("Start: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if res[0].Created {
				created++
			}
			ids[res[0].ID] = true
		}()
	}
	wg.Wait()
	if created != 1 || len(ids) != 1 {
		t.Fatalf("%d goroutines, same key: created %d sagas, ids %v; want exactly one", n, created, ids)
	}
}

func testNextOffset(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	p := storage.Partition{Topic: "t", Partition: 2}
	if _, ok, err := s.NextOffset(ctx, p); err != nil || ok {
		t.Fatalf("fresh store: ok=%v err=%v", ok, err)
	}
	for _, next := range []int64{10, 5, 12} {
		if _, err := s.Start(ctx, storage.StartBatch{Offsets: []storage.Offset{{Topic: "t", Partition: 2, Next: next}}}); err != nil {
			t.Fatal(err)
		}
	}
	if got, ok, err := s.NextOffset(ctx, p); err != nil || !ok || got != 12 {
		t.Fatalf("NextOffset = %d %v %v, want 12", got, ok, err)
	}
}

func testUpdate(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	res := start(t, s, NewSaga("order", "t", 0, 1, ""), NewSaga("order", "t", 0, 2, ""))
	g := get(t, s, res[0].ID)
	g.Status = storage.StatusCompleted
	g.Steps[0].Status = storage.StepCompleted
	g.Steps[0].Attempts = 2
	g.Steps[0].Error = "first try failed"
	g.Context = []byte(`{"n":1,"paid":true}`)
	if err := s.Update(ctx, g); err != nil {
		t.Fatal(err)
	}
	u := get(t, s, res[0].ID)
	if u.Status != storage.StatusCompleted || u.Steps[0].Attempts != 2 || u.Steps[0].Error != "first try failed" || string(u.Context) != `{"n":1,"paid":true}` {
		t.Fatalf("after update: %+v", u)
	}
	for _, c := range []struct {
		st   storage.Status
		want []string
	}{
		{storage.StatusPending, []string{res[1].ID}},
		{storage.StatusCompleted, []string{res[0].ID}},
		{storage.StatusExecuting, nil},
	} {
		page, err := s.List(ctx, storage.Query{Status: c.st})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(page.Sagas); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("List(%s) = %v, want %v", c.st, got, c.want)
		}
	}
}

func testUpdateUnknown(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	x := NewSaga("order", "t", 0, 9, "")
	x.Status = storage.StatusExecuting
	if err := s.Update(context.Background(), x); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Update of unknown saga: %v, want ErrNotFound", err)
	}
	// A failed op in a group commit must not fail the others.
	res := start(t, s, NewSaga("order", "t", 0, 1, ""))
	g := get(t, s, res[0].ID)
	g.Status = storage.StatusExecuting
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() { defer wg.Done(); errs[0] = s.Update(context.Background(), x) }()
	go func() { defer wg.Done(); errs[1] = s.Update(context.Background(), g) }()
	wg.Wait()
	if !errors.Is(errs[0], storage.ErrNotFound) || errs[1] != nil {
		t.Fatalf("errors = %v", errs)
	}
	if get(t, s, res[0].ID).Status != storage.StatusExecuting {
		t.Fatal("good update lost next to a failing one")
	}
}

func testInvalidInput(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	for _, id := range []string{"", "a:b", "t:x:1:order", "t:0:-1:order", "t:0:1:", "t:0:1:order:extra"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, storage.ErrInvalidID) {
			t.Errorf("Get(%q) = %v, want ErrInvalidID", id, err)
		}
	}
	if _, err := s.Get(ctx, "t:0:1:order"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Get of missing saga = %v, want ErrNotFound", err)
	}
	for _, bad := range []*storage.Saga{
		NewSaga("", "t", 0, 1, ""),
		NewSaga("has space", "t", 0, 1, ""),
		NewSaga("order", "", 0, 1, ""),
		NewSaga("order", "a:b", 0, 1, ""),
		NewSaga("order", "t", -1, 1, ""),
		NewSaga("order", "t", 0, -1, ""),
	} {
		if _, err := s.Start(ctx, storage.StartBatch{Sagas: []*storage.Saga{bad}}); !errors.Is(err, storage.ErrInvalidSaga) {
			t.Errorf("Start(%+v) = %v, want ErrInvalidSaga", bad.Source, err)
		}
	}
	if _, err := s.List(ctx, storage.Query{Cursor: "!!"}); !errors.Is(err, storage.ErrInvalidCursor) {
		t.Errorf("List with bad cursor = %v", err)
	}
}

func ids(ss []*storage.Saga) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID())
	}
	return out
}

func testListPages(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	// 3 partitions x 40 records, two saga names, inserted in time order.
	var all []*storage.Saga
	for off := range int64(40) {
		for p := range int32(3) {
			name := "order"
			if off%3 == 0 {
				name = "audit"
			}
			sg := NewSaga(name, "t", p, off, "")
			start(t, s, sg)
			all = append(all, sg)
		}
	}
	// Complete every 4th order saga.
	completed := 0
	for _, sg := range all {
		if sg.Name == "order" && sg.Source.Offset%4 == 1 {
			g := get(t, s, sg.ID())
			g.Status = storage.StatusCompleted
			if err := s.Update(ctx, g); err != nil {
				t.Fatal(err)
			}
			completed++
		}
	}
	check := func(q storage.Query, want func(*storage.Saga) bool) {
		t.Helper()
		var n int
		seen := map[string]bool{}
		var last time.Time
		for pages := 0; ; pages++ {
			if pages > 200 {
				t.Fatalf("%+v: too many pages", q)
			}
			page, err := s.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Sagas) > q.Limit {
				t.Fatalf("page of %d > limit %d", len(page.Sagas), q.Limit)
			}
			for _, g := range page.Sagas {
				if seen[g.ID()] {
					t.Fatalf("%+v: %s listed twice", q, g.ID())
				}
				seen[g.ID()] = true
				if !want(g) {
					t.Fatalf("%+v: %s (%s %s) does not match", q, g.ID(), g.Name, g.Status)
				}
				if !last.IsZero() && g.CreatedAt.After(last) {
					t.Fatalf("%+v: not newest first at %s", q, g.ID())
				}
				last = g.CreatedAt
				n++
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		exp := 0
		for _, sg := range all {
			g := get(t, s, sg.ID())
			if want(g) {
				exp++
			}
		}
		if n != exp {
			t.Fatalf("%+v: listed %d sagas, want %d", q, n, exp)
		}
	}
	check(storage.Query{Limit: 7}, func(*storage.Saga) bool { return true })
	check(storage.Query{Limit: 5, Status: storage.StatusCompleted}, func(g *storage.Saga) bool { return g.Status == storage.StatusCompleted })
	check(storage.Query{Limit: 9, Status: storage.StatusPending}, func(g *storage.Saga) bool { return g.Status == storage.StatusPending })
	check(storage.Query{Limit: 4, Name: "audit"}, func(g *storage.Saga) bool { return g.Name == "audit" })
	check(storage.Query{Limit: 3, Name: "order", Status: storage.StatusPending}, func(g *storage.Saga) bool {
		return g.Name == "order" && g.Status == storage.StatusPending
	})
	check(storage.Query{Limit: 1000, Name: "nope"}, func(g *storage.Saga) bool { return false })
	if completed == 0 {
		t.Fatal("test set-up completed nothing")
	}
}

func testScan(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	for off := range int64(20) {
		start(t, s, NewSaga("order", "t", 0, off, ""), NewSaga("audit", "t", 1, off, ""))
	}
	// Move some forward: even offsets executing, every 5th completed.
	for off := int64(0); off < 20; off += 2 {
		g := get(t, s, storage.FormatID(storage.Position{Topic: "t", Partition: 0, Offset: off}, "order"))
		g.Status = storage.StatusExecuting
		if off%5 == 0 {
			g.Status = storage.StatusCompleted
		}
		if err := s.Update(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	last := map[int32]int64{0: -1, 1: -1}
	n := 0
	err := s.Scan(ctx, storage.NonTerminal, func(g *storage.Saga) error {
		if g.Status.Terminal() {
			t.Errorf("Scan(NonTerminal) returned %s in %s", g.ID(), g.Status)
		}
		if g.Source.Offset <= last[g.Source.Partition] {
			t.Errorf("Scan not oldest first in partition %d at %d", g.Source.Partition, g.Source.Offset)
		}
		last[g.Source.Partition] = g.Source.Offset
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// 40 sagas, of which offsets 0 and 10 of partition 0 are completed.
	if n != 38 {
		t.Fatalf("Scan returned %d sagas, want 38", n)
	}
	stop := errors.New("stop")
	if err := s.Scan(ctx, storage.NonTerminal, func(*storage.Saga) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Scan did not return fn's error: %v", err)
	}
}

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := context.Background()
	res, err := s.Start(ctx, storage.StartBatch{
		Sagas:   []*storage.Saga{NewSaga("order", "t", 1, 5, "k1")},
		Offsets: []storage.Offset{{Topic: "t", Partition: 1, Next: 6}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, storage.StartBatch{}); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("Start after Close = %v, want ErrClosed", err)
	}
	s = open(t, dir)
	defer s.Close()
	g := get(t, s, res[0].ID)
	if g.Status != storage.StatusPending || g.IdempotencyKey != "k1" {
		t.Fatalf("after reopen: %+v", g)
	}
	if next, ok, err := s.NextOffset(ctx, storage.Partition{Topic: "t", Partition: 1}); err != nil || !ok || next != 6 {
		t.Fatalf("NextOffset after reopen = %d %v %v", next, ok, err)
	}
	again := start(t, s, NewSaga("order", "t", 1, 9, "k1"))[0]
	if again.Created || again.ID != res[0].ID {
		t.Fatalf("idempotency key forgotten after reopen: %+v", again)
	}
}
