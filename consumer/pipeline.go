package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// batch is one poll's worth of work between "polled" and "committed".
type batch struct {
	fetches kgo.Fetches    // every poll the batch holds (pipeline.gather adds polls to a prepared batch)
	events  []engine.Event // backing store of the first poll's events
	records int            // records polled into the batch
	partial bool           // some partitions were taken out while it was prepared (side records not produced)
	// dropped are the partitions taken out of the batch (dropPartitions):
	// their fetch positions were set back then, and a rewind of the batch
	// leaves them alone — it would raise a position set lower since.
	dropped map[storage.Partition]bool
	work    engine.Batch // the sagas, rejects and next offsets the engine records
	marks   []mark       // the offsets to commit once work is durable
	// Set by Consumer.record, read by the pipeline only after recorded is
	// closed; lag is set by Consumer.mirrorBatch, read only after done is
	// closed.
	start    time.Time // when its store transaction began
	recorded chan struct{}
	done     chan struct{}
	res      []storage.StartResult
	err      error                       // the batch was not recorded (store): all of it is fetched again
	lag      map[storage.Partition]error // recorded, but these partitions' changelog records were not acknowledged
}

type mark struct {
	topic     string
	partition int32
	at        kgo.EpochOffset
}

// pipeline is the state of the poll loop, owned by Run's goroutine: three
// batch slots used in turn, the batch whose store transaction runs
// (recording), the recorded one whose changelog acks are awaited
// (mirroring), and the back-off after a failed batch. See "The pipeline's
// order" in docs/architecture.md.
type pipeline struct {
	c         *Consumer
	ctx       context.Context
	slots     [3]batch
	cur       int
	prepared  *batch // polled and prepared, not yet recording (take)
	recording *batch
	mirroring *batch
	backoff   time.Duration
}

// take returns the next batch slot, as the prepared batch: the stages ahead
// of it take their lagging partitions out of it (settle), and fail rewinds
// it.
func (p *pipeline) take() *batch {
	p.prepared = &p.slots[p.cur]
	p.cur = (p.cur + 1) % len(p.slots)
	return p.prepared
}

// startRecording moves the prepared batch to the recorder.
func (p *pipeline) startRecording() {
	b := p.prepared
	p.prepared, p.recording = nil, b
	go p.c.record(p.ctx, b)
}

// loop polls and records batches as a three-stage pipeline: while batch
// N's changelog acks are awaited, batch N+1's storage transaction (and its
// fsync) runs, and batch N+2 is polled, routed, transformed and
// dead-lettered, growing with every poll that comes before the two ahead
// of it are done (gather). Then the pipeline advances: N is settled (its
// offsets committed), N+1 is mirrored, N+2 recorded. Rebalances are
// allowed only with nothing in flight: between batches when idle, and at
// once when a rebalance is waiting.
func (c *Consumer) loop(ctx context.Context) {
	p := &pipeline{c: c, ctx: ctx, backoff: 100 * time.Millisecond}
	for ctx.Err() == nil {
		if q, _ := c.eng.Stats(); q >= c.cfg.HighWater {
			if !p.drainOrFail() {
				continue
			}
			p.allow()
			if err := c.backpressure(ctx); err != nil {
				break
			}
		}
		fetches := p.poll()
		if fetches.IsClientClosed() {
			break
		}
		c.noteFetchErrors(fetches)
		if fetches.NumRecords() == 0 {
			if !p.drainOrFail() {
				continue
			}
			c.commitAsync(ctx)
			p.allow()
			continue
		}
		// The batch in hand is finished even when shutdown begins; only the
		// dead-letter retries stop on ctx.
		next := p.take()
		prepErr := c.prepare(ctx, next, fetches)
		if prepErr == nil && !next.partial {
			prepErr = p.gather(next)
		}
		if failed := p.advance(); failed != nil {
			p.fail(failed.err, failed, next) // next was fetched past a batch that is not recorded
			continue
		}
		if prepErr != nil {
			p.drain() // nothing is being recorded: the batch being mirrored is settled
			p.fail(prepErr, next)
			continue
		}
		p.backoff = 100 * time.Millisecond
		p.startRecording()
		if c.rebalance.Load() {
			if !p.drainOrFail() {
				continue
			}
			p.allow()
		}
	}
	if failed := p.drain(); failed != nil {
		c.rewind(failed) // not committed; the next owner fetches it again
	}
}

