package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ensureTopics checks that the trigger topics and the dead-letter topic
// exist, creating the missing ones (or failing with their names when
// creation is off), then the changelog topics.
func (c *Consumer) ensureTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(c.cfg.Client...)
	if err != nil {
		return fmt.Errorf("consumer: kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	details, err := listTopics(ctx, adm)
	if err != nil {
		return fmt.Errorf("consumer: list topics: %w", err)
	}
	partitions := map[string]int32{} // known partition counts
	for t, d := range details {
		if d.Err == nil {
			partitions[t] = int32(len(d.Partitions))
		}
	}
	c.partitionCounts = partitions
	var missing []string
	for _, t := range append(append([]string(nil), c.topics...), c.cfg.DeadLetterTopic) {
		if partitions[t] == 0 {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		if err := c.createTopics(ctx, adm, missing, c.cfg.TopicPartitions, nil, partitions); err != nil {
			return err
		}
	}
	// One compacted changelog topic per source topic, with its partition
	// count: the state of partition N lives in changelog partition N.
	compact := "compact"
	for _, t := range c.topics {
		want, clName := partitions[t], ChangelogTopic(c.cfg.Group, t)
		switch got := partitions[clName]; {
		case got == 0:
			if err := c.createTopics(ctx, adm, []string{clName}, want, map[string]*string{"cleanup.policy": &compact}, partitions); err != nil {
				return err
			}
		case got != want:
			return fmt.Errorf("consumer: changelog topic %s has %d partitions, topic %s has %d: they must match (state of partition N lives in changelog partition N)",
				clName, got, t, want)
		}
	}
	return nil
}

func (c *Consumer) createTopics(ctx context.Context, adm *kadm.Client, topics []string, partitions int32, configs map[string]*string, counts map[string]int32) error {
	if !c.cfg.CreateTopics {
		sort.Strings(topics)
		return fmt.Errorf("%w: %s (create them, or enable topic creation)", ErrMissingTopics, strings.Join(topics, ", "))
	}
	return createTopics(ctx, adm, c.log, topics, partitions, c.cfg.TopicReplication, configs, counts)
}

// createTopics creates topics and records their partition counts (a new
// topic's metadata can take a while to show through a client's cache).
func createTopics(ctx context.Context, adm *kadm.Client, log *slog.Logger, topics []string, partitions int32, replication int16,
	configs map[string]*string, counts map[string]int32) error {
	sort.Strings(topics)
	resp, err := adm.CreateTopics(ctx, partitions, replication, configs, topics...)
	if err != nil {
		return fmt.Errorf("consumer: create topics %s: %w", strings.Join(topics, ", "), err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("consumer: create topic %s: %w", r.Topic, r.Err)
		}
		if r.Err == nil {
			counts[r.Topic] = r.NumPartitions
			log.Info("created topic", "topic", r.Topic, "partitions", r.NumPartitions, "replication", r.ReplicationFactor)
			continue
		}
		// Created by someone else meanwhile: read its partition count.
		for attempt := 0; counts[r.Topic] == 0 && attempt < 100; attempt++ {
			details, err := listTopics(ctx, adm)
			if err != nil {
				return err
			}
			if d, ok := details[r.Topic]; ok && d.Err == nil {
				counts[r.Topic] = int32(len(d.Partitions))
			}
			if counts[r.Topic] == 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// EnsureTopic returns the partition count of topic, creating it first (with
// partitions and replication) when it is missing and create is set.
func EnsureTopic(ctx context.Context, opts []kgo.Opt, log *slog.Logger, topic string, partitions int32, replication int16, create bool) (int32, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	details, err := listTopics(ctx, adm)
	if err != nil {
		return 0, fmt.Errorf("consumer: list topics: %w", err)
	}
	if d, ok := details[topic]; ok && d.Err == nil && len(d.Partitions) > 0 {
		return int32(len(d.Partitions)), nil
	}
	if !create {
		return 0, fmt.Errorf("%w: %s (create it, or enable topic creation)", ErrMissingTopics, topic)
	}
	counts := map[string]int32{}
	if err := createTopics(ctx, adm, log, []string{topic}, partitions, replication, nil, counts); err != nil {
		return 0, err
	}
	if counts[topic] == 0 {
		return 0, fmt.Errorf("consumer: topic %s did not appear after creation", topic)
	}
	return counts[topic], nil
}

// listTopics lists every topic of the cluster. Asking for named topics would
// make the client retry (for up to its retry timeout) on each missing one.
func listTopics(ctx context.Context, adm *kadm.Client) (kadm.TopicDetails, error) {
	return adm.ListTopics(ctx)
}
