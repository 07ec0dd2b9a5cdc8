// Package storagetest holds the conformance tests every storage.Store
// implementation must pass. An implementation's test calls Run with a
// function that opens (or re-opens) a store in a directory.
package storagetest

import (
	"context"
	"encoding/binary"
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
		{"ListManyTies", testListManyTies},
		{"ListProperties", testListProperties},
		{"ListCursors", testListCursors},
		{"ScanOldestFirst", testScan},
		{"DurableAcrossReopen", testReopen},
		{"VersionCountsWrites", testVersion},
		{"ApplyReplaysChangelog", testApply},
		{"ApplyBatchIsApplyOneByOne", testApplyBatchIsApplyOneByOne},
		{"ExpireTerminalSagas", testExpire},
		{"ExpireCallsGoneBeforeTheDeletionCommits", testExpireGoneBeforeCommit},
		{"PartitionScoped", testPartitionScoped},
		{"MetaRecords", testMeta},
		{"KeyedSagasNamedByKey", testKeyed},
		{"ExpireMetaByTime", testExpireMeta},
		{"WaitsAndTimers", testWaitsAndTimers},
		{"TimersFollowApply", testTimersFollowApply},
		{"WriteAtomic", testWriteAtomic},
		{"ScanMeta", testScanMeta},
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

func testVersion(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	res := start(t, s, NewSaga("order", "t", 0, 1, ""))
	g := get(t, s, res[0].ID)
	if g.Version != 1 {
		t.Fatalf("started saga has version %d, want 1", g.Version)
	}
	g.Status = storage.StatusExecuting
	for range 3 {
		if err := s.Update(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	if v := get(t, s, res[0].ID).Version; v != 4 || g.Version != 4 {
		t.Fatalf("after 3 updates: stored version %d, caller's %d; want 4", v, g.Version)
	}
}

// changelogOf records every write as the changelog would carry it.
type changelogOf struct {
	changes []storage.Change
}

func (c *changelogOf) saga(s *storage.Saga) {
	c.changes = append(c.changes, storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)})
}

func testApply(t *testing.T, open Opener) {
	ctx := context.Background()
	a, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "t", Partition: 2}
	var cl changelogOf
	var sagas []*storage.Saga
	for off := range int64(6) {
		sg := NewSaga("order", "t", 2, off, fmt.Sprintf("k%d", off))
		start(t, a, sg)
		cl.saga(sg)
		sagas = append(sagas, sg)
	}
	cl.changes = append(cl.changes, storage.Change{Key: storage.NextOffsetKey, Value: storage.EncodeNext(9)})
	for i, sg := range sagas[:4] {
		sg.Status = storage.StatusExecuting
		if i%2 == 0 {
			sg.Status = storage.StatusCompleted
		}
		sg.Steps[0].Status = storage.StepCompleted
		if err := a.Update(ctx, sg); err != nil {
			t.Fatal(err)
		}
		cl.saga(sg)
	}
	// A stale record (version 1 of saga 0) after the newer ones: ignored.
	stale := sagas[0].Clone()
	stale.Status, stale.Version = storage.StatusPending, 1
	cl.saga(stale)
	// Saga 5 is expired: a tombstone.
	cl.changes = append(cl.changes, storage.Change{Key: storage.ChangeKey(sagas[5])})

	b, _ := mustOpen(t, open)
	n, err := b.Apply(ctx, p, cl.changes, int64(len(cl.changes)))
	if err != nil {
		t.Fatal(err)
	}
	// All but the stale record, and the four first versions that the
	// second versions of the same sagas, later in the same call, replace.
	if n != len(cl.changes)-1-4 {
		t.Fatalf("applied %d of %d changes, want all but the stale one and the four replaced in the same call", n, len(cl.changes))
	}
	for i, sg := range sagas[:5] {
		got := get(t, b, sg.ID())
		if got.Status != sg.Status || got.Version != sg.Version || got.Steps[0].Status != sg.Steps[0].Status {
			t.Errorf("saga %d restored as %s v%d, want %s v%d", i, got.Status, got.Version, sg.Status, sg.Version)
		}
	}
	if _, err := b.Get(ctx, sagas[5].ID()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("tombstoned saga still there: %v", err)
	}
	// Indexes and keys are restored too.
	for _, c := range []struct {
		st   storage.Status
		want int
	}{{storage.StatusCompleted, 2}, {storage.StatusExecuting, 2}, {storage.StatusPending, 1}} {
		page, err := b.List(ctx, storage.Query{Status: c.st})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Sagas) != c.want {
			t.Errorf("restored store lists %d %s sagas, want %d", len(page.Sagas), c.st, c.want)
		}
	}
	if r := start(t, b, NewSaga("order", "t", 2, 20, "k1"))[0]; r.Created || r.ID != sagas[1].ID() {
		t.Errorf("restored idempotency key not honoured: %+v", r)
	}
	if r := start(t, b, NewSaga("order", "t", 2, 21, "k5"))[0]; !r.Created {
		t.Errorf("the key of a tombstoned saga must be free: %+v", r)
	}
	if next, _, _ := b.NextOffset(ctx, p); next < 9 {
		t.Errorf("next offset %d, want at least 9", next)
	}
	if cn, err := b.ChangelogNext(ctx, p); err != nil || cn != int64(len(cl.changes)) {
		t.Errorf("ChangelogNext = %d, %v", cn, err)
	}
	// Replaying the same changelog again changes nothing.
	if n, err := b.Apply(ctx, p, cl.changes[:5], 3); err != nil || n != 0 {
		t.Errorf("replay applied %d (%v), want 0", n, err)
	}
	if cn, _ := b.ChangelogNext(ctx, p); cn != int64(len(cl.changes)) {
		t.Errorf("ChangelogNext moved back to %d", cn)
	}
	// A record of another partition is refused.
	if _, err := b.Apply(ctx, storage.Partition{Topic: "t", Partition: 3}, cl.changes[:1], 1); err == nil {
		t.Error("Apply accepted a record of another partition")
	}
}