// inFlight returns what the pipeline waits for before it can advance: the
// recording batch's transaction and the mirroring batch's acks.
func (p *pipeline) inFlight() []chan struct{} {
	var chs []chan struct{}
	if p.recording != nil {
		chs = append(chs, p.recording.recorded)
	}
	if p.mirroring != nil {
		chs = append(chs, p.mirroring.done)
	}
	return chs
}

// canAdvance reports whether nothing in flight is still awaited.
func (p *pipeline) canAdvance() bool {
	for _, ch := range p.inFlight() {
		select {
		case <-ch:
		default:
			return false
		}
	}
	return true
}

// gather adds to the prepared batch next what the client fetches while the
// batches in flight are being recorded and mirrored, until both are done
// (or next holds MaxPollRecords, a rebalance waits, back-pressure applies,
// or shutdown begins). The client buffers one fetch per broker and sends
// the next fetch request only once the buffered one is polled: taken at
// once, a record waits for the stage in flight before its own recording,
// not for a whole recording more. It
// stops at the first poll whose side records could not all be produced
// (those partitions are out of next and fetched again).
func (p *pipeline) gather(next *batch) error {
	c := p.c
	for !p.canAdvance() && p.ctx.Err() == nil && !c.rebalance.Load() {
		room := c.cfg.MaxPollRecords - next.records
		if q, _ := c.eng.Stats(); room <= 0 || q >= c.cfg.HighWater {
			return nil
		}
		more := p.pollUpTo(room)
		if more.IsClientClosed() {
			return nil
		}
		c.noteFetchErrors(more)
		if more.NumRecords() == 0 {
			return nil // the batches in flight are done (or the poll's bound passed): advance
		}
		if err := c.add(p.ctx, next, more); err != nil || next.partial {
			return err
		}
	}
	return nil
}

// poll fetches the next records. The poll is bounded (1s), so failed
// commits are retried even when idle; it also returns as soon as the
// batches in flight can advance, so a durable batch is committed without
// waiting for new records.
func (p *pipeline) poll() kgo.Fetches { return p.pollUpTo(p.c.cfg.MaxPollRecords) }

// pollUpTo is poll for at most max records.
func (p *pipeline) pollUpTo(max int) kgo.Fetches {
	pctx, cancel := context.WithTimeout(p.ctx, idleCommitEvery)
	defer cancel()
	if chs := p.inFlight(); len(chs) > 0 {
		go func() {
			for _, ch := range chs {
				select {
				case <-ch:
				case <-pctx.Done():
					return
				}
			}
			cancel()
		}()
	}
	return p.c.cl.PollRecords(pctx, max)
}

// advance moves the pipeline on by one stage: it waits for the recording
// batch's transaction and the mirroring batch's acks, settles the
// mirroring batch (behind it: the recording batch, then the prepared one),
// and starts mirroring the recorded batch. The caller then starts the
// prepared batch's transaction. If the recording batch's transaction
// failed, advance returns it, with nothing in flight: the caller rewinds
// it and the prepared batch.
func (p *pipeline) advance() *batch {
	r := p.recording
	p.recording = nil
	if r != nil {
		<-r.recorded
	}
	p.settle(r)
	if r == nil {
		return nil
	}
	if r.err != nil {
		return r
	}
	p.mirroring = r
	go p.c.mirrorBatch(p.ctx, r)
	return nil
}

// settle waits for the mirroring batch's changelog acks and commits it.
// Partitions of it whose changelog records were not acknowledged are
// neither committed nor kept: they are fetched again from the batch's first
// record, and taken out of the batches behind it (recorded, the given
// one, or prepared after it, so fetched past them), latest first, so that
// the last and lowest position set is the mirroring batch's.
func (p *pipeline) settle(recorded *batch) {
	behind := []*batch{recorded, p.prepared}
	b := p.mirroring
	if b == nil {
		return
	}
	p.mirroring = nil
	<-b.done
	if len(b.lag) > 0 {
		for part, err := range b.lag {
			p.c.log.Error("changelog records not acknowledged; the partition is fetched again", "partition", part.String(), "err", err)
		}
		p.c.m.BatchErrors.Inc()
		// The records to re-append run past b: the recorded batch behind it
		// stored sagas of these partitions too, and the first batch fetched
		// again may stop short of them (MaxPollRecords). Every batch fetched
		// again below the highest next offset re-appends what it matches,
		// not only the first one whose flush is acknowledged.
		p.c.reMu.Lock()
		for _, nb := range append([]*batch{b}, behind...) {
			if nb == nil {
				continue
			}
			for _, o := range nb.work.Offsets {
				if _, bad := b.lag[o.TopicPartition()]; bad && o.Next > p.c.reappendUntil[o.TopicPartition()] {
					p.c.reappendUntil[o.TopicPartition()] = o.Next
				}
			}
		}
		p.c.reMu.Unlock()
		for i := len(behind) - 1; i >= 0; i-- {
			if nb := behind[i]; nb != nil && nb != b {
				p.c.dropPartitions(nb, b.lag)
			}
		}
		p.c.dropPartitions(b, b.lag) // marks gone; offsets set back to b's first records
	}
	p.c.recorded(b)
	p.c.commitAsync(p.ctx)
}

