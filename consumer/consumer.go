// Package consumer is the Kafka side of Sagaz: a franz-go consumer-group
// member that reads the topics the registered triggers name, routes each
// record to its triggers, records the resulting sagas durably (one storage
// transaction per poll) and only then commits the offsets.
//
// Commit protocol, per poll (DESIGN §4.1):
//
//  1. poll (rebalances are blocked from here: BlockRebalanceOnPoll)
//  2. run the transformers (engine.Prepare); oversized records and rejects
//     are produced to the dead-letter topic with acks=all, retried with
//     back-off; if that keeps failing the batch is rewound, never skipped
//  3. engine.Start: ONE durable transaction records the new sagas and each
//     partition's next offset
//  4. commit the offsets (a failed commit is retried with the next one)
//  5. allow rebalances
//
// So an offset is committed only once everything below it is durably
// handled, and nothing is committed for a partition this member no longer
// owns. On assignment a partition resumes from the later of the committed
// offset and the store's recorded next offset.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
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
	// CronTopic carries schedule ticks (default "sagaz.cron"); it is
	// consumed when a cron trigger exists.
	CronTopic string
	// DeadLetterAttempts bounds the produce attempts of one batch's dead
	// letters; after them the batch is rewound and fetched again (default 10).
	DeadLetterAttempts int
	// MaxEventBytes: larger record values go to the dead-letter topic with
	// reason "oversized" (default 1 MiB).
	MaxEventBytes int
	// MaxPollRecords bounds one poll batch, and so one transaction
	// (default 10000).
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
	// Changelog mirrors the owned partitions' state so that it follows a
	// partition to its next owner (nil: no changelog; a member then keeps
	// the sagas it recorded). See NewChangelog.
	Changelog *Changelog
	// Retention: terminal sagas are deleted (and tombstoned in the
	// changelog) this long after they ended (default 7 days), checked every
	// RetentionCheck (default 10 minutes). It is also the de-duplication
	// window: an idempotency key is remembered as long as its saga.
	Retention, RetentionCheck time.Duration
	// ReleaseTimeout bounds how long a revoked partition waits for its
	// running steps before it is given up (default 30s).
	ReleaseTimeout time.Duration
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
	if c.CronTopic == "" {
		c.CronTopic = "sagaz.cron"
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

// Consumer is one member of the consumer group.
type Consumer struct {
	cfg    Config
	eng    *engine.Engine
	store  storage.Store
	topics []string
	log    *slog.Logger
	m      *Metrics

	cl *kgo.Client

	mu          sync.Mutex
	owned       map[string]map[int32]bool
	uncommitted map[string]map[int32]kgo.EpochOffset
	joined      atomic.Bool
	restoring   atomic.Int32
	reappend    map[storage.Partition]bool // changelog writes failed: re-append what the next batch matches
	synthetic   map[string]bool            // topics whose records name their source and trigger in headers
	running     atomic.Bool
	rebalance   atomic.Bool // a rebalance waits for this poll to finish

	batch  engine.Batch
	events []engine.Event
}

// New returns a consumer for the kafka triggers of eng's routing table.
// The engine must be Partitioned (engine.Config.Partitioned), and, with a
// changelog, record into it (engine.Config.OnRecorded = Changelog.Append).
func New(eng *engine.Engine, store storage.Store, cfg Config) (*Consumer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !eng.Partitioned() {
		return nil, fmt.Errorf("%w: the engine must be Partitioned: the group decides which member runs a partition's sagas", ErrConfig)
	}
	c := &Consumer{
		cfg: cfg, eng: eng, store: store, topics: eng.Routes().Topics(), log: cfg.Logger, m: cfg.Metrics,
		owned: map[string]map[int32]bool{}, uncommitted: map[string]map[int32]kgo.EpochOffset{},
		reappend: map[storage.Partition]bool{}, synthetic: map[string]bool{},
	}
	for _, r := range eng.Routes().All() {
		topic := cfg.EventsTopic
		switch r.Trigger.Source() {
		case engine.SourceCron:
			topic = cfg.CronTopic
		case engine.SourceKafka:
			continue
		}
		if !c.synthetic[topic] {
			c.synthetic[topic] = true
			c.topics = append(c.topics, topic)
		}
	}
	return c, nil
}

// EventsTopic is where webhook calls and manual events are produced.
func (c *Consumer) EventsTopic() string { return c.cfg.EventsTopic }

// Topics returns the topics the consumer subscribes to.
func (c *Consumer) Topics() []string { return c.topics }

// Ready reports whether the member has joined its group (or has nothing to
// consume) and restored every assigned partition.
func (c *Consumer) Ready() bool { return c.joined.Load() && c.restoring.Load() == 0 }

// Run ensures the topics exist, joins the group and consumes until ctx
// ends. It then finishes and commits the batch in hand, commits what is
// left, and leaves the group.
func (c *Consumer) Run(ctx context.Context) error {
	if len(c.topics) == 0 {
		c.log.Info("no kafka triggers: nothing to consume")
		c.joined.Store(true)
		<-ctx.Done()
		return nil
	}
	if err := c.ensureTopics(ctx); err != nil {
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
	)
	if c.cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.cfg.InstanceID))
	}
	opts = append(opts, c.cfg.GroupClientOpts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("consumer: kafka client: %w", err)
	}
	c.cl = cl
	c.running.Store(true)
	c.log.Info("consuming", "group", c.cfg.Group, "topics", c.topics, "dead_letter_topic", c.cfg.DeadLetterTopic)
	var wg sync.WaitGroup
	if c.cfg.Changelog != nil {
		wg.Add(1)
		go func() { defer wg.Done(); c.expireLoop(ctx) }()
	}
	c.loop(ctx)
	wg.Wait()

	// Shutdown: commit what is durable, then leave the group.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	c.commit(cctx)
	cl.CloseAllowingRebalance()
	c.running.Store(false)
	c.log.Info("left the consumer group", "group", c.cfg.Group)
	return nil
}

