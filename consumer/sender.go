package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
)

// Sender produces the records of a member's command and await steps
// (engine.Sender): an idempotent producer with acks=all. A record with a
// partition is produced there (replies to a saga's reply partition); one
// without (Partition -1) goes where its key says, murmur2 as Kafka's Java
// client places keyed records, so an await registration lands in the keys
// partition engine.CorrelationPartition names.
//
// A topic deleted and recreated gets a new topic ID, which the client does
// not adopt: produces to it fail with UNKNOWN_TOPIC_ID until the topic is
// purged from the client. So after a produce fails that way
// (topicRecreated), the topic is purged before the next record to it is
// produced (the engine's outbox retries the failed one), and its metadata
// is learned afresh.
type Sender struct {
	cl  *kgo.Client
	log *slog.Logger

	mu    sync.Mutex
	purge map[string]bool // topics to purge before the next produce to them
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
	return &Sender{cl: cl, log: log, purge: map[string]bool{}}, nil
}

// Send implements engine.Sender.
func (s *Sender) Send(r *engine.OutRecord, done func(error)) {
	s.mu.Lock()
	purge := s.purge[r.Topic]
	delete(s.purge, r.Topic)
	s.mu.Unlock()
	if purge {
		// Not from the produce callback: purging waits for the client's
		// metadata loop, which may be the one calling back.
		s.cl.PurgeTopicsFromClient(r.Topic)
		s.log.Info("topic unknown to the brokers (deleted, or deleted and recreated): purged from the producer, its metadata is learned again", "topic", r.Topic)
	}
	rec := &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: kgoHeaders(r.Headers)}
	s.cl.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
		if topicRecreated(err) {
			s.mu.Lock()
			s.purge[r.Topic] = true
			s.mu.Unlock()
		}
		done(err)
	})
}

// topicRecreated reports whether a produce failed because its topic was
// deleted (and perhaps recreated): the one error after which a producer
// purges the topic. Not UNKNOWN_TOPIC_OR_PARTITION: it also comes for a
// topic that exists but whose metadata lags, and a purge restarts the
// idempotent producer's sequence numbers for the topic, so the broker
// could take the next record for a duplicate of an earlier one and drop
// it.
func topicRecreated(err error) bool { return errors.Is(err, kerr.UnknownTopicID) }

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
