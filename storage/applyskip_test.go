package storage_test

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// A record that a later one of the same saga replaces in the same Apply is
// skipped — but only if it is sound: a damaged record is still refused,
// even when it is obsolete, as it was before records were skipped.
func TestApplySkipsOnlySoundRecords(t *testing.T) {
	ctx := context.Background()
	p := storage.Partition{Topic: "orders", Partition: 0}
	rec := func(version uint64, st storage.Status) storage.Change {
		s := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: 3}, Status: st, Version: version}
		return storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)}
	}
	db := openBolt(t, t.TempDir())
	n, err := db.Apply(ctx, p, []storage.Change{rec(1, storage.StatusPending), rec(2, storage.StatusExecuting), rec(3, storage.StatusCompleted)}, 3)
	if err != nil || n != 1 {
		t.Fatalf("Apply of three versions: %d applied, %v; want 1 (the two first replaced in the same call)", n, err)
	}
	if got, err := db.Get(ctx, "orders:0:3:order"); err != nil || got.Version != 3 || got.Status != storage.StatusCompleted {
		t.Fatalf("restored %+v, %v; want version 3, completed", got, err)
	}

	damaged := rec(4, storage.StatusExecuting)
	damaged.Value = append([]byte(nil), damaged.Value...)
	damaged.Value[len(damaged.Value)-6] ^= 0x40 // a byte of the body: the checksum no longer holds
	if _, err := db.Apply(ctx, p, []storage.Change{damaged, rec(5, storage.StatusCompleted)}, 5); !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("Apply with a damaged record a later one replaces: %v, want ErrCorrupt", err)
	}
}

// rec and tomb are changelog records of saga "order" at offset off of
// partition t/0 (the conformance suite's sagas).
func rec(off int64, key string, v uint64, st storage.Status) storage.Change {
	s := storagetest.NewSaga("order", "t", 0, off, key)
	s.Version, s.Status = v, st
	s.CreatedAt = time.Unix(1700000000+off, 0).UTC()
	s.UpdatedAt = s.CreatedAt
	return storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)}
}

func tomb(off int64) storage.Change {
	return storage.Change{Key: storage.ChangeKey(storagetest.NewSaga("order", "t", 0, off, ""))}
}

// applyBoth applies changes to two stores, in one call and one call per
// record.
func applyBoth(t *testing.T, changes []storage.Change) (batch, single *storage.Bolt, errBatch, errSingle error) {
	ctx := context.Background()
	p := storage.Partition{Topic: "t", Partition: 0}
	batch, single = openBolt(t, t.TempDir()), openBolt(t, t.TempDir())
	_, errBatch = batch.Apply(ctx, p, changes, int64(len(changes)))
	for i, c := range changes {
		if _, errSingle = single.Apply(ctx, p, []storage.Change{c}, int64(i+1)); errSingle != nil {
			break
		}
	}
	return batch, single, errBatch, errSingle
}

// Records a later one replaces are still refused when they are not the
// saga's own: another saga's content under the key, a saga of another
// partition, a status byte no release writes (each with a sound checksum).
func TestApplyRefusesMisplacedRecordsALaterOneReplaces(t *testing.T) {
	other := rec(4, "", 1, storage.StatusPending)
	other.Key = rec(3, "", 1, storage.StatusPending).Key
	s := storagetest.NewSaga("order", "t", 7, 3, "")
	s.Version, s.Status = 1, storage.StatusPending
	elsewhere := storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)}
	status := rec(3, "", 1, storage.StatusPending)
	v := append([]byte(nil), status.Value[:len(status.Value)-4]...)
	v[1] = 9
	status.Value = binary.BigEndian.AppendUint32(v, crc32.Checksum(v, crc32.MakeTable(crc32.Castagnoli)))
	for name, bad := range map[string]storage.Change{"another saga's content": other, "another partition's saga": elsewhere, "status 9": status} {
		_, _, errBatch, errSingle := applyBoth(t, []storage.Change{bad, rec(3, "", 2, storage.StatusCompleted)})
		if errBatch == nil || errSingle == nil {
			t.Errorf("%s, replaced later in the call: one call %v, one call each %v; want both refused", name, errBatch, errSingle)
		}
	}
}

// Which saga holds an idempotency key two sagas of the changelog carry
// depends on the order of their records; skipping must not change it. The
// history: A (key K) expires and B (K) starts within one flush interval,
// whose records are produced in any order (B v1 before A's tombstone); a
// member restoring that leaves B without K, and starts D for a redelivery
// carrying K; its next flush produces B v2 before D v1; then B v3.
func TestApplyKeepsWhoHoldsASharedKey(t *testing.T) {
	batch, single, errBatch, errSingle := applyBoth(t, []storage.Change{
		rec(1, "K", 1, storage.StatusPending), rec(1, "K", 2, storage.StatusCompleted),
		rec(2, "K", 1, storage.StatusPending), tomb(1),
		rec(2, "K", 2, storage.StatusExecuting), rec(3, "K", 1, storage.StatusPending),
		rec(2, "K", 3, storage.StatusCompleted),
	})
	if errBatch != nil || errSingle != nil {
		t.Fatal(errBatch, errSingle)
	}
	holder := func(s *storage.Bolt) string {
		res, err := s.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{storagetest.NewSaga("order", "t", 0, 100, "K")}})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Created {
			return "nobody"
		}
		return res[0].ID
	}
	if a, b := holder(batch), holder(single); a != b {
		t.Fatalf("key K held by %s after one call, by %s after one call each", a, b)
	}
}
