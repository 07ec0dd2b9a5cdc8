package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
)

// Sender produces the records of a member's command and await steps
// (engine.Sender): an idempotent producer with acks=all. A record with a
// partition is produced there (replies to a saga's reply partition); one
// without (Partition -1) goes where its key says, murmur2 as Kafka's Java
// client places keyed records, so an await registration lands in the keys
// partition engine.CorrelationPartition names.
type Sender struct {
	cl  *kgo.Client
	log *slog.Logger
}

// NewSender returns a Sender over the connection options opts; Close it
// after the engine has stopped.
func NewSender(opts []kgo.Opt, log *slog.Logger) (*Sender, error) {
	if log == nil {
		log = slog.Default()
	}
	keyed := kgo.StickyKeyPartitioner(nil)
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(func(topic string) func(*kgo.Record, int) int {
			byKey := keyed.ForTopic(topic)
			return func(r *kgo.Record, n int) int {
				if r.Partition >= 0 {
					return int(r.Partition)
				}
				return byKey.Partition(r, n)
			}
		})),
		kgo.ProducerLinger(time.Millisecond),
		kgo.RecordDeliveryTimeout(30*time.Second), // a failed produce is retried by the engine (the outbox)
	)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: sender client: %w", err)
	}
	return &Sender{cl: cl, log: log}, nil
}

// Send implements engine.Sender.
func (s *Sender) Send(r *engine.OutRecord, done func(error)) {
	rec := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: kgoHeaders(r.Headers)}
	s.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) { done(err) })
}

// Close flushes what is buffered (bounded to 10s) and closes the producer.
func (s *Sender) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.cl.Flush(ctx)
	s.cl.Close()
}

func kgoHeaders(hs []engine.Header) []kgo.RecordHeader {
	if len(hs) == 0 {
		return nil
	}
	out := make([]kgo.RecordHeader, len(hs))
	for i, h := range hs {
		out[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
	}
	return out
}
