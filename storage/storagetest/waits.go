package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// timers lists the timers of p due by now (all of them: paged by 2).
func timers(t *testing.T, s storage.Store, p storage.Partition, now time.Time) ([]string, time.Time) {
	t.Helper()
	var out []string
	var after []byte
	for {
		page, err := s.Timers(context.Background(), p, now, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, tm := range page.Due {
			out = append(out, fmt.Sprintf("%s@%s", storage.FormatID(tm.Pos, tm.Name), tm.Due.Format("15:04:05")))
			after = tm.Key
		}
		if len(page.Due) < 2 {
			return out, page.Next
		}
	}
}

func waitFor(deadline time.Time) *storage.Wait {
	return &storage.Wait{Kind: storage.WaitCommand, Step: 1, Attempt: 2, Since: t0, Deadline: deadline, Topic: "accounts.commands"}
}

// A saga's wait and uncertain steps are recorded and read back; the
// partition's timer index follows every write: a wait's deadline is in it,
// a new deadline replaces the old, no wait or a terminal status removes it.
func testWaitsAndTimers(t *testing.T, open Opener) {
	ctx := context.Background()
	s, dir := mustOpen(t, open)
	p := storage.Partition{Topic: "t", Partition: 0}
	a, b, c := NewSaga("x", "t", 0, 1, ""), NewSaga("x", "t", 0, 2, ""), NewSaga("x", "t", 0, 3, "")
	start(t, s, a, b, c)
	if got, next := timers(t, s, p, t0.Add(time.Hour)); len(got) != 0 || !next.IsZero() {
		t.Fatalf("timers before any wait: %v next %v", got, next)
	}
	a.Status, a.Wait, a.Uncertain = storage.StatusExecuting, waitFor(t0.Add(3*time.Second)), []int{0}
	b.Status, b.Wait = storage.StatusExecuting, &storage.Wait{Kind: storage.WaitEvent, Step: 0, Attempt: 1, Since: t0, Deadline: t0.Add(time.Second),
		Topic: "payments", Field: "order_id", Value: "o-1"}
	c.Status, c.Wait = storage.StatusCompensating, &storage.Wait{Kind: storage.WaitSleep, Since: t0} // no deadline: no timer
	if err := s.Update(ctx, a, b, c); err != nil {
		t.Fatal(err)
	}
	got := get(t, s, a.ID())
	if got.Wait == nil || *got.Wait != *a.Wait || !slices.Equal(got.Uncertain, []int{0}) {
		t.Fatalf("wait read back as %+v, uncertain %v", got.Wait, got.Uncertain)
	}
	if g := get(t, s, b.ID()); g.Wait == nil || *g.Wait != *b.Wait {
		t.Fatalf("event wait read back as %+v", g.Wait)
	}
	countWaiting(t, s, 3)
	want := []string{"t:0:2:x@03:04:06", "t:0:1:x@03:04:08"}
	if got, next := timers(t, s, p, t0.Add(time.Hour)); !slices.Equal(got, want) || !next.IsZero() {
		t.Fatalf("timers = %v (next %v), want %v in deadline order", got, next, want)
	}
	if got, next := timers(t, s, p, t0.Add(2*time.Second)); !slices.Equal(got, want[:1]) || !next.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("timers due at +2s = %v next %v", got, next)
	}
	// A new deadline replaces the old one; clearing the wait removes it.
	a.Wait = waitFor(t0.Add(time.Minute))
	b.Wait = nil
	if err := s.Write(ctx, storage.WriteBatch{Sagas: []*storage.Saga{a, b}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := timers(t, s, p, t0.Add(time.Hour)); !slices.Equal(got, []string{"t:0:1:x@03:05:05"}) {
		t.Fatalf("timers after the changes = %v", got)
	}
	// Durable across a reopen.
	_ = s.Close()
	s = open(t, dir)
	defer s.Close()
	if got, _ := timers(t, s, p, t0.Add(time.Hour)); !slices.Equal(got, []string{"t:0:1:x@03:05:05"}) {
		t.Fatalf("timers after reopen = %v", got)
	}
	// A terminal saga has no timer, whatever its record says.
	a.Status = storage.StatusFailed
	if err := s.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := timers(t, s, p, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("a failed saga still has a timer: %v", got)
	}
	countWaiting(t, s, 1) // c: it waits without a deadline
}

// countWaiting checks a store's count of waiting sagas, if it keeps one.
func countWaiting(t *testing.T, s storage.Store, want int) {
	t.Helper()
	if cw, ok := s.(interface {
		CountWaiting(context.Context, func(storage.Partition) bool) (int, error)
	}); ok {
		if n, err := cw.CountWaiting(context.Background(), nil); err != nil || n != want {
			t.Fatalf("CountWaiting = %d, %v; want %d", n, err, want)
		}
	}
}

// The timer index follows the changelog: Apply of a record with a wait adds
// its timer, a newer record moves it, a tombstone removes it; and expired
// sagas lose theirs.
func testTimersFollowApply(t *testing.T, open Opener) {
	ctx := context.Background()
	a, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "t", Partition: 4}
	sg := NewSaga("x", "t", 4, 7, "")
	start(t, a, sg)
	sg.Status, sg.Wait = storage.StatusExecuting, waitFor(t0)
	if err := a.Update(ctx, sg); err != nil {
		t.Fatal(err)
	}
	var cl changelogOf
	cl.saga(sg)
	b, _ := mustOpen(t, open)
	if _, err := b.Apply(ctx, p, cl.changes, 1); err != nil {
		t.Fatal(err)
	}
	if got, _ := timers(t, b, p, t0); !slices.Equal(got, []string{"t:4:7:x@03:04:05"}) {
		t.Fatalf("timers after Apply = %v", got)
	}
	sg.Wait = waitFor(t0.Add(time.Second))
	if err := a.Update(ctx, sg); err != nil {
		t.Fatal(err)
	}
	cl.changes = nil
	cl.saga(sg)
	if _, err := b.Apply(ctx, p, cl.changes, 2); err != nil {
		t.Fatal(err)
	}
	if got, _ := timers(t, b, p, t0.Add(time.Hour)); !slices.Equal(got, []string{"t:4:7:x@03:04:06"}) {
		t.Fatalf("timers after a newer record = %v", got)
	}
	if _, err := b.Apply(ctx, p, []storage.Change{{Key: storage.ChangeKey(sg)}}, 3); err != nil {
		t.Fatal(err)
	}
	if got, _ := timers(t, b, p, t0.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("timers after a tombstone = %v", got)
	}
}

// Write changes sagas and meta records atomically: one that cannot be
// applied (an unknown saga) leaves the meta records unwritten.
func testWriteAtomic(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "t", Partition: 1}
	sg := NewSaga("x", "t", 1, 1, "")
	start(t, s, sg)
	sg.Status = storage.StatusExecuting
	if err := s.Write(ctx, storage.WriteBatch{Sagas: []*storage.Saga{sg}, Meta: []storage.Meta{{Partition: p, Key: "\x00out/1", Value: []byte("cmd")}}}); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := s.GetMeta(ctx, p, "\x00out/1"); !ok || string(v) != "cmd" {
		t.Fatalf("meta written with the saga: %q %v", v, ok)
	}
	if g := get(t, s, sg.ID()); g.Status != storage.StatusExecuting || g.Version != 2 {
		t.Fatalf("saga after Write: %s v%d", g.Status, g.Version)
	}
	ghost := NewSaga("x", "t", 1, 99, "")
	ghost.Status = storage.StatusExecuting
	err := s.Write(ctx, storage.WriteBatch{Sagas: []*storage.Saga{ghost}, Meta: []storage.Meta{{Partition: p, Key: "\x00out/2", Value: []byte("cmd")}, {Partition: p, Key: "\x00out/1"}}})
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Write of an unknown saga: %v, want ErrNotFound", err)
	}
	if _, ok, _ := s.GetMeta(ctx, p, "\x00out/2"); ok {
		t.Fatal("a failed Write left a meta record")
	}
	if _, ok, _ := s.GetMeta(ctx, p, "\x00out/1"); !ok {
		t.Fatal("a failed Write deleted a meta record")
	}
	if err := s.Write(ctx, storage.WriteBatch{Meta: []storage.Meta{{Partition: p, Key: ""}}}); !errors.Is(err, storage.ErrInvalidSaga) {
		t.Fatalf("empty meta key: %v", err)
	}
}

