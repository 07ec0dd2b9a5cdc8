package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// The reply loop (docs/architecture.md, "Steps that talk over Kafka"). The
// replies to the sagas of partition N of a topic come back on partition N
// of its replies topic (ReplyTopic). Kafka's group assignment does not
// co-partition topics, so the owner of saga partition N reads reply
// partition N itself, with a direct consumer: added by the assignment
// callback once the partition is restored and acquired, removed on revoke
// or loss before it is released. Each reply is checked (engine.CheckReply)
// and handed to its saga (engine.DeliverReply); the offset of the first
// reply not yet handled is recorded as the saga partition's meta record
// engine.RepliesMetaKey (mirrored to its changelog), so the next owner
// reads on from there. A reply read twice finds its saga no longer waiting
// for it: it is ignored.

const (
	replyPauseAt  = 20000 // replies in hand per partition before its fetching pauses
	replyResumeAt = 10000
)

type replyLoop struct {
	c      *Consumer
	cl     *kgo.Client
	source map[string]string // replies topic -> saga topic

	// wmu orders watermark writes with remove (a removed partition's
	// watermark is written once more, then never again).
	wmu sync.Mutex
	mu  sync.Mutex
	// parts are the saga partitions whose replies are read, by replies
	// topic and partition.
	parts map[storage.Partition]*replyPart
}

type replyPart struct {
	saga     storage.Partition
	next     int64         // the offset after the last reply fetched (-1: none yet)
	pending  []*replyEntry // replies in hand, in offset order
	recorded int64         // the watermark recorded (-1: none)
	paused   bool
}

type replyEntry struct {
	off  int64
	done bool
}

func (c *Consumer) newReplyLoop() (*replyLoop, error) {
	srcs := replySources(c.eng.Routes(), &c.cfg)
	if len(srcs) == 0 {
		return nil, nil
	}
	rl := &replyLoop{c: c, source: map[string]string{}, parts: map[storage.Partition]*replyPart{}}
	for _, t := range srcs {
		rl.source[ReplyTopic(c.cfg.Group, t)] = t
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), c.cfg.Client...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), // participants reply in transactions
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(c.cfg.FetchMaxBytes), kgo.FetchMaxPartitionBytes(c.cfg.FetchMaxPartitionBytes),
	)...)
	if err != nil {
		return nil, fmt.Errorf("consumer: replies client: %w", err)
	}
	rl.cl = cl
	return rl, nil
}

// replyTopicOf returns the replies topic of topic's sagas, if they get
// replies.
func (rl *replyLoop) replyTopicOf(topic string) (string, bool) {
	if rl == nil {
		return "", false
	}
	rt := ReplyTopic(rl.c.cfg.Group, topic)
	_, ok := rl.source[rt]
	return rt, ok
}

// add starts reading the replies of saga partition p at the offset its
// store recorded.
func (rl *replyLoop) add(ctx context.Context, p storage.Partition) {
	rt, ok := rl.replyTopicOf(p.Topic)
	if !ok {
		return
	}
	from := kgo.NewOffset().AtStart()
	recorded := int64(-1)
	v, found, err := rl.c.store.GetMeta(ctx, p, engine.RepliesMetaKey)
	if err != nil {
		rl.c.log.Error("reading the reply offset of a partition failed; reading its replies from the start (duplicates are ignored)", "partition", p.String(), "err", err)
	} else if found && len(v) == 8 {
		recorded = int64(binary.BigEndian.Uint64(v))
		from = kgo.NewOffset().At(recorded)
	}
	rp := storage.Partition{Topic: rt, Partition: p.Partition}
	rl.mu.Lock()
	rl.parts[rp] = &replyPart{saga: p, next: -1, recorded: recorded}
	rl.mu.Unlock()
	rl.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{rt: {p.Partition: from}})
	rl.c.log.Debug("reading replies", "partition", p.String(), "replies", rp.String(), "from", recorded)
}

// remove stops reading the replies of saga partition p and, with record
// set (a revoke: p is still this member's), records how far they were
// handled. Deliveries still in hand are the next owner's to read again.
func (rl *replyLoop) remove(ctx context.Context, p storage.Partition, record bool) {
	rt, ok := rl.replyTopicOf(p.Topic)
	if !ok {
		return
	}
	rp := storage.Partition{Topic: rt, Partition: p.Partition}
	rl.wmu.Lock()
	defer rl.wmu.Unlock()
	rl.cl.RemoveConsumePartitions(map[string][]int32{rt: {p.Partition}})
	rl.mu.Lock()
	part := rl.parts[rp]
	delete(rl.parts, rp)
	var at int64 = -1
	if part != nil {
		at = part.watermark()
	}
	rl.mu.Unlock()
	if record && part != nil && at > part.recorded {
		rl.record(ctx, part.saga, at)
	}
}

// watermark is the offset of the first reply in hand not handled yet, or
// the one after the last fetched; called with rl.mu held. It drops the
// handled replies below it.
func (p *replyPart) watermark() int64 {
	i := 0
	for i < len(p.pending) && p.pending[i].done {
		i++
	}
	p.pending = p.pending[i:]
	if len(p.pending) > 0 {
		return p.pending[0].off
	}
	return p.next
}

func (rl *replyLoop) record(ctx context.Context, p storage.Partition, at int64) bool {
	v := binary.BigEndian.AppendUint64(nil, uint64(at))
	if err := rl.c.store.PutMeta(context.WithoutCancel(ctx), p, engine.RepliesMetaKey, v); err != nil {
		if ok, quiet := rl.c.errLog.Allow("replies"); ok {
			rl.c.log.Warn("recording the reply offset failed (retried; replies are read again at worst)", "partition", p.String(), "err", err, "similar_lines_suppressed", quiet)
		}
		return false
	}
	rl.c.changelog.AppendMeta(p, engine.RepliesMetaKey, v)
	return true
}

