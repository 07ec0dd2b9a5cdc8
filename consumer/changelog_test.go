package consumer_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// A member whose data directory is lost is replaced by one that restores
// the partitions' state from the changelog: re-sent events with known keys
// start nothing new, and nothing is consumed twice.
func TestLostDataDirRestoredFromChangelog(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	cl := kafkatest.Client(t, seeds)
	produceOrders(t, cl, 0, 600, nil)
	a := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 30*time.Second, "600 sagas", func() bool { return a.Finished.Load() >= 600 })
	waitCommittedAtEnd(t, seeds)
	a.Stop()
	if err := os.RemoveAll(a.Dir); err != nil {
		t.Fatal(err)
	}
	b := startMember(t, seeds, a.Dir, newRegistry(), nil)
	kafkatest.WaitFor(t, 30*time.Second, "member b ready", b.Consumer.Ready)
	if got := testutil.ToFloat64(b.Metrics.RestoredRecords); got < 600 {
		t.Fatalf("restored %v changelog records, want at least 600", got)
	}
	produceOrders(t, cl, 0, 600, nil) // a producer re-sends every order
	waitCommittedAtEnd(t, seeds)
	// Each re-sent order is forwarded to the partition of the keys topic
	// that owns its key, and matches its saga there.
	kafkatest.WaitFor(t, 30*time.Second, "600 re-sent orders to match their saga", func() bool {
		return testutil.ToFloat64(b.Metrics.Deduplicated.WithLabelValues("order")) >= 600
	})
	b.WaitIdle(30 * time.Second)
	if got := testutil.ToFloat64(b.Metrics.SagasStarted.WithLabelValues("order")); got != 0 {
		t.Fatalf("re-sent orders started %v new sagas on the restored member", got)
	}
	if got := testutil.ToFloat64(b.Metrics.Deduplicated.WithLabelValues("order")); got != 600 {
		t.Fatalf("%v re-sent orders matched their saga, want 600", got)
	}
	want := map[string]storage.Status{}
	for i := range 600 {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	checkOneSagaPerOrder(t, want, sagasIn(t, b.Store))
}

// terminalOrders counts the sagas whose newest version across the members'
// stores is terminal.
func terminalOrders(t *testing.T, ms ...*testMember) int {
	newest := map[string]*storage.Saga{}
	for _, m := range ms {
		for _, s := range sagasIn(t, m.Store) {
			if prev, ok := newest[s.ID()]; !ok || s.Version > prev.Version {
				newest[s.ID()] = s
			}
		}
	}
	n := 0
	for _, s := range newest {
		if s.Status.Terminal() {
			n++
		}
	}
	return n
}

// stepLog records step executions (saga, step, member, start, end) as an
// append-only log shared by the members of a test.
type stepLog struct {
	mu      sync.Mutex
	entries []stepRun
}

type stepRun struct {
	saga, step, member string
	start, end         time.Time
}

func (l *stepLog) saga(member string, sleep time.Duration) engine.Saga {
	step := func(name string) engine.StepFunc {
		return func(ctx context.Context, r *engine.Run) error {
			start := time.Now()
			select { // the step's work
			case <-time.After(sleep):
			case <-ctx.Done():
				return ctx.Err()
			}
			l.mu.Lock()
			l.entries = append(l.entries, stepRun{r.ID, name, member, start, time.Now()})
			l.mu.Unlock()
			return nil
		}
	}
	return engine.Saga{Name: "order", Steps: []engine.Step{{Name: "a", Action: step("a")}, {Name: "b", Action: step("b")}, {Name: "c", Action: step("c")}},
		Triggers: []engine.Trigger{engine.Kafka(topic, engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))}}
}

