package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/storage"
)

// ChangelogTopic names the changelog of a source topic for a group: one
// compacted topic per source topic, with the same partition count, so
// source partition N's state lives in changelog partition N.
func ChangelogTopic(group, topic string) string { return group + "-changelog-" + topic }

// Changelog mirrors every state change of the owned partitions to their
// changelog partitions (the record format is storage's, see
// storage/changelog.go): saga records keyed by saga, the next offset, meta
// records, and tombstones for expired sagas. It implements
// engine.Changelog.
//
// Appends are coalesced: a key's latest value replaces an unwritten older
// one, and the pending values are produced every FlushInterval (the
// changelog is compacted by key, so only the latest state matters). A saga
// that starts and ends within the interval costs one record, not one per
// transition. Flush produces what is pending for some partitions at once and
// waits for the acks. Safe for concurrent use.
type Changelog struct {
	group string
	cl    *kgo.Client // producer, manual partitioner
	log   *slog.Logger
	m     *Metrics

	// order is held by a taker (the flusher, Flush, Close) from taking
	// pending records until the producer has them, so records reach a
	// partition in the order they were taken (taken under mu). A channel of
	// one, so that a Flush gives up waiting for it when its context ends.
	// Lock order: order, then mu.
	order chan struct{}
	mu    sync.Mutex
	cond  *sync.Cond
	parts map[storage.Partition]*clPart
	stop  chan struct{}
	done  chan struct{}

	// A restore hands the store up to applyRecords records, or applyBytes
	// of them, in one call (restoreApplyRecords, restoreApplyBytes; tests
	// set less).
	applyRecords, applyBytes int
}

type clPart struct {
	pending         map[string]pendingVal // key -> latest value, not yet produced
	appended, acked uint64
	lastOffset      int64 // last acked changelog offset, -1 if none
	err             error // sticky: a record of this partition was not written
}

// FlushInterval is how often coalesced changelog appends are produced.
const FlushInterval = 10 * time.Millisecond

// NewChangelog returns the changelog writer of a group: pass it as
// engine.Config.Changelog (New takes it from the engine), and close it after
// the consumer and the engine have stopped (the member package does both).
func NewChangelog(group string, opts []kgo.Opt, log *slog.Logger, m *Metrics) (*Changelog, error) {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(time.Millisecond),
		kgo.MaxBufferedRecords(1<<20),
	)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: changelog client: %w", err)
	}
	c := &Changelog{group: group, cl: cl, log: log, m: m, parts: map[storage.Partition]*clPart{},
		stop: make(chan struct{}), done: make(chan struct{}), order: make(chan struct{}, 1),
		applyRecords: restoreApplyRecords, applyBytes: restoreApplyBytes}
	c.cond = sync.NewCond(&c.mu)
	go c.flusher()
	return c, nil
}

