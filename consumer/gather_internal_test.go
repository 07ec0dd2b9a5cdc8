package consumer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// fetchOf is one poll's fetch of topic "orders": partition → offsets.
func fetchOf(parts map[int32][]int64) kgo.Fetch {
	t := kgo.FetchTopic{Topic: "orders"}
	for p, offs := range parts {
		fp := kgo.FetchPartition{Partition: p}
		for _, o := range offs {
			fp.Records = append(fp.Records, &kgo.Record{Topic: "orders", Partition: p, Offset: o})
		}
		t.Partitions = append(t.Partitions, fp)
	}
	return kgo.Fetch{Topics: []kgo.FetchTopic{t}}
}

// A batch that gathered several polls of a partition is fetched again from
// the partition's first record in the batch, whichever poll holds it: set
// back to a later poll's first record, the records before it would be
// skipped (never recorded, their offsets committed with the next batch).
func TestFirstRecordsOfABatchOfSeveralPolls(t *testing.T) {
	b := &batch{fetches: kgo.Fetches{
		fetchOf(map[int32][]int64{0: {10, 11}, 1: {5}}),
		fetchOf(map[int32][]int64{0: {12, 13}, 2: {7, 8}}),
		fetchOf(map[int32][]int64{1: {6}, 2: {}}),
	}}
	// Polls are not always in offset order across batches: a rewound
	// partition is fetched again below what an earlier batch held.
	older := &batch{fetches: kgo.Fetches{fetchOf(map[int32][]int64{2: {9}, 0: {3}})}}

	all := firstRecords([]*batch{b}, func(storage.Partition) bool { return true })
	for p, want := range map[int32]int64{0: 10, 1: 5, 2: 7} {
		if got, ok := all["orders"][p]; !ok || got.Offset != want || got.Epoch != -1 {
			t.Errorf("partition %d: fetched again from %+v, want offset %d", p, got, want)
		}
	}
	some := firstRecords([]*batch{older, b}, func(p storage.Partition) bool { return p.Partition != 1 })
	if len(some["orders"]) != 2 || some["orders"][0].Offset != 3 || some["orders"][2].Offset != 7 {
		t.Errorf("partitions 0 and 2 of two batches: %+v, want 0 from 3 and 2 from 7", some["orders"])
	}
}

