package consumer

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/storage"
)

// mirror puts a recorded batch into the changelog and waits for the acks
// (bounded by ChangelogFlushTimeout): the new sagas (appended by the engine
// as it recorded them) and each partition's next offset. Only then may the
// batch's offsets be committed. It returns the partitions whose records
// were not acknowledged: they are not committed and are fetched again (the
// store de-duplicates them and they are appended again); the others go on.
func (c *Consumer) mirror(ctx context.Context, b *batch) map[storage.Partition]error {
	cl := c.changelog
	parts := make([]storage.Partition, 0, len(b.work.Offsets))
	for _, o := range b.work.Offsets {
		p := o.TopicPartition()
		if slices.Contains(parts, p) { // a batch of several polls has several offsets of a partition
			cl.AppendNext(p, o.Next)
			continue
		}
		parts = append(parts, p)
		if c.owesReappend(p) { // an earlier write failed, or the store was ahead of the commits: what it holds may be missing
			for j, r := range b.res {
				if !r.Created && b.work.Sagas[j].Source.TopicPartition() == p {
					_ = c.eng.Remirror(ctx, r.ID) // not found: expired meanwhile, nothing to mirror
				}
			}
		}
		cl.AppendNext(p, o.Next)
	}
	fctx, cancel := context.WithTimeout(ctx, c.cfg.ChangelogFlushTimeout)
	defer cancel()
	var failed map[storage.Partition]error
	if err := cl.Flush(fctx, parts...); err != nil {
		var fe *FlushError
		if !errors.As(err, &fe) {
			fe = &FlushError{Partitions: map[storage.Partition]error{}}
			for _, p := range parts {
				fe.Partitions[p] = err
			}
		}
		failed = fe.Partitions
	}
	c.reMu.Lock()
	defer c.reMu.Unlock()
	for _, o := range b.work.Offsets {
		p := o.TopicPartition()
		if _, bad := failed[p]; bad {
			c.reappend[p] = true
			continue
		}
		delete(c.reappend, p)
		if until, gap := c.reappendUntil[p]; gap && o.Next >= until {
			delete(c.reappendUntil, p)
		}
	}
	return failed
}

// owesReappend reports whether p's store may hold sagas its changelog
// lacks (a failed changelog write, or the store ahead of the commits):
// batches re-append what they match there.
func (c *Consumer) owesReappend(p storage.Partition) bool {
	c.reMu.Lock()
	defer c.reMu.Unlock()
	_, gap := c.reappendUntil[p]
	return gap || c.reappend[p]
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
		c.forgetDeadLetters(storage.Partition{Topic: mk.topic, Partition: mk.partition}, mk.at.Offset)
		c.progressedLocked(storage.Partition{Topic: mk.topic, Partition: mk.partition})
		if c.owned[mk.topic][mk.partition] { // never commit what we no longer own
			if c.uncommitted[mk.topic] == nil {
				c.uncommitted[mk.topic] = map[int32]kgo.EpochOffset{}
			}
			c.uncommitted[mk.topic][mk.partition] = mk.at
		}
	}
	c.mu.Unlock()
}

// rewind sets the fetch position of every partition in the given batches
// back to its earliest unrecorded record, so they are fetched again.
func (c *Consumer) rewind(bs ...*batch) {
	c.cl.SetOffsets(firstRecords(bs, func(storage.Partition) bool { return true }))
}

// commit commits the offsets recorded durably since the last commit and
// waits for the answer (shutdown). A failed partition stays for the next
// commit.
func (c *Consumer) commit(ctx context.Context) {
	if toCommit := c.toCommit(); toCommit != nil {
		c.commitOffsets(ctx, c.cl, toCommit)
	}
}

// commitAsync is the pipeline's commit (step 4 of the commit protocol): it
// sends the offsets recorded durably since the last commit and returns
// without waiting for the answer (it still waits, as any commit, while the
// group is joining), so the next poll and batch overlap the round trip.
// Only durable offsets are ever marked, so an answer that comes later
// changes nothing the invariant depends on. franz-go sends commits in the
// order they are issued, and a synchronous commit (revoke, shutdown) waits
// for the ones before it. At most one is in flight: while one is, the
// marks wait for the next call (the next settled batch, the back-pressure
// wait, or the next idle poll: at most a second later). Just before the
// request is sent, partitions this member no longer owns are taken out of
// it (keepOwned): a commit issued before a rebalance and sent after it
// never commits a partition another member owns now.
func (c *Consumer) commitAsync(ctx context.Context) {
	if !c.committing.CompareAndSwap(false, true) {
		return
	}
	toCommit := c.toCommit()
	if toCommit == nil {
		c.committing.Store(false)
		return
	}
	start := time.Now()
	// Bounded, so a revoke or shutdown, which waits for it, is too.
	cctx, cancel := context.WithTimeout(ctx, asyncCommitTimeout)
	cctx = kgo.PreCommitFnContext(cctx, c.keepOwned)
	c.cl.CommitOffsets(cctx, toCommit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		defer c.committing.Store(false)
		defer cancel()
		if err != nil && (ctx.Err() != nil || errors.Is(err, errNoneOwned)) {
			return // shutting down (the final synchronous commit sends them again), or nothing left to commit here
		}
		c.committed(toCommit, resp, err)
		c.m.CommitLatency.Observe(time.Since(start).Seconds())
	})
}

// asyncCommitTimeout bounds one asynchronous commit (a failed one stays
// marked and goes with the next).
const asyncCommitTimeout = 10 * time.Second

var errNoneOwned = errors.New("consumer: no partition of the commit is owned by this member any more")

// keepOwned takes the partitions this member does not own any more out of
// a commit request about to be sent; it refuses the request when none is
// left.
func (c *Consumer) keepOwned(req *kmsg.OffsetCommitRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	topics := req.Topics[:0]
	for _, t := range req.Topics {
		parts := t.Partitions[:0]
		for _, p := range t.Partitions {
			if c.owned[t.Topic][p.Partition] {
				parts = append(parts, p)
			}
		}
		if t.Partitions = parts; len(parts) > 0 {
			topics = append(topics, t)
		}
	}
	if req.Topics = topics; len(topics) == 0 {
		return errNoneOwned
	}
	return nil
}

// toCommit copies the marked offsets (nil: none).
func (c *Consumer) toCommit() map[string]map[int32]kgo.EpochOffset {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.uncommitted) == 0 {
		return nil
	}
	toCommit := make(map[string]map[int32]kgo.EpochOffset, len(c.uncommitted))
	for t, ps := range c.uncommitted {
		toCommit[t] = maps.Clone(ps)
	}
	return toCommit
}

func (c *Consumer) commitOffsets(ctx context.Context, cl *kgo.Client, toCommit map[string]map[int32]kgo.EpochOffset) {
	start := time.Now()
	cl.CommitOffsetsSync(ctx, toCommit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		c.committed(toCommit, resp, err)
	})
	c.m.CommitLatency.Observe(time.Since(start).Seconds())
}

// committed takes a commit's answer: committed partitions are unmarked
// unless a newer offset was marked meanwhile; failed ones stay marked for
// the next commit.
func (c *Consumer) committed(toCommit map[string]map[int32]kgo.EpochOffset, resp *kmsg.OffsetCommitResponse, err error) {
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
}