// overlaps reports steps of one saga that ran on two members at
// overlapping times.
func (l *stepLog) overlaps() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[string][]stepRun{}
	for _, e := range l.entries {
		by[e.saga] = append(by[e.saga], e)
	}
	var out []string
	for id, runs := range by {
		for i := range runs {
			for j := i + 1; j < len(runs); j++ {
				a, b := runs[i], runs[j]
				if a.member != b.member && a.start.Before(b.end) && b.start.Before(a.end) {
					out = append(out, fmt.Sprintf("%s: %s on %s and %s on %s", id, a.step, a.member, b.step, b.member))
				}
			}
		}
	}
	return out
}

// Partitions move while their sagas are mid-way: the new owner resumes
// them from their last recorded step, and no saga runs on two members at
// once.
func TestSagasFollowTheirPartitionWithoutOverlap(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic))
	seeds := c.ListenAddrs()
	log := &stepLog{}
	reg := func(member string) *engine.Registry {
		r := engine.NewRegistry()
		r.Register(log.saga(member, 3*time.Millisecond))
		return r
	}
	const n = 900
	produceOrders(t, kafkatest.Client(t, seeds), 0, n, nil)
	a := startMember(t, seeds, "", reg("a"), nil)
	kafkatest.WaitFor(t, 30*time.Second, "a to run sagas", func() bool { return a.Finished.Load() > 50 })
	b := startMember(t, seeds, "", reg("b"), nil) // partitions move from a to b mid-way
	kafkatest.WaitFor(t, 30*time.Second, "b to own partitions", func() bool { return testutil.ToFloat64(b.Metrics.Partitions) > 0 })
	a.Stop() // everything moves to b, with sagas in flight
	cm := startMember(t, seeds, "", reg("c"), nil)
	kafkatest.WaitFor(t, 60*time.Second, "every saga to finish", func() bool {
		return terminalOrders(t, b, cm) == n
	})
	if o := log.overlaps(); len(o) > 0 {
		t.Fatalf("%d steps ran on two members at once, e.g. %s", len(o), o[0])
	}
	want := map[string]storage.Status{}
	for i := range n {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	b.WaitIdle(30 * time.Second)
	cm.WaitIdle(30 * time.Second)
	var all []*storage.Saga
	for _, m := range []*testMember{b, cm} {
		all = append(all, sagasIn(t, m.Store)...)
	}
	checkOneSagaPerOrder(t, want, all)
	// Each step ran once, or again only where its member gave the
	// partition up while it ran (at-least-once).
	log.mu.Lock()
	defer log.mu.Unlock()
	runs := map[string]int{}
	for _, e := range log.entries {
		runs[e.saga+"/"+e.step]++
	}
	if len(runs) != 3*n {
		t.Fatalf("%d distinct steps ran, want %d", len(runs), 3*n)
	}
	again := 0
	for _, k := range runs {
		if k > 1 {
			again++
		}
	}
	if again > 0 {
		t.Logf("%d of %d steps ran twice (interrupted by a partition move)", again, 3*n)
	}
}

// Finished sagas past the retention are deleted and tombstoned in the
// changelog, so a member restored afterwards does not get them back.
func TestRetentionExpiresWithTombstones(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, topic))
	seeds := c.ListenAddrs()
	produceOrders(t, kafkatest.Client(t, seeds), 0, 50, nil)
	short := func(cfg *consumer.Config) { cfg.Retention, cfg.RetentionCheck = time.Millisecond, 20*time.Millisecond }
	a := startMember(t, seeds, "", newRegistry(), short)
	kafkatest.WaitFor(t, 30*time.Second, "50 sagas to finish and expire", func() bool {
		return a.Finished.Load() == 50 && testutil.ToFloat64(a.Metrics.Expired) == 50
	})
	if n := len(sagasIn(t, a.Store)); n != 0 {
		t.Fatalf("%d sagas left after the retention", n)
	}
	waitCommittedAtEnd(t, seeds)
	a.Stop()
	b := startMember(t, seeds, "", newRegistry(), nil) // empty data dir: restores the changelog
	kafkatest.WaitFor(t, 30*time.Second, "b ready", b.Consumer.Ready)
	if n := len(sagasIn(t, b.Store)); n != 0 {
		t.Fatalf("a restored member got %d expired sagas back", n)
	}
}

