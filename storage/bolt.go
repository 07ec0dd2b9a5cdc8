package storage

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Layout (schema 1):
//
//	"meta"            schema version
//	"parts"           one nested bucket per topic-partition, named "<topic>/<partition>":
//	    "s"  sagas:       offset(8, big-endian) + name      -> record (codec.go)
//	    "k"  idempotency: name + 0x00 + key                 -> offset(8)
//	    "i"  status index: status(1) + name + 0x00 + offset(8) -> empty
//	    "x"  meta records: name -> value (created on first use)
//	    "n"  next offset (8)
//	    "c"  next changelog offset (8): the changelog is applied below it
//
// Offsets arrive in order, so saga inserts are appends (DESIGN §5). The
// status index keys also grow at the end of each (status, name) range.
var (
	bucketMeta  = []byte("meta")
	bucketParts = []byte("parts")
	bucketSagas = []byte("s")
	bucketIdem  = []byte("k")
	bucketIndex = []byte("i")
	bucketMetaP = []byte("x")
	keyNext     = []byte("n")
	keyCLNext   = []byte("c")
	keySchema   = []byte("schema")
)

const schemaVersion = 1

// BoltOptions tune a Bolt store. The zero value is fine.
type BoltOptions struct {
	// MaxBatchOps bounds how many queued writes share one transaction
	// (group commit). Default 4096.
	MaxBatchOps int
	// LockTimeout is how long Open waits for another process to release the
	// file. Default 2s.
	LockTimeout time.Duration
	// Now is the clock for CreatedAt/UpdatedAt set by Start. Default time.Now.
	Now func() time.Time
	// ReleaseInterval: how often the process drops its mappings of database
	// pages (Linux), so resident memory tracks the working set instead of
	// growing with the file. Default 500ms; negative disables.
	ReleaseInterval time.Duration
}

// Bolt is the bbolt-backed Store. Writes go through one writer goroutine
// that groups every write queued while the previous transaction was being
// fsynced into the next transaction.
type Bolt struct {
	db   *bolt.DB
	opts BoltOptions

	mu     sync.RWMutex // guards closed and sends on ops
	closed bool
	ops    chan *writeOp
	done   chan struct{}
	stop   chan struct{} // ends the release loop
	wg     sync.WaitGroup
}

type writeOp struct {
	apply func(w *wtx) error
	done  chan error
}

// wtx is one write transaction with its partition buckets looked up once
// (a group commit touches the same few partitions thousands of times).
type wtx struct {
	tx    *bolt.Tx
	parts map[Partition]*partBuckets
}

func (w *wtx) part(p Partition, create bool) (*partBuckets, error) {
	if pb, ok := w.parts[p]; ok {
		return pb, nil
	}
	pb, err := openPart(w.tx, p, create)
	if err == nil && pb != nil {
		w.parts[p] = pb
	}
	return pb, err
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) the store at path.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.MaxBatchOps <= 0 {
		opts.MaxBatchOps = 4096
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ReleaseInterval == 0 {
		opts.ReleaseInterval = 500 * time.Millisecond
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("storage: create data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("storage: %s is locked by another process (is another sagaz running with the same data dir?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := m.Get(keySchema); v != nil {
			if got, _ := strconv.Atoi(string(v)); got != schemaVersion {
				return fmt.Errorf("storage: %s has schema %s, this build reads schema %d", path, v, schemaVersion)
			}
		} else if err := m.Put(keySchema, []byte(strconv.Itoa(schemaVersion))); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketParts)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	b := &Bolt{db: db, opts: opts, ops: make(chan *writeOp, 1024), done: make(chan struct{}), stop: make(chan struct{})}
	go b.writer()
	if opts.ReleaseInterval > 0 {
		b.wg.Add(1)
		go b.releaseLoop()
	}
	return b, nil
}

func (b *Bolt) releaseLoop() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.ReleaseInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			_ = b.releaseMapped() // best effort: memory accounting only
		}
	}
}

// Close waits for queued writes, then closes the database.
func (b *Bolt) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.ops)
	close(b.stop)
	b.mu.Unlock()
	<-b.done
	b.wg.Wait()
	return b.db.Close()
}

// DB exposes the underlying bbolt database (read-only use: stats, checks).
func (b *Bolt) DB() *bolt.DB { return b.db }

