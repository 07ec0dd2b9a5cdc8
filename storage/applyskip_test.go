package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
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
