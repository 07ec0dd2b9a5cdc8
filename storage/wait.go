package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// WaitKind says what a waiting saga waits for.
type WaitKind uint8

// Kinds of waits.
const (
	WaitCommand WaitKind = iota + 1 // the reply to a command
	WaitEvent                       // an event matching a correlation
	WaitSleep                       // a sleep step's end
	WaitRetry                       // the back-off before the next attempt
)

var waitKindNames = [...]string{"", "command", "event", "sleep", "retry"}

func (k WaitKind) String() string {
	if k.Valid() {
		return waitKindNames[k]
	}
	return "wait(" + strconv.Itoa(int(k)) + ")"
}

// Valid reports whether k is one of the kinds.
func (k WaitKind) Valid() bool { return k >= WaitCommand && k <= WaitRetry }

// MarshalText implements encoding.TextMarshaler.
func (k WaitKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *WaitKind) UnmarshalText(b []byte) error {
	for i, n := range waitKindNames {
		if i > 0 && n == string(b) {
			*k = WaitKind(i)
			return nil
		}
	}
	return fmt.Errorf("storage: invalid wait kind %q", b)
}

// Wait is what a waiting saga waits for (record extension 2). A saga with a
// Wait holds no goroutine: a reply, an event, or its Deadline passing
// resumes it. The store keeps every non-terminal saga's Deadline in the
// partition's timer index (Timers).
type Wait struct {
	Kind WaitKind `json:"kind"`
	// Step is the index of the step waiting; Compensating says whether its
	// compensation (not its action) waits; Attempt is the attempt waited
	// for (for WaitRetry: the attempt that failed).
	Step         int       `json:"step"`
	Attempt      uint32    `json:"attempt"`
	Compensating bool      `json:"compensating,omitempty"`
	Since        time.Time `json:"since"`
	// Deadline is when the wait ends without what it waits for: a timeout
	// (command, event), or the time to go on (sleep, retry).
	Deadline time.Time `json:"deadline,omitzero"`
	// Topic is the command's topic (WaitCommand) or the awaited topic
	// (WaitEvent); Field and Value the awaited correlation.
	Topic string `json:"topic,omitempty"`
	Field string `json:"field,omitempty"`
	Value string `json:"value,omitempty"`
}

func appendWait(dst []byte, w *Wait) []byte {
	dst = append(dst, byte(w.Kind))
	dst = binary.AppendUvarint(dst, uint64(w.Step))
	dst = binary.AppendUvarint(dst, uint64(w.Attempt))
	var flags byte
	if w.Compensating {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = appendTime(dst, w.Since)
	dst = appendTime(dst, w.Deadline)
	dst = appendStr(dst, w.Topic)
	dst = appendStr(dst, w.Field)
	return appendStr(dst, w.Value)
}

// waitSize is the length of appendWait's encoding of w.
func waitSize(w *Wait) int {
	var b [4 * binary.MaxVarintLen64]byte
	n := 1 + len(binary.AppendUvarint(b[:0], uint64(w.Step))) + len(binary.AppendUvarint(b[:0], uint64(w.Attempt))) + 1
	n += timeSize(w.Since) + timeSize(w.Deadline)
	for _, s := range []string{w.Topic, w.Field, w.Value} {
		n += len(binary.AppendUvarint(b[:0], uint64(len(s)))) + len(s)
	}
	return n
}

func timeSize(t time.Time) int {
	if t.IsZero() {
		return 1
	}
	return varintLen(t.UnixNano())
}

// uncertainSize is the length of appendUncertain's encoding of steps.
func uncertainSize(steps []int) int {
	var b [binary.MaxVarintLen64]byte
	n := len(binary.AppendUvarint(b[:0], uint64(len(steps))))
	for _, i := range steps {
		n += len(binary.AppendUvarint(b[:0], uint64(i)))
	}
	return n
}

func decodeWait(b []byte) (*Wait, error) {
	d := decoder{b: b}
	w := &Wait{Kind: WaitKind(d.byte())}
	step := d.uvarint()
	if step > 1<<20 {
		d.fail("wait step out of range")
	}
	w.Step = int(step)
	w.Attempt = d.uint32()
	flags := d.byte()
	w.Compensating = flags&1 != 0
	w.Since = d.time()
	w.Deadline = d.time()
	w.Topic = d.str()
	w.Field = d.str()
	w.Value = d.str()
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes in the wait")
	}
	if d.err == nil && !w.Kind.Valid() {
		d.fail("wait kind")
	}
	return w, d.err
}

