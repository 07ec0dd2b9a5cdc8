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
