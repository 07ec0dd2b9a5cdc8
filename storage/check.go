package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Report is what Check found in a store file.
type Report struct {
	Path string `json:"path"`
	// Schema is the file's store schema (0: an empty file); this release
	// writes SchemaVersion and reads OldestSchema and up.
	Schema        int  `json:"schema"`
	SchemaCurrent int  `json:"schema_current"`
	NeedsUpgrade  bool `json:"needs_upgrade"` // an older schema: the next open (or `sagaz store migrate`) upgrades it
	Newer         bool `json:"newer"`         // a newer schema: this release refuses the file
	// Partitions, Sagas and ByStatus count what the file holds.
	Partitions int            `json:"partitions"`
	Sagas      int            `json:"sagas"`
	ByStatus   map[string]int `json:"by_status"`
	// NewerRecords counts records of a record format this release does not
	// read (written by a newer release): not damage, but this release
	// cannot run those sagas.
	NewerRecords int `json:"newer_records"`
	// Waiting counts the sagas that wait (a command's reply, an event, a
	// sleep, a back-off).
	Waiting int `json:"waiting"`
	// Problems lists what is wrong: bbolt's page checks, records whose
	// checksum does not match or that do not decode, index entries that do
	// not match their record. At most 100 are listed; ProblemCount counts
	// them all.
	Problems     []string `json:"problems"`
	ProblemCount int      `json:"problem_count"`
}

// OK reports whether nothing is wrong with the file.
func (r *Report) OK() bool { return r.ProblemCount == 0 && !r.Newer }

func (r *Report) problem(format string, a ...any) {
	r.ProblemCount++
	if len(r.Problems) < 100 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
	}
}