// batch is one poll's worth of work between "polled" and "committed".
type batch struct {
	fetches kgo.Fetches
	events  []engine.Event
	work    engine.Batch
	offsets []storage.Offset
	marks   []mark
	// set when the storage transaction ends
	done chan struct{}
	res  []storage.StartResult
	err  error
}

// loop polls and records batches as a two-stage pipeline: while batch N is
// being recorded (the storage transaction and its fsync), batch N+1 is
// polled, transformed and dead-lettered. Offsets of N are committed once N
// is durable. Rebalances are allowed only with nothing in flight: between
// batches when idle, and at once when a rebalance is waiting.
func (c *Consumer) loop(ctx context.Context) {
	var (
		slots    [2]batch
		cur      int
		inflight *batch
		backoff  = 100 * time.Millisecond
	)
	// settle waits for the in-flight batch and commits it; on failure it
	// returns the batch so the caller rewinds it.
	settle := func() *batch {
		b := inflight
		if b == nil {
			return nil
		}
		inflight = nil
		<-b.done
		if b.err != nil {
			return b
		}
		c.recorded(b)
		c.commit(ctx)
		return nil
	}
	allow := func() {
		c.rebalance.Store(false)
		c.cl.AllowRebalance()
	}
	fail := func(err error, bs ...*batch) {
		c.m.BatchErrors.Inc()
		c.rewind(bs...)
		c.log.Error("batch not recorded; rewound to retry it", "err", err, "retry_in", backoff)
		allow()
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(backoff*2, 5*time.Second)
	}
	for ctx.Err() == nil {
		if q, _ := c.eng.Stats(); q >= c.cfg.HighWater {
			if failed := settle(); failed != nil {
				fail(failed.err, failed)
				continue
			}
			allow()
			if err := c.backpressure(ctx); err != nil {
				break
			}
		}
		// A bounded poll, so failed commits are retried even when idle; it
		// also returns as soon as the in-flight batch is durable, so that
		// batch is committed without waiting for new records.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		if inflight != nil {
			go func(done <-chan struct{}) {
				select {
				case <-done:
					cancel()
				case <-pctx.Done():
				}
			}(inflight.done)
		}
		fetches := c.cl.PollRecords(pctx, c.cfg.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				c.log.Warn("fetch error (the client retries)", "topic", t, "partition", p, "err", err)
			}
		})
		if fetches.NumRecords() == 0 {
			if failed := settle(); failed != nil {
				fail(failed.err, failed)
				continue
			}
			c.commit(ctx)
			allow()
			continue
		}
		// The batch in hand is finished even when shutdown begins; only the
		// dead-letter retries stop on ctx.
		next := &slots[cur]
		cur ^= 1
		prepErr := c.prepare(ctx, next, fetches)
		if failed := settle(); failed != nil {
			fail(failed.err, failed, next) // next was fetched past a batch that is not recorded
			continue
		}
		if prepErr != nil {
			fail(prepErr, next)
			continue
		}
		backoff = 100 * time.Millisecond
		inflight = next
		go func(b *batch) {
			defer close(b.done)
			sb := storage.StartBatch{Sagas: b.work.Sagas, Offsets: b.offsets}
			if cl := c.cfg.Changelog; cl != nil {
				for _, o := range b.offsets {
					sb.Changelog = append(sb.Changelog, storage.Offset{Topic: o.Topic, Partition: o.Partition, Next: cl.Next(o.TopicPartition())})
				}
			}
			if b.res, b.err = c.eng.Start(context.WithoutCancel(ctx), sb); b.err == nil {
				c.observeRecorded(b)
				b.err = c.mirror(ctx, b)
			}
		}(next)
		if c.rebalance.Load() {
			if failed := settle(); failed != nil {
				fail(failed.err, failed)
				continue
			}
			allow()
		}
	}
	if failed := settle(); failed != nil {
		c.rewind(failed) // not committed; the next owner fetches it again
	}
}

