// Package consumer is the Kafka side of Sagaz: a franz-go consumer-group
// member that reads the topics the registered triggers name, routes each
// record to its triggers, records the resulting sagas durably (one storage
// transaction per poll), mirrors them to the changelog, and only then
// commits the offsets.
//
// Commit protocol, per poll (docs/architecture.md, invariant 1):
//
//  1. poll (rebalances are blocked from here: BlockRebalanceOnPoll)
//  2. route and transform every record (engine.Prepare); oversized records
//     and rejects are produced to the dead-letter topic with acks=all,
//     retried with back-off; if that keeps failing the batch is rewound,
//     never skipped
//  3. engine.Record: ONE durable transaction records the new sagas and each
//     partition's next offset
//  4. the changelog holds the batch's sagas and next offsets (acks awaited)
//  5. commit the offsets (a failed commit is retried with the next one)
//  6. allow rebalances
//
// So an offset is committed only once everything below it is durably
// handled and mirrored, and nothing is committed for a partition this
// member no longer owns. On assignment a partition is restored from its
// changelog, then resumes from the later of the committed offset and the
// store's recorded next offset.
//
// Files: config.go (Config), pipeline.go (the poll loop and its batches),
// commit.go (changelog mirror, offset commits, rewinds), rebalance.go
// (assignment, restore, release, revoke), retention.go, deadletter.go,
// changelog.go (the changelog writer and restorer), topics.go, group.go.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/logx"
	"github.com/sagaz-go/sagaz/storage"
)

// Consumer is one member of the consumer group.
//
// Goroutines: Run's goroutine polls (the pipeline); one goroutine per
// batch records it (Consumer.record, at most one in flight) and another
// then mirrors it to the changelog (Consumer.mirrorBatch, at most one in
// flight, overlapping the next batch's recording); franz-go runs
// the rebalance callbacks (assigned, revoked, lost, adjust) while no poll is
// in hand — BlockRebalanceOnPoll makes them wait for the pipeline's
// AllowRebalance — and the retention loop runs beside the pipeline.
type Consumer struct {
	// Set by New, read-only afterwards.
	cfg       Config
	eng       *engine.Engine
	store     storage.Store
	changelog *Changelog
	topics    []string
	synthetic map[string]bool // topics whose records name their source and trigger in headers
	keysTopic string          // where keyed sagas start (engine/keys.go); "" when no trigger has a key
	triggered map[string]bool // topics with kafka triggers
	replies   *replyLoop      // nil: no saga waits for replies; set by Run before the group client exists
	log       *slog.Logger
	m         *Metrics

	cl     *kgo.Client                // set by Run before anything else uses it
	shared atomic.Pointer[kgo.Client] // the same, for other goroutines (MemberID)

	// mu guards owned and uncommitted, shared by the pipeline, the commit
	// callbacks and the rebalance callbacks.
	mu          sync.Mutex
	owned       map[string]map[int32]bool
	uncommitted map[string]map[int32]kgo.EpochOffset
	refused     map[storage.Partition]string // assigned, not consumed: newer records (refuse.go)
	nRefused    atomic.Int32                 // len(refused), read without the lock
	dlLog       *logx.Limiter                // the dead-letter log lines, bounded

	// expMu orders the writes that run beside the pipeline (the retention
	// loop's deletions, a cron schedule's state) against the release of a
	// partition: they hold it for reading, having checked that the
	// partition is still owned (WhileOwned, retention.go), so they do not
	// wait for each other; release holds it for writing while the engine
	// gives the partition up.
	expMu sync.RWMutex

	// reMu guards reappend and reappendUntil: the batch mirror
	// (Consumer.mirror, one at a time) reads and updates them, the pipeline
	// raises reappendUntil when a mirror lags (settle), and adjust
	// writes reappendUntil from franz-go's goroutine (franz-go calls it
	// outside the BlockRebalanceOnPoll gate: with a cooperative balancer,
	// kept partitions go on being fetched and recorded while it runs).
	reMu sync.Mutex
	// reappend marks partitions whose changelog write failed: the next
	// batch re-appends what it matches.
	reappend map[storage.Partition]bool
	// reappendUntil marks partitions assigned with the store ahead of the
	// committed offset (adjust): they are fetched again from the committed
	// offset and every batch below this offset re-appends the sagas it
	// matches, so nothing recorded is committed past without being in the
	// changelog.
	reappendUntil map[storage.Partition]int64

	// dlqSent remembers the dead letters acknowledged above each partition's
	// committed offset, so a batch fetched again after a rewind does not
	// produce (nor count) them twice. Owned by the pipeline goroutine
	// (prepare and settle run there).
	dlqSent map[storage.Partition]map[dlKey]struct{}

	joined    atomic.Bool  // set once the group assigned partitions (or nothing is consumed)
	restoring atomic.Int32 // partitions being restored now
	rebalance atomic.Bool  // a rebalance waits for the poll in hand
	// committing is set while the pipeline's asynchronous commit is in
	// flight (commitAsync); its callback clears it.
	committing atomic.Bool

	// Readiness (watch.go): stuckSince is guarded by mu; recordingSince and
	// mirroringSince (Unix ns, 0: none) are when the recorder began the
	// batch it records and when the mirror began the batch it mirrors, set
	// by those goroutines.
	topicsReady chan struct{} // closed by awaitTopics
	// partitionCounts of the consumer's topics: written by ensureTopics
	// before topicsReady is closed, read-only after.
	partitionCounts map[string]int32
	health          health.Reporter
	stuckSince      map[storage.Partition]stuckState
	groupSince      time.Time // a poll's error of no partition (the group's) since; guarded by mu
	groupWhy        string
	recordingSince  atomic.Int64
	mirroringSince  atomic.Int64
	errLog          *health.LogLimiter
	brokersDown     bool // owned by the watch goroutine
}

