package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Dead-letter headers. The record keeps the original key, value and
// headers (unless they had to be trimmed to fit the dead-letter topic, which
// the trim headers say); these are added.
const (
	HeaderReason        = "sagaz.dlq.reason"  // engine.Reason, or "oversized"
	HeaderError         = "sagaz.dlq.error"   // error text (at most 4096 bytes)
	HeaderSaga          = "sagaz.dlq.saga"    // saga of the trigger that rejected it ("" for oversized and no_route)
	HeaderTrigger       = "sagaz.dlq.trigger" // trigger id
	HeaderGroup         = "sagaz.dlq.group"
	HeaderOrigTopic     = "sagaz.original.topic"
	HeaderOrigPartition = "sagaz.original.partition"
	HeaderOrigOffset    = "sagaz.original.offset"
	HeaderOrigTimestamp = "sagaz.original.timestamp" // Unix milliseconds
	// Trim headers: what was left out so the dead letter fits the topic.
	HeaderValueDropped   = "sagaz.dlq.value_dropped"   // "true": the value is not included
	HeaderValueBytes     = "sagaz.dlq.value_bytes"     // the dropped value's length
	HeaderValueSHA256    = "sagaz.dlq.value_sha256"    // hex SHA-256 of the dropped value
	HeaderKeyHashed      = "sagaz.dlq.key_hashed"      // "true": the key is the hex SHA-256 of the original key
	HeaderKeyBytes       = "sagaz.dlq.key_bytes"       // the original key's length
	HeaderHeadersDropped = "sagaz.dlq.headers_dropped" // how many original headers were left out

	ReasonOversized       = "oversized"
	ReasonNoRoute         = string(engine.ReasonNoRoute) // an events-topic record names no trigger of this binary
	maxDeadLetterErrorLen = 4096
	// tooLargeForTopic is the size a dead letter is trimmed to after the
	// broker refused it as too large (a topic with a small max.message.bytes).
	tooLargeForTopic = 64 << 10
)

// DeadLetterReasons lists every reason a dead letter can carry.
var DeadLetterReasons = []string{
	string(engine.ReasonDecode), string(engine.ReasonTransform), string(engine.ReasonPanic), string(engine.ReasonMissingKey),
	string(engine.ReasonContext), string(engine.ReasonNoRoute), string(engine.ReasonBadKey), ReasonOversized,
}

// recordReject is a record rejected before any trigger saw it.
type recordReject struct {
	r      *kgo.Record
	reason string
	err    string
}

// sideRecord is a record a batch produces before it is recorded — a dead
// letter, or a keyed saga's start on the keys topic — with the source
// position it stands for.
type sideRecord struct {
	part   storage.Partition
	offset int64
	kind   string // "dlq:", "start:" or "signal:"
	what   string // the trigger id (dlq), saga (start) or field (signal)
	rec    *kgo.Record
	dead   bool // a dead letter (counted)
}

// dlKey identifies a side record: a source record's position and what it
// is for (a dead letter of a trigger, a start of a saga).
type dlKey struct {
	offset     int64
	kind, what string
}