// lagSetup is a pipeline on a client consuming orders/0 (30 records), with
// batch N being mirrored — recorded, holding offsets 10..19, its changelog
// records of orders/0 not acknowledged — and batch next prepared behind it
// holding 20..29. poll(from, to) is a fetch of orders/0's records from..to.
func lagSetup(t *testing.T) (p *pipeline, n, next *batch, poll func(from, to int) kgo.Fetches, firstFetched func() int64) {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"), kfake.SeedTopics(2, ChangelogTopic("g", "orders")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	prod, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for range 30 {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The fetch in flight once the 30 records are in waits on the broker
	// for up to FetchMaxWait (5 s by default) before a fetch from a reset
	// offset can go out: short here, or firstFetched races it.
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.FetchMaxWait(100*time.Millisecond),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().At(0)}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	changelog, err := NewChangelog("g", []kgo.Opt{kgo.SeedBrokers(kc.ListenAddrs()...)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(changelog.Close)
	var recs []*kgo.Record
	for len(recs) < 30 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		fs := cl.PollFetches(ctx)
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatal("the 30 records were not fetched")
		}
		recs = append(recs, fs.Records()...)
	}
	poll = func(from, to int) kgo.Fetches {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "orders", Partitions: []kgo.FetchPartition{{Partition: 0, Records: recs[from:to]}}}}}}
	}
	c := &Consumer{cl: cl, changelog: changelog, cfg: Config{ChangelogFlushTimeout: 5 * time.Second},
		m: NewMetrics(nil), log: slog.New(slog.DiscardHandler), health: health.New(nil),
		errLog: health.NewLogLimiter(time.Second), stuckSince: map[storage.Partition]stuckState{},
		owned:    map[string]map[int32]bool{"orders": {0: true, 1: true}},
		reappend: map[storage.Partition]bool{orders0: true}, reappendUntil: map[storage.Partition]int64{}, // N's mirror marked orders/0
		uncommitted: map[string]map[int32]kgo.EpochOffset{}, dlqSent: map[storage.Partition]map[dlKey]struct{}{}}
	p = &pipeline{c: c, ctx: context.Background(), backoff: time.Millisecond}
	n, next = &p.slots[0], &p.slots[2]
	n.fetches = poll(10, 20)
	n.work.Offsets = []storage.Offset{{Topic: "orders", Partition: 0, Next: 20}}
	n.marks = []mark{{"orders", 0, kgo.EpochOffset{Epoch: -1, Offset: 20}}}
	n.recorded, n.done = make(chan struct{}), make(chan struct{})
	n.lag = map[storage.Partition]error{orders0: errors.New("changelog flush: not acknowledged")}
	close(n.recorded)
	close(n.done)
	p.mirroring = n
	next.fetches = poll(20, 30)
	next.work.Offsets = []storage.Offset{{Topic: "orders", Partition: 0, Next: 30}}
	next.marks = []mark{{"orders", 0, kgo.EpochOffset{Epoch: -1, Offset: 30}}}
	next.recorded, next.done = make(chan struct{}), make(chan struct{})
	p.cur, p.prepared = 0, next // the loop took slot 2 for next
	return p, n, next, poll, func() int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		fs := cl.PollFetches(ctx)
		if fs.NumRecords() == 0 {
			t.Fatalf("nothing fetched in 20 s (%v)", fs.Err())
		}
		return fs.Records()[0].Offset
	}
}

var (
	orders0 = storage.Partition{Topic: "orders", Partition: 0}
	orders1 = storage.Partition{Topic: "orders", Partition: 1}
)

// The batch prepared behind a batch whose changelog records were not
// acknowledged lost the same partition to a dead-letter failure and is
// left empty: settle sets the partition back to the lagging batch's first
// record, and the rewind of the empty batch must not raise it to its own
// (the lagging batch's records would be skipped and committed past).
func TestRewindAfterChangelogLagKeepsTheLaggingBatch(t *testing.T) {
	p, _, next, _, firstFetched := lagSetup(t)
	if !p.c.dropPartitions(next, map[storage.Partition]error{orders0: errors.New("dead letters not produced")}) {
		t.Fatal("next not empty")
	}
	p.drain()
	p.fail(errors.New("dead letters not produced"), next)
	if first := firstFetched(); first != 10 {
		t.Errorf("orders/0 fetched again from %d, want 10: the lagging batch's records would be skipped", first)
	}
}

// Likewise when the batch behind the lagging one is being recorded and
// its store transaction fails: its rewind leaves the partition it lost at
// the lagging batch's first record.
func TestStoreFailureAfterChangelogLagKeepsTheLaggingBatch(t *testing.T) {
	p, _, next, _, firstFetched := lagSetup(t)
	p.prepared, p.recording = nil, next
	next.err = errStore
	close(next.recorded)
	if p.drainOrFail() {
		t.Fatal("next was not recorded")
	}
	if first := firstFetched(); first != 10 {
		t.Errorf("orders/0 fetched again from %d, want 10: the lagging batch's records would be skipped", first)
	}
}