// New returns a consumer for the triggers of eng's routing table. The
// engine must be a group member mirroring into a *Changelog
// (engine.Config.Changelog): the state of every partition it records must
// follow the partition, so a consumer over any other engine cannot be
// built. The member package assembles both.
func New(eng *engine.Engine, store storage.Store, cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cl, ok := eng.Changelog().(*Changelog)
	if !ok || cl == nil {
		return nil, fmt.Errorf("%w: the engine must mirror into a consumer.Changelog (engine.Config.Changelog): a partition's state follows it to its next owner", ErrConfig)
	}
	if cl.group != cfg.Group {
		return nil, fmt.Errorf("%w: the changelog is group %q's, the consumer joins group %q", ErrConfig, cl.group, cfg.Group)
	}
	c := &Consumer{
		cfg: cfg, eng: eng, store: store, changelog: cl, log: cfg.Logger, m: cfg.Metrics,
		owned: map[string]map[int32]bool{}, uncommitted: map[string]map[int32]kgo.EpochOffset{}, refused: map[storage.Partition]string{},
		reappend: map[storage.Partition]bool{}, reappendUntil: map[storage.Partition]int64{}, dlqSent: map[storage.Partition]map[dlKey]struct{}{},
		topicsReady: make(chan struct{}), health: cfg.Health, stuckSince: map[storage.Partition]stuckState{}, errLog: health.NewLogLimiter(10 * time.Second),
		dlLog: logx.NewLimiter(cfg.Logger, 0, 0, nil),
	}
	if c.health == nil {
		c.health = health.New(nil) // the caller does not look: keep them here
	}
	c.topics, c.synthetic, c.keysTopic = consumedTopics(eng.Routes(), &cfg)
	if len(c.topics) > 0 {
		// Not ready until joined, from the start: set in Run only, the
		// condition would be missing for the instant between the engine's
		// recovery and Run, and a health check could pass then.
		c.health.Set(health.Joining, "joining consumer group "+cfg.Group)
	}
	c.triggered = map[string]bool{}
	for _, t := range eng.Routes().Topics() {
		c.triggered[t] = true
	}
	c.m.known(eng.Routes(), c.topics)
	return c, nil
}

// MemberID returns this member's current group member id ("" until it
// has joined).
func (c *Consumer) MemberID() string {
	if cl := c.clientIfRunning(); cl != nil {
		id, _ := cl.GroupMetadata()
		return id
	}
	return ""
}

// KeysTopic is the topic keyed sagas are started in ("" when no trigger
// can have a key).
func (c *Consumer) KeysTopic() string { return c.keysTopic }

// KeyPartition returns the partition of the keys topic that owns (saga,
// key), once the topics are known.
func (c *Consumer) KeyPartition(saga, key string) (storage.Partition, bool) {
	select {
	case <-c.topicsReady:
	default:
		return storage.Partition{}, false
	}
	n := c.partitionCounts[c.keysTopic]
	if c.keysTopic == "" || n == 0 {
		return storage.Partition{}, false
	}
	return storage.Partition{Topic: c.keysTopic, Partition: engine.KeyPartition(saga, key, n)}, true
}

// Config returns the consumer's configuration, defaults applied.
func (c *Consumer) Config() Config { return c.cfg }

