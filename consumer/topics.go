package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

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
	details, err := listTopics(ctx, adm)
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
	if len(missing) > 0 {
		if err := c.createTopics(ctx, adm, missing, c.cfg.TopicPartitions, nil); err != nil {
			return err
		}
	}
	if c.cfg.Changelog == nil {
		return nil
	}
	return c.ensureChangelogs(ctx, adm)
}

func (c *Consumer) createTopics(ctx context.Context, adm *kadm.Client, topics []string, partitions int32, configs map[string]*string) error {
	sort.Strings(topics)
	if !c.cfg.CreateTopics {
		return fmt.Errorf("%w: %s (create them, or enable topic creation)", ErrMissingTopics, strings.Join(topics, ", "))
	}
	resp, err := adm.CreateTopics(ctx, partitions, c.cfg.TopicReplication, configs, topics...)
	if err != nil {
		return fmt.Errorf("consumer: create topics %s: %w", strings.Join(topics, ", "), err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("consumer: create topic %s: %w", r.Topic, r.Err)
		}
		c.log.Info("created topic", "topic", r.Topic, "partitions", r.NumPartitions, "replication", r.ReplicationFactor)
	}
	return nil
}

// ensureChangelogs checks (or creates) one compacted changelog topic per
// source topic, with the source topic's partition count.
func (c *Consumer) ensureChangelogs(ctx context.Context, adm *kadm.Client) error {
	var details kadm.TopicDetails
	for attempt := 0; ; attempt++ { // topics created a moment ago may not show their partitions yet
		var err error
		if details, err = listTopics(ctx, adm); err != nil {
			return fmt.Errorf("consumer: list topics: %w", err)
		}
		ready := true
		for _, t := range c.topics {
			if d, ok := details[t]; !ok || d.Err != nil || len(d.Partitions) == 0 {
				ready = false
			}
		}
		if ready || attempt == 100 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	compact := "compact"
	for _, t := range c.topics {
		src, ok := details[t]
		if !ok || src.Err != nil || len(src.Partitions) == 0 {
			return fmt.Errorf("consumer: topic %s has no partitions yet (%v)", t, src.Err)
		}
		want := int32(len(src.Partitions))
		clName := ChangelogTopic(c.cfg.Group, t)
		cl, ok := details[clName]
		switch {
		case !ok || errors.Is(cl.Err, kerr.UnknownTopicOrPartition):
			if err := c.createTopics(ctx, adm, []string{clName}, want, map[string]*string{"cleanup.policy": &compact}); err != nil {
				return err
			}
		case cl.Err != nil:
			return fmt.Errorf("consumer: changelog topic %s: %w", clName, cl.Err)
		case int32(len(cl.Partitions)) != want:
			return fmt.Errorf("consumer: changelog topic %s has %d partitions, topic %s has %d: they must match (state of partition N lives in changelog partition N)",
				clName, len(cl.Partitions), t, want)
		}
	}
	return nil
}

// EnsureTopic returns the partition count of topic, creating it first (with
// partitions and replication) when it is missing and create is set.
func EnsureTopic(ctx context.Context, opts []kgo.Opt, topic string, partitions int32, replication int16, create bool) (int32, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if create { // create first: metadata requests for a missing topic are retried for long
		if _, err := adm.CreateTopic(ctx, partitions, replication, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("consumer: create topic %s: %w", topic, err)
		}
	}
	for attempt := 0; attempt < 100; attempt++ {
		details, err := listTopics(ctx, adm)
		if err != nil {
			return 0, fmt.Errorf("consumer: list topic %s: %w", topic, err)
		}
		d, ok := details[topic]
		switch {
		case ok && d.Err == nil && len(d.Partitions) > 0:
			return int32(len(d.Partitions)), nil
		case !create:
			return 0, fmt.Errorf("%w: %s (create it, or enable topic creation)", ErrMissingTopics, topic)
		case ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			return 0, fmt.Errorf("consumer: topic %s: %w", topic, d.Err)
		}
		select { // created; metadata not visible yet
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("consumer: topic %s did not appear after creation", topic)
}

// listTopics lists every topic of the cluster. Asking for named topics would
// make the client retry (for up to its retry timeout) on each missing one.
func listTopics(ctx context.Context, adm *kadm.Client) (kadm.TopicDetails, error) {
	return adm.ListTopics(ctx)
}
