package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sagaz-go/sagaz/health"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a Consumer. Zero values take the documented defaults.
type Config struct {
	// Client holds the connection options: seed brokers, TLS, SASL, client
	// id (see KafkaConfig.Opts). Required.
	Client []kgo.Opt
	// GroupClientOpts are added to the group member's client only (e.g.
	// kprom metric hooks, which belong to one client).
	GroupClientOpts []kgo.Opt
	// Group is the consumer group (default "sagaz").
	Group string
	// InstanceID enables static membership (KIP-345) when set.
	InstanceID string
	// SessionTimeout of the group member (default 45s).
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long a rebalance waits for members to
	// rejoin, including the partition callbacks (restore, release)
	// (default 60s).
	RebalanceTimeout time.Duration
	// FetchMaxBytes and FetchMaxPartitionBytes bound fetch responses
	// (defaults 1 MiB and 256 KiB), and so the memory buffered fetches take.
	FetchMaxBytes, FetchMaxPartitionBytes int32
	// DeadLetterTopic receives records that cannot start a saga (default
	// "sagaz.dlq").
	DeadLetterTopic string
	// EventsTopic carries webhook calls and manual events (default
	// "sagaz.events"); it is consumed when a webhook or manual trigger exists.
	EventsTopic string
	// KeysTopic is where keyed sagas are started (default "<group>-keys"):
	// each (saga, idempotency key) belongs to one of its partitions, so a
	// key starts at most one saga in the whole group. Its partition count
	// must not change while keys are in their de-duplication window.
	KeysTopic string
	// CronTopic carries schedule ticks (default "sagaz.cron"); it is
	// consumed when a cron trigger exists.
	CronTopic string
	// DeadLetterMaxBytes bounds a dead letter's size (default 1,000,000,
	// under the producer's and Kafka's default limit of about 1 MB): a
	// larger one is trimmed — value, then key, then original headers — and
	// headers say what was left out.
	DeadLetterMaxBytes int
	// ChangelogFlushTimeout bounds how long a batch waits for its changelog
	// acknowledgements (default 15s); partitions not acknowledged by then
	// are fetched again, the others go on.
	ChangelogFlushTimeout time.Duration
	// DeadLetterAttempts bounds the produce attempts of one batch's dead
	// letters; after them the batch is rewound and fetched again (default 10).
	DeadLetterAttempts int
	// MaxEventBytes: larger record values go to the dead-letter topic with
	// reason "oversized" (default 1 MiB).
	MaxEventBytes int
	// MaxPollRecords bounds one batch — its first poll and the polls it
	// gathers while the two batches ahead of it are recorded and mirrored —
	// and so one transaction (default 10000).
	MaxPollRecords int
	// HighWater: when this many sagas wait as pending, fetching pauses until
	// they fall to LowWater (defaults 10000 and 5000).
	HighWater, LowWater int
	// CreateTopics creates missing topics with TopicPartitions partitions
	// (default 6) and TopicReplication replicas (default -1: the broker's
	// default). When false, start-up fails naming the missing topics.
	CreateTopics     bool
	TopicPartitions  int32
	TopicReplication int16
	Logger           *slog.Logger
	// Metrics (default: new, unregistered).
	Metrics *Metrics
	// Retention: terminal sagas are deleted (and tombstoned in the
	// changelog) this long after they ended (default 7 days), checked every
	// RetentionCheck (default 10 minutes). It is also the de-duplication
	// window: an idempotency key is remembered as long as its saga.
	Retention, RetentionCheck time.Duration
	// Health hears of the conditions that keep the member from being ready
	// (joining, restoring, brokers, topics, store, stalled). Default: kept
	// privately.
	Health health.Reporter
	// StallTimeout: a partition that has made no progress for this long
	// while it has records to handle makes the member not ready
	// ("stalled"; default 60s). ProbeInterval is how often the brokers are
	// asked for the topics' end offsets (default 5s).
	StallTimeout, ProbeInterval time.Duration
	// ReleaseTimeout bounds how long a revoked partition waits for its
	// running steps before it is given up (default 30s).
	ReleaseTimeout time.Duration
}

// Defaults returns the configuration with the defaults applied (the
// topic names a member uses, for instance).
func (c Config) Defaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Group == "" {
		c.Group = "sagaz"
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 45 * time.Second
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = 60 * time.Second
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = 1 << 20
	}
	if c.FetchMaxPartitionBytes == 0 {
		c.FetchMaxPartitionBytes = 256 << 10
	}
	if c.DeadLetterTopic == "" {
		c.DeadLetterTopic = "sagaz.dlq"
	}
	if c.EventsTopic == "" {
		c.EventsTopic = "sagaz.events"
	}
	if c.KeysTopic == "" {
		c.KeysTopic = c.Group + "-keys"
	}
	if c.CronTopic == "" {
		c.CronTopic = "sagaz.cron"
	}
	if c.DeadLetterMaxBytes == 0 {
		c.DeadLetterMaxBytes = 1_000_000
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 60 * time.Second
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = 5 * time.Second
	}
	if c.ChangelogFlushTimeout == 0 {
		c.ChangelogFlushTimeout = 15 * time.Second
	}
	if c.DeadLetterAttempts == 0 {
		c.DeadLetterAttempts = 10
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = 1 << 20
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 10000
	}
	if c.HighWater == 0 {
		c.HighWater = 10000
	}
	if c.LowWater == 0 {
		c.LowWater = c.HighWater / 2
	}
	if c.TopicPartitions == 0 {
		c.TopicPartitions = 6
	}
	if c.TopicReplication == 0 {
		c.TopicReplication = -1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Retention == 0 {
		c.Retention = 7 * 24 * time.Hour
	}
	if c.RetentionCheck == 0 {
		c.RetentionCheck = 10 * time.Minute
	}
	if c.ReleaseTimeout == 0 {
		c.ReleaseTimeout = 30 * time.Second
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
}

// Validate reports every invalid field at once (after defaults).
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...))
	}
	if len(c.Client) == 0 {
		bad("no Kafka client options (seed brokers)")
	}
	if c.MaxEventBytes < 0 || c.MaxPollRecords < 0 || c.HighWater < 0 || c.LowWater < 0 {
		bad("negative limits")
	}
	if c.LowWater > c.HighWater {
		bad("low-water mark %d above high-water mark %d", c.LowWater, c.HighWater)
	}
	if c.TopicPartitions < 1 && c.TopicPartitions != -1 {
		bad("topic partitions %d: want at least 1 (or -1 for the broker default)", c.TopicPartitions)
	}
	if c.FetchMaxBytes < 0 || c.FetchMaxPartitionBytes < 0 {
		bad("negative fetch sizes")
	}
	return errors.Join(errs...)
}
