package consumer

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// callWatch is a store whose Apply calls are watched: how many ran, how
// many at once, the changelog offsets each covered, and what its before
// hook does (slow a call, fail it).
type callWatch struct {
	storage.Store
	before  func(call int) error
	running atomic.Int32
	mu      sync.Mutex
	calls   int
	overlap bool
	firsts  []int64 // the offset of each call's first record (its next minus its length)
	nexts   []int64
}

func (w *callWatch) Apply(ctx context.Context, p storage.Partition, changes []storage.Change, next int64) (int, error) {
	if w.running.Add(1) > 1 {
		w.mu.Lock()
		w.overlap = true
		w.mu.Unlock()
	}
	defer w.running.Add(-1)
	w.mu.Lock()
	w.calls++
	call := w.calls
	w.firsts, w.nexts = append(w.firsts, next-int64(len(changes))), append(w.nexts, next)
	w.mu.Unlock()
	if w.before != nil {
		if err := w.before(call); err != nil {
			return 0, err
		}
	}
	return w.Store.Apply(ctx, p, changes, next)
}

// restoreSetup writes n sagas' records to the changelog of orders/0, one
// flush each (so one per changelog offset), with a restore bound of 10
// records per call.
func restoreSetup(t *testing.T, n int) (*Changelog, []kgo.Opt, *callWatch) {
	t.Helper()
	const group = "restore-calls"
	seeds := kafkatest.NewCluster(t, kfake.SeedTopics(1, ChangelogTopic(group, "orders"))).ListenAddrs()
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...)}
	c, err := NewChangelog(group, opts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	c.applyRecords = 10
	p := storage.Partition{Topic: "orders"}
	for off := range int64(n) {
		c.Append(&storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: off},
			Status: storage.StatusCompleted, Version: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()})
		if err := c.Flush(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return c, opts, &callWatch{Store: st}
}

// A restore hands the store one call at a time, in changelog order, each
// from where the last ended, up to its bound. Each call here is slow
// (20 ms), so a restore that handed the next call over before the last
// returned would overlap them.
func TestRestoreHandsTheStoreOneCallAtATimeInOrder(t *testing.T) {
	c, opts, w := restoreSetup(t, 50)
	w.before = func(int) error { time.Sleep(20 * time.Millisecond); return nil }
	p := storage.Partition{Topic: "orders"}
	n, err := c.Restore(context.Background(), opts, w, p)
	if err != nil || n != 50 {
		t.Fatalf("Restore = %d records, %v; want 50", n, err)
	}
	if w.overlap {
		t.Error("two Apply calls ran at once")
	}
	if w.calls != 5 {
		t.Errorf("%d Apply calls, want 5 of 10 records", w.calls)
	}
	for i := range w.calls {
		if want := int64(10 * i); w.firsts[i] != want || w.nexts[i] != want+10 {
			t.Errorf("call %d covered offsets %d..%d, want %d..%d", i+1, w.firsts[i], w.nexts[i]-1, want, want+9)
		}
	}
	if next, _ := w.ChangelogNext(context.Background(), p); next != 50 {
		t.Errorf("the store's changelog next is %d, want 50", next)
	}
}

// A failed call is the last: the restore hands the store no call after
// it, returns its error with no call running, and the store's changelog
// offset stays where the last call that succeeded left it, so the next
// restore reads the failed call's records again.
func TestRestoreStopsAtAFailedCall(t *testing.T) {
	c, opts, w := restoreSetup(t, 50)
	refused := errors.New("refused")
	w.before = func(call int) error {
		switch call {
		case 1:
			time.Sleep(50 * time.Millisecond)
		case 2:
			return refused
		}
		return nil
	}
	p := storage.Partition{Topic: "orders"}
	n, err := c.Restore(context.Background(), opts, w, p)
	if !errors.Is(err, refused) {
		t.Fatalf("Restore = %d, %v; want the second call's error", n, err)
	}
	if running := w.running.Load(); running != 0 {
		t.Errorf("Restore returned with %d Apply calls running", running)
	}
	time.Sleep(100 * time.Millisecond) // a call handed over after the failure would show now
	if w.calls != 2 {
		t.Errorf("%d Apply calls, want 2 (none after the failed one)", w.calls)
	}
	if next, _ := w.ChangelogNext(context.Background(), p); next != 10 {
		t.Errorf("the store's changelog next is %d, want 10 (the first call's)", next)
	}
	if n != 10 {
		t.Errorf("Restore counted %d records, want the first call's 10", n)
	}
}
