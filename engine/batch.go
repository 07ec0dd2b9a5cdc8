package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"

	"github.com/sagaz-go/sagaz/storage"
)

// Reason classifies why an event could not start a saga; it becomes the
// dead-letter header.
type Reason string

// Reasons for rejecting an event.
const (
	ReasonDecode     Reason = "decode"          // value is not a JSON object
	ReasonTransform  Reason = "transform_error" // transformer returned an error
	ReasonPanic      Reason = "transform_panic" // transformer panicked
	ReasonMissingKey Reason = "missing_key"     // no idempotency key
	ReasonContext    Reason = "bad_context"     // transformer output is not JSON-encodable
	ReasonNoRoute    Reason = "no_route"        // the event names no trigger of this binary
	ReasonBadKey     Reason = "invalid_key"     // the idempotency key is longer than MaxKeyBytes
)

// Limits that keep one event from failing a whole batch: what the store or
// the changelog would refuse is refused here, for that event only.
const (
	// MaxKeyBytes bounds an idempotency key (declared field, key function or
	// Idempotency-Key header). A longer key sends the event to the
	// dead-letter topic with reason invalid_key.
	MaxKeyBytes = 4096
	// DefaultMaxContextBytes bounds a saga's context (its JSON data) unless
	// Config.MaxContextBytes says otherwise: a larger initial context sends
	// the event to the dead-letter topic (bad_context), and a step that would
	// grow the context past it fails for good. Every state of a saga must fit
	// one changelog record, and Kafka's default record limit is about 1 MB.
	DefaultMaxContextBytes = 900 << 10
)

// Reject is an event one trigger could not turn into a saga (Route is nil
// when the event reached no trigger at all: ReasonNoRoute).
type Reject struct {
	Event  *Event
	Route  *Route
	Reason Reason
	Err    error
}

// Batch is the engine's unit of recording: the sagas and rejects of a batch
// of events (one Kafka poll), and the next offset of each partition they
// came from. Prepare fills it; Record records it in one durable
// transaction.
type Batch struct {
	Sagas   []*storage.Saga
	Rejects []Reject
	Ignored int
	// Offsets records, per partition, the offset after the batch's last
	// event: Record stores it with the sagas, so a restarted member resumes
	// after the events it recorded.
	Offsets []storage.Offset
	// Forward holds the keyed sagas of a group member's batch (Origin set,
	// Source empty): one saga per (saga, key) in the whole group, so each
	// is started in the partition of the keys topic that owns its key. The
	// consumer produces them there (EncodeStart) before it commits the
	// batch's offsets; the owner of that partition records them
	// (PrepareStart). A library engine (no Changelog) records them at once,
	// in its local partition "~keys".
	Forward []*storage.Saga
	// Meta records to write with the batch: the outcomes of its webhook and
	// manual events (outcome.go).
	Meta []storage.Meta
	// Signals are the events of awaited topics to forward to the keys-topic
	// partitions that own their correlations (PrepareSignals): the consumer
	// produces them before it commits the batch's offsets.
	Signals []*Signal
	// awaits are the registrations and signals of keys-topic records, which
	// Record correlates.
	awaits []awaitOp
}

// Reset empties the batch for reuse.
func (b *Batch) Reset() {
	clear(b.Sagas)
	clear(b.Rejects)
	clear(b.Forward)
	clear(b.Meta)
	clear(b.Signals)
	clear(b.awaits)
	b.Sagas, b.Rejects, b.Ignored, b.Offsets, b.Forward, b.Meta = b.Sagas[:0], b.Rejects[:0], 0, b.Offsets[:0], b.Forward[:0], b.Meta[:0]
	b.Signals, b.awaits = b.Signals[:0], b.awaits[:0]
}

// DropAwaits takes the registrations and signals of the keys-topic
// partitions drop names out of b: those records are fetched again (the
// consumer took their partitions out of the batch), and recorded now they
// would be written for a partition whose offset does not move past them —
// and each matched again when fetched again.
func (b *Batch) DropAwaits(drop func(storage.Partition) bool) {
	kept := b.awaits[:0]
	for _, op := range b.awaits {
		if !drop(op.p) {
			kept = append(kept, op)
		}
	}
	clear(b.awaits[len(kept):])
	b.awaits = kept
}

