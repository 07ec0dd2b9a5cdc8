package engine

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Await steps correlate through the keys topic (docs/architecture.md,
// invariants 9 and 10 of waiting steps). A waiting saga registers (topic,
// field, value) -> (saga, step, attempt, reply partition) with the
// keys-topic partition that owns the correlation; every member that
// consumes an awaited topic forwards each record with the field as a
// signal to that same partition. Its owner records both and matches them in
// Record, one batch at a time: a match is an outbox entry, the resume
// record for the saga's reply partition.

// Keys-topic records of await steps carry HeaderKeysKind (keyed starts do
// not).
const (
	HeaderKeysKind     = "sagaz.keys.kind"     // keysAwait or keysSignal
	HeaderSignalOrigin = "sagaz.signal.origin" // a signal's event: <topic>:<partition>:<offset>
	HeaderSignalTime   = "sagaz.signal.time"   // a signal's event timestamp (RFC 3339), whatever the keys topic's timestamps are
	keysAwait          = "await"
	keysSignal         = "signal"
)

// DefaultSignalWindow is how long a signal is kept for registrations that
// come after it (Config.SignalWindow).
const DefaultSignalWindow = time.Hour

// CorrelationKey is the record key of the registrations and signals of a
// correlation: its partition of the keys topic is murmur2 of it
// (CorrelationPartition), as Kafka's clients place keyed records.
func CorrelationKey(topic, field, value string) []byte {
	b := make([]byte, 0, 8+len(topic)+len(field)+len(value))
	b = append(b, "\x00await"...)
	b = appendBytes(b, []byte(topic))
	b = appendBytes(b, []byte(field))
	return appendBytes(b, []byte(value))
}

// CorrelationPartition is the partition of a keys topic with n partitions
// that owns the correlation (topic, field, value).
func CorrelationPartition(topic, field, value string, n int32) int32 {
	return int32(murmur2(CorrelationKey(topic, field, value))&0x7fffffff) % n
}

func parseCorrelation(key []byte) (topic, field, value string, err error) {
	if len(key) < 6 || string(key[:6]) != "\x00await" {
		return "", "", "", errors.New("not a correlation key")
	}
	d := bytesReader{b: key[6:]}
	topic, field, value = string(d.bytes()), string(d.bytes()), string(d.bytes())
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	return topic, field, value, d.err
}

// registration is what a waiting await step registers.
type registration struct {
	SagaID, Ref, Step string
	Attempt           uint32
	ReplyTopic        string
	ReplyPartition    int32
	Since, Deadline   time.Time // signals at or after Since match; the registration lasts until Deadline
}

func (r *registration) encode() []byte {
	b := []byte{1}
	for _, s := range []string{r.SagaID, r.Ref, r.Step, r.ReplyTopic} {
		b = appendBytes(b, []byte(s))
	}
	b = binary.AppendUvarint(b, uint64(r.Attempt))
	b = binary.AppendVarint(b, int64(r.ReplyPartition))
	b = binary.AppendVarint(b, r.Since.UnixNano())
	return binary.AppendVarint(b, r.Deadline.UnixNano())
}

func decodeRegistration(b []byte) (*registration, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errors.New("registration: unknown format")
	}
	d := bytesReader{b: b[1:]}
	r := &registration{SagaID: string(d.bytes()), Ref: string(d.bytes()), Step: string(d.bytes()), ReplyTopic: string(d.bytes())}
	r.Attempt = uint32(d.uvarint())
	r.ReplyPartition = int32(d.varint())
	r.Since = time.Unix(0, d.varint()).UTC()
	r.Deadline = time.Unix(0, d.varint()).UTC()
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err == nil && (r.Ref == "" || r.Step == "" || r.ReplyTopic == "" || r.Attempt == 0) {
		d.err = errors.New("incomplete")
	}
	if d.err != nil {
		return nil, fmt.Errorf("registration: %w", d.err)
	}
	return r, nil
}

// signal is a kept event of an awaited topic.
type signal struct {
	At       time.Time // the event's timestamp
	Recorded time.Time // when the keys partition recorded it (the window runs from here)
	Origin   string    // <topic>:<partition>:<offset>
	Payload  []byte
}

func (s *signal) encode() []byte {
	b := []byte{1}
	b = binary.AppendVarint(b, s.At.UnixNano())
	b = binary.AppendVarint(b, s.Recorded.UnixNano())
	b = appendBytes(b, []byte(s.Origin))
	return appendBytes(b, s.Payload)
}

func decodeSignal(b []byte) (*signal, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errors.New("signal: unknown format")
	}
	d := bytesReader{b: b[1:]}
	s := &signal{At: time.Unix(0, d.varint()).UTC(), Recorded: time.Unix(0, d.varint()).UTC(), Origin: string(d.bytes()), Payload: d.bytes()}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("signal: %w", d.err)
	}
	return s, nil
}

// Signal is an event of an awaited topic, to be forwarded to the
// keys-topic partition that owns its correlation (the consumer produces it
// before it commits the event's offset).
type Signal struct {
	Topic, Field, Value string
	Origin              storage.Position
	Time                time.Time
	Payload             []byte
}