// Within one flush, the changelog writer produces a partition's tombstones
// before its other records: a saga that expired may have freed an
// idempotency key that a saga started in the same interval took, and a
// restore, applying records in order, must see the key freed before the
// new saga claims it.
func TestChangelogProducesTombstonesFirst(t *testing.T) {
	const group = "tombstones-first"
	seeds, cl := changelogOn(t, group, 1)
	p := storage.Partition{Topic: "orders"}
	saga := func(off int64) *storage.Saga {
		return &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: off},
			IdempotencyKey: fmt.Sprintf("k%d", off%100), Version: 1}
	}
	for i := range int64(100) { // expired sagas 0..99 and their keys' new sagas 100..199, in one interval
		cl.AppendTombstone(saga(i))
		cl.Append(saga(100 + i))
	}
	if err := cl.Flush(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	recs := kafkatest.ReadAll(t, seeds, consumer.ChangelogTopic(group, "orders"))
	if len(recs) != 200 {
		t.Fatalf("%d changelog records, want 200", len(recs))
	}
	for i, r := range recs {
		if tombstone := r.Value == nil; tombstone != (i < 100) {
			t.Fatalf("changelog record %d (offset %d) is a tombstone: %v; want the 100 tombstones first", i, r.Offset, tombstone)
		}
	}
}

// bufferedHook calls its function as the producer buffers a record.
type bufferedHook func(*kgo.Record)

func (h bufferedHook) OnProduceRecordBuffered(r *kgo.Record) { h(r) }

// The changelog writer produces what it takes in the order it takes it:
// a taker (the flusher, a batch's Flush) held between taking a partition's
// pending records and producing them keeps a later taker from producing
// first. Here the tombstone of an expired saga is taken and held; the
// record of the saga that took its key, appended after it, is taken by a
// second Flush meanwhile. It must come after the tombstone in the
// changelog, or a restore would leave the new saga without its key.
func TestChangelogProducesInTheOrderItTakes(t *testing.T) {
	const group = "takes-in-order"
	old := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: 1}, IdempotencyKey: "k", Version: 3}
	taken := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: 2}, IdempotencyKey: "k", Version: 1}
	held, release := make(chan struct{}, 1), make(chan struct{})
	hook := bufferedHook(func(r *kgo.Record) {
		if r.Value == nil { // the tombstone: its taker stops here, before the producer has it
			held <- struct{}{}
			<-release
		}
	})
	seeds, cl := changelogOn(t, group, 1, kgo.WithHooks(hook))
	p := storage.Partition{Topic: "orders"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl.AppendTombstone(old)
	first := make(chan error, 1)
	go func() { first <- cl.Flush(ctx, p) }() // it, or the flusher, takes the tombstone
	<-held
	cl.Append(taken)
	second := make(chan error, 1)
	go func() { second <- cl.Flush(ctx, p) }()
	time.Sleep(200 * time.Millisecond) // room for the second take to reach the broker, if it could
	close(release)
	for _, ch := range []chan error{first, second} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	recs := kafkatest.ReadAll(t, seeds, consumer.ChangelogTopic(group, "orders"))
	if len(recs) != 2 || recs[0].Value != nil || recs[1].Value == nil {
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("offset %d tombstone=%v", r.Offset, r.Value == nil))
		}
		t.Fatalf("changelog %v; want the tombstone, then the record of the saga that took its key", got)
	}
}

// applyCounter counts a store's Apply calls and the records they carry.
type applyCounter struct {
	storage.Store
	calls, records, most int
}

func (a *applyCounter) Apply(ctx context.Context, p storage.Partition, changes []storage.Change, next int64) (int, error) {
	a.calls++
	a.records += len(changes)
	a.most = max(a.most, len(changes))
	return a.Store.Apply(ctx, p, changes, next)
}

