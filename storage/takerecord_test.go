package storage_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
)

// The record the store wrote is what TakeRecord hands the changelog: the
// same bytes as the stored record, taken once; a state changed since (a
// new Version) or a clone is encoded afresh, so the changelog never
// mirrors a state other than the saga's own.
func TestTakeRecordIsTheStoredRecord(t *testing.T) {
	ctx := context.Background()
	db := openBolt(t, t.TempDir())
	s := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Partition: 0, Offset: 7},
		Context: []byte(`{"a":1}`), Steps: []storage.Step{{Name: "reserve"}}}
	if _, err := db.Start(ctx, storage.StartBatch{Sagas: []*storage.Saga{s}}); err != nil {
		t.Fatal(err)
	}
	stored := func() []byte {
		t.Helper()
		got, err := db.Get(ctx, s.ID())
		if err != nil {
			t.Fatal(err)
		}
		return storage.EncodeSaga(nil, got)
	}
	if rec := storage.TakeRecord(s); !bytes.Equal(rec, stored()) {
		t.Fatal("after Start: TakeRecord is not the stored record")
	}
	if rec := storage.TakeRecord(s); !bytes.Equal(rec, storage.EncodeSaga(nil, s)) {
		t.Fatal("taken twice: not a fresh encoding")
	}

	s.Status, s.Steps[0].Status = storage.StatusExecuting, storage.StepCompleted
	if err := db.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	clone := s.Clone()
	clone.Error = "changed in the clone"
	if rec, _ := storage.DecodeSaga(storage.TakeRecord(clone)); rec == nil || rec.Error != "changed in the clone" {
		t.Fatal("a clone handed on the record of the saga it was cloned from")
	}
	if rec := storage.TakeRecord(s); !bytes.Equal(rec, stored()) {
		t.Fatal("after Update: TakeRecord is not the stored record")
	}

	s.Status = storage.StatusCompleted
	if err := db.Write(ctx, storage.WriteBatch{Sagas: []*storage.Saga{s}}); err != nil {
		t.Fatal(err)
	}
	s.Error, s.Version = "a later state, not written", s.Version+1
	if rec, _ := storage.DecodeSaga(storage.TakeRecord(s)); rec == nil || rec.Error != s.Error {
		t.Fatal("after a change of Version: the written record was handed on instead of the saga's state")
	}

	s.Status = storage.StatusCompleted
	if err := db.Write(ctx, storage.WriteBatch{Sagas: []*storage.Saga{s}}); err != nil {
		t.Fatal(err)
	}
	storage.DropRecord(s)
	s.Error = "changed after the write, Version kept"
	if rec, _ := storage.DecodeSaga(storage.TakeRecord(s)); rec == nil || rec.Error != s.Error {
		t.Fatal("after DropRecord: the written record was handed on")
	}
}
