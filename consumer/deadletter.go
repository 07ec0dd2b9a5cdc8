package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
)

// Dead-letter headers. The record keeps the original key, value and
// headers; these are added.
const (
	HeaderReason          = "sagaz.dlq.reason"  // engine.Reason, or "oversized"
	HeaderError           = "sagaz.dlq.error"   // error text
	HeaderSaga            = "sagaz.dlq.saga"    // saga of the trigger that rejected it ("" for oversized)
	HeaderTrigger         = "sagaz.dlq.trigger" // trigger id
	HeaderGroup           = "sagaz.dlq.group"
	HeaderOrigTopic       = "sagaz.original.topic"
	HeaderOrigPartition   = "sagaz.original.partition"
	HeaderOrigOffset      = "sagaz.original.offset"
	HeaderOrigTimestamp   = "sagaz.original.timestamp" // Unix milliseconds
	HeaderValueDropped    = "sagaz.dlq.value_dropped"  // "true" when the value was too large for the dead-letter topic
	ReasonOversized       = "oversized"
	ReasonNoRoute         = string(engine.ReasonNoRoute) // an events-topic record names no trigger of this binary
	maxDeadLetterErrorLen = 4096
)

// deadLetter produces one dead-letter record per reject and per oversized
// record, with acks=all, and waits for all of them. It retries with
// back-off; it gives up (so the batch is rewound, not skipped) when ctx
// ends or a rebalance is waiting for this poll.
// recordReject is a record rejected before any trigger saw it.
type recordReject struct {
	r      *kgo.Record
	reason string
	err    string
}

func (c *Consumer) deadLetter(ctx context.Context, rejects []engine.Reject, bad []recordReject) error {
	recs := make([]*kgo.Record, 0, len(rejects)+len(bad))
	for _, r := range rejects {
		saga, trigger := "", ""
		if r.Route != nil { // nil: the event reached no trigger (no_route)
			saga, trigger = r.Route.Saga.Name, r.Route.Trigger.ID()
		}
		recs = append(recs, c.dlqRecord(r.Event.Key, r.Event.Value, r.Event.Headers, r.Event.Topic, r.Event.Partition, r.Event.Offset,
			r.Event.Timestamp, string(r.Reason), r.Err.Error(), saga, trigger))
	}
	for _, b := range bad {
		r := b.r
		recs = append(recs, c.dlqRecord(r.Key, r.Value, headers(r.Headers), r.Topic, r.Partition, r.Offset, r.Timestamp, b.reason, b.err, "", ""))
	}
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		results := c.cl.ProduceSync(pctx, recs...)
		cancel()
		var failed []*kgo.Record
		var firstErr error
		for _, res := range results {
			if res.Err == nil {
				continue
			}
			r := res.Record
			if errors.Is(res.Err, kerr.MessageTooLarge) && len(r.Value) > 0 {
				// Keep the evidence (headers, key, coordinates) without the value.
				r.Value = nil
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderValueDropped, Value: []byte("true")})
			}
			failed = append(failed, r)
			if firstErr == nil {
				firstErr = res.Err
			}
		}
		if len(failed) == 0 {
			for _, r := range recs {
				c.m.DeadLetters.WithLabelValues(headerValue(r, HeaderReason)).Inc()
			}
			return nil
		}
		if ctx.Err() != nil || c.rebalance.Load() || attempt >= c.cfg.DeadLetterAttempts {
			return fmt.Errorf("produce %d record(s) to dead-letter topic %s: %w", len(failed), c.cfg.DeadLetterTopic, firstErr)
		}
		c.log.Warn("dead-letter produce failed; retrying", "records", len(failed), "attempt", attempt, "in", wait, "err", firstErr)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, 3*time.Second)
		recs = recs[:0]
		for _, r := range failed { // fresh records: a produced one keeps its (cancelled) context
			recs = append(recs, &kgo.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers})
		}
	}
}

func (c *Consumer) dlqRecord(key, value []byte, hs []engine.Header, topic string, partition int32, offset int64, ts time.Time,
	reason, errText, saga, trigger string) *kgo.Record {
	if len(errText) > maxDeadLetterErrorLen {
		errText = errText[:maxDeadLetterErrorLen]
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
	return &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: key, Value: value, Headers: out}
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