// Check reads the store file at path without changing it: its schema,
// bbolt's page checks, every record's checksum and decoding, the status
// index, the parked set and the resolved set against the records, and counts. It opens the
// file read-only; a file a running member holds is locked (an error after
// lockTimeout, default 2s: stop the member first). Damage is reported in
// the Report, not as an error.
func Check(ctx context.Context, path string, lockTimeout time.Duration) (*Report, error) {
	if lockTimeout <= 0 {
		lockTimeout = 2 * time.Second
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	r := &Report{Path: path, SchemaCurrent: SchemaVersion, ByStatus: map[string]int{}}
	db, err := openReadOnly(path, lockTimeout)
	if err != nil {
		if errors.Is(err, ErrDamaged) {
			r.problem("%v", err)
			return r, nil
		}
		return nil, err
	}
	defer db.Close()
	if r.Schema, err = readSchema(db); err != nil {
		r.problem("%v", err)
		return r, nil
	}
	r.NeedsUpgrade = r.Schema > 0 && r.Schema < SchemaVersion
	r.Newer = r.Schema > SchemaVersion
	err = db.View(func(tx *bolt.Tx) (err error) {
		defer func() {
			if p := recover(); p != nil {
				r.problem("bbolt panicked reading the file: %v", p)
				err = nil
			}
		}()
		for perr := range tx.Check() {
			r.problem("page check: %v", perr)
		}
		if r.Newer {
			return nil // its layout is not this release's to check
		}
		parts := tx.Bucket(bucketParts)
		if parts == nil {
			return nil
		}
		return parts.ForEachBucket(func(name []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			p, ok := parsePartName(name)
			if !ok {
				r.problem("partition bucket %q: not <topic>/<partition>", name)
				return nil
			}
			r.Partitions++
			pb, err := openPart(tx, p, false)
			if err != nil {
				return err
			}
			if pb.sagas == nil || pb.index == nil || pb.idem == nil {
				r.problem("partition %s: a sub-bucket is missing", p)
				return nil
			}
			checkPartition(r, pb, p)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// checkPartition checks one partition's records against its status index
// and its parked and resolved sets (schema 2 layout; a schema 1 index is
// only counted).
func checkPartition(r *Report, pb *partBuckets, p Partition) {
	wantIndex := map[string]bool{}
	wantParked := map[string]Status{}
	wantResolved := map[string]bool{}
	wantWaits := map[string][]byte{} // saga key -> deadline (empty: none), as the timer index has it
	unread := map[string]bool{}      // name + 0 + offset of records not read: their entries are not checked
	entry := func(name []byte, off []byte) string { return string(name) + "\x00" + string(off) }
	c := pb.sagas.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) <= 8 {
			r.problem("partition %s: saga key %x", p, k)
			continue
		}
		off, name := int64(binary.BigEndian.Uint64(k[:8])), string(k[8:])
		s, err := DecodeSaga(v)
		if err != nil {
			unread[entry(k[8:], k[:8])] = true
		}
		switch {
		case errors.Is(err, ErrNewerRecord):
			r.NewerRecords++
			continue
		case err != nil:
			r.problem("partition %s offset %d saga %s: %v", p, off, name, err)
			continue
		case s.Name != name || s.Source.Offset != off || s.Source.TopicPartition() != p:
			r.problem("partition %s offset %d saga %s: the record is of %s", p, off, name, s.ID())
			continue
		}
		r.Sagas++
		r.ByStatus[s.Status.String()]++
		if r.Schema == SchemaVersion {
			wantIndex[string(indexKey(s.stored(), s.Name, unixNanos(s.CreatedAt), off))] = true
			if s.Status == StatusParked {
				wantParked[string(parkKey(s.Name, unixNanos(s.CreatedAt), off))] = s.Park.From
			}
			if s.Status == StatusResolved {
				wantResolved[string(parkKey(s.Name, unixNanos(s.CreatedAt), off))] = true
			}
			if s.Wait != nil && !s.Status.Terminal() && s.Status != StatusParked {
				r.Waiting++
				due := []byte{}
				if !s.Wait.Deadline.IsZero() {
					due = timerKey(unixNanos(s.Wait.Deadline), nil)
				}
				wantWaits[string(k)] = due
			}
		}
	}
	if r.Schema != SchemaVersion {
		return
	}
	ic := pb.index.Cursor()
	for k, _ := ic.First(); k != nil; k, _ = ic.Next() {
		if len(k) >= 1+1+16 && unread[entry(k[1:len(k)-17], k[len(k)-8:])] {
			continue
		}
		if !wantIndex[string(k)] {
			r.problem("partition %s: status index entry %x matches no record", p, k)
		}
		delete(wantIndex, string(k))
	}
	for k := range wantIndex {
		r.problem("partition %s: a record has no status index entry (%x)", p, k)
	}
	if pb.parked != nil {
		pc := pb.parked.Cursor()
		for k, v := pc.First(); k != nil; k, v = pc.Next() {
			if len(k) >= 1+16 && unread[entry(k[:len(k)-17], k[len(k)-8:])] {
				continue
			}
			from, ok := wantParked[string(k)]
			if !ok || len(v) != 1 || Status(v[0]) != from {
				r.problem("partition %s: parked entry %x matches no parked record (the next open repairs it)", p, k)
			}
			delete(wantParked, string(k))
		}
	}
	for k := range wantParked {
		r.problem("partition %s: a parked record is not in the parked set (%x; the next open repairs it)", p, k)
	}
	if pb.resolved != nil {
		rc := pb.resolved.Cursor()
		for k, _ := rc.First(); k != nil; k, _ = rc.Next() {
			if len(k) >= 1+16 && unread[entry(k[:len(k)-17], k[len(k)-8:])] {
				continue
			}
			if !wantResolved[string(k)] {
				r.problem("partition %s: resolved entry %x matches no resolved record (the next open repairs it)", p, k)
			}
			delete(wantResolved, string(k))
		}
	}
	for k := range wantResolved {
		r.problem("partition %s: a resolved record is not in the resolved set (%x; the next open repairs it)", p, k)
	}
	checkWaits(r, pb, p, wantWaits, unread)
}

// checkWaits checks the timer index (wait.go) against the waits the
// records hold.
func checkWaits(r *Report, pb *partBuckets, p Partition, want map[string][]byte, unread map[string]bool) {
	skip := func(sk []byte) bool { return len(sk) > 8 && unread[string(sk[8:])+"\x00"+string(sk[:8])] }
	n := 0
	if wb := pb.root.Bucket(bucketWaits); wb != nil {
		c := wb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if skip(k) {
				continue
			}
			n++
			if due, ok := want[string(k)]; !ok || !bytes.Equal(due, v) {
				r.problem("partition %s: waiting entry %x matches no waiting record", p, k)
			}
		}
	}
	timed := map[string]bool{}
	if tb := pb.root.Bucket(bucketTimers); tb != nil {
		c := tb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) <= 16 || skip(k[8:]) {
				continue
			}
			if due, ok := want[string(k[8:])]; !ok || !bytes.Equal(due, k[:8]) {
				r.problem("partition %s: timer %x matches no waiting record's deadline", p, k)
			}
			timed[string(k[8:])] = true
		}
	}
	for sk, due := range want {
		if len(due) == 8 && !timed[sk] {
			r.problem("partition %s: the deadline of waiting saga %x is not in the timer index", p, sk)
		}
	}
	if n < len(want) {
		r.problem("partition %s: %d waiting records are not in the timer index", p, len(want)-n)
	}
	if v := pb.root.Get(keyWaiting); len(v) == 8 && int(binary.BigEndian.Uint64(v)) != n || v == nil && n > 0 {
		r.problem("partition %s: the count of waiting sagas says %d, the index holds %d", p, int64(binary.BigEndian.Uint64(append(make([]byte, 8-len(v)), v...))), n)
	}
}

// openReadOnly opens a store file read-only, bbolt's panics and refusals
// of invalid files turned into ErrDamaged.
func openReadOnly(path string, timeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%w: %s: bbolt panicked: %v", ErrDamaged, path, p)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("storage: %s is locked by another process (stop the member that uses this data directory first)", path)
	case err != nil && isBoltCorruption(err):
		return nil, fmt.Errorf("%w: %s: %w", ErrDamaged, path, err)
	}
	return db, err
}