// produceSide produces the batch's dead letters and keyed starts with
// acks=all and waits for them, retrying with back-off. It returns the
// source partitions whose records could not all be produced (after
// DeadLetterAttempts, or when ctx ends or a rebalance is waiting): the
// caller takes them out of the batch and fetches them again, so a failure
// stops only those partitions and never skips a record.
//
// A record already acknowledged for the same position (the batch was
// fetched again after a rewind) is not produced again, and the metric
// counts each dead letter once.
func (c *Consumer) produceSide(ctx context.Context, rejects []engine.Reject, bad []recordReject, starts []*storage.Saga, signals []*engine.Signal) map[storage.Partition]error {
	dls := make([]sideRecord, 0, len(rejects)+len(bad)+len(starts)+len(signals))
	add := func(dl sideRecord) {
		if _, done := c.dlqSent[dl.part][dlKey{dl.offset, dl.kind, dl.what}]; !done {
			dls = append(dls, dl)
		}
	}
	for _, s := range starts {
		add(sideRecord{part: s.Origin.TopicPartition(), offset: s.Origin.Offset, kind: "start:", what: s.Name, rec: c.startRecord(s)})
	}
	for _, s := range signals {
		add(sideRecord{part: s.Origin.TopicPartition(), offset: s.Origin.Offset, kind: "signal:", what: s.Field, rec: c.signalRecord(s)})
	}
	for _, r := range rejects {
		saga, trigger := "", ""
		if r.Route != nil { // nil: the event reached no trigger (no_route)
			saga, trigger = r.Route.Saga.Name, r.Route.Trigger.ID()
		}
		ev := r.Event
		add(sideRecord{part: storage.Partition{Topic: ev.Topic, Partition: ev.Partition}, offset: ev.Offset, kind: "dlq:", what: trigger, dead: true,
			rec: c.dlqRecord(ev.Key, ev.Value, ev.Headers, ev.Topic, ev.Partition, ev.Offset, ev.Timestamp, string(r.Reason), r.Err.Error(), saga, trigger)})
	}
	for _, b := range bad {
		r := b.r
		add(sideRecord{part: storage.Partition{Topic: r.Topic, Partition: r.Partition}, offset: r.Offset, kind: "dlq:", dead: true,
			rec: c.dlqRecord(r.Key, r.Value, headers(r.Headers), r.Topic, r.Partition, r.Offset, r.Timestamp, b.reason, b.err, "", "")})
	}
	if len(dls) == 0 {
		return nil
	}
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		recs := make([]*kgo.Record, len(dls))
		which := make(map[*kgo.Record]int, len(dls)) // results come in completion order, not in request order
		for i := range dls {
			r := dls[i].rec
			if attempt > 1 { // fresh records: a produced one keeps its (cancelled) context
				r = &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
			}
			recs[i] = r
			which[r] = i
		}
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		results := c.cl.ProduceSync(pctx, recs...)
		cancel()
		var failed []sideRecord
		var firstErr error
		purge := false
		for _, res := range results {
			dl := dls[which[res.Record]]
			if res.Err == nil {
				c.noteDeadLetter(dl, res.Record)
				continue
			}
			if dl.dead && topicRecreated(res.Err) {
				purge = true
			}
			if errors.Is(res.Err, kerr.MessageTooLarge) && dl.dead {
				trimDeadLetter(dl.rec, tooLargeForTopic) // the topic takes less than we assumed
			}
			failed = append(failed, dl)
			if firstErr == nil {
				firstErr = res.Err
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if purge {
			// The dead-letter topic was deleted (and perhaps recreated, as
			// operators do to empty it): the producer keeps the old topic's
			// id and would fail for ever. Purged, its metadata is learned
			// again by the next produce. Only the producing side: the
			// client consumes other topics.
			c.cl.PurgeTopicsFromProducing(c.cfg.DeadLetterTopic)
			if ok, quiet := c.errLog.Allow("dlq-purge"); ok {
				c.log.Warn("dead-letter topic unknown to the brokers (deleted, or deleted and recreated): purged from the producer, its metadata is learned again",
					"topic", c.cfg.DeadLetterTopic, "err", firstErr, "similar_lines_suppressed", quiet)
			}
		}
		if ctx.Err() != nil || c.rebalance.Load() || attempt >= c.cfg.DeadLetterAttempts {
			out := map[storage.Partition]error{}
			for _, dl := range failed {
				out[dl.part] = fmt.Errorf("produce %d record(s) to %s: %w", len(failed), dl.rec.Topic, firstErr)
			}
			return out
		}
		c.log.Warn("dead-letter or keyed-start produce failed; retrying", "records", len(failed), "attempt", attempt, "in", wait, "err", firstErr)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, 3*time.Second)
		dls = failed
	}
}

// noteDeadLetter remembers an acknowledged side record (until its offset
// is committed); a dead letter is counted and logged (at warn, bounded):
// produced is the record as the dead-letter topic took it.
func (c *Consumer) noteDeadLetter(dl sideRecord, produced *kgo.Record) {
	m := c.dlqSent[dl.part]
	if m == nil {
		m = map[dlKey]struct{}{}
		c.dlqSent[dl.part] = m
	}
	m[dlKey{dl.offset, dl.kind, dl.what}] = struct{}{}
	if !dl.dead {
		if dl.kind == "signal:" {
			c.m.SignalsForwarded.Inc()
		} else {
			c.m.StartsForwarded.Inc()
		}
		return
	}
	r := dl.rec
	c.m.DeadLetters.WithLabelValues(headerValue(r, HeaderReason)).Inc()
	c.dlLog.Log(context.Background(), slog.LevelWarn, "record dead-lettered", "reason", headerValue(r, HeaderReason),
		"error", headerValue(r, HeaderError), "saga", headerValue(r, HeaderSaga), "trigger", headerValue(r, HeaderTrigger),
		"topic", dl.part.Topic, "partition", dl.part.Partition, "offset", dl.offset,
		"dead_letter_topic", produced.Topic, "dead_letter_partition", produced.Partition, "dead_letter_offset", produced.Offset)
}