// prepare turns one poll into a batch: transformers run, rejects and
// oversized records go to the dead-letter topic (awaited).
func (c *Consumer) prepare(ctx context.Context, b *batch, fetches kgo.Fetches) error {
	n := fetches.NumRecords()
	if cap(b.events) < n {
		b.events = make([]engine.Event, n)
	}
	b.events = b.events[:n]
	b.work.Reset()
	b.fetches, b.offsets, b.marks = fetches, b.offsets[:0], b.marks[:0]
	b.done, b.res, b.err = make(chan struct{}), nil, nil
	var (
		i   int
		bad []recordReject
	)
	routes := c.eng.Routes()
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		synthetic := c.synthetic[p.Topic]
		rts := routes.Match(engine.SourceKafka, p.Topic)
		for _, r := range p.Records {
			if len(r.Value) > c.cfg.MaxEventBytes {
				bad = append(bad, recordReject{r, ReasonOversized, fmt.Sprintf("value of %d bytes exceeds the limit of %d", len(r.Value), c.cfg.MaxEventBytes)})
				continue
			}
			ev := &b.events[i]
			i++
			*ev = engine.Event{Source: engine.SourceKafka, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Headers: headers(r.Headers)}
			if synthetic {
				src, _ := ev.Header(engine.HeaderSource)
				name, _ := ev.Header(engine.HeaderName)
				ev.Source, ev.Name = engine.Source(src), string(name)
				if rts = routes.Match(ev.Source, ev.Name); len(rts) == 0 {
					bad = append(bad, recordReject{r, ReasonNoRoute, fmt.Sprintf("no %s trigger named %q in this binary", src, name)})
					continue
				}
			}
			c.eng.Prepare(&b.work, ev, rts)
		}
		last := p.Records[len(p.Records)-1]
		b.offsets = append(b.offsets, storage.Offset{Topic: p.Topic, Partition: p.Partition, Next: last.Offset + 1})
		b.marks = append(b.marks, mark{p.Topic, p.Partition, kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}})
		c.m.RecordsConsumed.WithLabelValues(p.Topic).Add(float64(len(p.Records)))
	})
	if len(b.work.Rejects) > 0 || len(bad) > 0 {
		return c.deadLetter(ctx, b.work.Rejects, bad)
	}
	return nil
}

