package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// fill writes n sagas (each context holding "needle-<i>") and closes the
// store.
func fill(t *testing.T, path string, n int) {
	t.Helper()
	s, err := storage.OpenBolt(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b storage.StartBatch
	for i := range n {
		sg := storagetest.NewSaga("order", "orders.created", 0, int64(i), fmt.Sprintf("o-%d", i))
		sg.Context = []byte(fmt.Sprintf(`{"order_id":"o-%d","note":"needle-%06d"}`, i, i))
		b.Sagas = append(b.Sagas, sg)
	}
	if _, err := s.Start(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A file whose pages were overwritten is refused at open as damaged (no
// panic), and OpenOrRecover moves it aside, keeps it, and opens an empty
// store in its place.
func TestDamagedFileIsMovedAsideOnOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sagaz.db")
	fill(t, path, 5000)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{len(raw) / 4, len(raw) / 2, 3 * len(raw) / 4} { // 3 × 512 bytes, as a failing disk would
		for i := at; i < at+512; i++ {
			raw[i] ^= 0xa5
		}
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := storage.OpenBolt(path, storage.BoltOptions{}); !errors.Is(err, storage.ErrDamaged) {
		t.Fatalf("OpenBolt of a damaged file: %v, want ErrDamaged", err)
	}
	s, rec, err := storage.OpenOrRecover(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if rec == nil || !errors.Is(rec.Cause, storage.ErrDamaged) {
		t.Fatalf("recovery: %+v", rec)
	}
	if kept, err := os.ReadFile(rec.MovedTo); err != nil || !bytes.Equal(kept, raw) {
		t.Fatalf("the damaged file was not kept as it was at %s: %v", rec.MovedTo, err)
	}
	if ps, err := s.Partitions(context.Background()); err != nil || len(ps) != 0 {
		t.Fatalf("the new store is not empty: %v %v", ps, err)
	}
}

// A changed byte inside a stored record (bbolt's page checks cannot see
// it) is caught by the record's checksum: the store serves nothing more,
// tells its owner once, and the next OpenOrRecover moves the file aside.
func TestDamagedRecordStopsTheStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sagaz.db")
	fill(t, path, 100)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte("needle-000042"))
	if i < 0 {
		t.Fatal("record not found in the file")
	}
	raw[i+len("needle-0000")] = '7' // needle-000072: still valid JSON, a different order
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var hooked atomic.Int32
	s, err := storage.OpenBolt(path, storage.BoltOptions{OnDamage: func(error) { hooked.Add(1) }})
	if err != nil {
		t.Fatalf("page checks should pass (the pages are intact): %v", err)
	}
	ctx := context.Background()
	if got, err := s.Get(ctx, "orders.created:0:41:order"); err != nil || !bytes.Contains(got.Context, []byte("needle-000041")) {
		t.Fatalf("an intact record: %v", err)
	}
	if got, err := s.Get(ctx, "orders.created:0:42:order"); !errors.Is(err, storage.ErrDamaged) {
		t.Fatalf("the damaged record was served: %v %v", got, err)
	}
	if _, err := s.Get(ctx, "orders.created:0:41:order"); !errors.Is(err, storage.ErrDamaged) {
		t.Fatalf("a damaged store kept serving: %v", err)
	}
	upd := storagetest.NewSaga("order", "orders.created", 0, 1, "o-1")
	upd.Status = storage.StatusExecuting
	if err := s.Update(ctx, upd); !errors.Is(err, storage.ErrDamaged) {
		t.Fatalf("a damaged store kept writing: %v", err)
	}
	if hooked.Load() != 1 {
		t.Fatalf("OnDamage called %d times, want 1", hooked.Load())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, rec, err := storage.OpenOrRecover(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if rec == nil || rec.MovedTo == "" {
		t.Fatal("the damaged store was not moved aside at the next open")
	}
	if _, err := s2.Get(ctx, "orders.created:0:41:order"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the new store: %v", err)
	}
}
