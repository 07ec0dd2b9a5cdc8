package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/engine"
)

// Topic roles (TopicSpec.Role).
const (
	RoleTrigger    = "trigger"     // a kafka trigger's topic
	RoleEvents     = "events"      // webhook calls and manual events
	RoleCron       = "cron"        // schedule ticks
	RoleDeadLetter = "dead-letter" // records that cannot start a saga
	RoleChangelog  = "changelog"   // compacted mirror of a consumed topic's saga state
	RoleKeys       = "keys"        // keyed sagas' starts, one partition per key (its partition count must not change)
	RoleMembers    = "members"     // where each member publishes its advertised URL (compacted, one partition)
	RoleReplies    = "replies"     // replies to the commands of the sagas of a topic, co-partitioned with it
	RoleCommands   = "commands"    // commands produced by command steps (consumed by participants)
	RoleAwaited    = "awaited"     // events await steps wait for (consumed, forwarded as signals)
)

// ReplyTopic names the replies topic of a topic's sagas for a group:
// "<group>-replies-<topic>", with the topic's partition count, so replies
// to the sagas of partition N come back on partition N.
func ReplyTopic(group, topic string) string { return group + "-replies-" + topic }

// TopicSpec is a topic a group member needs, as the member creates it when
// topic creation is on.
type TopicSpec struct {
	Name string `json:"topic"`
	Role string `json:"role"`
	// Partitions it is created with (Config.TopicPartitions; -1 is the
	// broker's default). A changelog gets its source topic's partition
	// count, whatever it is.
	Partitions int32 `json:"partitions"`
	// Source is the topic a changelog or replies topic is co-partitioned
	// with (same partition count).
	Source string `json:"source,omitempty"`
	// Configs are the topic configs it is created with.
	Configs map[string]string `json:"configs,omitempty"`
}