// Close writes what is pending (bounded to 10s) and stops the producer.
func (c *Changelog) Close() {
	close(c.stop)
	<-c.done
	_, _ = c.takeAndProduce(context.Background(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.cl.Flush(ctx)
	c.cl.Close()
}

func (c *Changelog) flusher() {
	defer close(c.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		_, _ = c.takeAndProduce(context.Background(), nil)
	}
}

// takeAndProduce takes the pending records of the given partitions (all
// when none are given) and hands them to the producer, holding the order
// lock throughout: a take made after this one is produced after it. It
// returns, for each given partition, how many records had been appended
// to it once taken (what a Flush waits to see acknowledged), or ctx's
// error if ctx ended while another taker held the order lock (nothing was
// taken: the records stay pending, and the flusher produces them).
func (c *Changelog) takeAndProduce(ctx context.Context, ps []storage.Partition) (map[storage.Partition]uint64, error) {
	select {
	case c.order <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-c.order }()
	c.mu.Lock()
	var recs []pendingRec
	var targets map[storage.Partition]uint64
	if len(ps) == 0 {
		for p := range c.parts {
			recs = c.takePendingLocked(p, recs)
		}
	} else {
		targets = make(map[storage.Partition]uint64, len(ps))
		for _, p := range ps {
			recs = c.takePendingLocked(p, recs)
			targets[p] = c.part(p).appended
		}
	}
	c.mu.Unlock()
	c.produce(recs) // outside mu: a full producer buffer blocks, and appends go on meanwhile
	return targets, nil
}

func (c *Changelog) part(p storage.Partition) *clPart {
	cp := c.parts[p]
	if cp == nil {
		cp = &clPart{lastOffset: -1, pending: map[string]pendingVal{}}
		c.parts[p] = cp
	}
	return cp
}

// pendingVal is a key's latest value (nil: a tombstone) with the key's
// bytes as add was given them: the record's key, not a copy.
type pendingVal struct{ key, value []byte }

// add queues a key's latest value; an unwritten older value is replaced.
// The key's bytes become the record's: the caller gives up the slice.
func (c *Changelog) add(p storage.Partition, key, value []byte) {
	c.mu.Lock()
	c.part(p).pending[string(key)] = pendingVal{key, value}
	c.mu.Unlock()
}

type pendingRec struct {
	p   storage.Partition
	rec *kgo.Record
}

// takePendingLocked moves p's pending values to recs, counting them as
// appended; the caller produces them (without holding c.mu, holding
// c.order: takeAndProduce).
func (c *Changelog) takePendingLocked(p storage.Partition, recs []pendingRec) []pendingRec {
	cp := c.part(p)
	if len(cp.pending) == 0 {
		return recs
	}
	topic := ChangelogTopic(c.group, p.Topic)
	slab := make([]kgo.Record, len(cp.pending)) // the records in one allocation: they are produced and acknowledged together
	// Tombstones first: a saga that expired in this interval may have freed
	// an idempotency key that a saga started in the same interval took. A
	// restore applies records in changelog order, so the tombstone must
	// come before the record of the saga that took the key, or the restored
	// store would leave that saga without it (the expired one still holding
	// it when the new one is applied). Records of one key are one entry
	// here, so no other order matters.
	for _, tombstones := range []bool{true, false} {
		for _, v := range cp.pending {
			if (v.value == nil) != tombstones {
				continue
			}
			cp.appended++
			r := &slab[0]
			slab = slab[1:]
			*r = kgo.Record{Topic: topic, Partition: p.Partition, Key: v.key, Value: v.value}
			recs = append(recs, pendingRec{p, r})
		}
	}
	cp.pending = make(map[string]pendingVal, len(cp.pending))
	return recs
}

func (c *Changelog) produce(recs []pendingRec) {
	for _, pr := range recs {
		c.produceOne(pr.p, pr.rec)
	}
}

func (c *Changelog) produceOne(p storage.Partition, r *kgo.Record) {
	c.cl.Produce(context.Background(), r, func(r *kgo.Record, err error) {
		c.mu.Lock()
		cp := c.part(p)
		cp.acked++
		if err != nil {
			if cp.err == nil {
				cp.err = err
			}
			c.log.Error("changelog write failed", "partition", p.String(), "err", err)
		} else if r.Offset > cp.lastOffset {
			cp.lastOffset = r.Offset
		}
		c.mu.Unlock()
		c.cond.Broadcast()
	})
	c.m.ChangelogRecords.Inc()
}

// Append mirrors a saga's recorded state (engine.Changelog).
func (c *Changelog) Append(s *storage.Saga) {
	c.add(s.Source.TopicPartition(), storage.ChangeKey(s), storage.TakeRecord(s)) // the store's record of this state: not encoded again
}

// AppendNext mirrors a partition's next offset.
func (c *Changelog) AppendNext(p storage.Partition, next int64) {
	c.add(p, append([]byte(nil), storage.NextOffsetKey...), storage.EncodeNext(next)) // add keeps the key: not the shared variable
}

// AppendMeta mirrors a partition's meta record (storage.PutMeta).
func (c *Changelog) AppendMeta(p storage.Partition, key string, value []byte) {
	c.add(p, storage.MetaKey(key), value)
}

// AppendTombstone removes an expired saga from the changelog.
func (c *Changelog) AppendTombstone(s *storage.Saga) {
	c.add(s.Source.TopicPartition(), storage.ChangeKey(s), nil)
}

// Flush waits until everything appended so far for the given partitions is
// acknowledged (acks=all), and reports a failed write since the last flush.
// The error is a *FlushError naming each partition that failed or was not
// acknowledged before ctx ended.
func (c *Changelog) Flush(ctx context.Context, ps ...storage.Partition) error {
	if len(ps) == 0 {
		return nil
	}
	targets, err := c.takeAndProduce(ctx, ps)
	if err != nil { // another taker is stuck producing (a full producer buffer): not acknowledged
		fe := &FlushError{Partitions: map[storage.Partition]error{}}
		for _, p := range ps {
			fe.Partitions[p] = fmt.Errorf("changelog flush of %s: not produced: %w", p, err)
		}
		return fe
	}
	stop := context.AfterFunc(ctx, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	var fe *FlushError
	fail := func(p storage.Partition, err error) {
		if fe == nil {
			fe = &FlushError{Partitions: map[storage.Partition]error{}}
		}
		fe.Partitions[p] = err
	}
	for p, target := range targets {
		cp := c.part(p)
		for cp.acked < target && ctx.Err() == nil {
			c.cond.Wait()
		}
		switch {
		case cp.acked < target:
			fail(p, fmt.Errorf("changelog flush of %s: not acknowledged: %w", p, ctx.Err()))
		case cp.err != nil:
			fail(p, fmt.Errorf("changelog of %s: %w", p, cp.err))
			cp.err = nil
		}
	}
	if fe == nil {
		return nil
	}
	return fe
}

// FlushError names the partitions whose changelog records were not all
// acknowledged: the others' records are.
type FlushError struct {
	Partitions map[storage.Partition]error
}

func (e *FlushError) Error() string {
	errs := make([]error, 0, len(e.Partitions))
	for _, err := range e.Partitions {
		errs = append(errs, err)
	}
	return errors.Join(errs...).Error()
}

// Next returns the changelog offset after the last acknowledged record of
// p (0 if none): everything below it is reflected in the local store.
func (c *Changelog) Next(p storage.Partition) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.part(p).lastOffset + 1
}

// Forget drops a partition's bookkeeping (after it was released).
func (c *Changelog) Forget(p storage.Partition) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.parts, p)
}