// mirror puts a recorded batch into the changelog and waits for the acks:
// the new sagas (appended by the engine as it recorded them) and each
// partition's next offset. Only then may the batch's offsets be committed.
func (c *Consumer) mirror(ctx context.Context, b *batch) error {
	cl := c.cfg.Changelog
	if cl == nil {
		return nil
	}
	parts := make([]storage.Partition, 0, len(b.offsets))
	for _, o := range b.offsets {
		p := o.TopicPartition()
		parts = append(parts, p)
		if c.reappend[p] { // an earlier write failed: what it held may be missing
			for j, r := range b.res {
				if !r.Created && b.work.Sagas[j].Source.TopicPartition() == p {
					if s, err := c.store.Get(ctx, r.ID); err == nil {
						cl.Append(s)
					}
				}
			}
		}
		cl.AppendNext(p, o.Next)
	}
	if err := cl.Flush(ctx, parts...); err != nil {
		for _, p := range parts {
			c.reappend[p] = true
		}
		return err
	}
	for _, p := range parts {
		delete(c.reappend, p)
	}
	return nil
}

// observeRecorded measures event time → saga durably recorded (before the
// changelog and the offset commit, which the saga does not wait for).
func (c *Consumer) observeRecorded(b *batch) {
	now := time.Now()
	for j, r := range b.res {
		if s := b.work.Sagas[j]; r.Created && !s.EventTime.IsZero() {
			c.m.RecordLatency.Observe(now.Sub(s.EventTime).Seconds())
		}
	}
}

// recorded marks a durable batch's offsets for commit and counts it.
func (c *Consumer) recorded(b *batch) {
	for j, r := range b.res {
		s := b.work.Sagas[j]
		if r.Created {
			c.m.SagasStarted.WithLabelValues(s.Name).Inc()
		} else {
			c.m.Deduplicated.WithLabelValues(s.Name).Inc()
		}
	}
	c.m.Ignored.Add(float64(b.work.Ignored))
	c.mu.Lock()
	for _, mk := range b.marks {
		if c.owned[mk.topic][mk.partition] { // never commit what we no longer own
			if c.uncommitted[mk.topic] == nil {
				c.uncommitted[mk.topic] = map[int32]kgo.EpochOffset{}
			}
			c.uncommitted[mk.topic][mk.partition] = mk.at
		}
	}
	c.mu.Unlock()
}

type mark struct {
	topic     string
	partition int32
	at        kgo.EpochOffset
}

func headers(hs []kgo.RecordHeader) []engine.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]engine.Header, len(hs))
	for i, h := range hs {
		out[i] = engine.Header{Key: h.Key, Value: h.Value}
	}
	return out
}

// rewind sets the fetch position of every partition in the given batches
// back to its earliest unrecorded record, so they are fetched again.
func (c *Consumer) rewind(bs ...*batch) {
	to := map[string]map[int32]kgo.EpochOffset{}
	for _, b := range bs {
		b.fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			if to[p.Topic] == nil {
				to[p.Topic] = map[int32]kgo.EpochOffset{}
			}
			first := p.Records[0].Offset
			if cur, ok := to[p.Topic][p.Partition]; !ok || first < cur.Offset {
				to[p.Topic][p.Partition] = kgo.EpochOffset{Epoch: -1, Offset: first}
			}
		})
	}
	c.cl.SetOffsets(to)
}

// commit commits the offsets recorded durably since the last commit. A
// failed partition stays for the next commit.
func (c *Consumer) commit(ctx context.Context) {
	c.mu.Lock()
	if len(c.uncommitted) == 0 {
		c.mu.Unlock()
		return
	}
	toCommit := make(map[string]map[int32]kgo.EpochOffset, len(c.uncommitted))
	for t, ps := range c.uncommitted {
		toCommit[t] = maps.Clone(ps)
	}
	c.mu.Unlock()
	c.commitOffsets(ctx, c.cl, toCommit)
}