// ScanMeta lists a partition's meta records with a prefix, in key order;
// Start writes meta records in the batch's transaction.
func testScanMeta(t *testing.T, open Opener) {
	ctx := context.Background()
	s, _ := mustOpen(t, open)
	p := storage.Partition{Topic: "k", Partition: 0}
	other := storage.Partition{Topic: "k", Partition: 1}
	_, err := s.Start(ctx, storage.StartBatch{
		Offsets: []storage.Offset{{Topic: "k", Partition: 0, Next: 5}},
		Meta: []storage.Meta{
			{Partition: p, Key: "\x00reg/b", Value: []byte("2")}, {Partition: p, Key: "\x00reg/a", Value: []byte("1")},
			{Partition: p, Key: "\x00sig/a", Value: []byte("s")}, {Partition: other, Key: "\x00reg/c", Value: []byte("3")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := s.ScanMeta(ctx, p, "\x00reg/", func(k string, v []byte) error { got = append(got, k[5:]+"="+string(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"a=1", "b=2"}) {
		t.Fatalf("ScanMeta = %v", got)
	}
	if err := s.ScanMeta(ctx, storage.Partition{Topic: "none"}, "", func(string, []byte) error { return errors.New("called") }); err != nil {
		t.Fatalf("ScanMeta of an unknown partition: %v", err)
	}
	stop := errors.New("stop")
	if err := s.ScanMeta(ctx, p, "", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ScanMeta did not return fn's error: %v", err)
	}
}
