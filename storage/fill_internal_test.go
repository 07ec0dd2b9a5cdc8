package storage

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Sagas are keyed by offset, so they are appended at the end of their
// bucket, batch after batch. With bbolt's default fill (pages split half
// full) every leaf page of the bucket would stay about half empty; the
// store splits them nearly full (layout.go), and their pages stay that way
// through the updates of the sagas' transitions.
func TestSagaPagesAreFilledWhenAppended(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sagaz.db")
	ctx := context.Background()
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctxJSON := []byte(`{"order_id":"` + strings.Repeat("x", 200) + `"}`)
	var off int64
	for range 40 { // batches, as the consumer records them
		var batch []*Saga
		for range 250 {
			batch = append(batch, &Saga{Name: "order", Trigger: "kafka:t", Source: Position{Topic: "t", Offset: off}, Context: ctxJSON})
			off++
		}
		if _, err := st.Start(ctx, StartBatch{Sagas: batch}); err != nil {
			t.Fatal(err)
		}
		for _, s := range batch {
			s.Status = StatusExecuting
		}
		if err := st.Update(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, Partition{Topic: "t"}, false)
		if err != nil || pb == nil {
			t.Fatalf("partition bucket: %v", err)
		}
		s := pb.sagas.Stats()
		if s.KeyN != int(off) {
			t.Fatalf("%d sagas stored, want %d", s.KeyN, off)
		}
		fill := float64(s.LeafInuse) / float64(s.LeafAlloc)
		t.Logf("%d leaf pages, %.0f%% in use", s.LeafPageN, 100*fill)
		if fill < 0.8 {
			t.Errorf("leaf pages of the sagas bucket %.0f%% in use, want at least 80%%: appended sagas split pages half full", 100*fill)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