func (c *Consumer) commitOffsets(ctx context.Context, cl *kgo.Client, toCommit map[string]map[int32]kgo.EpochOffset) {
	start := time.Now()
	cl.CommitOffsetsSync(ctx, toCommit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			c.m.CommitErrors.Inc()
			c.log.Warn("offset commit failed; retried with the next commit", "err", err)
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					c.m.CommitErrors.Inc()
					c.log.Warn("offset commit failed for a partition; retried with the next commit", "topic", t.Topic, "partition", p.Partition, "err", err)
					continue
				}
				if cur, ok := c.uncommitted[t.Topic][p.Partition]; ok && cur.Offset == toCommit[t.Topic][p.Partition].Offset {
					delete(c.uncommitted[t.Topic], p.Partition)
					if len(c.uncommitted[t.Topic]) == 0 {
						delete(c.uncommitted, t.Topic)
					}
				}
			}
		}
	})
	c.m.CommitLatency.Observe(time.Since(start).Seconds())
}

// backpressure pauses fetching while too many sagas are pending.
func (c *Consumer) backpressure(ctx context.Context) error {
	if q, _ := c.eng.Stats(); q < c.cfg.HighWater {
		return nil
	}
	c.cl.PauseFetchTopics(c.topics...)
	c.m.Paused.Set(1)
	q, _ := c.eng.Stats()
	c.log.Info("pausing fetches: too many pending sagas", "pending", q, "high_water", c.cfg.HighWater, "resume_at", c.cfg.LowWater)
	defer func() {
		c.cl.ResumeFetchTopics(c.topics...)
		c.m.Paused.Set(0)
	}()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if q, _ := c.eng.Stats(); q <= c.cfg.LowWater {
				c.log.Info("resuming fetches", "pending", q)
				return nil
			}
		}
	}
}

func (c *Consumer) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	// Restore each partition's state from its changelog, then let the engine
	// resume its sagas; fetching starts only after this callback.
	c.restoring.Add(int32(countParts(assigned)))
	c.m.Restoring.Set(float64(c.restoring.Load()))
	for t, ps := range assigned {
		for _, pn := range ps {
			p := storage.Partition{Topic: t, Partition: pn}
			c.restore(ctx, p)
			n, err := c.eng.Acquire(ctx, p)
			if err != nil {
				c.log.Error("resuming the sagas of an assigned partition failed", "partition", p.String(), "err", err)
			} else if n > 0 {
				c.log.Info("resumed unfinished sagas", "partition", p.String(), "sagas", n)
			}
			c.restoring.Add(-1)
			c.m.Restoring.Set(float64(c.restoring.Load()))
		}
	}
	c.mu.Lock()
	n := 0
	for t, ps := range assigned {
		if c.owned[t] == nil {
			c.owned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			c.owned[t][p] = true
			n++
		}
	}
	c.m.Partitions.Set(float64(countOwned(c.owned)))
	c.mu.Unlock()
	c.m.Rebalances.WithLabelValues("assigned").Inc()
	c.joined.Store(true)
	c.log.Info("partitions assigned", "partitions", fmtParts(assigned), "count", n)
}

