package storage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// BenchmarkStartKeys starts batches of 5,000 sagas over six partitions into
// a store of 300,000 (grown to at most 500,000, then made anew outside the
// timer): with idempotency keys in random order (as keys hashed to a keys
// topic partition, UUIDv4s), with decimal counters (cmd/bench's event ids,
// which sort in clusters), with keys that grow in byte order (fixed-width
// counters, ULIDs), and with none. The difference is what the idempotency
// index costs ingest's start transaction (docs/benchmarks.md), in time and
// in the bytes of pages its commit writes per saga (page-B/saga: the same
// in every run of one -benchtime).
func BenchmarkStartKeys(b *testing.B) {
	for _, kind := range []string{"random", "decimal", "growing", "none"} {
		b.Run("keys="+kind, func(b *testing.B) {
			seq := 0
			key := func(r *rand.Rand) string {
				switch kind {
				case "random":
					return fmt.Sprintf("%016x", r.Uint64())
				case "decimal": // the bench's event ids: c-9 sorts after c-10
					seq++
					return fmt.Sprintf("c-%d", seq)
				case "growing":
					seq++
					return fmt.Sprintf("%016x", seq)
				}
				return ""
			}
			benchStart(b, key)
		})
	}
}

func benchStart(b *testing.B, key func(*rand.Rand) string) {
	const batchSize, parts, fill, refill = 5000, 6, 300_000, 40
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 7))
	var (
		s    *storage.Bolt
		next []int64
	)
	batch := func() storage.StartBatch {
		var sb storage.StartBatch
		for range batchSize {
			p := r.IntN(parts)
			sb.Sagas = append(sb.Sagas, storagetest.NewSaga("order", "orders.keys", int32(p), next[p], key(r)))
			next[p]++
		}
		return sb
	}
	path := filepath.Join(b.TempDir(), "sagaz.db")
	fresh := func() {
		if s != nil { // the last store goes: a long -benchtime would otherwise keep one per refill on disk
			_ = s.Close()
			if err := os.Remove(path); err != nil {
				b.Fatal(err)
			}
		}
		var err error
		if s, err = storage.OpenBolt(path, storage.BoltOptions{}); err != nil {
			b.Fatal(err)
		}
		next = make([]int64, parts)
		for range fill / batchSize {
			if _, err := s.Start(ctx, batch()); err != nil {
				b.Fatal(err)
			}
		}
	}
	fresh()
	defer func() { _ = s.Close() }()
	n := 0
	var pageBytes uint64 // of the timed batches' commits (WriterStats.PageBytes)
	for b.Loop() {
		b.StopTimer()
		if n > 0 && n%(refill*batchSize) == 0 {
			fresh()
		}
		sb := batch()
		before := s.WriterStats().PageBytes
		b.StartTimer()
		if _, err := s.Start(ctx, sb); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		pageBytes += s.WriterStats().PageBytes - before
		b.StartTimer()
		n += batchSize
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "sagas/s")
	if n > 0 {
		b.ReportMetric(float64(pageBytes)/float64(n), "page-B/saga")
	}
}