func appendUncertain(dst []byte, steps []int) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(steps)))
	for _, i := range steps {
		dst = binary.AppendUvarint(dst, uint64(i))
	}
	return dst
}

func decodeUncertain(b []byte) ([]int, error) {
	d := decoder{b: b}
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("uncertain count")
	}
	var out []int
	for i := uint64(0); d.err == nil && i < n; i++ {
		v := d.uvarint()
		if v > 1<<20 {
			d.fail("uncertain step out of range")
		}
		out = append(out, int(v))
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes in the uncertain steps")
	}
	return out, d.err
}

// Timer index (layout.go): bucket "w" maps a waiting saga (its saga key) to
// its deadline (8 bytes, the timer key's prefix; empty when it has none),
// bucket "t" holds one key per deadline: deadline + saga key. Both are
// derived from the records: every write of a saga, and Apply, keeps them
// in step with its Wait; a terminal saga has no timer.

// timerKey is a timer's key: the deadline (Unix ns, sign bit flipped, so
// the big-endian bytes sort in time order) followed by the saga key.
func timerKey(due int64, sk []byte) []byte {
	k := make([]byte, 0, 8+len(sk))
	k = binary.BigEndian.AppendUint64(k, uint64(due)^1<<63)
	return append(k, sk...)
}

// waitBuckets returns the partition's wait and timer buckets, creating
// them when create is set (nil, nil when they do not exist).
func (pb *partBuckets) waitBuckets(create bool) (*bolt.Bucket, *bolt.Bucket, error) {
	if pb.waits != nil || pb.waitsChecked && !create {
		return pb.waits, pb.timers, nil
	}
	pb.waitsChecked = true
	pb.waits, pb.timers = pb.root.Bucket(bucketWaits), pb.root.Bucket(bucketTimers)
	if pb.waits != nil && pb.timers != nil || !create {
		return pb.waits, pb.timers, nil
	}
	var err error
	if pb.waits, err = pb.root.CreateBucketIfNotExists(bucketWaits); err != nil {
		return nil, nil, err
	}
	if pb.timers, err = pb.root.CreateBucketIfNotExists(bucketTimers); err != nil {
		return nil, nil, err
	}
	return pb.waits, pb.timers, nil
}

// syncWait brings the timer index in step with the saga stored under sk
// (s nil: the saga was deleted).
func syncWait(pb *partBuckets, sk []byte, s *Saga) error {
	var due []byte                                                                     // nil: no wait; empty: a wait without deadline
	if s != nil && s.Wait != nil && !s.Status.Terminal() && s.Status != StatusParked { // a parked saga waits for an operator
		due = []byte{}
		if !s.Wait.Deadline.IsZero() {
			due = timerKey(unixNanos(s.Wait.Deadline), nil)
		}
	}
	wb, tb, err := pb.waitBuckets(due != nil)
	if err != nil || wb == nil {
		return err
	}
	old := wb.Get(sk)
	if old != nil {
		if due != nil && bytes.Equal(old, due) {
			return nil
		}
		if len(old) == 8 {
			if err := tb.Delete(append(append([]byte(nil), old...), sk...)); err != nil {
				return err
			}
		}
		if due == nil {
			if err := countWaiting(pb, -1); err != nil {
				return err
			}
			return wb.Delete(sk)
		}
	}
	if due == nil {
		return nil
	}
	if old == nil {
		if err := countWaiting(pb, 1); err != nil {
			return err
		}
	}
	if err := wb.Put(sk, due); err != nil {
		return err
	}
	if len(due) == 8 {
		return tb.Put(append(due, sk...), nil)
	}
	return nil
}

// countWaiting moves the partition's count of waiting sagas (key "wn").
func countWaiting(pb *partBuckets, d int64) error {
	var n int64
	if v := pb.root.Get(keyWaiting); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	return pb.root.Put(keyWaiting, binary.BigEndian.AppendUint64(nil, uint64(max(n+d, 0))))
}