func testExpire(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "t", Partition: 0}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	var sagas []*storage.Saga
	for off := range int64(10) {
		sg := NewSaga("order", "t", 0, off, fmt.Sprintf("k%d", off))
		start(t, s, sg)
		sagas = append(sagas, sg)
	}
	for i, sg := range sagas {
		switch {
		case i < 4: // old and terminal: expire
			sg.Status, sg.UpdatedAt = storage.StatusCompleted, old
		case i < 6: // old but not terminal: keep
			sg.Status, sg.UpdatedAt = storage.StatusExecuting, old
		case i < 8: // terminal but recent: keep
			sg.Status, sg.UpdatedAt = storage.StatusRolledBack, time.Now()
		default:
			continue
		}
		if err := s.Update(ctx, sg); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := s.Expire(ctx, p, time.Now().Add(-time.Hour), 3, nil)
	if err != nil || len(gone) != 3 {
		t.Fatalf("Expire(limit 3) = %d sagas, %v", len(gone), err)
	}
	gone2, err := s.Expire(ctx, p, time.Now().Add(-time.Hour), 100, nil)
	if err != nil || len(gone2) != 1 || gone2[0].Source.Offset != 3 {
		t.Fatalf("second Expire = %+v, %v; want saga 3", gone2, err)
	}
	for i, sg := range sagas {
		_, err := s.Get(ctx, sg.ID())
		if expired := errors.Is(err, storage.ErrNotFound); expired != (i < 4) {
			t.Errorf("saga %d (%s): expired=%v", i, sg.Status, expired)
		}
	}
	if r := start(t, s, NewSaga("order", "t", 0, 50, "k0"))[0]; !r.Created {
		t.Error("an expired saga's idempotency key must be free again")
	}
}

// Expire calls gone for each saga it deletes before the deletion commits
// (the saga is still there for readers), and for no other saga: a caller
// that tombstones there does so before any saga that takes the freed
// idempotency key can be recorded.
func testExpireGoneBeforeCommit(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "t", Partition: 0}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for off := range int64(4) {
		sg := NewSaga("order", "t", 0, off, fmt.Sprintf("k%d", off))
		start(t, s, sg)
		if off < 3 { // old and terminal: expires; the last one stays
			sg.Status, sg.UpdatedAt = storage.StatusCompleted, old
			if err := s.Update(ctx, sg); err != nil {
				t.Fatal(err)
			}
		}
	}
	called := map[string]bool{}
	gone, err := s.Expire(ctx, p, time.Now().Add(-time.Hour), 100, func(g *storage.Saga) {
		called[g.ID()] = true
		if _, err := s.Get(ctx, g.ID()); err != nil {
			t.Errorf("gone(%s): the saga is not readable any more (%v): gone must run before the deletion commits", g.ID(), err)
		}
	})
	if err != nil || len(gone) != 3 {
		t.Fatalf("Expire = %d sagas, %v", len(gone), err)
	}
	if len(called) != 3 {
		t.Fatalf("gone called for %v, want the 3 expired sagas", called)
	}
	for _, g := range gone {
		if !called[g.ID()] {
			t.Errorf("saga %s expired without gone", g.ID())
		}
		if _, err := s.Get(ctx, g.ID()); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("saga %s after Expire: %v, want not found", g.ID(), err)
		}
	}
}

