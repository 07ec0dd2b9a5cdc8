package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

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
	// OnDamage, if set, is called once when the open store finds damage
	// (a bbolt panic, a record whose checksum does not match). From then on
	// every call answers ErrDamaged; restart the process and open the store
	// with OpenOrRecover, which moves the damaged file aside.
	OnDamage func(error)
	// ReleaseInterval: how often the process drops its mappings of database
	// pages (Linux), so resident memory tracks the working set instead of
	// growing with the file; sooner when the process's resident file-backed
	// memory has grown by 16 MiB since the last release. Default 500ms;
	// negative disables both.
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
	dmg    *damageState
	mig    *Migration // what the open did to a store of an older schema

	// the writer's counts (WriterStats)
	commits, writes atomic.Uint64
	busyMu          sync.Mutex
	busy            time.Duration // in transactions that ended
	busySince       time.Time     // start of the one running now; zero if none
}

// WriterStats are the store writer's counts since the store was opened:
// whether writes wait for it, and what its transactions cost.
type WriterStats struct {
	// Commits counts the write transactions the writer committed. Each one
	// fsyncs the file twice (its pages, then its meta page); Busy / Commits
	// is the time a commit takes.
	Commits uint64
	// Writes counts the writes (a poll batch's starts, one saga's
	// transition, a restore's call) those transactions committed; writes
	// queued while a transaction runs share the next one.
	Writes uint64
	// Busy is the time the writer spent running transactions, commit and
	// fsync included, the one running now too (so a commit that hangs shows
	// as time, not as silence). Under load it grows about as fast as the
	// clock: the writer starts the next transaction as soon as a write is
	// queued, and gives it every write queued meanwhile.
	Busy time.Duration
	// PageBytes counts the bytes of the pages write transactions wrote
	// (bbolt's dirty pages, meta pages not counted), including those of the
	// open's own transactions.
	PageBytes uint64
}

// WriterStats returns the writer's counts since the store was opened.
func (b *Bolt) WriterStats() WriterStats {
	tx := b.db.Stats().TxStats
	b.busyMu.Lock()
	busy := b.busy
	if !b.busySince.IsZero() {
		busy += time.Since(b.busySince)
	}
	b.busyMu.Unlock()
	return WriterStats{Commits: b.commits.Load(), Writes: b.writes.Load(), Busy: busy, PageBytes: uint64(tx.GetPageAlloc())}
}

// busyFrom marks the writer busy from now (a transaction starts);
// busyUntil ends it, counting its time.
func (b *Bolt) busyFrom() {
	b.busyMu.Lock()
	b.busySince = time.Now()
	b.busyMu.Unlock()
}

func (b *Bolt) busyUntil() {
	b.busyMu.Lock()
	b.busy += time.Since(b.busySince)
	b.busySince = time.Time{}
	b.busyMu.Unlock()
}

// Migration returns what opening the store did to a store of an older
// schema (see MigrateFile), or nil when it was at this release's schema.
func (b *Bolt) Migration() *Migration { return b.mig }

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

// OpenBolt opens (creating if needed) the store at path. A store of an
// older schema is upgraded in place after a copy of it is made (see
// migrate.go and Migration); a store of a newer schema is refused with an
// error wrapping ErrNewerSchema.
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
	db, err := openChecked(path, &bolt.Options{
		Timeout:      opts.LockTimeout,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("storage: %s is locked by another process (is another sagaz running with the same data dir?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: open %s: %w", path, err)
	}
	schema, err := readSchema(db)
	if err == nil && schema > SchemaVersion {
		err = newerSchemaError(path, schema)
	}
	var mig *Migration
	if err == nil && schema > 0 && schema < SchemaVersion {
		mig, err = migrate(db, path, schema, opts.Now())
	}
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			m, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			if _, err := tx.CreateBucketIfNotExists(bucketParts); err != nil {
				return err
			}
			if schema == 0 {
				if err := m.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
					return err
				}
			}
			// A release that does not know parked or resolved sagas may
			// have written to the file since this one did (a rollback).
			if err := repairParked(tx); err != nil {
				return err
			}
			return repairResolved(tx)
		})
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	b := &Bolt{db: db, opts: opts, ops: make(chan *writeOp, 1024), done: make(chan struct{}), stop: make(chan struct{}),
		dmg: &damageState{path: path, hook: opts.OnDamage}, mig: mig}
	go b.writer()
	if opts.ReleaseInterval > 0 {
		b.wg.Add(1)
		go b.releaseLoop()
	}
	return b, nil
}

// releaseCheck is how often the release loop reads how much file-backed
// memory the process has resident (mappedResident); releaseGrowth is how
// much of it, gained since the last release, makes it release before
// ReleaseInterval. A fast drain maps tens of megabytes of pages between two
// releases (idempotency keys are inserted at random places in their
// B-tree); releasing on the interval alone let them pile up to 70 MB.
// Releasing every 150 ms whatever the growth made latency worse
// (docs/benchmarks.md).
// The reading is process-wide and approximate (the kernel may count it per
// CPU): a growth elsewhere, or another store of the process releasing,
// moves an early release at most; the interval still bounds them.
const releaseCheck = 50 * time.Millisecond

var releaseGrowth atomic.Int64

func init() { releaseGrowth.Store(16 << 20) }

func (b *Bolt) releaseLoop() {
	defer b.wg.Done()
	last := time.Now()
	tick := min(b.opts.ReleaseInterval, releaseCheck)
	early := tick < b.opts.ReleaseInterval // else every tick releases anyway
	t := time.NewTicker(tick)
	defer t.Stop()
	var base int64
	known := false
	if early {
		base, known = mappedResident()
	}
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			grown := false
			if early {
				cur, ok := mappedResident()
				if ok && (!known || cur < base) {
					// no base yet, or pages went (reclaimed, another store
					// released): measure from here
					base, known = cur, true
				}
				grown = ok && cur-base >= releaseGrowth.Load()
			}
			if !grown && now.Sub(last) < b.opts.ReleaseInterval {
				continue
			}
			_ = b.releaseMapped() // best effort: memory accounting only
			last = now
			if early {
				base, known = mappedResident()
			}
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
	if err := b.dmg.damaged(); err != nil {
		return err
	}
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
	b.busyFrom()
	defer b.busyUntil()
	for len(ops) > 0 {
		failed := -1
		err := b.update(func(tx *bolt.Tx) error {
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
			b.commits.Add(1)
			b.writes.Add(uint64(len(ops)))
			for _, op := range ops {
				op.done <- nil
			}
			return
		}
		if failed < 0 || errors.Is(err, ErrDamaged) { // the commit itself failed (I/O, damage): nobody's write is durable
			for _, op := range ops {
				op.done <- err
			}
			return
		}
		ops[failed].done <- err
		ops = append(ops[:failed:failed], ops[failed+1:]...)
	}
}

func (b *Bolt) view(fn func(tx *bolt.Tx) error) (err error) {
	b.mu.RLock()
	closed := b.closed
	b.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if err := b.dmg.damaged(); err != nil {
		return err
	}
	defer b.guardPanic(&err)
	return b.db.View(fn)
}

// update runs a write transaction, a panic inside bbolt turned into damage.
func (b *Bolt) update(fn func(tx *bolt.Tx) error) (err error) {
	defer b.guardPanic(&err)
	return b.db.Update(fn)
}