// Key is the signal's record key (CorrelationKey).
func (s *Signal) Key() []byte { return CorrelationKey(s.Topic, s.Field, s.Value) }

// Headers are the signal record's headers.
func (s *Signal) Headers() []Header {
	return []Header{{Key: HeaderKeysKind, Value: []byte(keysSignal)}, {Key: HeaderSignalOrigin, Value: []byte(formatPos(s.Origin))},
		{Key: HeaderSignalTime, Value: []byte(s.Time.UTC().Format(time.RFC3339Nano))}}
}

func formatPos(p storage.Position) string {
	return p.Topic + ":" + strconv.FormatInt(int64(p.Partition), 10) + ":" + strconv.FormatInt(p.Offset, 10)
}

// awaitOp is a registration or a signal a keys-topic batch records.
type awaitOp struct {
	p    storage.Partition
	corr string
	reg  *registration
	sig  *signal
}

// PrepareSignals adds to b a signal for each awaited field ev has (a
// record of an awaited topic). A value that is not a JSON object, or lacks
// the field, gives none.
func (e *Engine) PrepareSignals(b *Batch, ev *Event) {
	fields := e.awaited[ev.Topic]
	if len(fields) == 0 {
		return
	}
	m, err := ev.JSON()
	if err != nil {
		return
	}
	for _, f := range fields {
		v, ok := valueText(m[f])
		if !ok {
			continue
		}
		b.Signals = append(b.Signals, &Signal{Topic: ev.Topic, Field: f, Value: v, Time: ev.Timestamp, Payload: ev.Value,
			Origin: storage.Position{Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset}})
	}
}

// Awaits reports whether the engine's sagas await events on topic.
func (e *Engine) Awaits(topic string) bool { return len(e.awaited[topic]) > 0 }

// valueText is a correlation value as text: a string as it is, a number
// as its JSON text, a boolean as true or false.
func valueText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// prepareAwaitRecord adds a registration or signal record of the keys
// topic to b.
func (e *Engine) prepareAwaitRecord(b *Batch, ev *Event, kind string) {
	p := storage.Partition{Topic: ev.Topic, Partition: ev.Partition}
	if _, _, _, err := parseCorrelation(ev.Key); err != nil {
		b.Rejects = append(b.Rejects, Reject{Event: ev, Reason: ReasonDecode, Err: fmt.Errorf("%s record of the keys topic: key: %w", kind, err)})
		return
	}
	op := awaitOp{p: p, corr: string(ev.Key)}
	switch kind {
	case keysAwait:
		r, err := decodeRegistration(ev.Value)
		if err != nil {
			b.Rejects = append(b.Rejects, Reject{Event: ev, Reason: ReasonDecode, Err: err})
			return
		}
		op.reg = r
	default:
		origin, _ := ev.Header(HeaderSignalOrigin)
		op.sig = &signal{At: ev.Timestamp.UTC(), Origin: string(origin), Payload: ev.Value}
		if v, ok := ev.Header(HeaderSignalTime); ok {
			if at, err := time.Parse(time.RFC3339Nano, string(v)); err == nil {
				op.sig.At = at.UTC()
			}
		}
		if op.sig.Origin == "" {
			op.sig.Origin = formatPos(storage.Position{Topic: ev.Topic, Partition: ev.Partition, Offset: ev.Offset})
		}
	}
	b.awaits = append(b.awaits, op)
}

