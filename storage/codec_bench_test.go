package storage_test

import (
	"testing"

	"github.com/sagaz-go/sagaz/storage"
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