// drain empties the pipeline but for the prepared batch: it advances,
// then settles the batch that went on to its mirror. It returns the batch
// whose transaction failed, if one did (rewound by the caller).
func (p *pipeline) drain() *batch {
	if failed := p.advance(); failed != nil {
		return failed
	}
	p.settle(nil)
	return nil
}

// drainOrFail drains the pipeline and reports whether everything in it
// was recorded; if not, it rewinds the batch that was not (fail) and the
// loop starts over.
func (p *pipeline) drainOrFail() bool {
	if failed := p.drain(); failed != nil {
		p.fail(failed.err, failed)
		return false
	}
	return true
}

// allow lets a waiting rebalance proceed (nothing is in flight).
func (p *pipeline) allow() {
	if p.recording != nil || p.mirroring != nil {
		panic("consumer: AllowRebalance with a batch in flight (a bug in the pipeline: every path drains it first)")
	}
	p.c.rebalance.Store(false)
	p.c.cl.AllowRebalance()
}

// fail rewinds the given batches so they are fetched again, allows a
// waiting rebalance, and backs off.
func (p *pipeline) fail(err error, bs ...*batch) {
	c := p.c
	c.m.BatchErrors.Inc()
	c.rewind(bs...)
	p.prepared = nil // rewound, if it was prepared
	for _, b := range bs {
		b.fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) > 0 {
				c.stuck(storage.Partition{Topic: fp.Topic, Partition: fp.Partition}, err.Error())
			}
		})
	}
	if errors.Is(err, errStore) {
		c.health.Set(health.Store, err.Error())
	}
	if ok, quiet := c.errLog.Allow("batch"); ok {
		c.log.Error("batch not recorded; rewound to retry it", "err", err, "retry_in", p.backoff, "similar_lines_suppressed", quiet)
	}
	p.allow()
	t := time.NewTimer(p.backoff)
	select {
	case <-p.ctx.Done():
	case <-t.C:
	}
	t.Stop()
	p.backoff = min(p.backoff*2, 5*time.Second)
}

// prepare turns one poll into a batch: every record is routed and
// transformed (engine.Prepare), rejects and oversized records go to the
// dead-letter topic (awaited).
func (c *Consumer) prepare(ctx context.Context, b *batch, fetches kgo.Fetches) error {
	n := fetches.NumRecords()
	if cap(b.events) < n {
		b.events = make([]engine.Event, n)
	}
	b.work.Reset()
	b.fetches, b.marks, b.records, b.partial, b.dropped = nil, b.marks[:0], 0, false, nil
	b.recorded, b.done, b.res, b.err, b.lag = make(chan struct{}), make(chan struct{}), nil, nil, nil
	return c.addTo(ctx, b, fetches, b.events[:n])
}

// add prepares the records of one more poll into the prepared batch b (see
// pipeline.gather). A partition may then appear in b more than once: its
// offsets and marks only rise, and a partition taken out of b is set back
// to its first record in b.
func (c *Consumer) add(ctx context.Context, b *batch, fetches kgo.Fetches) error {
	return c.addTo(ctx, b, fetches, make([]engine.Event, fetches.NumRecords())) // b's earlier events stay where they are
}

