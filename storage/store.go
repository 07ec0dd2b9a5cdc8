// Package storage records saga instances durably.
//
// State is partition-scoped: every saga lives under the
// topic-partition of the event that started it, together with that
// partition's idempotency keys and next offset. A saga's ID is derived from
// its source position and saga name, so the ID says where the saga lives.
//
// Store is the contract; Bolt is the implementation backed by bbolt. The
// conformance tests in storage/storagetest check any implementation.
package storage

import (
	"context"
	"time"
)

// Store records sagas durably. All methods are safe for concurrent use.
//
// Writes (Start, Update) return only once the change is durable (fsynced).
// Concurrent writes may share one transaction (group commit). A cancelled
// context stops the wait, not the write: the outcome is then unknown and the
// caller must treat it as such (re-delivery is safe because Start is
// idempotent).
type Store interface {
	// Start records a batch of new sagas and the partitions' next offsets in
	// one atomic, durable transaction. For each saga it resolves
	// de-duplication: a saga already recorded at the same position and name,
	// or (when IdempotencyKey is set) a saga of the same name with the same
	// key in the same partition, is reported as existing and nothing new is
	// inserted. The check and the insert are atomic. New sagas are stored
	// with status pending. Results are in request order.
	Start(ctx context.Context, b StartBatch) ([]StartResult, error)

	// Update durably replaces the recorded state of existing sagas
	// (identified by Source and Name). Updating a saga that was never
	// started is an error wrapping ErrNotFound.
	Update(ctx context.Context, sagas ...*Saga) error

	// Get returns the saga with the given ID, or an error wrapping
	// ErrNotFound or ErrInvalidID.
	Get(ctx context.Context, id string) (*Saga, error)

	// List returns sagas filtered by status and saga name, in the listing
	// order: newest first by CreatedAt; at equal CreatedAt (a batch's
	// sagas share it) by partition — topic, then partition number — then
	// offset, then saga name, each descending. A saga's partition, offset
	// and name are unique, so this is a total order (ListOrder compares
	// two sagas in it). It uses indexes: a page costs a seek per index
	// range and reads only the sagas it returns, never a scan.
	//
	// Paging: Page.Next encodes the position of the page's last saga in
	// the listing order (CursorAfter); the next page starts strictly after
	// it. A cursor holds no state of the store, so paging survives restarts
	// and a cursor means the same position on every store. Hence no saga is
	// listed twice, and no saga that matches the filter from the first page
	// to the last is skipped, whatever happens in between: sagas started
	// meanwhile are newer than the cursor and not listed (a saga restored
	// with an older CreatedAt may be); a saga whose status changes keeps
	// its place, so it may leave (or join) a listing filtered by status but
	// is never skipped while it stays in it. Next is empty on the last page.
	// A cursor this store cannot read is an error wrapping
	// ErrInvalidCursor.
	List(ctx context.Context, q Query) (Page, error)

	// Scan calls fn for every saga in one of the given statuses, partition
	// by partition, oldest first within a partition (by CreatedAt, then
	// offset, then name). Recovery uses it with NonTerminal. fn must not
	// call the store's write methods.
	Scan(ctx context.Context, statuses []Status, fn func(*Saga) error) error

	// NextOffset returns the next offset recorded for a partition (the offset
	// after the last event handled), and false when none is recorded.
	NextOffset(ctx context.Context, p Partition) (int64, bool, error)

	// ScanPartition is Scan restricted to one partition.
	ScanPartition(ctx context.Context, p Partition, statuses []Status, fn func(*Saga) error) error

	// Apply replays changelog records of partition p: a saga record
	// replaces the stored one only if its Version is newer; a tombstone
	// (nil value) deletes the saga; a NextOffsetKey record moves the next
	// offset forward. It then records changelogNext (the changelog offset
	// after the last record given). It may write the records in several
	// transactions (Bolt does, so that other partitions' writes commit
	// between them); changelogNext is recorded by the last, so a call cut
	// short leaves ChangelogNext where it was, and applying the same
	// records again ends as one whole call would (Bolt writes a call that
	// re-creates a saga after its tombstone in one transaction, as that
	// could end otherwise). It returns how many records changed the store.
	// The store ends as applying the records one by one would leave it; a
	// saga record that a later one of the same saga in the same call
	// replaces (a higher version, no tombstone between) may be skipped,
	// and is then not counted, and the records may be written in another
	// order that ends the same (then a next-offset record is counted when
	// it raised the offset where it was written).
	Apply(ctx context.Context, p Partition, changes []Change, changelogNext int64) (int, error)

	// ChangelogNext returns the changelog offset recorded for p by Apply or
	// by StartBatch.Changelog (0 when none).
	ChangelogNext(ctx context.Context, p Partition) (int64, error)

	// Expire deletes up to limit terminal sagas of p last updated before
	// cutoff (walking each status range from its oldest saga) and returns
	// them. Their idempotency keys go with them: the de-duplication window
	// is the retention. gone (when not nil) is called for each saga deleted
	// inside the transaction that deletes it, before that commits: that is
	// where its changelog tombstone belongs, so it comes before the record
	// of any saga that takes the freed key (recorded later). gone may be
	// called again for a saga (the transaction is retried) or for a
	// deletion whose commit then fails (Expire returns the error).
	Expire(ctx context.Context, p Partition, cutoff time.Time, limit int, gone func(*Saga)) ([]*Saga, error)

	// Partitions lists the partitions that hold state.
	Partitions(ctx context.Context) ([]Partition, error)

	// GetMeta and PutMeta keep small named records of a partition (e.g. a
	// cron schedule's last tick), which follow the partition through the
	// changelog as MetaKey(key). A nil value deletes.
	GetMeta(ctx context.Context, p Partition, key string) ([]byte, bool, error)
	PutMeta(ctx context.Context, p Partition, key string, value []byte) error

	// ExpireMeta deletes up to limit meta records of p under prefix whose
	// value starts with a time (8 bytes, Unix ns, big-endian) before
	// cutoff, in key order, stopping at the first that is not expired (such
	// keys must follow time), and returns their keys.
	ExpireMeta(ctx context.Context, p Partition, prefix string, cutoff time.Time, limit int) ([]string, error)

	// Write durably replaces the recorded state of existing sagas (as
	// Update) and writes meta records (as PutMeta) in one transaction: all
	// or nothing.
	Write(ctx context.Context, b WriteBatch) error

	// ScanMeta calls fn for each meta record of p whose key starts with
	// prefix, in key order.
	ScanMeta(ctx context.Context, p Partition, prefix string, fn func(key string, value []byte) error) error

	// Timers returns, in deadline order, up to limit timers of p due at or
	// before now — starting after the timer whose Key is after (nil: from
	// the earliest) — and the deadline of the next one. A non-terminal saga
	// with a Wait that has a Deadline has one timer; the index follows
	// every write and Apply.
	Timers(ctx context.Context, p Partition, now time.Time, after []byte, limit int) (TimerPage, error)

	// Close waits for writes in progress and releases the store.
	Close() error
}

