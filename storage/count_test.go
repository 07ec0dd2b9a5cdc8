package storage_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
)

func TestCountStatusFromTheIndex(t *testing.T) {
	s := openBolt(t, t.TempDir())
	ctx := context.Background()
	var sagas []*storage.Saga
	add := func(topic string, part int32, off int64, name string) {
		sagas = append(sagas, &storage.Saga{Name: name, Trigger: "kafka:" + topic, Source: storage.Position{Topic: topic, Partition: part, Offset: off},
			Steps: []storage.Step{{Name: "s", Status: storage.StepPending}}})
	}
	add("a", 0, 0, "order")
	add("a", 0, 1, "order")
	add("a", 0, 2, "refund")
	add("a", 1, 0, "order")
	add("b", 0, 0, "order")
	if _, err := s.Start(ctx, storage.StartBatch{Sagas: sagas}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []storage.Status{storage.StatusFailed, storage.StatusFailed, storage.StatusFailed, storage.StatusFailed, storage.StatusCompleted} {
		sagas[i].Status = st
	}
	if err := s.Update(ctx, sagas...); err != nil {
		t.Fatal(err)
	}
	got, err := s.CountStatus(ctx, storage.StatusFailed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"order": 3, "refund": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("failed = %v, want %v", got, want)
	}
	got, err = s.CountStatus(ctx, storage.StatusFailed, func(p storage.Partition) bool { return p == storage.Partition{Topic: "a", Partition: 0} })
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"order": 2, "refund": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("failed in a/0 = %v, want %v", got, want)
	}
	if got, _ := s.CountStatus(ctx, storage.StatusPending, nil); len(got) != 0 {
		t.Errorf("pending = %v, want none", got)
	}
	if _, err := s.CountStatus(ctx, 0, nil); err == nil {
		t.Error("status 0 accepted")
	}
}