// ... and no more than its bound at once: 70,000 records go in two calls
// or more, none over 65,536.
func TestRestoreAppliesAtMostItsBoundAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("70,000 changelog records; skipped with -short")
	}
	const group = "restore-bound"
	seeds, w := changelogOn(t, group, 1)
	p := storage.Partition{Topic: "orders"}
	ctx := context.Background()
	for off := range int64(70000) {
		w.Append(&storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: off},
			Status: storage.StatusCompleted, Version: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()})
	}
	if err := w.Flush(ctx, p); err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	counter := &applyCounter{Store: st}
	if n, err := w.Restore(ctx, []kgo.Opt{kgo.SeedBrokers(seeds...)}, counter, p); err != nil || n != 70000 {
		t.Fatalf("Restore = %d records, %v; want 70000", n, err)
	}
	if counter.calls < 2 || counter.most > 65536 || counter.records != 70000 {
		t.Fatalf("%d Apply calls, the largest of %d records, %d in all; want two or more, none over 65536", counter.calls, counter.most, counter.records)
	}
}

// A restore hands the store several fetches at once (up to its bounds), so
// that a saga's later record replaces its earlier ones in one Apply: here
// every flush is its own record batch and every fetch takes one batch,
// and the whole changelog still goes to the store in one call.
func TestRestoreAppliesSeveralFetchesAtOnce(t *testing.T) {
	const group = "restore-window"
	seeds, w := changelogOn(t, group, 1)
	p := storage.Partition{Topic: "orders"}
	ctx := context.Background()
	for off := range int64(20) { // 20 sagas, each started and then completed in a later flush
		s := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: off},
			Status: storage.StatusPending, Version: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()}
		w.Append(s)
		if err := w.Flush(ctx, p); err != nil {
			t.Fatal(err)
		}
		s.Status, s.Version = storage.StatusCompleted, 2
		w.Append(s)
		if err := w.Flush(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	st := openStore(t)
	counter := &applyCounter{Store: st}
	n, err := w.Restore(ctx, []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.FetchMaxPartitionBytes(1)}, counter, p)
	if err != nil || n != 40 {
		t.Fatalf("Restore = %d records, %v; want 40", n, err)
	}
	if counter.calls != 1 || counter.records != 40 {
		t.Fatalf("%d Apply calls with %d records; want the 40 records in one call", counter.calls, counter.records)
	}
	for _, s := range sagasIn(t, st) {
		if s.Status != storage.StatusCompleted {
			t.Errorf("saga %s restored %s", s.ID(), s.Status)
		}
	}
}

