package storage

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A release that does not know resolved sagas (v0.1.0) reads a resolved
// saga as failed and keeps extension 4 as it is. When it writes to the
// store — a rollback on the same data directory — the resolved set goes
// stale; the next open of this release repairs it from the records, and a
// resolution such a release overwrote (the record version moved on) is
// not taken for current, while the history is kept.
func TestResolvedSetIsRepairedAfterAnOlderReleaseWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sagaz.db")
	ctx := context.Background()
	st, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := Partition{Topic: "t", Partition: 0}
	var sagas []*Saga
	for off := range int64(3) {
		sagas = append(sagas, &Saga{Name: "order", Trigger: "kafka:t", Source: Position{Topic: "t", Offset: off}})
	}
	if _, err := st.Start(ctx, StartBatch{Sagas: sagas}); err != nil {
		t.Fatal(err)
	}
	for _, s := range sagas {
		s.Status = StatusResolved
		AppendHistory(s, HistoryEntry{At: time.Now().UTC(), Action: ActionResolve, Reason: "by hand"})
	}
	if err := st.Update(ctx, sagas...); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// What the older release writes: saga 0 retried (executing), saga 1
	// retried and failed again, both rewritten with extension 4 kept as
	// it was and the version bumped; saga 2 restored from the changelog
	// into a store without it (no resolved-set entry).
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		pb, err := openPart(tx, p, false)
		if err != nil {
			return err
		}
		rewrite := func(s *Saga, status Status) error {
			k := sagaKey(s.Source.Offset, s.Name)
			old := pb.sagas.Get(k)
			val, _, _, ok := recordExtension(old, extHistory, nil)
			if !ok {
				t.Fatal("the resolved record has no extension 4")
			}
			older := s.Clone()
			older.Status, older.History, older.Version = status, nil, s.Version+1
			older.Extensions = []Extension{{Tag: extHistory, Value: append([]byte(nil), val...)}}
			created := unixNanos(s.CreatedAt)
			if err := pb.index.Delete(indexKey(StatusFailed, s.Name, created, s.Source.Offset)); err != nil {
				return err
			}
			if err := pb.index.Put(indexKey(status, s.Name, created, s.Source.Offset), nil); err != nil {
				return err
			}
			return pb.sagas.Put(k, EncodeSaga(nil, older))
		}
		if err := rewrite(sagas[0], StatusExecuting); err != nil {
			return err
		}
		if err := rewrite(sagas[1], StatusFailed); err != nil {
			return err
		}
		return pb.resolved.Delete(parkKey(sagas[2].Name, unixNanos(sagas[2].CreatedAt), sagas[2].Source.Offset))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, want := range []Status{StatusExecuting, StatusFailed, StatusResolved} {
		g, err := st.Get(ctx, sagas[i].ID())
		if err != nil {
			t.Fatal(err)
		}
		if g.Status != want || len(g.History) != 1 || g.History[0].Action != ActionResolve {
			t.Errorf("saga %d: %s %+v, want %s with its history", i, g.Status, g.History, want)
		}
	}
	for st2, want := range map[Status]int{StatusExecuting: 1, StatusFailed: 1, StatusResolved: 1} {
		n, err := st.CountStatus(ctx, st2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n["order"] != want {
			t.Errorf("%s: %v, want %d", st2, n, want)
		}
		page, err := st.List(ctx, Query{Status: st2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Sagas) != want {
			t.Errorf("listing %s: %d sagas, want %d", st2, len(page.Sagas), want)
		}
	}
}