// restore brings p's local state up to date from its changelog, retrying
// until it succeeds or the client closes (a partition is not consumed on
// stale state).
func (c *Consumer) restore(ctx context.Context, p storage.Partition) {
	cl := c.cfg.Changelog
	if cl == nil {
		return
	}
	wait := 200 * time.Millisecond
	for {
		start := time.Now()
		n, err := cl.Restore(ctx, c.cfg.Client, c.store, p)
		if err == nil {
			el := time.Since(start)
			c.m.RestoreSeconds.Observe(el.Seconds())
			if n > 0 {
				c.log.Info("restored partition state from the changelog", "partition", p.String(), "records", n,
					"took", el.Round(time.Millisecond), "records_per_s", int(float64(n)/max(el.Seconds(), 1e-9)))
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Error("restoring a partition from its changelog failed; retrying", "partition", p.String(), "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, 10*time.Second)
	}
}

// release stops running p's sagas here and puts their last state in the
// changelog (when flush is set), so the next owner restores it.
func (c *Consumer) release(ctx context.Context, parts map[string][]int32, flush bool) {
	for t, ps := range parts {
		for _, pn := range ps {
			p := storage.Partition{Topic: t, Partition: pn}
			rctx, cancel := context.WithTimeout(ctx, c.cfg.ReleaseTimeout)
			if err := c.eng.Release(rctx, p); err != nil {
				c.log.Error("partition given up with steps still running (they may run again on the next owner)", "partition", p.String(), "err", err)
			}
			if cl := c.cfg.Changelog; cl != nil {
				if flush {
					if err := cl.Flush(rctx, p); err != nil {
						c.log.Error("changelog flush of a revoked partition failed", "partition", p.String(), "err", err)
					}
				}
				cl.Forget(p)
			}
			cancel()
		}
	}
}

// revoked runs between polls (BlockRebalanceOnPoll): every batch polled is
// recorded. Stop the partitions' sagas, flush their changelog, commit what
// is left, then forget them.
func (c *Consumer) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if len(revoked) == 0 {
		return
	}
	c.release(ctx, revoked, true)
	c.mu.Lock()
	toCommit := map[string]map[int32]kgo.EpochOffset{}
	for t, ps := range revoked {
		for _, p := range ps {
			if eo, ok := c.uncommitted[t][p]; ok {
				if toCommit[t] == nil {
					toCommit[t] = map[int32]kgo.EpochOffset{}
				}
				toCommit[t][p] = eo
			}
		}
	}
	c.mu.Unlock()
	if len(toCommit) > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c.commitOffsets(cctx, cl, toCommit)
		cancel()
	}
	c.forget(revoked)
	c.m.Rebalances.WithLabelValues("revoked").Inc()
	c.log.Info("partitions revoked", "partitions", fmtParts(revoked))
}

// lost: the group moved on without us; commits would fail, so just forget.
func (c *Consumer) lost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.release(ctx, lost, false)
	c.forget(lost)
	c.m.Rebalances.WithLabelValues("lost").Inc()
	c.log.Warn("partitions lost", "partitions", fmtParts(lost))
}

func (c *Consumer) forget(parts map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range parts {
		for _, p := range ps {
			delete(c.owned[t], p)
			delete(c.uncommitted[t], p)
		}
		if len(c.uncommitted[t]) == 0 {
			delete(c.uncommitted, t)
		}
	}
	c.m.Partitions.Set(float64(countOwned(c.owned)))
}

// adjust resumes each assigned partition from the later of the committed
// offset and the store's recorded next offset: records already recorded
// durably (the process died before committing) are not fetched again.
func (c *Consumer) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for t, ps := range offsets {
		for p, o := range ps {
			next, ok, err := c.store.NextOffset(ctx, storage.Partition{Topic: t, Partition: p})
			if err != nil {
				return nil, fmt.Errorf("read recorded offset of %s/%d: %w", t, p, err)
			}
			if committed := o.EpochOffset().Offset; ok && next > committed {
				c.log.Info("resuming partition from the store's recorded offset", "topic", t, "partition", p, "committed", committed, "recorded", next)
				ps[p] = kgo.NewOffset().At(next)
				c.mu.Lock() // durable already: commit it with the next commit
				if c.uncommitted[t] == nil {
					c.uncommitted[t] = map[int32]kgo.EpochOffset{}
				}
				c.uncommitted[t][p] = kgo.EpochOffset{Epoch: -1, Offset: next}
				c.mu.Unlock()
			}
		}
	}
	return offsets, nil
}

func countParts(m map[string][]int32) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

// expireLoop deletes terminal sagas past the retention from the owned
// partitions, with tombstones in their changelog.
func (c *Consumer) expireLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.RetentionCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.expire(ctx, time.Now().Add(-c.cfg.Retention))
	}
}

func (c *Consumer) expire(ctx context.Context, cutoff time.Time) {
	for _, p := range c.eng.Owned() {
		for ctx.Err() == nil {
			gone, err := c.store.Expire(ctx, p, cutoff, 5000)
			if err != nil {
				c.log.Error("expiring terminal sagas failed", "partition", p.String(), "err", err)
				break
			}
			for _, s := range gone {
				c.cfg.Changelog.AppendTombstone(s)
			}
			c.m.Expired.Add(float64(len(gone)))
			if len(gone) < 5000 {
				break
			}
		}
	}
}

func countOwned(m map[string]map[int32]bool) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

func fmtParts(m map[string][]int32) string {
	s := ""
	for t, ps := range m {
		for _, p := range ps {
			if s != "" {
				s += ","
			}
			s += t + "/" + strconv.Itoa(int(p))
		}
	}
	return s
}
