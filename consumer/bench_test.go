package consumer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
)

// BenchmarkIngest measures the consumer path on an in-process kfake broker:
// a backlog of 200,000 order events → sagas recorded durably → offsets
// committed. The executor runs the (no-op) order steps at the same time.
// Reports events/s. Each iteration drains a fresh backlog; use
// -benchtime=1x. The broker shares the process (and its 2 cores): the
// separate-process harness is `make bench`'s job.
func BenchmarkIngest(b *testing.B) {
	const n = 200000
	for range b.N {
		b.StopTimer()
		c, err := kfake.NewCluster(kfake.SeedTopics(6, topic), kfake.NumBrokers(1))
		if err != nil {
			b.Fatal(err)
		}
		seeds := c.ListenAddrs()
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerLinger(5*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		var recs []*kgo.Record
		for i := range n {
			recs = append(recs, orderRecord(fmt.Sprintf("o-%d", i), ""))
			if len(recs) == 10000 {
				kafkatest.Produce(b, cl, recs...)
				recs = recs[:0]
			}
		}
		cl.Close()
		b.StartTimer()
		start := time.Now()
		m := startMember(b, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.HighWater, cfg.LowWater = n, n/2 })
		kafkatest.WaitFor(b, 5*time.Minute, "the backlog to be committed", func() bool {
			var sum int64
			for _, o := range kafkatest.Committed(b, seeds, group, topic) {
				sum += o
			}
			return sum >= n
		})
		el := time.Since(start)
		b.StopTimer()
		m.Stop()
		c.Close()
		b.ReportMetric(float64(n)/el.Seconds(), "events/s")
	}
}