func testPartitionScoped(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := mustOpen(t, open)
	for p := range int32(3) {
		start(t, s, NewSaga("order", "t", p, 1, ""), NewSaga("order", "u", p, 1, ""))
	}
	ps, err := s.Partitions(ctx)
	if err != nil || len(ps) != 6 {
		t.Fatalf("Partitions = %v, %v", ps, err)
	}
	n := 0
	err = s.ScanPartition(ctx, storage.Partition{Topic: "u", Partition: 1}, storage.NonTerminal, func(g *storage.Saga) error {
		if g.Source.Topic != "u" || g.Source.Partition != 1 {
			t.Errorf("ScanPartition returned %s", g.ID())
		}
		n++
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("ScanPartition: %d sagas, %v", n, err)
	}
	if err := s.ScanPartition(ctx, storage.Partition{Topic: "none"}, storage.Statuses, func(*storage.Saga) error { return errors.New("called") }); err != nil {
		t.Fatalf("ScanPartition of an unknown partition: %v", err)
	}
}

func testMeta(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "sagaz.cron", Partition: 3}
	if _, ok, err := s.GetMeta(ctx, p, "sched/a"); err != nil || ok {
		t.Fatalf("missing meta: ok=%v err=%v", ok, err)
	}
	if err := s.PutMeta(ctx, p, "sched/a", []byte(`{"last":1}`)); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.GetMeta(ctx, p, "sched/a"); err != nil || !ok || string(v) != `{"last":1}` {
		t.Fatalf("GetMeta = %s %v %v", v, ok, err)
	}
	// Through the changelog into another store, then deleted by a nil value.
	b, _ := mustOpen(t, open)
	if _, err := b.Apply(ctx, p, []storage.Change{{Key: storage.MetaKey("sched/a"), Value: []byte(`{"last":2}`)}}, 1); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := b.GetMeta(ctx, p, "sched/a"); string(v) != `{"last":2}` {
		t.Fatalf("meta after Apply: %s", v)
	}
	if err := b.PutMeta(ctx, p, "sched/a", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.GetMeta(ctx, p, "sched/a"); ok {
		t.Fatal("meta not deleted")
	}
}

// A keyed saga (Origin set) is named by its saga and key: Start answers that
// ID for the new saga and for every later event with the key, Get finds it
// by that ID, and the origin survives a reopen.
func testKeyed(t *testing.T, open Opener) {
	s, dir := mustOpen(t, open)
	for i, key := range []string{"o-1", "a:b/c d%e", "x\xff\xfey", "ünï"} {
		first := NewSaga("order", "sagaz-keys", 2, int64(10*i), key)
		first.Origin = storage.Position{Topic: "orders.created", Partition: 1, Offset: int64(100 + i)}
		again := NewSaga("order", "sagaz-keys", 2, int64(10*i+1), key)
		again.Origin = storage.Position{Topic: "sagaz.events", Partition: 0, Offset: int64(7 + i)}
		res := start(t, s, first, again)
		want := storage.FormatKeyedID("order", key)
		if !res[0].Created || res[1].Created || res[0].ID != want || res[1].ID != want {
			t.Fatalf("key %q: results %+v, want both named %s", key, res, want)
		}
		ref, err := storage.ParseRef(want)
		if err != nil || !ref.Keyed || ref.Key != key || ref.Name != "order" {
			t.Fatalf("ParseRef(%q) = %+v, %v", want, ref, err)
		}
		g := get(t, s, want)
		if g.Origin != first.Origin || g.ID() != want {
			t.Fatalf("Get(%s): origin %+v id %s", want, g.Origin, g.ID())
		}
	}
	_ = s.Close()
	s = open(t, dir)
	defer s.Close()
	if g := get(t, s, storage.FormatKeyedID("order", "o-1")); g.Origin.Topic != "orders.created" {
		t.Fatalf("origin after reopen: %+v", g.Origin)
	}
	if _, err := s.Get(context.Background(), storage.FormatKeyedID("order", "nope")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := s.Get(context.Background(), "order:key:%zz"); !errors.Is(err, storage.ErrInvalidID) {
		t.Fatalf("bad escape: %v", err)
	}
}

// Meta records whose value starts with a time expire in key order, up to
// the first that is not expired; other meta records stay.
func testExpireMeta(t *testing.T, open Opener) {
	s, _ := mustOpen(t, open)
	ctx := context.Background()
	p := storage.Partition{Topic: "events", Partition: 1}
	base := time.Unix(1700000000, 0)
	for i := range 5 {
		v := binary.BigEndian.AppendUint64(nil, uint64(base.Add(time.Duration(i)*time.Minute).UnixNano()))
		if err := s.PutMeta(ctx, p, fmt.Sprintf("ev/%04d", i), append(v, "x"...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutMeta(ctx, p, "cron/x", []byte("keep")); err != nil {
		t.Fatal(err)
	}
	gone, err := s.ExpireMeta(ctx, p, "ev/", base.Add(150*time.Second), 100)
	if err != nil || fmt.Sprint(gone) != "[ev/0000 ev/0001 ev/0002]" {
		t.Fatalf("expired %v, %v", gone, err)
	}
	if _, ok, _ := s.GetMeta(ctx, p, "ev/0003"); !ok {
		t.Fatal("a newer record was expired")
	}
	if _, ok, _ := s.GetMeta(ctx, p, "cron/x"); !ok {
		t.Fatal("a record under another prefix was expired")
	}
	if gone, err := s.ExpireMeta(ctx, storage.Partition{Topic: "none"}, "ev/", base.Add(time.Hour), 10); err != nil || len(gone) != 0 {
		t.Fatalf("unknown partition: %v %v", gone, err)
	}
}