// Topics returns the topics the consumer subscribes to.
func (c *Consumer) Topics() []string { return c.topics }

// Ready reports whether the member has joined its group (or has nothing to
// consume) and restored every assigned partition. The conditions that keep
// a member from being ready, with their reasons, are in Config.Health.
func (c *Consumer) Ready() bool { return c.joined.Load() && c.restoring.Load() == 0 }

// awaitTopics ensures the topics exist, retrying with back-off while the
// brokers cannot be reached or topics are missing (with creation off): the
// "brokers" or "topics" condition says which, and a line is logged at a
// bounded rate. It returns only when ctx ends or the topics are there.
func (c *Consumer) awaitTopics(ctx context.Context) error {
	wait := 200 * time.Millisecond
	for {
		tctx, cancel := context.WithTimeout(ctx, 15*time.Second) // an unreachable broker must not hold us here
		err := c.ensureTopics(tctx)
		cancel()
		if err == nil {
			c.health.Clear(health.Brokers)
			c.health.Clear(health.Topics)
			c.eng.SetTopology(engine.Topology{KeysTopic: c.keysTopic, EventsTopic: c.cfg.EventsTopic, CronTopic: c.cfg.CronTopic,
				Partitions: maps.Clone(c.partitionCounts)})
			close(c.topicsReady)
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		cond := health.Brokers
		if errors.Is(err, ErrMissingTopics) {
			cond = health.Topics
		} else {
			err = fmt.Errorf("waiting for brokers: %w", err)
		}
		c.health.Set(cond, err.Error())
		if ok, quiet := c.errLog.Allow("topics"); ok {
			c.log.Warn("cannot start consuming yet; retrying", "err", err, "in", wait, "similar_lines_suppressed", quiet)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(wait*2, 10*time.Second)
	}
}

// TopicsReady is closed once the consumer's topics exist (created or found).
func (c *Consumer) TopicsReady() <-chan struct{} { return c.topicsReady }

// PartitionCount waits until the consumer's topics exist (or ctx ends) and
// returns the partition count of one of them.
func (c *Consumer) PartitionCount(ctx context.Context, topic string) (int32, error) {
	select {
	case <-c.topicsReady:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	n := c.partitionCounts[topic]
	if n == 0 {
		return 0, fmt.Errorf("consumer: %s is not one of the consumer's topics", topic)
	}
	return n, nil
}

// Run ensures the topics exist, joins the group and consumes until ctx
// ends. It then finishes and commits the batch in hand, commits what is
// left, and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	if len(c.topics) == 0 {
		c.log.Info("no kafka triggers: nothing to consume")
		c.health.Clear(health.Joining)
		c.joined.Store(true)
		<-ctx.Done()
		return nil
	}
	if err := c.awaitTopics(ctx); err != nil {
		return err
	}
	defer c.dlLog.Flush()
	var err error
	if c.replies, err = c.newReplyLoop(); err != nil {
		return err
	}
	opts := append(append([]kgo.Opt(nil), c.cfg.Client...),
		kgo.ConsumerGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.SessionTimeout(c.cfg.SessionTimeout),
		kgo.RebalanceTimeout(c.cfg.RebalanceTimeout),
		kgo.FetchMaxBytes(c.cfg.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(c.cfg.FetchMaxPartitionBytes),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
		kgo.AdjustFetchOffsetsFn(c.adjust),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { c.rebalance.Store(true) }),
		// Keyed records go where Kafka's Java client puts them (murmur2):
		// a keyed start lands in engine.KeyPartition's partition.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	opts = append(opts, c.cfg.GroupClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		if c.replies != nil {
			c.replies.cl.Close()
		}
		return fmt.Errorf("consumer: kafka client: %w", err)
	}
	c.cl = cl
	c.shared.Store(cl)
	c.log.Info("consuming", "group", c.cfg.Group, "topics", c.topics, "dead_letter_topic", c.cfg.DeadLetterTopic)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.expireLoop(ctx) }()
	go func() { defer wg.Done(); c.watch(ctx) }()
	if c.replies != nil {
		wg.Add(1)
		go func() { defer wg.Done(); c.replies.run(ctx) }()
	}
	c.loop(ctx)
	wg.Wait()

	// Shutdown: commit what is durable, then leave the group.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	c.commit(cctx)
	cl.CloseAllowingRebalance()
	c.log.Info("left the consumer group", "group", c.cfg.Group)
	return nil
}

func (c *Consumer) clientIfRunning() *kgo.Client { return c.shared.Load() }