// startRecord is a keyed saga's start record, for the partition of the
// keys topic that owns its key (engine/keys.go).
func (c *Consumer) startRecord(s *storage.Saga) *kgo.Record {
	hs := engine.StartHeaders(s)
	// The record and its headers in one allocation (they live as long).
	r := new(struct {
		rec kgo.Record
		hs  [5]kgo.RecordHeader
	})
	rh := r.hs[:0]
	if len(hs) > len(r.hs) {
		rh = make([]kgo.RecordHeader, 0, len(hs))
	}
	for _, h := range hs {
		rh = append(rh, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	key := engine.StartKey(s.Name, engine.Placement(s))
	r.rec = kgo.Record{Topic: c.keysTopic, Partition: engine.StartKeyPartition(key, c.partitionCounts[c.keysTopic]),
		Key: key, Value: s.Context, Headers: rh, Timestamp: s.EventTime}
	return &r.rec
}

// signalRecord is an awaited event's signal, for the partition of the keys
// topic that owns its correlation (engine/await.go).
func (c *Consumer) signalRecord(s *engine.Signal) *kgo.Record {
	return &kgo.Record{Topic: c.keysTopic, Partition: engine.CorrelationPartition(s.Topic, s.Field, s.Value, c.partitionCounts[c.keysTopic]),
		Key: s.Key(), Value: s.Payload, Headers: kgoHeaders(s.Headers()), Timestamp: s.Time}
}

// forgetDeadLetters drops the memory of dead letters below a committed
// offset.
func (c *Consumer) forgetDeadLetters(p storage.Partition, committed int64) {
	m := c.dlqSent[p]
	for k := range m {
		if k.offset < committed {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		delete(c.dlqSent, p)
	}
}

func (c *Consumer) dlqRecord(key, value []byte, hs []engine.Header, topic string, partition int32, offset int64, ts time.Time,
	reason, errText, saga, trigger string) *kgo.Record {
	if len(errText) > maxDeadLetterErrorLen {
		errText = strings.ToValidUTF8(errText[:maxDeadLetterErrorLen], "")
	}
	out := make([]kgo.RecordHeader, 0, len(hs)+9)
	for _, h := range hs {
		out = append(out, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	out = append(out,
		kgo.RecordHeader{Key: HeaderReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderError, Value: []byte(errText)},
		kgo.RecordHeader{Key: HeaderSaga, Value: []byte(saga)},
		kgo.RecordHeader{Key: HeaderTrigger, Value: []byte(trigger)},
		kgo.RecordHeader{Key: HeaderGroup, Value: []byte(c.cfg.Group)},
		kgo.RecordHeader{Key: HeaderOrigTopic, Value: []byte(topic)},
		kgo.RecordHeader{Key: HeaderOrigPartition, Value: []byte(strconv.Itoa(int(partition)))},
		kgo.RecordHeader{Key: HeaderOrigOffset, Value: []byte(strconv.FormatInt(offset, 10))},
		kgo.RecordHeader{Key: HeaderOrigTimestamp, Value: []byte(strconv.FormatInt(ts.UnixMilli(), 10))},
	)
	r := &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: key, Value: value, Headers: out}
	trimDeadLetter(r, c.cfg.DeadLetterMaxBytes)
	return r
}

// recordSize estimates a record's size as the producer counts it (key,
// value, headers, and a bound on the framing).
func recordSize(r *kgo.Record) int {
	n := 64 + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 8 + len(h.Key) + len(h.Value)
	}
	return n
}

// trimDeadLetter makes a dead letter fit limit bytes, keeping the evidence
// that matters most: first the value is left out (its length and SHA-256
// kept in headers), then the key is replaced by its SHA-256, then the
// original headers are left out. Each step is recorded in a header.
func trimDeadLetter(r *kgo.Record, limit int) {
	if recordSize(r) <= limit {
		return
	}
	if _, done := findHeader(r, HeaderValueDropped); !done && len(r.Value) > 0 {
		sum := sha256.Sum256(r.Value)
		r.Headers = append(r.Headers,
			kgo.RecordHeader{Key: HeaderValueDropped, Value: []byte("true")},
			kgo.RecordHeader{Key: HeaderValueBytes, Value: []byte(strconv.Itoa(len(r.Value)))},
			kgo.RecordHeader{Key: HeaderValueSHA256, Value: []byte(hex.EncodeToString(sum[:]))})
		r.Value = nil
		if recordSize(r) <= limit {
			return
		}
	}
	if _, done := findHeader(r, HeaderKeyHashed); !done && len(r.Key) > 0 {
		sum := sha256.Sum256(r.Key)
		r.Headers = append(r.Headers,
			kgo.RecordHeader{Key: HeaderKeyHashed, Value: []byte("true")},
			kgo.RecordHeader{Key: HeaderKeyBytes, Value: []byte(strconv.Itoa(len(r.Key)))})
		r.Key = []byte(hex.EncodeToString(sum[:]))
		if recordSize(r) <= limit {
			return
		}
	}
	if _, done := findHeader(r, HeaderHeadersDropped); !done {
		kept := r.Headers[:0:0]
		dropped := 0
		for _, h := range r.Headers {
			if strings.HasPrefix(h.Key, "sagaz.dlq.") || strings.HasPrefix(h.Key, "sagaz.original.") {
				kept = append(kept, h)
			} else {
				dropped++
			}
		}
		r.Headers = append(kept, kgo.RecordHeader{Key: HeaderHeadersDropped, Value: []byte(strconv.Itoa(dropped))})
	}
}

func findHeader(r *kgo.Record, key string) ([]byte, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

func headerValue(r *kgo.Record, key string) string {
	v, _ := findHeader(r, key)
	return string(v)
}
