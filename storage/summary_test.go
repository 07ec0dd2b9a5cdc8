package storage_test

import (
	"context"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

func TestCountsAndFindKey(t *testing.T) {
	s := openBolt(t, t.TempDir())
	ctx := context.Background()
	b := storage.StartBatch{Sagas: []*storage.Saga{
		storagetest.NewSaga("order", "orders", 0, 1, "o-1"),
		storagetest.NewSaga("order", "orders", 0, 2, "o-2"),
		storagetest.NewSaga("order", "orders", 1, 1, "o-3"),
		storagetest.NewSaga("audit", "orders", 1, 1, "o-3"),
	}}
	res, err := s.Start(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	done := res[1].Saga.Clone()
	done.Status = storage.StatusCompleted
	if err := s.Update(ctx, done); err != nil {
		t.Fatal(err)
	}
	counts, err := s.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, c := range counts {
		got[c.Partition.String()+" "+c.Saga+" "+c.Status.String()] += c.N
	}
	want := map[string]int{"orders/0 order pending": 1, "orders/0 order completed": 1, "orders/1 order pending": 1, "orders/1 audit pending": 1}
	if len(got) != len(want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("counts %v, want %v", got, want)
		}
	}

	found, err := s.FindKey(ctx, []string{"order", "audit", "nope"}, "o-3")
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[0].IdempotencyKey != "o-3" || found[1].IdempotencyKey != "o-3" || found[0].Name == found[1].Name {
		t.Fatalf("FindKey o-3: %v", found)
	}
	if found, _ := s.FindKey(ctx, []string{"order"}, "o-2"); len(found) != 1 || found[0].Status != storage.StatusCompleted {
		t.Fatalf("FindKey o-2: %v", found)
	}
	if found, _ := s.FindKey(ctx, []string{"audit"}, "o-1"); len(found) != 0 {
		t.Fatalf("FindKey of another saga's key: %v", found)
	}
}

// BenchmarkCounts measures the overview's count over 100,000 stored sagas
// in 6 partitions (the console computes it at most once per interval).
func BenchmarkCounts(b *testing.B) {
	s := openBolt(b, b.TempDir())
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		batch := storage.StartBatch{}
		for j := 0; j < 1000; j++ {
			n := i*1000 + j
			batch.Sagas = append(batch.Sagas, storagetest.NewSaga("order", "orders", int32(n%6), int64(n), ""))
		}
		if _, err := s.Start(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		counts, err := s.Counts(ctx)
		if err != nil || len(counts) != 6 {
			b.Fatalf("%v %v", counts, err)
		}
	}
}