// The third stage's hazard: batch N's changelog records of orders/0 were
// not acknowledged while batch N+1, behind it, was already recorded with
// records of orders/0 (20..24) and orders/1, and N+2 (25..29) prepared.
// When the pipeline advances, orders/0 must be taken out of N+1 before
// N+1's mirror runs — else N+1 commits orders/0 past N's unmirrored
// records, or its acknowledged records clear orders/0's re-append mark
// (the records fetched again would not be mirrored again) — and orders/0
// must be fetched again from N's first record, not N+1's or N+2's.
func TestLagTakesThePartitionOutOfTheRecordedBatchBehind(t *testing.T) {
	p, _, n2, poll, firstFetched := lagSetup(t)
	n1 := recordedBehind(p, n2, poll, storage.Offset{Topic: "orders", Partition: 1, Next: 7})
	if failed := p.advance(); failed != nil {
		t.Fatal("N+1 was recorded")
	}
	if p.mirroring != n1 {
		t.Fatal("N+1 is not being mirrored after the pipeline advanced")
	}
	p.settle(nil)
	if first := firstFetched(); first != 10 {
		t.Errorf("orders/0 fetched again from %d, want 10 (N's first record)", first)
	}
	if n1.lag != nil {
		t.Errorf("N+1's mirror reported %v; orders/1's records were acknowledged", n1.lag)
	}
	p.c.mu.Lock()
	if at, ok := p.c.uncommitted["orders"][0]; ok {
		t.Errorf("orders/0 marked for commit at %d past N's records, which are not in the changelog", at.Offset)
	}
	if at := p.c.uncommitted["orders"][1]; at.Offset != 7 {
		t.Errorf("orders/1 marked at %d, want 7 (its records were acknowledged)", at.Offset)
	}
	p.c.mu.Unlock()
	if !p.c.owesReappend(orders0) {
		t.Error("N+1's mirror cleared orders/0's re-append mark: N's records fetched again would not be mirrored again")
	}
	if p.c.owesReappend(orders1) {
		t.Error("orders/1 owes a re-append after its records were acknowledged")
	}
	if !n2.dropped[orders0] || len(n2.work.Offsets) != 0 {
		t.Errorf("N+2 still holds orders/0 (dropped %v, offsets %v)", n2.dropped, n2.work.Offsets)
	}
}

// recordedBehind turns lagSetup's state into the three-stage one: batch
// N+1 (slot 1) recorded, holding orders/0's 20..24 and the given other
// partitions' next offsets, its mirror not started; next (N+2) holding
// orders/0's 25..29.
func recordedBehind(p *pipeline, next *batch, poll func(from, to int) kgo.Fetches, others ...storage.Offset) *batch {
	n1 := &p.slots[1]
	n1.fetches = poll(20, 25)
	n1.work.Offsets = append([]storage.Offset{{Topic: "orders", Partition: 0, Next: 25}}, others...)
	n1.marks = nil
	for _, o := range n1.work.Offsets {
		n1.marks = append(n1.marks, mark{o.Topic, o.Partition, kgo.EpochOffset{Epoch: -1, Offset: o.Next}})
	}
	n1.recorded, n1.done = make(chan struct{}), make(chan struct{})
	close(n1.recorded)
	p.recording = n1
	next.fetches = poll(25, 30)
	return n1
}

// A saga recorded in a batch whose partition is then taken out (its
// changelog records were not acknowledged) did start: it is counted as
// started once, there, and not lost from the count (fetched again, its
// record is a re-delivery, counted as deduplicated).
func TestDroppedRecordedSagasAreCountedAsStarted(t *testing.T) {
	p, n, _, _, _ := lagSetup(t)
	n.work.Sagas = []*storage.Saga{
		{Name: "order", Source: storage.Position{Topic: "orders", Partition: 0, Offset: 12}},
		{Name: "order", Source: storage.Position{Topic: "orders", Partition: 1, Offset: 3}},
		{Name: "order", Source: storage.Position{Topic: "orders", Partition: 0, Offset: 13}},
	}
	n.res = []storage.StartResult{{Created: true}, {Created: true}, {Created: false}}
	p.settle(nil)
	if got := testutil.ToFloat64(p.c.m.SagasStarted.WithLabelValues("order")); got != 2 {
		t.Errorf("sagas started %v, want 2 (one kept, one taken out with orders/0)", got)
	}
	if got := testutil.ToFloat64(p.c.m.Deduplicated.WithLabelValues("order")); got != 0 {
		t.Errorf("deduplicated %v, want 0 (the deduplicated one was taken out before it was counted)", got)
	}
}