func (c *Consumer) addTo(ctx context.Context, b *batch, fetches kgo.Fetches, events []engine.Event) error {
	b.fetches = append(b.fetches[:len(b.fetches):len(b.fetches)], fetches...)
	b.records += len(events)
	r0, f0, s0 := len(b.work.Rejects), len(b.work.Forward), len(b.work.Signals) // what earlier polls of b produced already
	var (
		i   int
		bad []recordReject
		hs  headerSlab
	)
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 || c.isRefused(storage.Partition{Topic: p.Topic, Partition: p.Partition}) {
			return // a refused partition is paused; records fetched before are neither handled nor committed
		}
		synthetic, starts := c.synthetic[p.Topic], p.Topic == c.keysTopic
		awaited, triggered := c.eng.Awaits(p.Topic), synthetic || c.triggered[p.Topic]
		for _, r := range p.Records {
			if len(r.Value) > c.cfg.MaxEventBytes {
				bad = append(bad, recordReject{r, ReasonOversized, fmt.Sprintf("value of %d bytes exceeds the limit of %d", len(r.Value), c.cfg.MaxEventBytes)})
				continue
			}
			ev := &events[i]
			i++
			*ev = engine.Event{Source: engine.SourceKafka, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Key: r.Key, Value: r.Value, Timestamp: r.Timestamp, Headers: hs.headers(r.Headers)}
			switch {
			case starts:
				c.eng.PrepareStart(&b.work, ev)
			case awaited && !triggered: // only awaited: no trigger to miss
				c.eng.PrepareSignals(&b.work, ev)
			case awaited:
				c.eng.PrepareSignals(&b.work, ev)
				c.eng.Prepare(&b.work, ev, synthetic)
			default:
				c.eng.Prepare(&b.work, ev, synthetic)
			}
		}
		last := p.Records[len(p.Records)-1]
		b.work.Offsets = append(b.work.Offsets, storage.Offset{Topic: p.Topic, Partition: p.Partition, Next: last.Offset + 1})
		b.marks = append(b.marks, mark{p.Topic, p.Partition, kgo.EpochOffset{Epoch: last.LeaderEpoch, Offset: last.Offset + 1}})
		c.m.RecordsConsumed.WithLabelValues(p.Topic).Add(float64(len(p.Records)))
	})
	if len(b.work.Rejects) == r0 && len(bad) == 0 && len(b.work.Forward) == f0 && len(b.work.Signals) == s0 {
		return nil
	}
	failed := c.produceSide(ctx, b.work.Rejects[r0:], bad, b.work.Forward[f0:], b.work.Signals[s0:])
	if len(failed) == 0 {
		return nil
	}
	b.partial = true
	// The dead letters or keyed starts of some partitions could not be
	// produced: those partitions are taken out of the batch and fetched
	// again; the others go on.
	var errs []error
	for p, err := range failed {
		c.log.Error("dead letters or keyed starts not produced; the partition is fetched again", "partition", p.String(), "err", err)
		errs = append(errs, err)
	}
	if c.dropPartitions(b, failed) {
		return errors.Join(errs...) // nothing left: the pipeline rewinds and backs off
	}
	c.m.BatchErrors.Inc()
	return nil
}

// dropPartitions takes the given partitions out of a prepared batch and
// sets their fetch positions back to the batch's first record of each, so
// they are fetched again. It reports whether the batch is left empty.
func (c *Consumer) dropPartitions(b *batch, parts map[storage.Partition]error) (empty bool) {
	keepSagas, keepRes := b.work.Sagas[:0], b.res[:0] // res, once recorded, is in the order of Sagas
	for j, s := range b.work.Sagas {
		if _, drop := parts[s.Source.TopicPartition()]; !drop {
			keepSagas = append(keepSagas, s)
			if j < len(b.res) {
				keepRes = append(keepRes, b.res[j])
			}
		} else if j < len(b.res) && b.res[j].Created {
			// Recorded, so started: counted here, as recorded would have
			// (fetched again, its record is a re-delivery).
			c.m.SagasStarted.WithLabelValues(s.Name).Inc()
		}
	}
	clear(b.work.Sagas[len(keepSagas):])
	b.work.Sagas = keepSagas
	if b.res != nil {
		b.res = keepRes
	}
	keepMeta := b.work.Meta[:0]
	for _, m := range b.work.Meta {
		if _, drop := parts[m.Partition]; !drop {
			keepMeta = append(keepMeta, m)
		}
	}
	b.work.Meta = keepMeta
	b.work.DropAwaits(func(p storage.Partition) bool { _, drop := parts[p]; return drop })
	keepOffsets := b.work.Offsets[:0]
	for _, o := range b.work.Offsets {
		if _, drop := parts[o.TopicPartition()]; !drop {
			keepOffsets = append(keepOffsets, o)
		}
	}
	b.work.Offsets = keepOffsets
	keepMarks := b.marks[:0]
	for _, mk := range b.marks {
		if _, drop := parts[storage.Partition{Topic: mk.topic, Partition: mk.partition}]; !drop {
			keepMarks = append(keepMarks, mk)
		}
	}
	b.marks = keepMarks
	for p, err := range parts {
		c.stuck(p, err.Error())
	}
	c.cl.SetOffsets(firstRecords([]*batch{b}, func(p storage.Partition) bool { _, drop := parts[p]; return drop }))
	if b.dropped == nil {
		b.dropped = map[storage.Partition]bool{}
	}
	for p := range parts {
		b.dropped[p] = true
	}
	return len(b.work.Offsets) == 0
}

