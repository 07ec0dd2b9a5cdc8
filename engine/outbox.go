package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// The outbox. A record a saga must produce — a command, an await
// registration, the resume of an await step — is first written as a meta
// record of the saga's partition ("\x00out/" + id), in the same transaction
// as the saga's wait; then the Sender produces it, and once Kafka has
// acknowledged it the entry is deleted (deletes are batched by the relay).
// An entry left over (a crash, a failed produce, a rebalance) is produced
// again by the partition's owner: at Acquire, and after a failed produce
// with back-off while the partition is owned. Records are produced at least
// once; they carry what makes a duplicate harmless (saga, step, attempt).

// Sender produces the records of Kafka steps (acks=all, idempotent). The
// consumer package's Sender is the group member's.
type Sender interface {
	// Send produces r and calls done with the result (once, from any
	// goroutine). It must not block for long.
	Send(r *OutRecord, done func(error))
}

// OutRecord is a record a saga produces.
type OutRecord struct {
	Topic string
	// Partition is the partition to produce to; -1: by the key, as Kafka's
	// clients place keyed records (murmur2).
	Partition int32
	Key       []byte
	Value     []byte
	Headers   []Header
}

// Meta record keys (storage.Meta) of Kafka steps. All start with a zero
// byte, so they never meet a cron schedule's state.
const (
	metaOut     = "\x00out/"    // outbox entries
	metaReplies = "\x00replies" // the next offset of the partition's reply partition (8 bytes)
	metaReg     = "\x00reg/"    // await registrations (keys-topic partitions)
	metaSig     = "\x00sig/"    // kept signals (keys-topic partitions)
	metaRegX    = "\x00rx/"     // registrations by deadline, for expiry
	metaSigX    = "\x00sx/"     // signals by the time they were recorded, for expiry
)

// RepliesMetaKey is the meta record of a saga partition that holds the next
// offset of its reply partition (8 bytes, big-endian).
const RepliesMetaKey = metaReplies

func encodeOut(r *OutRecord) []byte {
	b := make([]byte, 0, 32+len(r.Topic)+len(r.Key)+len(r.Value))
	b = append(b, 1) // format
	b = appendBytes(b, []byte(r.Topic))
	b = binary.AppendVarint(b, int64(r.Partition))
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = binary.AppendUvarint(b, uint64(len(r.Headers)))
	for _, h := range r.Headers {
		b = appendBytes(b, []byte(h.Key))
		b = appendBytes(b, h.Value)
	}
	return b
}

func decodeOut(b []byte) (*OutRecord, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errors.New("outbox entry: unknown format")
	}
	d := bytesReader{b: b[1:]}
	r := &OutRecord{Topic: string(d.bytes())}
	r.Partition = int32(d.varint())
	r.Key = d.bytes()
	r.Value = d.bytes()
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errors.New("header count")
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		r.Headers = append(r.Headers, Header{Key: string(d.bytes()), Value: d.bytes()})
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("outbox entry: %w", d.err)
	}
	return r, nil
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type bytesReader struct {
	b   []byte
	err error
}

func (d *bytesReader) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		if d.err == nil {
			d.err = errors.New("bad uvarint")
		}
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *bytesReader) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		if d.err == nil {
			d.err = errors.New("bad varint")
		}
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *bytesReader) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		if d.err == nil {
			d.err = errors.New("length out of range")
		}
		d.b = nil
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

// outKey identifies an outbox entry.
type outKey struct {
	p   storage.Partition
	key string
}

// relay is the outbox's bookkeeping: entries in flight (not produced again
// while they are), acknowledged entries waiting for their delete, and the
// entries whose last produce failed (for the "outbox" condition).
type relay struct {
	mu       sync.Mutex
	inflight map[outKey]*outEntry
	acked    []outKey
	wake     chan struct{}
	stall    time.Duration // unacknowledged this long sets the "outbox" condition
	stalled  bool          // the "outbox" condition is set
}

type outEntry struct {
	rec     *OutRecord
	backoff time.Duration
	since   time.Time // when this member first produced it
	err     error     // the last failure; nil: none yet
}

func newRelay(stall time.Duration) *relay {
	return &relay{inflight: map[outKey]*outEntry{}, wake: make(chan struct{}, 1), stall: stall}
}

// send produces an outbox entry unless it is in flight already.
func (e *Engine) send(p storage.Partition, key string, r *OutRecord) {
	if e.sender == nil { // no transport: the entry stays until a member with one owns p
		return
	}
	k := outKey{p, key}
	e.out.mu.Lock()
	if _, ok := e.out.inflight[k]; ok {
		e.out.mu.Unlock()
		return
	}
	oe := &outEntry{rec: r, backoff: 100 * time.Millisecond, since: e.now()}
	e.out.inflight[k] = oe
	e.out.mu.Unlock()
	e.produce(k, oe)
}

