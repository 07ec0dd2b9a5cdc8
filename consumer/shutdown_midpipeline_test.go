package consumer_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// TestShutdownFinishesTheBatchInHand stops a member that is most likely
// paused by back-pressure, with nothing in flight. This one keeps the
// batches small and back-pressure away, so shutdown comes with a batch
// being recorded and one being mirrored: both must be mirrored and
// committed before the member leaves (the committed offsets are the
// store's next offsets).
func TestShutdownMidPipelineFinishesBothBatches(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	produceOrders(t, kafkatest.Client(t, seeds), 0, 20000, nil)
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) {
		cfg.MaxPollRecords, cfg.HighWater, cfg.LowWater = 300, 1000000, 500000
	})
	kafkatest.WaitFor(t, 60*time.Second, "sagas being recorded", func() bool {
		return testutil.ToFloat64(m.Metrics.SagasStarted.WithLabelValues("order")) > 3000
	})
	m.Stop()
	st, err := storage.OpenBolt(filepath.Join(m.Dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tp := range []string{topic, group + "-keys"} {
		for p, off := range kafkatest.Committed(t, seeds, group, tp) {
			next, _, err := st.NextOffset(context.Background(), storage.Partition{Topic: tp, Partition: p})
			if err != nil {
				t.Fatal(err)
			}
			if next != off {
				t.Errorf("%s/%d: committed %d, recorded up to %d: a batch in flight was not finished", tp, p, off, next)
			}
		}
	}
}
