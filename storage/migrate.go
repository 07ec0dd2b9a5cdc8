package storage

import (
	"fmt"
	"os"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store schemas. The layout of the file has a schema number (meta/schema):
//
//	1  the first layout; status index keyed by status, name and offset
//	2  the status index keyed by creation time (listing order)
//
// This release writes schema 2 and upgrades a schema 1 file when it opens
// it: the file is first copied aside as it was ("<path>.schema1-<UTC
// time>"), then migrated in place in one transaction — a crash during the
// migration leaves the file as it was. A file of a schema above 2 (a newer
// release wrote it) is refused with ErrNewerSchema: nothing is changed.
// docs/upgrading.md says how to move on from either.

// SchemaVersion is the store schema this release writes.
const SchemaVersion = schemaVersion

// OldestSchema is the oldest store schema this release reads (and
// upgrades).
const OldestSchema = 1

// Migration says what opening a store of an older schema did.
type Migration struct {
	// From and To are the schemas before and after.
	From, To int
	// Backup is the copy of the file as it was before the migration.
	Backup string
	// Took is how long the copy and the migration took.
	Took time.Duration
}

// readSchema returns a store's schema number (0 for a new, empty file).
func readSchema(db *bolt.DB) (int, error) {
	var schema int
	err := db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return nil
		}
		v := m.Get(keySchema)
		if v == nil {
			return nil
		}
		n, err := strconv.Atoi(string(v))
		if err != nil || n <= 0 {
			return fmt.Errorf("%w: schema %q is not a schema number", ErrDamaged, v)
		}
		schema = n
		return nil
	})
	return schema, err
}

// newerSchemaError is the refusal of a file of a newer schema.
func newerSchemaError(path string, schema int) error {
	return fmt.Errorf("%w: %s has store schema %d; this release reads schemas %d to %d. Run a release that reads schema %d, or, to roll back, move the data directory aside and let the member restore its partitions from their changelog (docs/upgrading.md, \"Rolling back\")",
		ErrNewerSchema, path, schema, OldestSchema, SchemaVersion, schema)
}

// migrate brings an open file of an older schema up to this release's:
// first a consistent copy of the file aside, then every step in one
// transaction.
func migrate(db *bolt.DB, path string, from int, now time.Time) (*Migration, error) {
	start := time.Now()
	backup := fmt.Sprintf("%s.schema%d-%s", path, from, now.UTC().Format("20060102T150405Z"))
	err := db.View(func(tx *bolt.Tx) error { return tx.CopyFile(backup, 0o600) })
	if err != nil {
		_ = os.Remove(backup)
		return nil, fmt.Errorf("storage: %s: copying the schema %d store aside before upgrading it to schema %d (to %s): %w; nothing was changed (free the space, or copy it yourself and run `sagaz store migrate`)",
			path, from, SchemaVersion, backup, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for v := from; v < SchemaVersion; v++ {
			step, ok := migrations[v]
			if !ok {
				return fmt.Errorf("no migration from schema %d", v)
			}
			if err := step(tx); err != nil {
				return fmt.Errorf("upgrading from schema %d: %w", v, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
	if err != nil {
		return nil, fmt.Errorf("storage: %s: %w (the file is unchanged; a copy is at %s)", path, err, backup)
	}
	return &Migration{From: from, To: SchemaVersion, Backup: backup, Took: time.Since(start)}, nil
}

// migrations[v] upgrades a store of schema v to schema v+1, inside the
// caller's transaction.
var migrations = map[int]func(*bolt.Tx) error{
	1: migrateIndex, // the status index keyed by creation time
}

// MigrateFile opens the store at path, upgrading it when its schema is
// older (see OpenBolt), and closes it. It returns what was done: nil when
// the store was at this release's schema already. A store of a newer
// schema is an error wrapping ErrNewerSchema.
func MigrateFile(path string, opts BoltOptions) (*Migration, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	opts.ReleaseInterval = -1
	b, err := OpenBolt(path, opts)
	if err != nil {
		return nil, err
	}
	m := b.Migration()
	return m, b.Close()
}
