package consumer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// createTopic creates a topic with configs (e.g. a small max.message.bytes).
func createTopic(t *testing.T, seeds []string, name string, partitions int32, configs map[string]*string) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// manual produces records to the partition each names.
func manual(t *testing.T, seeds []string) *kgo.Client {
	return kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchMaxBytes(4<<20))
}

// The records of issue "one bad record wedges a member": an idempotency key
// over bbolt's key limit, a record whose dead letter would be larger than
// the dead-letter topic takes, and three order ids that differ only in
// invalid UTF-8. Each stops nothing but itself: it becomes a dead letter
// (trimmed where it must be, saying so), and every other record of every
// partition — including the poison's own — is recorded and committed.
func TestPoisonRecordsStopNothingButThemselves(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	small := "20000"
	createTopic(t, seeds, dlq, 1, map[string]*string{"max.message.bytes": &small})
	cl := manual(t, seeds)
	want := map[string]storage.Status{}
	var recs []*kgo.Record
	for i := range 90 {
		id := fmt.Sprintf("o-%d", i)
		want[id] = storage.StatusCompleted
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 3), Key: []byte(id), Value: []byte(`{"order_id":"` + id + `"}`)})
		switch i {
		case 10: // key over 32 KiB (bbolt's limit), after a valid record of the same partition
			recs = append(recs, &kgo.Record{Topic: topic, Partition: 1, Key: []byte("long"), Value: []byte(`{"order_id":"` + strings.Repeat("k", 40<<10) + `"}`)})
		case 20: // a ~700 KB record key and a value that is not JSON: its dead letter exceeds the topic's limit
			recs = append(recs, &kgo.Record{Topic: topic, Partition: 2, Key: []byte(strings.Repeat("K", 700<<10)), Value: []byte("not json"),
				Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t-1")}}})
		case 30: // invalid UTF-8 would decode to U+FFFD: distinct ids must not merge
			for _, id := range []string{"x\xff\xfey", "x\xc0\xc1y", "x\uFFFD\uFFFDy"} {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("utf8"), Value: []byte(`{"order_id":"` + id + `"}`)})
			}
		}
	}
	kafkatest.Produce(t, cl, recs...)
	want["x\uFFFD\uFFFDy"] = storage.StatusCompleted
	m := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 60*time.Second, "sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))

	dls := kafkatest.ReadAll(t, seeds, dlq)
	reasons := map[string]int{}
	for _, r := range dls {
		reasons[header(r, consumer.HeaderReason)]++
		if header(r, consumer.HeaderReason) != "decode" || header(r, consumer.HeaderOrigPartition) != "2" {
			continue
		}
		// The oversized dead letter: trimmed, and says how.
		if header(r, consumer.HeaderValueDropped) != "true" || header(r, consumer.HeaderKeyHashed) != "true" ||
			header(r, consumer.HeaderKeyBytes) != fmt.Sprint(700<<10) || len(r.Key) != 64 || header(r, consumer.HeaderValueSHA256) == "" {
			t.Errorf("trimmed dead letter: key %d bytes, headers %v", len(r.Key), r.Headers)
		}
	}
	if len(dls) != 4 || reasons["invalid_key"] != 1 || reasons["decode"] != 3 {
		t.Fatalf("dead letters by reason: %v (%d records), want invalid_key 1, decode 3", reasons, len(dls))
	}
	if got := testutil.ToFloat64(m.Metrics.DeadLetters.WithLabelValues("decode")); got != 3 {
		t.Errorf("dead letters (decode) metric = %v, want 3", got)
	}
}

// A changelog write that fails takes only its partition back: the
// partition is fetched again, its sagas are de-duplicated and mirrored
// again, and its dead letters are neither produced nor counted twice.
func TestChangelogFaultRetriesOnlyItsPartitionWithoutDuplicateDeadLetters(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	cl := manual(t, seeds)
	want := map[string]storage.Status{}
	var recs []*kgo.Record
	for i := range 60 {
		id := fmt.Sprintf("o-%d", i)
		want[id] = storage.StatusCompleted
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 3), Key: []byte(id), Value: []byte(`{"order_id":"` + id + `"}`)})
	}
	for p := range int32(3) {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte("bad"), Value: []byte("not json")})
	}
	kafkatest.Produce(t, cl, recs...)
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: consumer.ChangelogTopic(group, topic), Err: kerr.UnknownServerError, Count: 2})
	m := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 60*time.Second, "sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	if h.Hits() == 0 || testutil.ToFloat64(m.Metrics.BatchErrors) == 0 {
		t.Fatalf("fault hits %d, batch errors %v: the changelog fault did not take a partition back", h.Hits(), testutil.ToFloat64(m.Metrics.BatchErrors))
	}
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
	if dls := kafkatest.ReadAll(t, seeds, dlq); len(dls) != 3 {
		t.Fatalf("%d dead letters, want 3 (one per poison record, none re-sent)", len(dls))
	}
	if got := testutil.ToFloat64(m.Metrics.DeadLetters.WithLabelValues("decode")); got != 3 {
		t.Errorf("dead letters metric = %v, want 3", got)
	}
}

// When the dead-letter topic refuses a partition's dead letters, only that
// partition waits (a fault of the environment, for as long as it lasts);
// the other partitions are recorded and committed meanwhile, and the
// waiting one goes on once the topic takes the dead letter.
func TestDeadLetterRefusalStopsOnlyItsPartition(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	tiny := "120"
	createTopic(t, seeds, dlq, 1, map[string]*string{"max.message.bytes": &tiny})
	cl := manual(t, seeds)
	want := map[string]storage.Status{}
	var recs []*kgo.Record
	for i := range 60 {
		id := fmt.Sprintf("o-%d", i)
		want[id] = storage.StatusCompleted
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 3), Key: []byte(id), Value: []byte(`{"order_id":"` + id + `"}`)})
	}
	recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("bad"), Value: []byte("not json")})
	kafkatest.Produce(t, cl, recs...)
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.DeadLetterAttempts = 2 })
	kafkatest.WaitFor(t, 60*time.Second, "partitions 1 and 2 to be committed to their end", func() bool {
		end, got := kafkatest.EndOffsets(t, seeds, topic), kafkatest.Committed(t, seeds, group, topic)
		return got[1] == end[1] && got[2] == end[2]
	})
	if got := kafkatest.Committed(t, seeds, group, topic); got[0] == kafkatest.EndOffsets(t, seeds, topic)[0] {
		t.Fatal("partition 0 was committed past a record whose dead letter was never produced")
	}
	big := "1000000"
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	if _, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &big}}, dlq); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
	if dls := kafkatest.ReadAll(t, seeds, dlq); len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
}