// Prepare routes ev to its triggers (Routes.Resolve: synthetic says ev is a
// record of the events or cron topic, whose headers name its source and
// trigger), runs their transformers and adds the sagas to start, or the
// rejects, to b. An event no trigger matches is a ReasonNoRoute reject. One
// trigger's failure never stops another's saga. Prepare is pure: nothing is
// recorded until Record.
func (e *Engine) Prepare(b *Batch, ev *Event, synthetic bool) {
	routes, err := e.routes.Resolve(ev, synthetic)
	if err != nil {
		b.Rejects = append(b.Rejects, Reject{Event: ev, Reason: ReasonNoRoute, Err: err})
		return
	}
	var out *EventOutcome
	if recordsOutcome(ev, synthetic) {
		out = &EventOutcome{At: e.clock.Now().UTC()}
	}
	for _, rt := range routes {
		s, reason, err := e.prepareOne(ev, rt)
		switch {
		case err != nil:
			b.Rejects = append(b.Rejects, Reject{Event: ev, Route: rt, Reason: reason, Err: err})
		case s == nil:
			b.Ignored++
		case s.Origin.Topic != "" && e.mirror != nil:
			b.Forward = append(b.Forward, s)
		case s.Origin.Topic != "":
			s.Source = storage.Position{Topic: localTopic(sourceKeys), Offset: e.local[sourceKeys].Add(1) - 1}
			b.Sagas = append(b.Sagas, s)
		default:
			b.Sagas = append(b.Sagas, s)
		}
		if out != nil { // only webhook calls and manual events keep an outcome
			ro := RouteOutcome{Saga: rt.Saga.Name, Trigger: rt.TriggerID(), Outcome: "saga"}
			switch {
			case err != nil:
				ro.Outcome, ro.Reason, ro.Error = "dead_letter", reason, err.Error()
			case s == nil:
				ro.Outcome = "ignored"
			default:
				ro.SagaID = s.ID()
			}
			out.Routes = append(out.Routes, ro)
		}
	}
	if out != nil {
		b.Meta = append(b.Meta, storage.Meta{Partition: storage.Partition{Topic: ev.Topic, Partition: ev.Partition},
			Key: OutcomeKey(ev.Offset), Value: EncodeOutcome(*out)})
	}
}

func (e *Engine) prepareOne(ev *Event, rt *Route) (*storage.Saga, Reason, error) {
	// PassThrough of a JSON object: the context is the event's bytes and a
	// field key is scanned from them (jsonscan.go), no decode.
	fast := isPassThrough(rt.Trigger.transform) && isObject(ev.Value)
	var (
		data map[string]any
		err  error
	)
	if !fast {
		data, err = transform(rt, ev)
	}
	var de *DecodeError
	var pe *PanicError
	switch {
	case !fast && (errors.Is(err, ErrIgnore) || err == nil && data == nil):
		return nil, "", nil
	case errors.As(err, &de):
		return nil, ReasonDecode, fmt.Errorf("saga %q: %w", rt.Saga.Name, err)
	case errors.As(err, &pe):
		return nil, ReasonPanic, fmt.Errorf("saga %q: transformer: %w", rt.Saga.Name, err)
	case err != nil:
		return nil, ReasonTransform, fmt.Errorf("saga %q: transformer: %w", rt.Saga.Name, err)
	}
	var key string
	if !rt.Trigger.key.IsZero() {
		if key, err = rt.Trigger.key.valueOf(rt.Saga.Name, ev, fast); err != nil {
			if errors.As(err, &de) {
				return nil, ReasonDecode, fmt.Errorf("saga %q: %w", rt.Saga.Name, err)
			}
			return nil, ReasonMissingKey, err
		}
	} else if h, ok := ev.Header(HeaderIdempotencyKey); ok && len(h) > 0 {
		key = string(h) // the caller's Idempotency-Key (webhooks, manual events)
	}
	if len(key) > MaxKeyBytes {
		return nil, ReasonBadKey, fmt.Errorf("saga %q: idempotency key of %d bytes exceeds the limit of %d", rt.Saga.Name, len(key), MaxKeyBytes)
	}
	key = rt.StoredKey(key) // a sensitive key is kept as its hash
	var conc string
	if !rt.Trigger.concKey.IsZero() {
		if conc, err = rt.Trigger.concKey.valueOf(rt.Saga.Name, ev, fast); err != nil {
			if errors.As(err, &de) {
				return nil, ReasonDecode, fmt.Errorf("saga %q: %w", rt.Saga.Name, err)
			}
			return nil, ReasonMissingKey, fmt.Errorf("concurrency key: %w", err)
		}
		if len(conc) > MaxKeyBytes {
			return nil, ReasonBadKey, fmt.Errorf("saga %q: concurrency key of %d bytes exceeds the limit of %d", rt.Saga.Name, len(conc), MaxKeyBytes)
		}
	}
	raw := ev.Value
	if !fast {
		raw, err = contextBytes(ev, data)
	}
	if err != nil {
		return nil, ReasonContext, fmt.Errorf("saga %q: transformer output is not JSON-encodable: %w", rt.Saga.Name, err)
	}
	if len(raw) > e.maxCtx {
		return nil, ReasonContext, fmt.Errorf("saga %q: context of %d bytes exceeds the limit of %d", rt.Saga.Name, len(raw), e.maxCtx)
	}
	// No step records yet: a pending saga's steps are all pending, and the
	// executor fills them in from the declaration (a smaller insert on the
	// hot path).
	s := &storage.Saga{
		Name:           rt.Saga.Name,
		Trigger:        rt.TriggerID(),
		Source:         storage.Position{Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset},
		EventTime:      ev.Timestamp,
		IdempotencyKey: key,
		ConcurrencyKey: conc,
		Context:        raw,
	}
	if keyedRoute(rt, key) || conc != "" {
		// One saga per (saga, key) in the whole group: the start goes to the
		// one place that owns the key (see Batch.Forward).
		s.Origin, s.Source = s.Source, storage.Position{}
	}
	return s, "", nil
}