func (e *Engine) produce(k outKey, oe *outEntry) {
	e.sender.Send(oe.rec, func(err error) {
		if err == nil {
			e.finishOut(k)
			return
		}
		e.out.mu.Lock()
		oe.err = err
		e.outboxHealthLocked()
		e.out.mu.Unlock()
		if ok, quiet := e.errLog.Allow("outbox"); ok {
			e.log.Warn("producing a saga's record failed; retrying while its partition is owned here", "topic", oe.rec.Topic,
				"partition", k.p.String(), "in", oe.backoff, "err", err, "similar_lines_suppressed", quiet)
		}
		d := oe.backoff
		oe.backoff = min(oe.backoff*2, 5*time.Second)
		e.clock.AfterFunc(d, func() {
			if e.base.Err() == nil && e.Owns(storage.Position{Topic: k.p.Topic, Partition: k.p.Partition}) {
				if why := e.outboxStale(e.base, k.p, k.key); why != "" {
					e.log.Info("outbox record dropped: its saga no longer waits for it", "topic", oe.rec.Topic,
						"partition", k.p.String(), "entry", k.key[len(metaOut):], "why", why)
					e.finishOut(k) // deleted like a produced one
					return
				}
				e.produce(k, oe)
				return
			}
			e.out.mu.Lock()
			delete(e.out.inflight, k)
			if e.out.stalled {
				e.outboxHealthLocked()
			}
			e.out.mu.Unlock()
		})
	})
}

// finishOut hands entry k to the relay for its delete (it was produced, or
// it is no longer wanted).
func (e *Engine) finishOut(k outKey) {
	e.out.mu.Lock()
	e.out.acked = append(e.out.acked, k)
	e.out.mu.Unlock()
	select {
	case e.out.wake <- struct{}{}:
	default:
	}
}

// outboxHealthLocked sets the "outbox" condition while an entry has gone
// unacknowledged for the stall timeout (naming the oldest one's topic, the
// time it was first produced and its last error), and clears it when none
// has. Called with e.out.mu held: after a failed produce, when an entry
// leaves while the condition holds, and every second by the relay.
func (e *Engine) outboxHealthLocked() {
	if e.health == nil {
		return
	}
	now := e.now()
	var oldest *outEntry
	n := 0
	for k, oe := range e.out.inflight {
		if now.Sub(oe.since) < e.out.stall || slices.Contains(e.out.acked, k) {
			continue
		}
		n++
		if oldest == nil || oe.since.Before(oldest.since) {
			oldest = oe
		}
	}
	if oldest == nil {
		if e.out.stalled {
			e.out.stalled = false
			e.health.Clear(health.Outbox)
			e.log.Info("producing the outbox's records works again")
		}
		return
	}
	e.out.stalled = true
	why := "no acknowledgement yet"
	if oldest.err != nil {
		why = oldest.err.Error()
	}
	e.health.Set(health.Outbox, fmt.Sprintf("producing commands to %s fails since %s: %s (%d outbox records unacknowledged for %s or more)",
		oldest.rec.Topic, oldest.since.Format(time.RFC3339), why, n, e.out.stall))
}

// outboxStale says why the outbox entry key of partition p is no longer
// wanted ("" while it is): a command or await registration whose saga does
// not wait for that attempt any more — it moved on (a reply, a timeout, a
// cancel), ended, or is gone. Entries of other kinds (the resumes of await
// steps, whose saga lives elsewhere) are always wanted; so is an entry
// whose saga cannot be read now (it is produced: duplicates are harmless).
func (e *Engine) outboxStale(ctx context.Context, p storage.Partition, key string) string {
	ref, step, comp, attempt, ok := parseOutKey(key)
	if !ok {
		return ""
	}
	s, err := e.store.Get(ctx, ref)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return "the saga is gone"
	case err != nil:
		return ""
	case s.Status.Terminal():
		return "the saga ended (" + s.Status.String() + ")"
	}
	w := s.Wait
	if w == nil || (w.Kind != storage.WaitCommand && w.Kind != storage.WaitEvent) || w.Step < 0 || w.Step >= len(s.Steps) ||
		s.Steps[w.Step].Name != step || w.Compensating != comp || w.Attempt != attempt {
		return "the saga moved on"
	}
	return ""
}

