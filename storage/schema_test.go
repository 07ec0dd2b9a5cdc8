package storage_test

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// writeSchema1 writes a store in the layout of schema 1 (status index keyed
// by status + name + 0x00 + offset) holding sagas.
func writeSchema1(t *testing.T, path string, sagas []*storage.Saga, garbage bool) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket([]byte("meta"))
		if err := m.Put([]byte("schema"), []byte("1")); err != nil {
			return err
		}
		parts, _ := tx.CreateBucket([]byte("parts"))
		for _, s := range sagas {
			root, err := parts.CreateBucketIfNotExists([]byte(s.Source.TopicPartition().String()))
			if err != nil {
				return err
			}
			sb, _ := root.CreateBucketIfNotExists([]byte("s"))
			ib, _ := root.CreateBucketIfNotExists([]byte("i"))
			_, _ = root.CreateBucketIfNotExists([]byte("k"))
			key := binary.BigEndian.AppendUint64(nil, uint64(s.Source.Offset))
			if err := sb.Put(append(key, s.Name...), storage.EncodeSaga(nil, s)); err != nil {
				return err
			}
			ik := append(append([]byte{byte(s.Status)}, s.Name...), 0)
			if err := ib.Put(append(ik, key...), nil); err != nil {
				return err
			}
			if garbage {
				if err := sb.Put(append(binary.BigEndian.AppendUint64(nil, 1<<40), "x"...), []byte{9, 9, 9}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A store of schema 1 is upgraded when opened: its index is rebuilt, and
// listings and counts see every saga in the listing order.
func TestSchema1IsUpgraded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sagaz.db")
	t0 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	var sagas []*storage.Saga
	for p := range int32(12) {
		for off := range int64(4) {
			s := storagetest.NewSaga("order", "t", p, off, "")
			s.Version, s.Status = 1, storage.Statuses[(int(p)+int(off))%6] // the statuses of schema 1's time
			s.CreatedAt = t0.Add(time.Duration(off/2) * time.Second)       // ties within and across partitions
			s.UpdatedAt = s.CreatedAt
			sagas = append(sagas, s)
		}
	}
	writeSchema1(t, path, sagas, false)
	st, err := storage.OpenBolt(path, storage.BoltOptions{})
	if err != nil {
		t.Fatalf("open schema 1: %v", err)
	}
	defer st.Close()
	slices.SortFunc(sagas, storage.ListOrder)
	var got []string
	q := storage.Query{Limit: 7}
	for {
		page, err := st.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.Sagas {
			got = append(got, s.ID())
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	var want []string
	for _, s := range sagas {
		want = append(want, s.ID())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("upgraded store lists %v, want %v", got, want)
	}
	counts, err := st.Counts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range counts {
		if c.Saga != "order" {
			t.Errorf("count of saga %q: the index was not rebuilt", c.Saga)
		}
		n += c.N
	}
	if n != len(sagas) {
		t.Errorf("counts add up to %d, want %d", n, len(sagas))
	}
	// Writes after the upgrade keep the index right.
	moved := sagas[0]
	moved.Status = storage.StatusCompleted
	if err := st.Update(context.Background(), moved); err != nil {
		t.Fatal(err)
	}
	page, err := st.List(context.Background(), storage.Query{Status: storage.StatusCompleted, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(page.Sagas, func(s *storage.Saga) bool { return s.ID() == moved.ID() }) {
		t.Errorf("%s not listed as completed after the upgrade", moved.ID())
	}
	_ = st.Close()
	// Opened again: schema 2, nothing to upgrade.
	st2, err := storage.OpenBolt(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = st2.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		if v := string(tx.Bucket([]byte("meta")).Get([]byte("schema"))); v != "2" {
			t.Errorf("schema after upgrade = %q, want 2", v)
		}
		return nil
	})
}

// A schema 1 store with a record that does not decode cannot be upgraded:
// that is damage, which OpenOrRecover moves aside.
func TestSchema1WithDamageIsMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sagaz.db")
	s := storagetest.NewSaga("order", "t", 0, 1, "")
	s.Version, s.Status, s.CreatedAt = 1, storage.StatusPending, time.Now()
	writeSchema1(t, path, []*storage.Saga{s}, true)
	if _, err := storage.OpenBolt(path, storage.BoltOptions{}); !errors.Is(err, storage.ErrDamaged) || !strings.Contains(err.Error(), "schema 1") {
		t.Fatalf("OpenBolt = %v, want damage found upgrading schema 1", err)
	}
	st, rec, err := storage.OpenOrRecover(path, storage.BoltOptions{})
	if err != nil || rec == nil {
		t.Fatalf("OpenOrRecover = %v, %v", rec, err)
	}
	_ = st.Close()
}

// A store of a newer schema is refused with a clear error.
func TestNewerSchemaIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sagaz.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket([]byte("meta"))
		return m.Put([]byte("schema"), []byte("3"))
	})
	_ = db.Close()
	if _, err := storage.OpenBolt(path, storage.BoltOptions{}); err == nil || !strings.Contains(err.Error(), "schema 3") {
		t.Fatalf("OpenBolt of schema 3 = %v, want a clear refusal", err)
	}
}

// BenchmarkListPage: a page of 50 from the middle of 192,000 sagas over 64
// partitions (batches of 4,096 share created_at), unfiltered and by status.
// The cost of a page does not grow with its depth in the listing.
func BenchmarkListPage(b *testing.B) {
	s := openBolt(b, b.TempDir())
	ctx := context.Background()
	next := map[int32]int64{}
	var mid *storage.Saga
	for n := 0; n < 192000; {
		batch := storage.StartBatch{}
		for range 4096 {
			p := int32(n % 64)
			name := "order"
			if n%5 == 0 {
				name = "audit"
			}
			batch.Sagas = append(batch.Sagas, storagetest.NewSaga(name, "orders", p, next[p], ""))
			next[p]++
			n++
		}
		if _, err := s.Start(ctx, batch); err != nil {
			b.Fatal(err)
		}
		if mid == nil && n >= 96000 {
			mid = batch.Sagas[0]
		}
	}
	for _, p := range []int32{3, 7, 11} { // a few sagas executing
		g, err := s.Get(ctx, storage.FormatID(storage.Position{Topic: "orders", Partition: p, Offset: 100}, "order"))
		if err != nil {
			b.Fatal(err)
		}
		g.Status = storage.StatusExecuting
		if err := s.Update(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		q    storage.Query
	}{
		{"first/all", storage.Query{Limit: 50}},
		{"middle/all", storage.Query{Limit: 50, Cursor: storage.CursorAfter(mid)}},
		{"middle/pending", storage.Query{Limit: 50, Status: storage.StatusPending, Cursor: storage.CursorAfter(mid)}},
		{"first/executing", storage.Query{Limit: 50, Status: storage.StatusExecuting}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				if _, err := s.List(ctx, c.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
