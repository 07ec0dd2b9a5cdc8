package consumer_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// A member restarts with its store ahead of the committed offset of keys
// partition p (sagas at p/0..2 recorded, not in the changelog: it died
// before the changelog's acks). Before its consumer fetches p/0..2 again
// (and appends them to the changelog), a start lands at p/3, the store's
// next offset. Recorded directly and mirrored, the changelog would hold a
// saga above three it lacks, and a member restoring p from it (v0.1.0
// resumes at the restored next offset) would skip them: the direct start
// waits until p's sagas are in the changelog.
func TestDirectStartWaitsWhileTheStoreIsAheadOfTheChangelog(t *testing.T) {
	const parts = 3
	keys := group + "-keys"
	c := kafkatest.NewCluster(t, kfake.SeedTopics(parts, topic, keys))
	seeds := c.ListenAddrs()
	// Keys owned by one keys partition p.
	var inP []string
	p := engine.KeyPartition("order", "o-0", parts)
	for i := 0; len(inP) < 4; i++ {
		k := fmt.Sprintf("o-%d", i)
		if engine.KeyPartition("order", k, parts) == p {
			inP = append(inP, k)
		}
	}
	// Three start records in p (as forwarded before the crash).
	fcl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	var sagas []*storage.Saga
	for i, k := range inP[:3] {
		v := []byte(fmt.Sprintf(`{"order_id":%q,"amount":12.5}`, k))
		s := &storage.Saga{Name: "order", Trigger: "kafka:" + topic, IdempotencyKey: k,
			Origin: storage.Position{Topic: "elsewhere", Partition: 0, Offset: int64(i)}}
		var hs []kgo.RecordHeader
		for _, h := range engine.StartHeaders(s) {
			hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		r := &kgo.Record{Topic: keys, Key: engine.StartKey("order", k), Headers: hs, Value: v}
		kafkatest.Produce(t, fcl, r)
		if r.Partition != p || r.Offset != int64(i) {
			t.Fatalf("start landed at %d/%d", r.Partition, r.Offset)
		}
		s.Source = storage.Position{Topic: keys, Partition: p, Offset: r.Offset}
		s.Context = v
		sagas = append(sagas, s)
	}
	// The store as the member left it: sagas and next offset, no changelog, no commit.
	dir := t.TempDir()
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: sagas,
		Offsets: []storage.Offset{{Topic: keys, Partition: p, Next: 3}}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// p's fetches are slow to come back (here: they fail until removed).
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: keys, Partitions: []int32{p}, Err: kerr.NotLeaderForPartition, Count: -1})
	defer h.Remove()
	release := make(chan struct{})
	defer close(release)
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "order", Triggers: []engine.Trigger{engine.Kafka(topic, engine.PassThrough,
		engine.WithKey(engine.KeyField("order_id")), engine.WithMaxConcurrent(1))},
		Steps: []engine.Step{{Name: "wait", Action: func(ctx context.Context, _ *engine.Run) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}}})
	m := startMember(t, seeds, dir, reg, func(cfg *consumer.Config) { cfg.TopicPartitions = parts })
	kafkatest.WaitFor(t, 30*time.Second, "the member ready", func() bool { return m.Ready() == nil })
	kafkatest.Produce(t, kafkatest.Client(t, seeds), orderRecord(inP[3], ""))
	kafkatest.WaitFor(t, 30*time.Second, "a direct start", func() bool {
		return testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("recorded"))+testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("deferred")) >= 1
	})
	t.Logf("direct: recorded %v, deferred %v", testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("recorded")), testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("deferred")))
	kafkatest.WaitCommittedAtEnd(t, seeds, group, topic, 30*time.Second) // the event's offset is committed
	// What a member restoring p from the changelog gets.
	var changes []storage.Change
	got := map[int64]bool{}
	for _, r := range kafkatest.ReadAll(t, seeds, consumer.ChangelogTopic(group, keys)) {
		if r.Partition != p {
			continue
		}
		changes = append(changes, storage.Change{Key: r.Key, Value: r.Value})
		if r.Value != nil && !bytes.HasPrefix(r.Key, []byte{0xff}) {
			if s, err := storage.DecodeSaga(r.Value); err == nil {
				got[s.Source.Offset] = true
			}
		}
	}
	fresh, err := storage.OpenBolt(filepath.Join(t.TempDir(), "fresh.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Apply(context.Background(), storage.Partition{Topic: keys, Partition: p}, changes, int64(len(changes))); err != nil {
		t.Fatal(err)
	}
	next, _, _ := fresh.NextOffset(context.Background(), storage.Partition{Topic: keys, Partition: p})
	committed := kafkatest.Committed(t, seeds, group, keys)[p]
	t.Logf("changelog of p holds sagas at %v; restored next offset %d; committed offset of p %d", got, next, committed)
	for o := committed; o < next; o++ {
		if got[o] {
			continue
		}
		t.Fatalf("the changelog of %s/%d implies next offset %d (committed %d) but lacks sagas below it: %v — v0.1.0 restoring it skips them", keys, p, next, committed, got)
	}
}