// StartBatch is one poll's worth of new sagas.
type StartBatch struct {
	// Sagas to insert. Each needs Name, Trigger, Source and Steps; Status,
	// CreatedAt and UpdatedAt are set by the store.
	Sagas []*Saga
	// Offsets records, per partition, the next offset to consume. A stored
	// next offset never moves backwards, and Start also moves it past every
	// saga it inserts.
	Offsets []Offset
	// Changelog records, per source partition, the next offset of its
	// changelog known to be reflected in this store (see Apply).
	Changelog []Offset
	// Meta records to put (PutMeta) in the same transaction, e.g. what an
	// event of the batch did (its outcome).
	Meta []Meta
}

// Meta is one meta record of a partition (a nil Value deletes it).
type Meta struct {
	Partition Partition
	Key       string
	Value     []byte
}

// Offset is the next offset of a partition.
type Offset struct {
	Topic     string
	Partition int32
	Next      int64
}

// TopicPartition returns the offset's topic-partition.
func (o Offset) TopicPartition() Partition { return Partition{o.Topic, o.Partition} }

// StartResult tells what Start did with one saga of the batch.
type StartResult struct {
	// ID of the saga: the new one, or the existing one it matched.
	ID string
	// Created is true when a new saga was inserted, false when the event
	// matched an existing saga (re-delivery or same idempotency key).
	Created bool
	// Saga is the inserted record when Created (status pending).
	Saga *Saga
}

// Query filters List.
type Query struct {
	Status Status // 0: any status
	Name   string // "": any saga
	Limit  int    // default 50, at most 1000
	// Cursor: list the sagas after this position in the listing order.
	// From a previous Page.Next, CursorAfter or CursorBefore; "" starts
	// with the newest saga.
	Cursor string
	// Partitions, if set, restricts the listing to the partitions it
	// accepts (a member answering for the partitions it owns).
	Partitions func(Partition) bool
}

// Page is one page of a listing.
type Page struct {
	// Sagas in the listing order, at most Query.Limit.
	Sagas []*Saga
	// Next is the cursor of the following page: the position of the last
	// saga of this one. Empty when no saga follows.
	Next string
}