// consumedTopics are the topics a member subscribes to: the kafka
// triggers' topics (sorted), then the events topic and the cron topic when
// a trigger of theirs exists. cfg has its defaults.
func consumedTopics(routes *engine.Routes, cfg *Config) (topics []string, synthetic map[string]bool, keysTopic string) {
	topics, synthetic = routes.Topics(), map[string]bool{}
	awaited := routes.Awaited()
	for t := range awaited { // events of await steps, forwarded as signals
		if !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	sort.Strings(topics)
	keyed := len(awaited) > 0 // await steps correlate in the keys topic
	for _, r := range routes.All() {
		topic := cfg.EventsTopic
		switch r.Trigger.Source() {
		case engine.SourceCron:
			topic = cfg.CronTopic
		case engine.SourceKafka:
			keyed = keyed || !r.Trigger.Key().IsZero()
			continue
		default: // webhook and manual events may carry an Idempotency-Key
			keyed = true
		}
		if !synthetic[topic] {
			synthetic[topic] = true
			topics = append(topics, topic)
		}
	}
	if keyed { // keyed sagas start in the keys topic (engine/keys.go)
		topics = append(topics, cfg.KeysTopic)
		keysTopic = cfg.KeysTopic
	}
	return topics, synthetic, keysTopic
}

// RequiredTopics lists every topic a member of cfg.Group with these routes
// consumes, produces to or creates: the consumed topics (trigger, events,
// cron), the dead-letter topic and, with changelogs (as the service runs),
// one compacted changelog "<group>-changelog-<topic>" per consumed topic.
// It is what the member checks at start-up (and creates when
// Config.CreateTopics is set); `sagaz topics` prints it.
func RequiredTopics(routes *engine.Routes, cfg Config, changelogs bool) []TopicSpec {
	cfg.setDefaults()
	consumed, synthetic, keys := consumedTopics(routes, &cfg)
	var out []TopicSpec
	awaited := routes.Awaited()
	for _, t := range consumed {
		role := RoleTrigger
		if t == keys {
			role = RoleKeys
		} else if len(awaited[t]) > 0 && len(routes.Match(engine.SourceKafka, t)) == 0 {
			role = RoleAwaited
		} else if synthetic[t] {
			role = RoleEvents
			if t == cfg.CronTopic {
				role = RoleCron
			}
		}
		out = append(out, TopicSpec{Name: t, Role: role, Partitions: cfg.TopicPartitions})
	}
	if len(consumed) == 0 {
		return nil // nothing consumed: the member needs no topic
	}
	out = append(out, TopicSpec{Name: cfg.DeadLetterTopic, Role: RoleDeadLetter, Partitions: cfg.TopicPartitions})
	if changelogs { // a group member (as the service runs) also tells the others where its API is
		out = append(out, TopicSpec{Name: MembersTopic(cfg.Group), Role: RoleMembers, Partitions: 1, Configs: map[string]string{"cleanup.policy": "compact"}})
	}
	if changelogs {
		for _, t := range consumed {
			out = append(out, TopicSpec{Name: ChangelogTopic(cfg.Group, t), Role: RoleChangelog, Partitions: cfg.TopicPartitions,
				Source: t, Configs: changelogConfigs()})
		}
	}
	for _, t := range replySources(routes, &cfg) {
		out = append(out, TopicSpec{Name: ReplyTopic(cfg.Group, t), Role: RoleReplies, Partitions: cfg.TopicPartitions, Source: t})
	}
	for _, t := range routes.CommandTopics() {
		if !slices.ContainsFunc(out, func(s TopicSpec) bool { return s.Name == t }) {
			out = append(out, TopicSpec{Name: t, Role: RoleCommands, Partitions: cfg.TopicPartitions})
		}
	}
	return out
}

// replySources are the topics in which sagas with command or await steps
// live: the topics of their kafka triggers without a key, the events and
// cron topics of their other triggers, and the keys topic when they can be
// keyed. Each gets a replies topic. cfg has its defaults.
func replySources(routes *engine.Routes, cfg *Config) []string {
	set := map[string]bool{}
	for _, r := range routes.TalkingRoutes() {
		switch r.Trigger.Source() {
		case engine.SourceKafka: // a keyed trigger's sagas all live in the keys topic
			if r.Trigger.Key().IsZero() {
				set[r.Trigger.Topic()] = true
			} else {
				set[cfg.KeysTopic] = true
			}
		case engine.SourceCron:
			set[cfg.CronTopic] = true
		default: // webhook and manual events may carry an Idempotency-Key
			set[cfg.EventsTopic] = true
			set[cfg.KeysTopic] = true
		}
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// changelogConfigs are a changelog topic's configs. Kafka compacts only
// closed segments, and by default a segment stays open for 7 days or 1 GiB:
// a changelog would then hold every transition of every saga (four or five
// records each) and a restore would read them all. Segments roll hourly and
// the cleaner starts at 25% of superseded records, so a restore reads about
// one record per saga.
func changelogConfigs() map[string]string {
	return map[string]string{"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.25"}
}

// TopicState is what EnsureTopics found or did for one topic.
type TopicState struct {
	TopicSpec
	// Partitions the topic has now (0 when missing).
	Have int32 `json:"have_partitions"`
	// Created is true when EnsureTopics created it.
	Created bool `json:"created"`
}

// EnsureTopics checks that the topics exist, creating the missing ones when
// create is set (changelogs with their source's partition count, after the
// sources). Without create, it fails naming every missing topic at once
// (ErrMissingTopics). A changelog whose partition count differs from its
// source's is an error either way.
func EnsureTopics(ctx context.Context, opts []kgo.Opt, specs []TopicSpec, create bool, replication int16, log *slog.Logger) ([]TopicState, error) {
	if log == nil {
		log = slog.Default()
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("consumer: kafka client: %w", err)
	}
	defer cl.Close()
	return ensureTopics(ctx, cl, specs, create, replication, log)
}

func ensureTopics(ctx context.Context, cl *kgo.Client, specs []TopicSpec, create bool, replication int16, log *slog.Logger) ([]TopicState, error) {
	counts, err := partitionCounts(ctx, cl) // known partition counts
	if err != nil {
		return nil, err
	}
	states := make([]TopicState, len(specs))
	var missing []string
	for i, s := range specs {
		states[i] = TopicState{TopicSpec: s, Have: counts[s.Name]}
		if counts[s.Name] == 0 {
			missing = append(missing, s.Name)
		}
	}
	if len(missing) > 0 && !create {
		sort.Strings(missing)
		return states, fmt.Errorf("%w: %s (create them — `sagaz topics` lists them with their settings — or enable topic creation)",
			ErrMissingTopics, strings.Join(missing, ", "))
	}
	// Sources first, grouped by partitions and configs; then changelogs with
	// their sources' counts.
	for _, changelogs := range []bool{false, true} {
		type group struct {
			partitions int32
			configs    string
		}
		batches := map[group][]string{}
		cfgs := map[group]map[string]*string{}
		for i := range states {
			s := &states[i]
			if (s.Source != "") != changelogs || counts[s.Name] != 0 {
				continue
			}
			p := s.Partitions
			if changelogs {
				if p = counts[s.Source]; p == 0 {
					return states, fmt.Errorf("consumer: %s topic %s: its source topic %s does not exist", s.Role, s.Name, s.Source)
				}
			}
			g := group{p, fmt.Sprint(s.Configs)}
			batches[g] = append(batches[g], s.Name)
			if cfgs[g] == nil && len(s.Configs) > 0 {
				cfgs[g] = map[string]*string{}
				for k, v := range s.Configs {
					cfgs[g][k] = &v
				}
			}
		}
		for g, names := range batches {
			created, err := createTopics(ctx, cl, log, names, g.partitions, replication, cfgs[g], counts)
			if err != nil {
				return states, err
			}
			for i := range states {
				if created[states[i].Name] {
					states[i].Created = true
				}
			}
		}
	}
	if len(missing) > 0 { // created: return once the broker's metadata shows them all
		if err := waitVisible(ctx, cl, missing); err != nil {
			return states, err
		}
	}
	for i := range states {
		s := &states[i]
		s.Have = counts[s.Name]
		if s.Source != "" && counts[s.Source] != 0 && s.Have != counts[s.Source] {
			what := "state of partition N lives in changelog partition N"
			if s.Role == RoleReplies {
				what = "replies to the sagas of partition N come back on partition N"
			}
			return states, fmt.Errorf("consumer: %s topic %s has %d partitions, topic %s has %d: they must match (%s)",
				s.Role, s.Name, s.Have, s.Source, counts[s.Source], what)
		}
	}
	return states, nil
}

// partitionCounts lists the cluster's topics with their partition counts
// (topics whose metadata is not complete yet are left out). It asks a
// broker (the client's metadata cache, which kadm uses, lags behind topics
// created a moment ago) for every topic: asking for named topics would make
// the client retry on each missing one.
func partitionCounts(ctx context.Context, cl *kgo.Client) (map[string]int32, error) {
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl) // no topics named: all of them
	if err != nil {
		return nil, fmt.Errorf("consumer: list topics: %w", err)
	}
	counts := map[string]int32{}
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == 0 && len(t.Partitions) > 0 {
			counts[*t.Topic] = int32(len(t.Partitions))
		}
	}
	return counts, nil
}

// waitVisible waits (up to 30s) until the metadata shows every topic, so
// whoever starts next (a member after an init job) finds them.
func waitVisible(ctx context.Context, cl *kgo.Client, topics []string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		counts, err := partitionCounts(ctx, cl)
		if err != nil {
			return err
		}
		var pending []string
		for _, t := range topics {
			if counts[t] == 0 {
				pending = append(pending, t)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consumer: created topics %s do not show in the cluster's metadata after 30s", strings.Join(pending, ", "))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ensureTopics checks (and creates, with Config.CreateTopics) every topic
// the member needs, and records their partition counts. Without creation,
// missing topics give ErrMissingTopics naming them all (awaitTopics
// retries).
func (c *Consumer) ensureTopics(ctx context.Context) error {
	cl, err := kgo.NewClient(c.cfg.Client...)
	if err != nil {
		return fmt.Errorf("consumer: kafka client: %w", err)
	}
	defer cl.Close()
	states, err := ensureTopics(ctx, cl, RequiredTopics(c.eng.Routes(), c.cfg, true), c.cfg.CreateTopics, c.cfg.TopicReplication, c.log)
	if err != nil {
		return err
	}
	counts := map[string]int32{}
	for _, s := range states {
		counts[s.Name] = s.Have
	}
	c.partitionCounts = counts
	return nil
}

// createTopics creates topics and records their partition counts (a new
// topic's metadata can take a while to show through a client's cache). It
// returns the topics it created (not those created by someone else meanwhile).
func createTopics(ctx context.Context, cl *kgo.Client, log *slog.Logger, topics []string, partitions int32, replication int16,
	configs map[string]*string, counts map[string]int32) (map[string]bool, error) {
	sort.Strings(topics)
	created := map[string]bool{}
	resp, err := kadm.NewClient(cl).CreateTopics(ctx, partitions, replication, configs, topics...)
	if err != nil {
		return nil, fmt.Errorf("consumer: create topics %s: %w", strings.Join(topics, ", "), err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return nil, fmt.Errorf("consumer: create topic %s: %w", r.Topic, r.Err)
		}
		if r.Err == nil {
			counts[r.Topic] = r.NumPartitions
			created[r.Topic] = true
			log.Info("created topic", "topic", r.Topic, "partitions", r.NumPartitions, "replication", r.ReplicationFactor)
			continue
		}
		// Created by someone else meanwhile: read its partition count.
		for attempt := 0; counts[r.Topic] == 0 && attempt < 100; attempt++ {
			now, err := partitionCounts(ctx, cl)
			if err != nil {
				return nil, err
			}
			if counts[r.Topic] = now[r.Topic]; counts[r.Topic] == 0 {
				if err := sleep(ctx, 50*time.Millisecond); err != nil {
					return nil, err
				}
			}
		}
	}
	return created, nil
}

// EnsureTopic returns the partition count of topic, creating it first (with
// partitions and replication) when it is missing and create is set. log
// receives the "created topic" line (nil: slog.Default()).
func EnsureTopic(ctx context.Context, opts []kgo.Opt, log *slog.Logger, topic string, partitions int32, replication int16, create bool) (int32, error) {
	states, err := EnsureTopics(ctx, opts, []TopicSpec{{Name: topic, Partitions: partitions}}, create, replication, log)
	if err != nil {
		return 0, err
	}
	if states[0].Have == 0 {
		return 0, fmt.Errorf("consumer: topic %s did not appear after creation", topic)
	}
	return states[0].Have, nil
}

// MembersTopic names the topic where a group's members publish their
// advertised URLs (package roster).
func MembersTopic(group string) string { return group + "-members" }
