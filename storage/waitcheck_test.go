package storage_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// `sagaz store check` counts the waiting sagas and finds a timer index that
// does not match the records' waits.
func TestCheckFindsTimerIndexDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sagaz.db")
	st, err := storage.OpenBolt(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := storagetest.NewSaga("x", "t", 0, 1, ""), storagetest.NewSaga("x", "t", 0, 2, "")
	if _, err := st.Start(ctx, storage.StartBatch{Sagas: []*storage.Saga{a, b}}); err != nil {
		t.Fatal(err)
	}
	for i, s := range []*storage.Saga{a, b} {
		s.Status = storage.StatusExecuting
		s.Wait = &storage.Wait{Kind: storage.WaitSleep, Since: time.Now(), Deadline: time.Now().Add(time.Duration(i+1) * time.Hour)}
	}
	if err := st.Update(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	rep, err := storage.Check(ctx, path, 0)
	if err != nil || !rep.OK() || rep.Waiting != 2 {
		t.Fatalf("check of a sound store: %+v %v", rep, err)
	}
	// Damage: one timer gone.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		tb := tx.Bucket([]byte("parts")).Bucket([]byte("t/0")).Bucket([]byte("t"))
		k, _ := tb.Cursor().First()
		return tb.Delete(k)
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	rep, err = storage.Check(ctx, path, 0)
	if err != nil || rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), "in the timer index") {
		t.Fatalf("check of a damaged timer index: %+v %v", rep, err)
	}
}