// parseOutKey reads the outbox key of a command or an await registration
// (metaOut + "c/" + saga ref + "/" + step + "/" + "a"|"c" + attempt).
func parseOutKey(key string) (ref, step string, comp bool, attempt uint32, ok bool) {
	rest, found := strings.CutPrefix(key, metaOut+"c/")
	if !found {
		return "", "", false, 0, false
	}
	ref, rest, found = strings.Cut(rest, "/") // topics and saga names hold no '/'
	i := strings.LastIndexByte(rest, '/')
	if !found || i < 0 || len(rest) < i+3 {
		return "", "", false, 0, false
	}
	step, ka := rest[:i], rest[i+1:]
	n, err := strconv.ParseUint(ka[1:], 10, 32)
	if err != nil || (ka[0] != 'a' && ka[0] != 'c') {
		return "", "", false, 0, false
	}
	return ref, step, ka[0] == 'c', uint32(n), true
}

// relayLoop deletes acknowledged outbox entries, many per store write,
// until ctx ends.
func (e *Engine) relayLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e.out.mu.Lock()
			e.outboxHealthLocked()
			e.out.mu.Unlock()
			continue
		case <-e.out.wake:
		}
		e.out.mu.Lock()
		acked := e.out.acked
		e.out.acked = nil
		e.out.mu.Unlock()
		var puts []storage.Meta
		for _, k := range acked {
			if e.Owns(storage.Position{Topic: k.p.Topic, Partition: k.p.Partition}) {
				puts = append(puts, storage.Meta{Partition: k.p, Key: k.key})
			}
		}
		if len(puts) > 0 {
			if err := e.store.Write(context.WithoutCancel(ctx), storage.WriteBatch{Meta: puts}); err == nil {
				e.mirrorMeta(puts)
			} else if ok, quiet := e.errLog.Allow("outbox-delete"); ok {
				// The entries stay: they are produced once more at the next
				// Acquire (duplicates are harmless).
				e.log.Warn("deleting sent records from the outbox failed", "records", len(puts), "err", err, "similar_lines_suppressed", quiet)
			}
		}
		e.out.mu.Lock()
		for _, k := range acked {
			delete(e.out.inflight, k)
		}
		if e.out.stalled {
			e.outboxHealthLocked()
		}
		e.out.mu.Unlock()
	}
}

// resendOutbox produces the outbox entries of p (an acquired partition, or
// a local one at recovery). Entries whose saga no longer waits for them
// (outboxStale) are deleted instead.
func (e *Engine) resendOutbox(ctx context.Context, p storage.Partition) (int, error) {
	if e.sender == nil {
		return 0, nil
	}
	type entry struct {
		key string
		rec *OutRecord
	}
	var (
		entries []entry
		stale   []storage.Meta
	)
	err := e.store.ScanMeta(ctx, p, metaOut, func(key string, value []byte) error {
		r, err := decodeOut(value)
		if err != nil {
			e.log.Error("unreadable outbox entry dropped", "partition", p.String(), "err", err)
			return nil
		}
		entries = append(entries, entry{key, r})
		return nil
	})
	n := 0
	for _, en := range entries {
		if why := e.outboxStale(ctx, p, en.key); why != "" {
			e.log.Info("outbox record dropped: its saga no longer waits for it", "topic", en.rec.Topic,
				"partition", p.String(), "entry", en.key[len(metaOut):], "why", why)
			stale = append(stale, storage.Meta{Partition: p, Key: en.key})
			continue
		}
		e.send(p, en.key, en.rec)
		n++
	}
	if len(stale) > 0 {
		if werr := e.store.Write(context.WithoutCancel(ctx), storage.WriteBatch{Meta: stale}); werr == nil {
			e.mirrorMeta(stale)
		} else if ok, quiet := e.errLog.Allow("outbox-delete"); ok {
			// They stay, and are looked at again at the next Acquire.
			e.log.Warn("deleting outbox records no saga waits for failed", "records", len(stale), "err", werr, "similar_lines_suppressed", quiet)
		}
	}
	return n, err
}

// mirrorMeta mirrors meta records to the changelog, for the partitions
// owned here.
func (e *Engine) mirrorMeta(puts []storage.Meta) {
	if e.mirror == nil {
		return
	}
	for _, m := range puts {
		if isLocal(m.Partition.Topic) {
			continue
		}
		e.mu.Lock()
		owned := e.parts[m.Partition] != nil || e.leaving[m.Partition] != nil
		e.mu.Unlock()
		if owned {
			e.mirror.AppendMeta(m.Partition, m.Key, m.Value)
		}
	}
}