// A direct start whose changelog write failed (the event's offset is still
// committed: its start record is in the keys topic) is followed by another
// start in the same keys partition before that partition's consumer
// reaches the first. Mirrored, the second would stand in the changelog
// above the first, which it lacks: it waits for consumption instead.
func TestDirectStartAfterAChangelogFailureWaits(t *testing.T) {
	const parts = 3
	keys := group + "-keys"
	c := kafkatest.NewCluster(t, kfake.SeedTopics(parts, topic, keys))
	seeds := c.ListenAddrs()
	p := engine.KeyPartition("order", "o-0", parts)
	var inP, other []string
	for i := 0; len(inP) < 2 || len(other) < 1; i++ {
		k := fmt.Sprintf("o-%d", i)
		if engine.KeyPartition("order", k, parts) == p {
			inP = append(inP, k)
		} else {
			other = append(other, k)
		}
	}
	release := make(chan struct{})
	defer close(release)
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "order", Triggers: []engine.Trigger{engine.Kafka(topic, engine.PassThrough,
		engine.WithKey(engine.KeyField("order_id")), engine.WithMaxConcurrent(1))},
		Steps: []engine.Step{{Name: "wait", Action: func(ctx context.Context, _ *engine.Run) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}}})
	hf := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: keys, Partitions: []int32{p}, Err: kerr.NotLeaderForPartition, Count: -1})
	defer hf.Remove()
	m := startMember(t, seeds, "", reg, func(cfg *consumer.Config) { cfg.TopicPartitions = parts })
	kafkatest.WaitFor(t, 30*time.Second, "the member ready", func() bool { return m.Ready() == nil })
	cl := kafkatest.Client(t, seeds)
	direct := func() float64 {
		return testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("recorded")) + testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("deferred"))
	}
	// The blocker: fills the lane (a saga in another keys partition; its fetch is not blocked).
	kafkatest.Produce(t, cl, orderRecord(other[0], ""))
	kafkatest.WaitFor(t, 30*time.Second, "the blocker", func() bool { return direct() >= 1 })
	// The next changelog write to p fails.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: consumer.ChangelogTopic(group, keys), Partitions: []int32{p}, Err: kerr.InvalidRecord, Count: 1})
	kafkatest.Produce(t, cl, orderRecord(inP[0], ""))
	kafkatest.WaitFor(t, 30*time.Second, "the first direct start in p", func() bool { return direct() >= 2 })
	kafkatest.Produce(t, cl, orderRecord(inP[1], ""))
	kafkatest.WaitFor(t, 30*time.Second, "the second direct start in p", func() bool { return direct() >= 3 })
	t.Logf("direct: recorded %v, deferred %v", testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("recorded")), testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("deferred")))
	kafkatest.WaitCommittedAtEnd(t, seeds, group, topic, 30*time.Second)
	got := map[int64]bool{}
	var maxPos int64 = -1
	for _, r := range kafkatest.ReadAll(t, seeds, consumer.ChangelogTopic(group, keys)) {
		if r.Partition != p || r.Value == nil || bytes.HasPrefix(r.Key, []byte{0xff}) {
			continue
		}
		if s, err := storage.DecodeSaga(r.Value); err == nil {
			got[s.Source.Offset] = true
			maxPos = max(maxPos, s.Source.Offset)
		}
	}
	committed := kafkatest.Committed(t, seeds, group, keys)[p]
	t.Logf("events committed at the end; changelog of p holds sagas at %v; committed offset of p %d", got, committed)
	for o := committed; o <= maxPos; o++ {
		if !got[o] {
			t.Fatalf("the changelog of p implies next offset %d (committed %d) but lacks the saga at %d: %v", maxPos+1, committed, o, got)
		}
	}
}
