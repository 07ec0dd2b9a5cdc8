package consumer_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// FuzzConsumerPath feeds arbitrary records (key, value, and for the events
// topic arbitrary source/name headers) to a running member. The property:
// every record ends as a saga or a dead letter naming its position, and the
// member goes on (its committed offset passes the record).
func FuzzConsumerPath(f *testing.F) {
	f.Add([]byte("o-1"), []byte(`{"order_id":"o-1"}`), false, "", "")
	f.Add([]byte(""), []byte(""), false, "", "")
	f.Add([]byte("k"), []byte("\xff\xfe{"), false, "", "")
	f.Add([]byte("k"), []byte(`{"order_id":"x\xff\xfey"}`), false, "", "")
	f.Add([]byte("k"), []byte(`{"order_id":"o-2","fail_at":"ship"}`), false, "", "")
	f.Add([]byte("k"), []byte(`{"order_id":{"nested":1}}`), false, "", "")
	f.Add([]byte("k"), []byte(`{"order_id":"o-3"}`), true, "manual", "order.requested")
	f.Add([]byte("k"), []byte(`{"order_id":"o-4"}`), true, "kafka", "orders.created")
	f.Add([]byte("k"), []byte(`{"order_id":"o-5"}`), true, "webhook", "nope")
	f.Add([]byte("k"), []byte(`{"order_id":"o-6"}`), true, "", "")
	c := kafkatest.NewCluster(f, kfake.SeedTopics(2, topic, "sagaz.events"))
	seeds := c.ListenAddrs()
	cl := kafkatest.Client(f, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	m := startMember(f, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.MaxEventBytes = 64 << 10 })
	kafkatest.WaitFor(f, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	f.Fuzz(func(t *testing.T, key, value []byte, events bool, src, name string) {
		r := &kgo.Record{Topic: topic, Key: key, Value: value}
		if events {
			r.Topic = "sagaz.events"
			r.Headers = []kgo.RecordHeader{{Key: engine.HeaderSource, Value: []byte(src)}, {Key: engine.HeaderName, Value: []byte(name)}}
		}
		kafkatest.Produce(t, cl, r)
		pos := storage.Position{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
		kafkatest.WaitFor(t, 30*time.Second, "the record to be committed", func() bool {
			return kafkatest.Committed(t, seeds, group, r.Topic)[r.Partition] > r.Offset
		})
		// A keyed saga is recorded by the owner of its key's partition of
		// the keys topic after the record's offset is committed (its start
		// was acknowledged there first): look until it is, bounded.
		ended := func() bool {
			if _, err := m.Store.Get(t.Context(), storage.FormatID(pos, "order")); err == nil {
				return true // a saga (or the existing saga of its key)
			}
			for _, dl := range kafkatest.ReadAll(t, seeds, dlq) {
				if header(dl, consumer.HeaderOrigTopic) == r.Topic && header(dl, consumer.HeaderOrigPartition) == strconv.Itoa(int(r.Partition)) &&
					header(dl, consumer.HeaderOrigOffset) == strconv.FormatInt(r.Offset, 10) {
					return true
				}
			}
			// Neither a new saga nor a dead letter: the record must have
			// matched the saga of its idempotency key (or been ignored,
			// which the order saga never does).
			ev := engine.Event{Value: value}
			if k, err := engine.KeyField("order_id").Value("order", &ev); err == nil {
				if found, err := m.Store.FindKey(t.Context(), []string{"order"}, k); err == nil && len(found) > 0 {
					return true
				}
			}
			return false
		}
		kafkatest.WaitFor(t, 30*time.Second, fmt.Sprintf("record %s/%d@%d (value %q) to end as a saga or a dead letter", r.Topic, r.Partition, r.Offset, value), ended)
	})
}