// CountWaiting counts the sagas that wait (for a reply, an event, a sleep
// or a back-off) in the partitions include accepts (nil: all), from each
// partition's counter.
func (b *Bolt) CountWaiting(ctx context.Context, include func(Partition) bool) (int, error) {
	n := 0
	err := b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			p, ok := parsePartName(name)
			if !ok || include != nil && !include(p) {
				return nil
			}
			if v := tx.Bucket(bucketParts).Bucket(name).Get(keyWaiting); len(v) == 8 {
				n += int(binary.BigEndian.Uint64(v))
			}
			return nil
		})
	})
	return n, err
}

// WriteBatch is one atomic, durable write: updates of existing sagas (as
// Store.Update) and meta records (as Store.PutMeta), all or nothing.
type WriteBatch struct {
	Sagas []*Saga
	Meta  []Meta
}

// Write implements Store.
func (b *Bolt) Write(ctx context.Context, wb WriteBatch) error {
	ups, err := prepareUpdates(wb.Sagas)
	if err != nil {
		return err
	}
	meta, err := copyMeta(wb.Meta)
	if err != nil {
		return err
	}
	err = b.submit(ctx, func(w *wtx) error {
		for _, u := range ups {
			if err := b.putUpdate(w, u); err != nil {
				return err
			}
		}
		return putMetas(w, meta)
	})
	if err == nil {
		keepRecords(ups)
	}
	return err
}

func copyMeta(ms []Meta) ([]Meta, error) {
	out := make([]Meta, len(ms))
	for i, m := range ms {
		if !validTopic(m.Partition.Topic) || m.Partition.Partition < 0 || m.Key == "" {
			return nil, fmt.Errorf("%w: meta record %q of partition %s", ErrInvalidSaga, m.Key, m.Partition)
		}
		out[i] = m
		if m.Value != nil {
			out[i].Value = append([]byte{}, m.Value...)
		}
	}
	return out, nil
}

func putMetas(w *wtx, ms []Meta) error {
	for _, m := range ms {
		pb, err := w.part(m.Partition, true)
		if err != nil {
			return err
		}
		if err := putMeta(pb, m.Key, m.Value); err != nil {
			return err
		}
	}
	return nil
}

// ScanMeta implements Store.
func (b *Bolt) ScanMeta(ctx context.Context, p Partition, prefix string, fn func(key string, value []byte) error) error {
	return b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		mb := pb.root.Bucket(bucketMetaP)
		if mb == nil {
			return nil
		}
		pre := []byte(prefix)
		c := mb.Cursor()
		for k, v := c.Seek(pre); k != nil && bytes.HasPrefix(k, pre); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(string(k), append([]byte(nil), v...)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Timer is one entry of a partition's timer index: the saga at Pos named
// Name has a wait that ends at Due.
type Timer struct {
	Due  time.Time
	Pos  Position
	Name string
	// Key is the timer's place in the index: pass it as Timers' after to
	// continue behind it.
	Key []byte
}

// TimerPage is what Timers found.
type TimerPage struct {
	// Due are the timers due at or before the time asked, in due order.
	Due []Timer
	// Next is the deadline of the first timer not in Due (zero: none).
	Next time.Time
}

// Timers implements Store.
func (b *Bolt) Timers(ctx context.Context, p Partition, now time.Time, after []byte, limit int) (TimerPage, error) {
	var page TimerPage
	if limit <= 0 {
		limit = 1000
	}
	cut := unixNanos(now)
	err := b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		tb := pb.root.Bucket(bucketTimers)
		if tb == nil {
			return nil
		}
		c := tb.Cursor()
		k, _ := c.First()
		if after != nil {
			k, _ = c.Seek(after)
			if k != nil && bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil; k, _ = c.Next() {
			if len(k) <= 16 {
				return fmt.Errorf("%w: partition %s: timer key %x", ErrCorrupt, p, k)
			}
			due := int64(binary.BigEndian.Uint64(k[:8]) ^ 1<<63)
			if due > cut || len(page.Due) >= limit {
				page.Next = time.Unix(0, due).UTC()
				return nil
			}
			page.Due = append(page.Due, Timer{Due: time.Unix(0, due).UTC(),
				Pos:  Position{Topic: p.Topic, Partition: p.Partition, Offset: int64(binary.BigEndian.Uint64(k[8:16]))},
				Name: string(k[16:]), Key: append([]byte(nil), k...)})
		}
		return nil
	})
	return page, err
}
