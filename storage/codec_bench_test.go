package storage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// The codec runs on every transition (EncodeSaga) and every read of a
// record (DecodeSaga): benchstat these against the previous build when
// the record format or the codec changes.
func BenchmarkEncodeSaga(b *testing.B) {
	s := sampleSaga()
	buf := storage.EncodeSaga(nil, s)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = storage.EncodeSaga(buf[:0], s)
	}
}

// BenchmarkEncodeSagaNew encodes into a new buffer, as every transition
// does (the record is kept until the changelog has it): B/op is the size of
// the buffer EncodeSaga allocates.
func BenchmarkEncodeSagaNew(b *testing.B) {
	s := sampleSaga()
	b.ReportAllocs()
	for b.Loop() {
		_ = storage.EncodeSaga(nil, s)
	}
}

func BenchmarkDecodeSaga(b *testing.B) {
	rec := storage.EncodeSaga(nil, sampleSaga())
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := storage.DecodeSaga(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStartKeys starts batches of 5,000 sagas over six partitions
// into a store that grows to 300,000 first: with idempotency keys in no
// order (as keys hashed to a keys topic partition are, e.g. UUIDs), with
// keys that grow (sorted as they come), and with none. The difference is
// what the idempotency index costs ingest's start transaction
// (docs/benchmarks.md).
func BenchmarkStartKeys(b *testing.B) {
	for _, kind := range []string{"random", "growing", "none"} {
		b.Run("keys="+kind, func(b *testing.B) {
			seq := 0
			key := func(r *rand.Rand) string {
				switch kind {
				case "random":
					return fmt.Sprintf("%016x", r.Uint64())
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
	const batchSize, parts, fill = 5000, 6, 300_000
	s, err := storage.OpenBolt(filepath.Join(b.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 7))
	next := make([]int64, parts)
	batch := func() storage.StartBatch {
		var sb storage.StartBatch
		for range batchSize {
			p := r.IntN(parts)
			sb.Sagas = append(sb.Sagas, storagetest.NewSaga("order", "orders.keys", int32(p), next[p], key(r)))
			next[p]++
		}
		return sb
	}
	for range fill / batchSize {
		if _, err := s.Start(ctx, batch()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	n := 0
	for b.Loop() {
		b.StopTimer()
		sb := batch()
		b.StartTimer()
		if _, err := s.Start(ctx, sb); err != nil {
			b.Fatal(err)
		}
		n += batchSize
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "sagas/s")
}