// firstRecords returns, for each partition of the given batches that
// which selects, the offset of its first record in them: where it is
// fetched again from. A batch may hold several polls of a partition
// (pipeline.gather), so this is the least of their first offsets. A
// partition already taken out of a batch is not set back by that batch
// again: its position was set back when it was taken out, and may have
// been set lower since (a batch before it whose changelog records were
// not acknowledged); setting it to this batch's first record would skip
// the records in between.
func firstRecords(bs []*batch, which func(storage.Partition) bool) map[string]map[int32]kgo.EpochOffset {
	to := map[string]map[int32]kgo.EpochOffset{}
	for _, b := range bs {
		b.fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if p := (storage.Partition{Topic: fp.Topic, Partition: fp.Partition}); len(fp.Records) == 0 || b.dropped[p] || !which(p) {
				return
			}
			if to[fp.Topic] == nil {
				to[fp.Topic] = map[int32]kgo.EpochOffset{}
			}
			if cur, ok := to[fp.Topic][fp.Partition]; !ok || fp.Records[0].Offset < cur.Offset {
				to[fp.Topic][fp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: fp.Records[0].Offset}
			}
		})
	}
	return to
}

// record is the batch recorder (one at a time; the pipeline waits for
// recorded before it mirrors or rewinds the batch): step 3 of the commit
// protocol, its first half — the engine records the batch in one durable
// transaction (appending its new sagas to the changelog as it goes).
func (c *Consumer) record(ctx context.Context, b *batch) {
	defer close(b.recorded)
	b.start = time.Now()
	c.recordingSince.Store(b.start.UnixNano())
	defer c.recordingSince.Store(0)
	if b.res, b.err = c.eng.Record(context.WithoutCancel(ctx), &b.work); b.err != nil {
		b.err = fmt.Errorf("%w: %w", errStore, b.err)
		return
	}
	c.health.Clear(health.Store)
	c.m.StoreLatency.Observe(time.Since(b.start).Seconds())
	c.observeRecorded(b)
}

// mirrorBatch is the batch mirror (one at a time, in batch order, each
// started once the batch ahead of it is settled): step 3's second half —
// the changelog takes the batch's next offsets and flushes its partitions
// (acks awaited). The batch in hand is finished even when shutdown begins:
// its acks are awaited (bounded by ChangelogFlushTimeout), so its offsets
// are committed before the member leaves the group.
func (c *Consumer) mirrorBatch(ctx context.Context, b *batch) {
	defer close(b.done)
	c.mirroringSince.Store(time.Now().UnixNano()) // since the mirror began: the loop may have been held (dead letters) between the two
	defer c.mirroringSince.Store(0)
	b.lag = c.mirror(context.WithoutCancel(ctx), b)
}

// idleCommitEvery bounds a poll, so an idle member (or one paused by
// back-pressure) still commits, and retries failed commits, this often.
const idleCommitEvery = time.Second

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
	committed := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			// What was durable before the pause, once the commit before it
			// answered: as often as an idle loop commits (a failing
			// coordinator is not asked 500 times a second).
			if now.Sub(committed) >= idleCommitEvery {
				committed = now
				c.commitAsync(ctx)
			}
			if q, _ := c.eng.Stats(); q <= c.cfg.LowWater {
				c.log.Info("resuming fetches", "pending", q)
				return nil
			}
		}
	}
}

// headerSlab hands out the headers of a poll's events from shared chunks
// (one allocation per chunk, not one per record). A chunk is never reused:
// an event's headers stay what they were as long as they are referenced.
type headerSlab []engine.Header

const headerChunk = 1024

func (s *headerSlab) headers(hs []kgo.RecordHeader) []engine.Header {
	if len(hs) == 0 {
		return nil
	}
	if cap(*s)-len(*s) < len(hs) {
		*s = make([]engine.Header, 0, max(headerChunk, len(hs)))
	}
	n := len(*s)
	for _, h := range hs {
		*s = append(*s, engine.Header{Key: h.Key, Value: h.Value})
	}
	return (*s)[n:len(*s):len(*s)]
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
