package engine

import (
	"runtime"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
)

// BenchmarkLaneBacklog queues a backlog of 100,000 sagas in one lane (as a
// drain with a high HighWater or a recovery of many pending sagas does),
// collects garbage once with it queued (the marking a long queue costs
// every cycle), and dispatches it.
func BenchmarkLaneBacklog(b *testing.B) {
	const n = 100_000
	b.ReportAllocs()
	for b.Loop() {
		l := &lane{}
		for i := range n { // the lane keeps the first keepRecords records; the rest are garbage
			l.push(&storage.Saga{Name: "checkout", Status: storage.StatusPending,
				Source: storage.Position{Topic: "orders-keys", Partition: int32(i % 12), Offset: int64(i)}})
		}
		runtime.GC()
		for l.len() > 0 {
			l.pop()
		}
	}
}

// BenchmarkScanField is the key field read of every keyed event (the
// PassThrough triggers' scanner, instead of a JSON decode).
func BenchmarkScanField(b *testing.B) {
	ev := []byte(`{"id":"order-000123456","customer":{"id":"c-42","tier":"gold"},"items":[{"sku":"a","qty":2},{"sku":"b","qty":1}],"total":123.45}`)
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		if s, ok := scanField(ev, "id"); !ok || s != "order-000123456" {
			b.Fatalf("scanField = %q, %v", s, ok)
		}
	}
}

// BenchmarkStartHeaders builds the headers of a keyed start record (one
// per keyed event).
func BenchmarkStartHeaders(b *testing.B) {
	s := &storage.Saga{Name: "checkout", Trigger: "kafka:orders", Status: storage.StatusPending,
		Source: storage.Position{Topic: "orders-keys", Partition: 3, Offset: 1 << 30}, IdempotencyKey: "order-000123456",
		Origin: storage.Position{Topic: "orders", Partition: 7, Offset: 1 << 32}}
	b.ReportAllocs()
	for b.Loop() {
		if len(StartHeaders(s)) == 0 {
			b.Fatal("no headers")
		}
	}
}