// run reads replies until ctx ends.
func (rl *replyLoop) run(ctx context.Context) {
	defer rl.cl.Close()
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fs := rl.cl.PollFetches(pctx)
		cancel()
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				if ok, quiet := rl.c.errLog.Allow("replies-fetch"); ok {
					rl.c.log.Warn("fetching replies failed (the client retries)", "topic", t, "partition", p, "err", err, "similar_lines_suppressed", quiet)
				}
			}
		})
		fs.EachRecord(func(r *kgo.Record) { rl.handle(ctx, r) })
		rl.checkpoint(ctx)
	}
}

// handle checks one reply and hands it to its saga.
func (rl *replyLoop) handle(ctx context.Context, r *kgo.Record) {
	rp := storage.Partition{Topic: r.Topic, Partition: r.Partition}
	rl.mu.Lock()
	part := rl.parts[rp]
	if part == nil || r.Offset < part.next { // removed meanwhile, or fetched again
		rl.mu.Unlock()
		return
	}
	part.next = r.Offset + 1
	en := &replyEntry{off: r.Offset}
	part.pending = append(part.pending, en)
	if !part.paused && len(part.pending) >= replyPauseAt {
		part.paused = true
		rl.cl.PauseFetchPartitions(map[string][]int32{rp.Topic: {rp.Partition}})
	}
	saga := part.saga
	rl.mu.Unlock()

	m := rl.c.m
	ignore := func(reason string) {
		m.RepliesIgnored.WithLabelValues(reason).Inc()
		rl.done(en)
	}
	reply, err := engine.ParseReply(headers(r.Headers), r.Value)
	if err != nil {
		// Not from a participant that follows the protocol (or a producer
		// that wrote to the wrong topic): counted, and said at WARN so the
		// operator finds which record, at most once per 10 s.
		if ok, quiet := rl.c.errLog.Allow("malformed-reply"); ok {
			rl.c.log.Warn("malformed reply ignored", "replies", rp.String(), "offset", r.Offset, "err", err, "similar_lines_suppressed", quiet)
		}
		ignore(engine.IgnoreMalformed)
		return
	}
	why, err := rl.c.eng.CheckReply(ctx, saga, reply)
	if err != nil { // the store: leave it in hand, the next owner (or a restart) reads it again
		rl.c.log.Error("checking a reply failed", "replies", rp.String(), "offset", r.Offset, "err", err)
		return
	}
	if why != "" {
		rl.c.log.Debug("reply ignored", "reason", why, "saga_id", reply.SagaID, "step", reply.Step, "attempt", reply.Attempt)
		ignore(why)
		return
	}
	rl.c.eng.DeliverReply(reply, func(h engine.Handled) {
		switch h {
		case engine.Applied:
			m.RepliesApplied.Inc()
		case engine.Dropped:
			return // not handled: stays in hand
		default:
			m.RepliesIgnored.WithLabelValues(string(h)).Inc()
		}
		rl.done(en)
	})
}

func (rl *replyLoop) done(en *replyEntry) {
	rl.mu.Lock()
	en.done = true
	rl.mu.Unlock()
}

// checkpoint records each partition's watermark when it moved, and resumes
// fetching partitions whose replies in hand went down.
func (rl *replyLoop) checkpoint(ctx context.Context) {
	rl.wmu.Lock()
	defer rl.wmu.Unlock()
	type wm struct {
		part *replyPart
		at   int64
	}
	var todo []wm
	rl.mu.Lock()
	for rp, part := range rl.parts {
		at := part.watermark()
		if at > part.recorded {
			todo = append(todo, wm{part, at})
		}
		if part.paused && len(part.pending) <= replyResumeAt {
			part.paused = false
			rl.cl.ResumeFetchPartitions(map[string][]int32{rp.Topic: {rp.Partition}})
		}
	}
	rl.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	puts := make([]storage.Meta, len(todo)) // one store write for them all
	for i, w := range todo {
		puts[i] = storage.Meta{Partition: w.part.saga, Key: engine.RepliesMetaKey, Value: binary.BigEndian.AppendUint64(nil, uint64(w.at))}
	}
	if err := rl.c.store.Write(context.WithoutCancel(ctx), storage.WriteBatch{Meta: puts}); err != nil {
		if ok, quiet := rl.c.errLog.Allow("replies"); ok {
			rl.c.log.Warn("recording reply offsets failed (retried; replies are read again at worst)", "err", err, "similar_lines_suppressed", quiet)
		}
		return
	}
	rl.mu.Lock()
	for i, w := range todo {
		w.part.recorded = w.at
		rl.c.changelog.AppendMeta(w.part.saga, engine.RepliesMetaKey, puts[i].Value)
	}
	rl.mu.Unlock()
}

// ReplyTopics returns the engine's Config.ReplyTopic for a member of cfg
// with these routes: the replies topic of the topics whose sagas have
// command or await steps, "" for the others.
func ReplyTopics(routes *engine.Routes, cfg Config) func(topic string) string {
	cfg.setDefaults()
	set := map[string]bool{}
	for _, t := range replySources(routes, &cfg) {
		set[t] = true
	}
	group := cfg.Group
	return func(topic string) string {
		if set[topic] {
			return ReplyTopic(group, topic)
		}
		return ""
	}
}