// keyedRoute reports whether a saga started by rt with key is keyed: named
// by its key and started where the key is owned. Cron ticks are not: the
// member that owns a schedule's partition publishes its ticks there, so
// their keys (schedule and time) are owned there already.
func keyedRoute(rt *Route, key string) bool { return key != "" && rt.Trigger.source != SourceCron }

// contextBytes encodes the saga's initial context. A transformer that
// passes the event through (returns ev.JSON()'s own map) gets the event's
// bytes stored as they are, without a decode-encode round trip.
func contextBytes(ev *Event, data map[string]any) ([]byte, error) {
	if ev.fields != nil && len(data) == ev.fieldCount &&
		reflect.ValueOf(data).UnsafePointer() == reflect.ValueOf(ev.fields).UnsafePointer() {
		return ev.Value, nil
	}
	return json.Marshal(data)
}

func transform(rt *Route, ev *Event) (data map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			data, err = nil, &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return rt.Trigger.transform(ev)
}

// Record records a prepared batch — its new sagas and the partitions' next
// offsets, and for a group member the changelog offset each partition's
// store now reflects — in one durable transaction, then queues the new
// sagas for execution. Sagas that match an existing one (re-delivery, same
// idempotency key) start nothing. Results are in the order of b.Sagas.
func (e *Engine) Record(ctx context.Context, b *Batch) ([]storage.StartResult, error) {
	if len(b.Sagas) == 0 && len(b.Offsets) == 0 && len(b.Meta) == 0 && len(b.awaits) == 0 {
		return nil, nil
	}
	sb := storage.StartBatch{Sagas: b.Sagas, Offsets: b.Offsets, Meta: b.Meta}
	var outs []outKeyed
	var awaitMeta []storage.Meta
	if len(b.awaits) > 0 {
		e.awaitMu.Lock()
		defer e.awaitMu.Unlock()
		var err error
		if awaitMeta, outs, err = e.correlate(ctx, b.awaits); err != nil {
			return nil, err
		}
		sb.Meta = append(append([]storage.Meta(nil), b.Meta...), awaitMeta...)
	}
	if e.mirror != nil {
		for _, o := range b.Offsets {
			if p := o.TopicPartition(); !isLocal(p.Topic) {
				sb.Changelog = append(sb.Changelog, storage.Offset{Topic: p.Topic, Partition: p.Partition, Next: e.mirror.Next(p)})
			}
		}
	}
	res, err := e.store.Start(ctx, sb)
	if err != nil {
		return nil, err
	}
	e.mirrorMeta(awaitMeta) // b.Meta is mirrored below
	for _, o := range outs {
		e.send(o.p, o.key, o.rec)
	}
	for _, r := range res {
		if r.Created {
			e.recorded(r.Saga)
			e.enqueue(r.Saga)
		}
	}
	if e.mirror != nil {
		for _, m := range b.Meta {
			if !isLocal(m.Partition.Topic) {
				e.mirror.AppendMeta(m.Partition, m.Key, m.Value)
			}
		}
	}
	return res, nil
}
