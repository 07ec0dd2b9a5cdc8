package storage

import (
	"context"
	"errors"
	"math/rand"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// withApplyChunk runs fn with Apply writing up to n records a transaction,
// and hook (if not nil) called after each of its transactions.
func withApplyChunk(n int, hook func(done, total int) error, fn func()) {
	oldN, oldHook := applyChunk, applyChunkDone
	applyChunk, applyChunkDone = n, hook
	defer func() { applyChunk, applyChunkDone = oldN, oldHook }()
	fn()
}

// openApplied opens a store in a new directory and applies before to p
// one record a call (a random prior state).
func openApplied(t *testing.T, p Partition, before []Change) *Bolt {
	t.Helper()
	b, err := OpenBolt(filepath.Join(t.TempDir(), "db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	b.db.NoSync = true // what is compared is the state, not its durability
	for _, c := range before {
		if _, err := b.Apply(context.Background(), p, []Change{c}, 1); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// randomHistory is seed's prior state and call of at least minChanges
// records (keyOrderChanges), and the generator to draw more from.
func randomHistory(seed int64, minChanges int) (rnd *rand.Rand, before, changes []Change) {
	rnd = rand.New(rand.NewSource(seed))
	spread, offs := []int64{1, 1 << 20}[rnd.Intn(2)], 2+rnd.Intn(6)
	before = keyOrderChanges(rnd, rnd.Intn(12), offs, spread)
	changes = keyOrderChanges(rnd, minChanges+rnd.Intn(40), offs, spread)
	return rnd, before, changes
}

// sameDump fails unless two dumps of a partition's buckets are equal.
func sameDump(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if w, ok := got[k]; !ok || w != v {
			t.Fatalf("%s: %s: %q (present %v), want %q", what, k, w, ok, v)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
}

// An Apply call written in many transactions (a few records each) leaves
// every bucket of the partition — the changelog position included — as the
// call written in one does, over a random prior state, and counts the same
// changes.
func TestApplyInChunksEndsAsOneTransaction(t *testing.T) {
	ctx := context.Background()
	p := Partition{Topic: "t", Partition: 0}
	chunked := 0
	for seed := int64(0); seed < 500; seed++ {
		rnd, before, changes := randomHistory(seed, 5)
		chunk := 1 + rnd.Intn(5)
		var (
			dumps [2]map[string]string
			errs  [2]error
			n     [2]int
		)
		for i, size := range []int{1 << 30, chunk} {
			b := openApplied(t, p, before)
			calls := 0
			withApplyChunk(size, func(int, int) error { calls++; return nil }, func() {
				n[i], errs[i] = b.Apply(ctx, p, changes, 100)
			})
			if i == 1 && calls > 1 {
				chunked++
			}
			dumps[i] = dumpPart(t, b, p)
		}
		if (errs[0] == nil) != (errs[1] == nil) || n[0] != n[1] {
			t.Fatalf("seed %d: one transaction: %d changes, %v; chunks of %d: %d changes, %v", seed, n[0], errs[0], chunk, n[1], errs[1])
		}
		sameDump(t, "seed "+strconv.FormatInt(seed, 10)+", chunks against one transaction", dumps[1], dumps[0])
	}
	if chunked < 220 { // the others re-create a saga after its tombstone: one transaction
		t.Fatalf("only %d of 500 calls were written in more than one transaction", chunked)
	}
}

// A call cut short between two of its transactions (a crash, a failed
// write) leaves the partition's changelog position where it was, so the
// next restore reads the same records again; applying them again ends as
// one uninterrupted call does.
func TestApplyCutShortKeepsTheChangelogPosition(t *testing.T) {
	ctx := context.Background()
	p := Partition{Topic: "t", Partition: 0}
	cut := errors.New("cut short")
	cuts := 0
	for seed := int64(0); seed < 500; seed++ {
		rnd, before, changes := randomHistory(seed, 10)
		chunk := 1 + rnd.Intn(4)
		after := 1 + rnd.Intn(max(1, len(changes)/chunk)) // transactions committed before the cut

		whole := openApplied(t, p, before)
		if _, err := whole.Apply(ctx, p, changes, 100); err != nil {
			continue // a batch the store refuses whole (a misplaced record) is not what this tests
		}

		b := openApplied(t, p, before)
		at, err := b.ChangelogNext(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var cutAt, total int
		withApplyChunk(chunk, func(done, all int) error {
			if after--; after == 0 && done < all {
				cutAt, total = done, all
				return cut
			}
			return nil
		}, func() {
			_, err = b.Apply(ctx, p, changes, 100)
		})
		if cutAt == 0 {
			continue // the call ended before the cut
		}
		cuts++
		if !errors.Is(err, cut) {
			t.Fatalf("seed %d: Apply cut after %d of %d records returned %v", seed, cutAt, total, err)
		}
		if got, err := b.ChangelogNext(ctx, p); err != nil || got != at {
			t.Fatalf("seed %d: cut after %d of %d records: changelog position %d (%v), want it left at %d", seed, cutAt, total, got, err, at)
		}
		if _, err := b.Apply(ctx, p, changes, 100); err != nil {
			t.Fatalf("seed %d: applying again: %v", seed, err)
		}
		sameDump(t, "seed "+strconv.FormatInt(seed, 10)+", cut and applied again against one call", dumpPart(t, b, p), dumpPart(t, whole, p))
	}
	if cuts < 180 {
		t.Fatalf("only %d of 500 calls were cut short", cuts)
	}
}

// Between two transactions of an Apply call the store's writer is free:
// a transition of another partition, written then, commits before the call
// goes on (with the call in one transaction it would wait for all of it).
func TestApplyLetsOtherWritesCommitBetweenItsTransactions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := Partition{Topic: "orders.keys", Partition: 0}
	b := openApplied(t, p, nil)
	live := &Saga{Name: "live", Trigger: "kafka:payments", Status: StatusPending,
		Source: Position{Topic: "payments", Partition: 3, Offset: 0}, Steps: []Step{{Name: "a"}}}
	if _, err := b.Start(ctx, StartBatch{Sagas: []*Saga{live}}); err != nil {
		t.Fatal(err)
	}
	changes := restoreLikeChanges(300, 40)
	between := 0
	withApplyChunk(16, func(done, total int) error { // the call's 900 records are 300 sagas' last ones
		if done == total {
			return nil
		}
		before := b.WriterStats().Commits
		live.Status = StatusExecuting
		live.Steps[0].Attempts++
		if err := b.Update(ctx, live); err != nil {
			return err
		}
		if b.WriterStats().Commits <= before {
			t.Errorf("after %d of %d records: the transition did not commit on its own", done, total)
		}
		between++
		return nil
	}, func() {
		if _, err := b.Apply(ctx, p, changes, int64(len(changes))); err != nil {
			t.Fatal(err)
		}
	})
	if between < 10 {
		t.Fatalf("the call of %d records let %d other writes in between its transactions, want one after each of at least 10", len(changes), between)
	}
	got, err := b.Get(ctx, live.ID())
	if err != nil || got.Steps[0].Attempts != live.Steps[0].Attempts {
		t.Fatalf("the live saga: %+v, %v; want the last transition written between the call's transactions (%d attempts)", got, err, live.Steps[0].Attempts)
	}
	if next, err := b.ChangelogNext(ctx, p); err != nil || next != int64(len(changes)) {
		t.Fatalf("changelog position after the call: %d (%v), want %d", next, err, len(changes))
	}
}

// A call that re-creates a saga after its own tombstone is written in one
// transaction: cut short and applied again, it could end otherwise (an
// adversarial review's case: W holds key K before the call; the call
// records X carrying K, deletes X, records X again, then deletes W. One
// call leaves K free, as X never finds it free; a first pass cut after
// W's tombstone leaves K free for the second pass's X, written anew after
// its tombstone deletes the stored one).
func TestApplyWritesACallThatRecreatesASagaInOneTransaction(t *testing.T) {
	ctx := context.Background()
	p := Partition{Topic: "t", Partition: 0}
	at := time.Unix(1700000000, 0).UTC()
	rec := func(off int64, name, key string) Change {
		s := &Saga{Name: name, Trigger: "kafka:t", Status: StatusPending, Source: Position{Topic: "t", Offset: off},
			IdempotencyKey: key, Steps: []Step{{Name: "a"}}, CreatedAt: at.Add(time.Duration(off) * time.Second), UpdatedAt: at, Version: 1}
		return Change{Key: ChangeKey(s), Value: EncodeSaga(nil, s)}
	}
	before := []Change{rec(1, "a", "K")}
	changes := []Change{rec(2, "a", "K"), {Key: sagaKey(2, "a")}, rec(2, "a", "K"), {Key: sagaKey(1, "a")},
		{Key: NextOffsetKey, Value: EncodeNext(10)}}
	b := openApplied(t, p, before)
	var txs []int
	withApplyChunk(1, func(done, total int) error { txs = append(txs, done); return nil }, func() {
		if _, err := b.Apply(ctx, p, changes, 100); err != nil {
			t.Fatal(err)
		}
	})
	if len(txs) != 1 {
		t.Fatalf("a call re-creating a saga after its tombstone was written in %d transactions (records in after each: %v), want one", len(txs), txs)
	}
	// Without the re-creation it is written in chunks again.
	txs = nil
	b = openApplied(t, p, before)
	withApplyChunk(1, func(done, total int) error { txs = append(txs, done); return nil }, func() {
		if _, err := b.Apply(ctx, p, []Change{rec(2, "a", "K"), {Key: sagaKey(1, "a")}, rec(3, "a", "K")}, 100); err != nil {
			t.Fatal(err)
		}
	})
	if len(txs) < 2 {
		t.Fatalf("a call of three records and no re-creation was written in %d transaction(s), want one a record", len(txs))
	}
}
