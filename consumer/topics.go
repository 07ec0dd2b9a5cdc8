package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ensureTopics checks that the trigger topics and the dead-letter topic
// exist, creating the missing ones (or failing with their names when
// creation is off).
func (c *Consumer) ensureTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(c.cfg.Client...)
	if err != nil {
		return fmt.Errorf("consumer: kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	want := append(append([]string(nil), c.topics...), c.cfg.DeadLetterTopic)
	details, err := adm.ListTopics(ctx, want...)
	if err != nil {
		return fmt.Errorf("consumer: list topics: %w", err)
	}
	var missing []string
	for _, t := range want {
		d, ok := details[t]
		if !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			missing = append(missing, t)
		} else if d.Err != nil {
			return fmt.Errorf("consumer: topic %s: %w", t, d.Err)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	if !c.cfg.CreateTopics {
		return fmt.Errorf("%w: %s (create them, or enable topic creation)", ErrMissingTopics, strings.Join(missing, ", "))
	}
	resp, err := adm.CreateTopics(ctx, c.cfg.TopicPartitions, c.cfg.TopicReplication, nil, missing...)
	if err != nil {
		return fmt.Errorf("consumer: create topics %s: %w", strings.Join(missing, ", "), err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("consumer: create topic %s: %w", r.Topic, r.Err)
		}
		c.log.Info("created topic", "topic", r.Topic, "partitions", r.NumPartitions, "replication", r.ReplicationFactor)
	}
	return nil
}
