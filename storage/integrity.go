package storage

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Store integrity. Damage (a disk that flipped bytes, a file truncated by
// hand) is found three ways: bbolt's page checks when the store is opened,
// a panic inside bbolt (which asserts on inconsistent pages), and a
// record whose checksum does not match (record.go). A store that finds
// damage while open stops serving (every call answers ErrDamaged), leaves a
// marker file beside itself and tells its owner (BoltOptions.OnDamage); the
// next OpenOrRecover moves the damaged file aside, kept for inspection, and
// starts an empty store, which the member fills again from the changelog.

// damageMarker names the file that says the store at path is damaged.
func damageMarker(path string) string { return path + ".damaged" }

// Recovery says what OpenOrRecover did with a damaged store.
type Recovery struct {
	// MovedTo is where the damaged file was moved.
	MovedTo string
	// Cause is what was wrong with it.
	Cause error
}

// OpenOrRecover opens the store at path like OpenBolt. If the file is
// damaged — bbolt cannot open it, its page checks fail, or a marker says a
// running store found damage — it is moved aside to
// "<path>.damaged-<UTC time>" (kept for inspection) and an empty store is
// opened in its place; the Recovery says so (nil when nothing was wrong).
func OpenOrRecover(path string, opts BoltOptions) (*Bolt, *Recovery, error) {
	var cause error
	if data, err := os.ReadFile(damageMarker(path)); err == nil {
		cause = fmt.Errorf("%w: %s", ErrDamaged, data)
	} else {
		b, err := OpenBolt(path, opts)
		if !errors.Is(err, ErrDamaged) {
			return b, nil, err
		}
		cause = err
	}
	moved := fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, moved); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("storage: moving the damaged store aside: %w (it was: %w)", err, cause)
	}
	if err := os.Remove(damageMarker(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("storage: removing the damage marker: %w", err)
	}
	b, err := OpenBolt(path, opts)
	if err != nil {
		return nil, nil, err
	}
	return b, &Recovery{MovedTo: moved, Cause: cause}, nil
}

// openChecked opens bbolt and runs its page checks, turning a panic inside
// bbolt and any inconsistency into an error wrapping ErrDamaged.
func openChecked(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %s: bbolt panicked: %v", ErrDamaged, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, o)
	if err != nil {
		if isBoltCorruption(err) {
			return nil, fmt.Errorf("%w: %s: %w", ErrDamaged, path, err)
		}
		return nil, err
	}
	var problems []error
	err = db.View(func(tx *bolt.Tx) error {
		for perr := range tx.Check() {
			if len(problems) < 5 {
				problems = append(problems, perr)
			}
		}
		return nil
	})
	if err == nil && len(problems) > 0 {
		err = fmt.Errorf("%w: %s: page checks failed: %w", ErrDamaged, path, errors.Join(problems...))
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// isBoltCorruption reports whether bbolt refused a file as invalid (rather
// than for a lock or a permission).
func isBoltCorruption(err error) bool {
	return errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrVersionMismatch) ||
		errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrInvalidMapping) ||
		strings.Contains(err.Error(), "file size too small")
}

// damageState is a store's sticky damage flag.
type damageState struct {
	mu   sync.Mutex
	err  error
	path string
	hook func(error)
}

// damaged returns the damage found so far (nil: none).
func (d *damageState) damaged() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// report records damage once: the marker file for the next open, and the
// owner's hook.
func (d *damageState) report(err error) error {
	d.mu.Lock()
	first := d.err == nil
	if first {
		d.err = fmt.Errorf("%w: %w", ErrDamaged, err)
		_ = os.WriteFile(damageMarker(d.path), []byte(err.Error()), 0o600)
	}
	out, hook := d.err, d.hook
	d.mu.Unlock()
	if first && hook != nil {
		hook(out)
	}
	return out
}

// decodeStored decodes a record read from this store. A record that does
// not decode is damage (a record written by a newer release is not: that
// is ErrNewerRecord, refused as such).
func (b *Bolt) decodeStored(v []byte) (*Saga, error) {
	s, err := DecodeSaga(v)
	if err != nil && errors.Is(err, ErrCorrupt) {
		return nil, b.dmg.report(err)
	}
	return s, err
}

// guardPanic turns a panic inside bbolt into damage.
func (b *Bolt) guardPanic(err *error) {
	if r := recover(); r != nil {
		*err = b.dmg.report(fmt.Errorf("bbolt panicked: %v", r))
	}
}