// Restore brings the local store up to date with p's changelog: from the
// changelog offset the store has recorded to the end of the changelog
// partition, one Store.Apply call per up to restoreApplyRecords records or
// restoreApplyBytes of them, several fetches (the store writes a call in
// transactions of a few thousand records, so that the partitions running
// here write between them). It returns how many records were read.
func (c *Changelog) Restore(ctx context.Context, opts []kgo.Opt, store storage.Store, p storage.Partition) (int, error) {
	topic := ChangelogTopic(c.group, p.Topic)
	from, err := store.ChangelogNext(ctx, p)
	if err != nil {
		return 0, err
	}
	ends, err := kadm.NewClient(c.cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("changelog %s: end offsets: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, p.Partition)
	if !ok || end.Err != nil {
		return 0, fmt.Errorf("changelog %s/%d: end offset: %v", topic, p.Partition, end.Err)
	}
	c.mu.Lock()
	if cp := c.part(p); end.Offset-1 > cp.lastOffset {
		cp.lastOffset = end.Offset - 1
	}
	c.mu.Unlock()
	c.log.Debug("restoring partition from the changelog", "partition", p.String(), "from", from, "end", end.Offset)
	if from >= end.Offset {
		return 0, nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), opts...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p.Partition: kgo.NewOffset().At(from)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), // compacted below from: start at what is left
		kgo.FetchMaxBytes(16<<20),
	)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n := 0
	var changes []storage.Change
	var last int64 = -1
	held := 0 // bytes of the records in changes
	// Several fetches go into one Apply call, up to its bounds: a saga's
	// later record in the same call replaces its earlier ones, which are
	// then not written at all.
	apply := func() error {
		if _, err := store.Apply(ctx, p, changes, last+1); err != nil {
			return fmt.Errorf("changelog %s/%d offset %d: %w", topic, p.Partition, last, err)
		}
		n += len(changes)
		c.m.RestoredRecords.Add(float64(len(changes)))
		clear(changes)
		changes, held = changes[:0], 0
		return nil
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return n, fmt.Errorf("changelog %s/%d: %w", topic, p.Partition, ferr)
		}
		var aerr error
		fs.EachRecord(func(r *kgo.Record) {
			if aerr != nil {
				return
			}
			changes = append(changes, storage.Change{Key: r.Key, Value: r.Value})
			held += len(r.Key) + len(r.Value)
			last = r.Offset
			if len(changes) >= c.applyRecords || held >= c.applyBytes {
				aerr = apply()
			}
		})
		if aerr != nil {
			return n, aerr
		}
		done := last >= end.Offset-1
		if done && len(changes) > 0 {
			if err := apply(); err != nil {
				return n, err
			}
		}
		if done {
			return n, nil
		}
	}
}

// A restore hands the store up to this many changelog records, or bytes
// of them, at once (Store.Apply): what one partition's restore holds in
// memory.
const (
	restoreApplyRecords = 65536
	restoreApplyBytes   = 8 << 20
)
