package consumer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

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
// batch N in flight — recorded, holding offsets 10..19, its changelog
// records of orders/0 not acknowledged — and batch next prepared behind it
// holding 20..29.
func lagSetup(t *testing.T) (p *pipeline, n, next *batch, firstFetched func() int64) {
	t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
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
	cl, err := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"orders": {0: kgo.NewOffset().At(0)}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
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
	poll := func(from, to int) kgo.Fetches {
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "orders", Partitions: []kgo.FetchPartition{{Partition: 0, Records: recs[from:to]}}}}}}
	}
	c := &Consumer{cl: cl, m: NewMetrics(nil), log: slog.New(slog.DiscardHandler), health: health.New(nil),
		errLog: health.NewLogLimiter(time.Second), stuckSince: map[storage.Partition]stuckState{},
		owned: map[string]map[int32]bool{}, uncommitted: map[string]map[int32]kgo.EpochOffset{}, dlqSent: map[storage.Partition]map[dlKey]struct{}{}}
	p = &pipeline{c: c, ctx: context.Background(), backoff: time.Millisecond}
	n, next = &p.slots[0], &p.slots[1]
	n.fetches = poll(10, 20)
	n.work.Offsets = []storage.Offset{{Topic: "orders", Partition: 0, Next: 20}}
	n.marks = []mark{{"orders", 0, kgo.EpochOffset{Epoch: -1, Offset: 20}}}
	n.done = make(chan struct{})
	n.lag = map[storage.Partition]error{orders0: errors.New("changelog flush: not acknowledged")}
	close(n.done)
	p.inflight = n
	next.fetches = poll(20, 30)
	next.work.Offsets = []storage.Offset{{Topic: "orders", Partition: 0, Next: 30}}
	next.marks = []mark{{"orders", 0, kgo.EpochOffset{Epoch: -1, Offset: 30}}}
	next.done = make(chan struct{})
	p.cur = 0 // the loop took slot 1 for next
	return p, n, next, func() int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fs := cl.PollFetches(ctx)
		if fs.NumRecords() == 0 {
			t.Fatal("nothing fetched")
		}
		return fs.Records()[0].Offset
	}
}

var orders0 = storage.Partition{Topic: "orders", Partition: 0}

// The batch prepared behind a batch whose changelog records were not
// acknowledged lost the same partition to a dead-letter failure and is
// left empty: settle sets the partition back to the lagging batch's first
// record, and the rewind of the empty batch must not raise it to its own
// (the lagging batch's records would be skipped and committed past).
func TestRewindAfterChangelogLagKeepsTheLaggingBatch(t *testing.T) {
	p, _, next, firstFetched := lagSetup(t)
	if !p.c.dropPartitions(next, map[storage.Partition]error{orders0: errors.New("dead letters not produced")}) {
		t.Fatal("next not empty")
	}
	if p.settle() != nil {
		t.Fatal("N was recorded")
	}
	p.fail(errors.New("dead letters not produced"), next)
	if first := firstFetched(); first != 10 {
		t.Errorf("orders/0 fetched again from %d, want 10: the lagging batch's records would be skipped", first)
	}
}

// Likewise when the batch behind the lagging one goes in flight and its
// store transaction fails: its rewind leaves the partition it lost at the
// lagging batch's first record.
func TestStoreFailureAfterChangelogLagKeepsTheLaggingBatch(t *testing.T) {
	p, _, next, firstFetched := lagSetup(t)
	if p.settle() != nil {
		t.Fatal("N was recorded")
	}
	p.inflight = next
	next.err = errStore
	close(next.done)
	if p.settleOrFail() {
		t.Fatal("next was not recorded")
	}
	if first := firstFetched(); first != 10 {
		t.Errorf("orders/0 fetched again from %d, want 10: the lagging batch's records would be skipped", first)
	}
}