// correlate turns a batch's registrations and signals into meta records —
// the registrations and signals themselves, their expiry indexes, and an
// outbox entry (a resume) per match — against what the store holds and the
// batch's earlier records. Called with e.awaitMu held, before the batch's
// transaction, by the one goroutine that records batches.
func (e *Engine) correlate(ctx context.Context, ops []awaitOp) ([]storage.Meta, []outKeyed, error) {
	now := e.now()
	var meta []storage.Meta
	var outs []outKeyed
	batchRegs := map[string][]*registration{}
	batchSigs := map[string][]*signal{}
	match := func(p storage.Partition, r *registration, s *signal) {
		key := metaOut + "m/" + r.Ref + "/" + r.Step + "/" + strconv.FormatUint(uint64(r.Attempt), 10) + "/" + s.Origin
		out := &OutRecord{Topic: r.ReplyTopic, Partition: r.ReplyPartition, Key: []byte(r.Ref), Value: s.Payload, Headers: []Header{
			{Key: HeaderSagaID, Value: []byte(r.SagaID)}, {Key: HeaderSagaRef, Value: []byte(r.Ref)}, {Key: HeaderStep, Value: []byte(r.Step)},
			{Key: HeaderKind, Value: []byte(KindAction)}, {Key: HeaderAttempt, Value: []byte(strconv.FormatUint(uint64(r.Attempt), 10))},
			{Key: HeaderOutcome, Value: []byte(OutcomeOK)}, {Key: HeaderEvent, Value: []byte(s.Origin)},
		}}
		meta = append(meta, storage.Meta{Partition: p, Key: key, Value: encodeOut(out)})
		outs = append(outs, outKeyed{p: p, key: key, rec: out})
	}
	for _, op := range ops {
		if op.reg != nil {
			r := op.reg
			regKey := metaReg + op.corr + r.Ref + "\x00" + r.Step
			meta = append(meta, storage.Meta{Partition: op.p, Key: regKey, Value: r.encode()},
				storage.Meta{Partition: op.p, Key: metaRegX + string(tsKey(r.Deadline)) + regKey[len(metaReg):], Value: []byte(regKey)})
			take := func(s *signal) {
				if !s.Recorded.Before(now.Add(-e.signalWindow)) && !s.At.Before(r.Since) {
					match(op.p, r, s)
				}
			}
			err := e.store.ScanMeta(ctx, op.p, metaSig+op.corr, func(_ string, v []byte) error {
				if s, err := decodeSignal(v); err == nil {
					take(s)
				}
				return nil
			})
			if err != nil {
				return nil, nil, err
			}
			for _, s := range batchSigs[op.corr] {
				take(s)
			}
			batchRegs[op.corr] = append(batchRegs[op.corr], r)
			continue
		}
		s := op.sig
		s.Recorded = now
		sigKey := metaSig + op.corr + string(tsKey(s.At)) + s.Origin
		meta = append(meta, storage.Meta{Partition: op.p, Key: sigKey, Value: s.encode()},
			storage.Meta{Partition: op.p, Key: metaSigX + string(tsKey(now)) + sigKey[len(metaSig):], Value: []byte(sigKey)})
		take := func(r *registration) {
			// A live registration takes every signal that arrives while it
			// lasts, whatever the event's timestamp says: producers' clocks
			// differ, and the event comes after the wait began. (The
			// timestamp rule is for kept signals, above.)
			if !r.Deadline.Before(now) {
				match(op.p, r, s)
			}
		}
		err := e.store.ScanMeta(ctx, op.p, metaReg+op.corr, func(_ string, v []byte) error {
			if r, err := decodeRegistration(v); err == nil {
				take(r)
			}
			return nil
		})
		if err != nil {
			return nil, nil, err
		}
		for _, r := range batchRegs[op.corr] {
			take(r)
		}
		batchSigs[op.corr] = append(batchSigs[op.corr], s)
	}
	return meta, outs, nil
}

type outKeyed struct {
	p   storage.Partition
	key string
	rec *OutRecord
}

var errStopScan = errors.New("stop")

// sweepAwaits drops, in the partitions owned here, registrations a minute
// past their deadline and signals older than the signal window.
func (e *Engine) sweepAwaits(ctx context.Context, now time.Time) {
	e.tmu.Lock()
	parts := make([]storage.Partition, 0, len(e.tparts))
	for p := range e.tparts {
		parts = append(parts, p)
	}
	e.tmu.Unlock()
	for _, p := range parts {
		e.awaitMu.Lock()
		puts, err := e.expiredAwaits(ctx, p, now)
		if err == nil && len(puts) > 0 {
			if err = e.store.Write(ctx, storage.WriteBatch{Meta: puts}); err == nil {
				e.mirrorMeta(puts)
			}
		}
		e.awaitMu.Unlock()
		if err != nil && ctx.Err() == nil {
			e.log.Warn("dropping expired await registrations and signals failed (retried in a minute)", "partition", p.String(), "err", err)
		}
	}
}

func (e *Engine) expiredAwaits(ctx context.Context, p storage.Partition, now time.Time) ([]storage.Meta, error) {
	var puts []storage.Meta
	regCut, sigCut := tsKey(now.Add(-regGrace)), tsKey(now.Add(-e.signalWindow))
	type expired struct{ idx, reg string }
	var regs []expired
	err := e.store.ScanMeta(ctx, p, metaRegX, func(k string, v []byte) error {
		if len(k) < len(metaRegX)+8 || k[len(metaRegX):len(metaRegX)+8] >= string(regCut) || len(regs) >= 10000 {
			return errStopScan
		}
		regs = append(regs, expired{k, string(v)})
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, err
	}
	for _, x := range regs { // outside the scan's read transaction
		puts = append(puts, storage.Meta{Partition: p, Key: x.idx})
		cur, ok, err := e.store.GetMeta(ctx, p, x.reg)
		if err != nil {
			return nil, err
		}
		if ok {
			if r, err := decodeRegistration(cur); err != nil || r.Deadline.Before(now.Add(-regGrace)) {
				puts = append(puts, storage.Meta{Partition: p, Key: x.reg}) // not renewed since
			}
		}
	}
	err = e.store.ScanMeta(ctx, p, metaSigX, func(k string, v []byte) error {
		if len(k) < len(metaSigX)+8 || k[len(metaSigX):len(metaSigX)+8] >= string(sigCut) || len(puts) > 20000 {
			return errStopScan
		}
		puts = append(puts, storage.Meta{Partition: p, Key: k}, storage.Meta{Partition: p, Key: string(v)})
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return nil, err
	}
	return puts, nil
}