// A Flush gives up at its context's end even while another taker is stuck
// handing records to the producer (a full producer buffer, a broker
// outage): it reports its partitions as not acknowledged, so their batch
// is fetched again, instead of holding the pipeline past its timeout.
func TestFlushEndsWithItsContextWhileAnotherTakerIsStuck(t *testing.T) {
	const group = "flush-deadline"
	held, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	hook := bufferedHook(func(r *kgo.Record) {
		if r.Partition == 0 { // whoever takes partition 0's record is stuck producing it
			once.Do(func() { held <- struct{}{}; <-release })
		}
	})
	_, cl := changelogOn(t, group, 2, kgo.WithHooks(hook))
	defer close(release) // before the changelog closes (a cleanup)
	saga := func(p int32) *storage.Saga {
		return &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Partition: p, Offset: 1}, Version: 1}
	}
	cl.Append(saga(0))
	<-held // the flusher took it and is stuck
	cl.Append(saga(1))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cl.Flush(ctx, storage.Partition{Topic: "orders", Partition: 1}) }()
	select {
	case err := <-done:
		var fe *consumer.FlushError
		if !errors.As(err, &fe) || fe.Partitions[storage.Partition{Topic: "orders", Partition: 1}] == nil {
			t.Fatalf("Flush = %v; want partition orders/1 reported not acknowledged", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Flush still waiting 10 s after its 200 ms context ended")
	}
}

// gonelessStore hands the retention loop's deletions through without
// calling gone, and counts them.
type gonelessStore struct {
	storage.Store
	expired atomic.Int64
}

func (g *gonelessStore) Expire(ctx context.Context, p storage.Partition, cutoff time.Time, limit int, _ func(*storage.Saga)) ([]*storage.Saga, error) {
	out, err := g.Store.Expire(ctx, p, cutoff, limit, nil)
	g.expired.Add(int64(len(out)))
	return out, err
}

// The retention loop appends a saga's tombstone only from Expire's gone,
// inside the deleting transaction — never after Expire returns, when a
// saga that took the freed idempotency key may already be recorded and
// appended (docs/architecture.md, changelog invariant 5). Over a store
// that does not call gone, its deletions leave no tombstone.
func TestRetentionTombstonesOnlyFromGone(t *testing.T) {
	const group = "tombstones-from-gone"
	st := &gonelessStore{Store: openStore(t)}
	m := runRetentionMember(t, group, st, 20*time.Millisecond)
	kafkatest.WaitFor(t, 30*time.Second, "20 sagas to finish and expire", func() bool { return m.finished.Load() == 20 && st.expired.Load() == 20 })
	m.stop()
	seeds, con := m.seeds, m.con
	// The orders are keyed: their sagas live in the keys topic's partitions.
	recs := kafkatest.ReadAll(t, seeds, consumer.ChangelogTopic(group, con.KeysTopic()))
	if len(recs) < 20 {
		t.Fatalf("%d changelog records of the keys topic, want the 20 sagas' at least", len(recs))
	}
	for _, r := range recs {
		if r.Value == nil && len(r.Key) > 8 {
			t.Fatalf("a tombstone (key %x) reached the changelog without gone", r.Key)
		}
	}
}

// retentionRun is a member run over a broker of its own, with 20 orders
// produced, by runRetentionMember.
type retentionRun struct {
	ctx      context.Context
	seeds    []string
	con      *consumer.Consumer
	eng      *engine.Engine
	finished *atomic.Int64
	stop     func() // stops the member and closes its changelog (once; also when the test ends)
}

// runRetentionMember runs a member of group over st, with retention passes
// every check (the retention itself 1 ms), on a broker holding 20 orders.
func runRetentionMember(t *testing.T, group string, st storage.Store, check time.Duration) retentionRun {
	t.Helper()
	seeds := kafkatest.NewCluster(t, kfake.SeedTopics(1, topic)).ListenAddrs()
	produceOrders(t, kafkatest.Client(t, seeds), 0, 20, nil)
	kopts := []kgo.Opt{kgo.SeedBrokers(seeds...)}
	cl, err := consumer.NewChangelog(group, kopts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	finished := new(atomic.Int64)
	eng, err := engine.New(engine.Config{Store: st, Registry: newRegistry(), Logger: slog.New(slog.DiscardHandler), Changelog: cl,
		OnFinish: func(*storage.Saga) { finished.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	con, err := consumer.New(eng, st, consumer.Config{Client: kopts, Group: group, CreateTopics: true,
		Retention: time.Millisecond, RetentionCheck: check})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = eng.Run(ctx) }()
	go func() { defer wg.Done(); _ = con.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait(); cl.Close() }) }
	t.Cleanup(stop)
	return retentionRun{ctx: ctx, seeds: seeds, con: con, eng: eng, finished: finished, stop: stop}
}

// retentionMember is runRetentionMember with passes only when the test
// runs one (ExpirePass), once the 20 sagas have finished and everything is
// committed: nothing is in flight when a test gives a partition up, as in
// a revoke (the pipeline is drained before the rebalance callbacks run).
func retentionMember(t *testing.T, group string, st storage.Store) (context.Context, *consumer.Consumer, *engine.Engine) {
	t.Helper()
	m := runRetentionMember(t, group, st, time.Hour)
	kafkatest.WaitFor(t, 30*time.Second, "20 sagas to finish", func() bool { return m.finished.Load() == 20 })
	kafkatest.WaitSettled(t, m.seeds, group, topic, 30*time.Second)
	return m.ctx, m.con, m.eng
}

// completedByPartition counts the completed sagas of each partition: the
// retention tests' 20, in several partitions (one given up, the others
// expired).
func completedByPartition(ctx context.Context, t *testing.T, st storage.Store) map[storage.Partition]int {
	t.Helper()
	held := map[storage.Partition]int{}
	if err := st.Scan(ctx, []storage.Status{storage.StatusCompleted}, func(s *storage.Saga) error {
		held[s.Source.TopicPartition()]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(held) < 2 {
		t.Fatalf("the 20 sagas are in %d partition(s) (%v), want several: one given up, the others expired", len(held), held)
	}
	return held
}

// A retention pass that listed a partition before the partition was given
// up (a revoke between the listing and the deletion) leaves it alone: the
// next owner's changelog records may already follow the release, and a
// tombstone appended after them would delete its saga on the next restore
// (a failed saga retried there, say). The release waits for a deletion in
// progress instead, so its tombstones are flushed with the partition.
func TestRetentionLeavesAPartitionGivenUpDuringThePass(t *testing.T) {
	st := openStore(t)
	ctx, con, _ := retentionMember(t, "retention-given-up", st)

	// The sagas' partition (the orders are keyed: a keys topic's).
	held := completedByPartition(ctx, t, st)
	var p storage.Partition // the one given up: the one holding most
	for q, n := range held {
		if n > held[p] {
			p = q
		}
	}
	consumer.SetExpireBetween(func(q storage.Partition) {
		if q == p {
			con.GiveUp(ctx, p) // revoked after the pass listed it
		}
	})
	defer consumer.SetExpireBetween(nil)
	con.ExpirePass(ctx, time.Now().Add(time.Minute)) // every saga ended before this cutoff
	for q, n := range held {
		left := 0
		if err := st.ScanPartition(ctx, q, []storage.Status{storage.StatusCompleted}, func(*storage.Saga) error {
			left++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		switch {
		case q == p && left != n:
			t.Errorf("a pass that listed %s before it was given up deleted %d of its %d sagas (and tombstoned them after its release)", q, n-left, n)
		case q != p && left != 0:
			t.Errorf("the pass left %d of %d sagas in %s, which it still owns", left, n, q)
		}
	}
}

// The same for a partition given up after the pass expired its sagas and
// before it expired its event outcomes (the records that say what a
// webhook call or manual event started): they stay in the store for the
// next owner (the same guard keeps their tombstones out of the changelog:
// deletion and tombstones are one WhileOwned call).
func TestRetentionLeavesOutcomesOfAPartitionGivenUpAfterItsSagas(t *testing.T) {
	st := openStore(t)
	ctx, con, _ := retentionMember(t, "retention-outcomes-given-up", st)

	held := completedByPartition(ctx, t, st)
	// Three outcomes in each partition, recorded an hour ago (an
	// outcome's value starts with its time).
	old := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Add(-time.Hour).UnixNano()))
	for q := range held {
		for i := range 3 {
			if err := st.PutMeta(ctx, q, fmt.Sprintf("%so-%d", engine.OutcomePrefix, i), append(old, `{"ids":[]}`...)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var p storage.Partition
	for q := range held {
		p = q
		break
	}
	consumer.SetExpireOutcomesNext(func(q storage.Partition) {
		if q == p {
			con.GiveUp(ctx, p) // revoked after its sagas were expired
		}
	})
	defer consumer.SetExpireOutcomesNext(nil)
	con.ExpirePass(ctx, time.Now().Add(time.Minute))
	for q, n := range held {
		outcomes, sagas := 0, 0
		if err := st.ScanMeta(ctx, q, engine.OutcomePrefix, func(string, []byte) error {
			outcomes++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := st.ScanPartition(ctx, q, []storage.Status{storage.StatusCompleted}, func(*storage.Saga) error {
			sagas++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if sagas != 0 {
			t.Errorf("%s: the pass left %d of its %d sagas, expired while it was owned", q, sagas, n)
		}
		switch {
		case q == p && outcomes != 3:
			t.Errorf("a pass that reached %s's outcomes after it was given up deleted %d of its 3", q, 3-outcomes)
		case q != p && outcomes != 0:
			t.Errorf("the pass left %d of 3 outcomes in %s, which it still owns", outcomes, q)
		}
	}
}

// blockingExpire is a store whose Expire of one partition waits, once
// inside, until the test lets it go, and records whether that partition
// was still owned when it returned.
type blockingExpire struct {
	storage.Store
	p             storage.Partition
	inside, letGo chan struct{}
	owned         func() bool
	ownedAtReturn atomic.Bool
	once          sync.Once
}

func (b *blockingExpire) Expire(ctx context.Context, p storage.Partition, cutoff time.Time, limit int, gone func(*storage.Saga)) ([]*storage.Saga, error) {
	out, err := b.Store.Expire(ctx, p, cutoff, limit, gone)
	if p == b.p {
		b.once.Do(func() {
			close(b.inside)
			<-b.letGo
			b.ownedAtReturn.Store(b.owned())
		})
	}
	return out, err
}

// A partition given up while a retention pass deletes from it is released
// only once the deletion has returned: its tombstones are appended before
// the release flushes the partition's changelog, never after.
func TestReleaseWaitsForARetentionDeletionInProgress(t *testing.T) {
	st := &blockingExpire{Store: openStore(t), inside: make(chan struct{}), letGo: make(chan struct{})}
	ctx, con, eng := retentionMember(t, "retention-in-progress", st)
	var first *storage.Saga
	if err := st.Scan(ctx, []storage.Status{storage.StatusCompleted}, func(s *storage.Saga) error {
		if first == nil {
			first = s
		}
		return nil
	}); err != nil || first == nil {
		t.Fatalf("no completed saga to expire: %v", err)
	}
	st.p = first.Source.TopicPartition()
	st.owned = func() bool { return slices.Contains(eng.Owned(), st.p) }
	passed := make(chan struct{})
	go func() { defer close(passed); con.ExpirePass(ctx, time.Now().Add(time.Minute)) }()
	<-st.inside // the deletion of p's sagas is in progress
	released := make(chan struct{})
	go func() { defer close(released); con.GiveUp(ctx, st.p) }()
	// Without the ordering the release would give p up now; with it, it
	// waits for the deletion. The window for the first is bounded, as
	// something that must not happen can only be watched for a while.
	gaveUp := false
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline) && !gaveUp; {
		gaveUp = !st.owned()
		runtime.Gosched()
	}
	close(st.letGo)
	<-passed
	<-released
	if gaveUp || !st.ownedAtReturn.Load() {
		t.Fatalf("the engine gave %s up while a retention pass was deleting from it (its tombstones would follow the release)", st.p)
	}
	if st.owned() {
		t.Fatalf("%s still owned after its release", st.p)
	}
}

// changelogOn starts a broker holding group's changelog of the topic
// "orders" (with that many partitions) and a changelog writer on it, with
// extra client options (hooks); the writer is closed when the test ends.
func changelogOn(t *testing.T, group string, partitions int, opts ...kgo.Opt) ([]string, *consumer.Changelog) {
	t.Helper()
	seeds := kafkatest.NewCluster(t, kfake.SeedTopics(int32(partitions), consumer.ChangelogTopic(group, "orders"))).ListenAddrs()
	cl, err := consumer.NewChangelog(group, append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return seeds, cl
}

// openStore opens a bbolt store in a temporary directory, closed when the
// test ends.
func openStore(t *testing.T) *storage.Bolt {
	t.Helper()
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