// submit queues a write and waits until it is durable.
func (b *Bolt) submit(ctx context.Context, apply func(w *wtx) error) error {
	op := &writeOp{apply: apply, done: make(chan error, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrClosed
	}
	select {
	case b.ops <- op:
	case <-ctx.Done():
		b.mu.RUnlock()
		return ctx.Err()
	}
	b.mu.RUnlock()
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Bolt) writer() {
	defer close(b.done)
	batch := make([]*writeOp, 0, b.opts.MaxBatchOps)
	for op := range b.ops {
		batch = append(batch[:0], op)
	drain:
		for len(batch) < b.opts.MaxBatchOps {
			select {
			case more, ok := <-b.ops:
				if !ok {
					break drain
				}
				batch = append(batch, more)
			default:
				break drain
			}
		}
		b.commit(batch)
	}
}

// commit applies ops in one transaction. If one op fails, that op gets its
// error and the others are committed without it.
func (b *Bolt) commit(ops []*writeOp) {
	for len(ops) > 0 {
		failed := -1
		err := b.db.Update(func(tx *bolt.Tx) error {
			w := &wtx{tx: tx, parts: map[Partition]*partBuckets{}}
			for i, op := range ops {
				if err := op.apply(w); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if err == nil {
			for _, op := range ops {
				op.done <- nil
			}
			return
		}
		if failed < 0 { // the commit itself failed (I/O): nobody's write is durable
			for _, op := range ops {
				op.done <- err
			}
			return
		}
		ops[failed].done <- err
		ops = append(ops[:failed:failed], ops[failed+1:]...)
	}
}

func partName(p Partition) []byte {
	return []byte(p.Topic + "/" + strconv.FormatInt(int64(p.Partition), 10))
}

func parsePartName(n []byte) (Partition, bool) {
	i := bytes.LastIndexByte(n, '/')
	if i <= 0 {
		return Partition{}, false
	}
	v, err := strconv.ParseInt(string(n[i+1:]), 10, 32)
	if err != nil {
		return Partition{}, false
	}
	return Partition{Topic: string(n[:i]), Partition: int32(v)}, true
}

func sagaKey(off int64, name string) []byte {
	k := make([]byte, 8+len(name))
	binary.BigEndian.PutUint64(k, uint64(off))
	copy(k[8:], name)
	return k
}

func indexKey(st Status, name string, off int64) []byte {
	k := make([]byte, 0, 1+len(name)+1+8)
	k = append(k, byte(st))
	k = append(k, name...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(off))
}

func idemKey(name, key string) []byte {
	k := make([]byte, 0, len(name)+1+len(key))
	k = append(k, name...)
	k = append(k, 0)
	return append(k, key...)
}

// partBuckets are the sub-buckets of one partition within a transaction,
// with its next offset read once.
type partBuckets struct {
	root, sagas, idem, index *bolt.Bucket
	nextOff                  int64
	nextRead, nextDirty      bool
}

// next returns the partition's recorded next offset (0 if none).
func (pb *partBuckets) next() int64 {
	if !pb.nextRead {
		pb.nextRead = true
		if v := pb.root.Get(keyNext); len(v) == 8 {
			pb.nextOff = int64(binary.BigEndian.Uint64(v))
		}
	}
	return pb.nextOff
}

// advance moves the partition's next offset to next unless it is already
// later: the next offset never moves backwards. flushNext writes it.
func (pb *partBuckets) advance(next int64) {
	if next > pb.next() {
		pb.nextOff, pb.nextDirty = next, true
	}
}

// changelogNext returns the recorded next changelog offset (0 if none).
func (pb *partBuckets) changelogNext() int64 {
	if v := pb.root.Get(keyCLNext); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

// setChangelogNext records the next changelog offset; it never moves back.
func (pb *partBuckets) setChangelogNext(n int64) error {
	if n <= pb.changelogNext() {
		return nil
	}
	return pb.root.Put(keyCLNext, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

func (pb *partBuckets) flushNext() error {
	if !pb.nextDirty {
		return nil
	}
	pb.nextDirty = false
	return pb.root.Put(keyNext, binary.BigEndian.AppendUint64(nil, uint64(pb.nextOff)))
}

func openPart(tx *bolt.Tx, p Partition, create bool) (*partBuckets, error) {
	parts := tx.Bucket(bucketParts)
	name := partName(p)
	root := parts.Bucket(name)
	if root == nil {
		if !create {
			return nil, nil
		}
		var err error
		if root, err = parts.CreateBucket(name); err != nil {
			return nil, err
		}
		for _, n := range [][]byte{bucketSagas, bucketIdem, bucketIndex} {
			if _, err := root.CreateBucket(n); err != nil {
				return nil, err
			}
		}
	}
	return &partBuckets{root: root, sagas: root.Bucket(bucketSagas), idem: root.Bucket(bucketIdem), index: root.Bucket(bucketIndex)}, nil
}

func validTopic(t string) bool { return ValidName(strings.TrimPrefix(t, "~")) }

func validate(s *Saga) error {
	switch {
	case !ValidName(s.Name):
		return fmt.Errorf("%w: saga name %q", ErrInvalidSaga, s.Name)
	case !validTopic(s.Source.Topic):
		return fmt.Errorf("%w: topic %q", ErrInvalidSaga, s.Source.Topic)
	case s.Source.Partition < 0 || s.Source.Offset < 0:
		return fmt.Errorf("%w: position %d/%d", ErrInvalidSaga, s.Source.Partition, s.Source.Offset)
	}
	return nil
}

// Start implements Store.
func (b *Bolt) Start(ctx context.Context, batch StartBatch) ([]StartResult, error) {
	now := b.opts.Now().UTC()
	recs := make([][]byte, len(batch.Sagas))
	for i, s := range batch.Sagas {
		if err := validate(s); err != nil {
			return nil, err
		}
		s.Status = StatusPending
		s.Version = 1
		s.CreatedAt, s.UpdatedAt = now, now
		recs[i] = EncodeSaga(nil, s)
	}
	for _, o := range batch.Offsets {
		if !validTopic(o.Topic) || o.Partition < 0 || o.Next < 0 {
			return nil, fmt.Errorf("%w: offset %s/%d:%d", ErrInvalidSaga, o.Topic, o.Partition, o.Next)
		}
	}
	var results []StartResult
	err := b.submit(ctx, func(w *wtx) error {
		results = make([]StartResult, len(batch.Sagas))
		part := func(p Partition) (*partBuckets, error) { return w.part(p, true) }
		for i, s := range batch.Sagas {
			pb, err := part(s.Source.TopicPartition())
			if err != nil {
				return err
			}
			sk := sagaKey(s.Source.Offset, s.Name)
			// Every saga recorded so far sits below the partition's recorded
			// next offset (Start advances it past each saga it inserts), so a
			// saga at or above it is new: no lookup needed.
			if s.Source.Offset < pb.next() && pb.sagas.Get(sk) != nil {
				results[i] = StartResult{ID: s.ID()}
				continue
			}
			if s.IdempotencyKey != "" {
				ik := idemKey(s.Name, s.IdempotencyKey)
				if v := pb.idem.Get(ik); len(v) == 8 {
					pos := s.Source
					pos.Offset = int64(binary.BigEndian.Uint64(v))
					results[i] = StartResult{ID: FormatID(pos, s.Name)}
					continue
				}
				if err := pb.idem.Put(ik, sk[:8]); err != nil {
					return err
				}
			}
			if err := pb.sagas.Put(sk, recs[i]); err != nil {
				return err
			}
			if err := pb.index.Put(indexKey(StatusPending, s.Name, s.Source.Offset), nil); err != nil {
				return err
			}
			pb.advance(s.Source.Offset + 1)
			results[i] = StartResult{ID: s.ID(), Created: true, Saga: s}
		}
		for _, o := range batch.Offsets {
			pb, err := part(o.TopicPartition())
			if err != nil {
				return err
			}
			pb.advance(o.Next)
		}
		for _, o := range batch.Changelog {
			pb, err := part(o.TopicPartition())
			if err != nil {
				return err
			}
			if err := pb.setChangelogNext(o.Next); err != nil {
				return err
			}
		}
		for _, pb := range w.parts {
			if err := pb.flushNext(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// Update implements Store.
func (b *Bolt) Update(ctx context.Context, sagas ...*Saga) error {
	type upd struct {
		p      Partition
		key    []byte
		rec    []byte
		s      *Saga
		status Status
	}
	ups := make([]upd, len(sagas))
	for i, s := range sagas {
		if err := validate(s); err != nil {
			return err
		}
		if !s.Status.Valid() {
			return fmt.Errorf("%w: status %d", ErrInvalidSaga, s.Status)
		}
		s.Version++
		ups[i] = upd{p: s.Source.TopicPartition(), key: sagaKey(s.Source.Offset, s.Name), rec: EncodeSaga(nil, s), s: s, status: s.Status}
	}
	return b.submit(ctx, func(w *wtx) error {
		for _, u := range ups {
			pb, err := w.part(u.p, false)
			if err != nil {
				return err
			}
			var old []byte
			if pb != nil {
				old = pb.sagas.Get(u.key)
			}
			if old == nil {
				return fmt.Errorf("%w: update of %s", ErrNotFound, u.s.ID())
			}
			prev := statusOfRecord(old)
			if err := pb.sagas.Put(u.key, u.rec); err != nil {
				return err
			}
			if prev != u.status {
				if err := pb.index.Delete(indexKey(prev, u.s.Name, u.s.Source.Offset)); err != nil {
					return err
				}
				if err := pb.index.Put(indexKey(u.status, u.s.Name, u.s.Source.Offset), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, id string) (*Saga, error) {
	pos, name, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	var s *Saga
	err = b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, pos.TopicPartition(), false)
		if err != nil {
			return err
		}
		if pb == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		v := pb.sagas.Get(sagaKey(pos.Offset, name))
		if v == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		s, err = DecodeSaga(v)
		return err
	})
	return s, err
}

func (b *Bolt) view(fn func(tx *bolt.Tx) error) error {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	return b.db.View(fn)
}

// NextOffset implements Store.
func (b *Bolt) NextOffset(ctx context.Context, p Partition) (int64, bool, error) {
	var (
		next int64
		ok   bool
	)
	err := b.view(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil || pb == nil {
			return err
		}
		if v := pb.root.Get(keyNext); len(v) == 8 {
			next, ok = int64(binary.BigEndian.Uint64(v)), true
		}
		return nil
	})
	return next, ok, err
}

// pos is a position inside one partition: offset, then saga name.
type pos struct {
	off  int64
	name string
}

func (a pos) less(b pos) bool { return a.off < b.off || a.off == b.off && a.name < b.name }

// rangeIter walks one (status, name) range of the status index, or the
// whole sagas bucket when prefix is nil, in either direction.
type rangeIter struct {
	c      *bolt.Cursor
	prefix []byte // status + name + 0x00; nil for the sagas bucket
	desc   bool
	k      []byte
}

func (r *rangeIter) cur() pos {
	if r.prefix == nil {
		return pos{int64(binary.BigEndian.Uint64(r.k[:8])), string(r.k[8:])}
	}
	return pos{int64(binary.BigEndian.Uint64(r.k[len(r.k)-8:])), string(r.k[1 : len(r.k)-9])}
}

func (r *rangeIter) keyFor(p pos) []byte {
	if r.prefix == nil {
		return sagaKey(p.off, p.name)
	}
	return binary.BigEndian.AppendUint64(append([]byte(nil), r.prefix...), uint64(p.off))
}

func (r *rangeIter) valid() bool {
	if r.k == nil {
		return false
	}
	if r.prefix == nil {
		return len(r.k) > 8
	}
	return len(r.k) == len(r.prefix)+8 && bytes.HasPrefix(r.k, r.prefix)
}

// seekAfter places the iterator on the first entry that comes after bound
// in its direction (bound itself excluded); a nil bound starts at the end
// (descending) or the beginning (ascending).
func (r *rangeIter) seekAfter(bound *pos) {
	if !r.desc {
		r.k, _ = r.c.Seek(r.prefix)
		if bound != nil {
			for r.valid() && !bound.less(r.cur()) {
				r.k, _ = r.c.Next()
			}
		}
	} else {
		var seek []byte
		switch {
		case bound == nil && r.prefix == nil:
			r.k, _ = r.c.Last()
			goto check
		case bound == nil:
			seek = binary.BigEndian.AppendUint64(append([]byte(nil), r.prefix...), math.MaxUint64)
		default:
			seek = r.keyFor(*bound)
		}
		if k, _ := r.c.Seek(seek); k == nil {
			r.k, _ = r.c.Last()
		} else {
			r.k, _ = r.c.Prev()
		}
		// Entries with the bound's offset but a later name sort after the
		// bound in (offset, name) order: skip them.
		for bound != nil && r.valid() && !r.cur().less(*bound) {
			r.k, _ = r.c.Prev()
		}
	}
check:
	if !r.valid() {
		r.k = nil
	}
}

func (r *rangeIter) next() {
	if r.desc {
		r.k, _ = r.c.Prev()
	} else {
		r.k, _ = r.c.Next()
	}
	if !r.valid() {
		r.k = nil
	}
}

// names lists the distinct saga names present in the index under status.
func names(index *bolt.Bucket, st Status) []string {
	var out []string
	c := index.Cursor()
	k, _ := c.Seek([]byte{byte(st)})
	for k != nil && k[0] == byte(st) && len(k) >= 10 {
		n := string(k[1 : len(k)-9])
		out = append(out, n)
		k, _ = c.Seek(append(append([]byte{byte(st)}, n...), 1))
	}
	return out
}

// iters builds the merged iterators of one partition for a status/name filter.
func iters(pb *partBuckets, statuses []Status, name string, desc bool) []*rangeIter {
	if len(statuses) == 0 && name == "" {
		return []*rangeIter{{c: pb.sagas.Cursor(), desc: desc}}
	}
	if len(statuses) == 0 {
		statuses = Statuses
	}
	var its []*rangeIter
	for _, st := range statuses {
		ns := []string{name}
		if name == "" {
			ns = names(pb.index, st)
		}
		for _, n := range ns {
			p := append(append([]byte{byte(st)}, n...), 0)
			its = append(its, &rangeIter{c: pb.index.Cursor(), prefix: p, desc: desc})
		}
	}
	return its
}

// merged yields positions from several iterators in one order.
type merged struct {
	its  []*rangeIter
	desc bool
}

func (m *merged) seekAfter(bound *pos) {
	for _, it := range m.its {
		it.seekAfter(bound)
	}
}

func (m *merged) next() (pos, bool) {
	var best *rangeIter
	var bp pos
	for _, it := range m.its {
		if it.k == nil {
			continue
		}
		p := it.cur()
		if best == nil || (m.desc && bp.less(p)) || (!m.desc && p.less(bp)) {
			best, bp = it, p
		}
	}
	if best == nil {
		return pos{}, false
	}
	best.next()
	return bp, true
}

// Scan implements Store.
func (b *Bolt) Scan(ctx context.Context, statuses []Status, fn func(*Saga) error) error {
	return b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			pb, err := openPart(tx, mustPart(name), false)
			if err != nil {
				return err
			}
			if err := scanPart(ctx, pb, statuses, fn); err != nil {
				return fmt.Errorf("partition %s: %w", name, err)
			}
			return nil
		})
	})
}

func mustPart(name []byte) Partition {
	p, _ := parsePartName(name)
	return p
}

// List implements Store. Within a partition sagas come newest (highest
// offset) first; partitions are merged by creation time. The cursor records
// where each partition stopped.
func (b *Bolt) List(ctx context.Context, q Query) (Page, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	if q.Limit > 1000 {
		q.Limit = 1000
	}
	if q.Status != 0 && !q.Status.Valid() {
		return Page{}, fmt.Errorf("%w: %d", ErrInvalidStatus, q.Status)
	}
	cur, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	var statuses []Status
	if q.Status != 0 {
		statuses = []Status{q.Status}
	}
	type cand struct {
		part string
		p    pos
		s    *Saga
	}
	var cands []cand
	full := map[string]bool{}
	err = b.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParts).ForEachBucket(func(name []byte) error {
			pn := string(name)
			bound, seen := cur[pn]
			pb, err := openPart(tx, mustPart(name), false)
			if err != nil {
				return err
			}
			m := &merged{its: iters(pb, statuses, q.Name, true), desc: true}
			if seen {
				m.seekAfter(&bound)
			} else {
				m.seekAfter(nil)
			}
			for n := 0; n < q.Limit; n++ {
				p, ok := m.next()
				if !ok {
					return nil
				}
				s, err := DecodeSaga(pb.sagas.Get(sagaKey(p.off, p.name)))
				if err != nil {
					return fmt.Errorf("partition %s offset %d: %w", name, p.off, err)
				}
				cands = append(cands, cand{pn, p, s})
			}
			full[pn] = true
			return nil
		})
	})
	if err != nil {
		return Page{}, err
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i].s, cands[j].s
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.ID() > b.ID()
	})
	page := Page{}
	n := min(q.Limit, len(cands))
	next := map[string]pos{}
	for k, v := range cur {
		next[k] = v
	}
	for _, c := range cands[:n] {
		page.Sagas = append(page.Sagas, c.s)
		next[c.part] = c.p
	}
	// A partition that filled its quota may hold more.
	if len(cands) > n || len(full) > 0 {
		page.Next = encodeCursor(next)
	}
	return page, nil
}

func encodeCursor(m map[string]pos) string {
	raw := map[string][2]any{}
	for k, v := range m {
		raw[k] = [2]any{v.off, v.name}
	}
	b, _ := json.Marshal(raw)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (map[string]pos, error) {
	out := map[string]pos{}
	if s == "" {
		return out, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrInvalidCursor
	}
	var raw map[string][2]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, ErrInvalidCursor
	}
	for k, v := range raw {
		var p pos
		if json.Unmarshal(v[0], &p.off) != nil || json.Unmarshal(v[1], &p.name) != nil {
			return nil, ErrInvalidCursor
		}
		out[k] = p
	}
	return out, nil
}
