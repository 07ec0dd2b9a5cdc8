package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// BenchmarkSagaCompletion: 3-step sagas with no-op steps, every transition
// durable, from Start (batches of 1000) to completed. Reports sagas/s.
func BenchmarkSagaCompletion(b *testing.B) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "bench", Steps: []engine.Step{{Name: "a", Action: ok}, {Name: "b", Action: ok}, {Name: "c", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("orders", engine.PassThrough)}})
	st, err := storage.OpenBolt(filepath.Join(b.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	e, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	<-e.Ready()
	const batch = 1000
	var off int64
	b.ResetTimer()
	for range b.N {
		var bt engine.Batch
		for range batch {
			ev := &engine.Event{Source: engine.SourceKafka, Topic: "orders", Offset: off, Value: []byte(fmt.Sprintf(`{"order_id":"o-%d"}`, off))}
			e.Prepare(&bt, ev, false)
			off++
		}
		bt.Offsets = append(bt.Offsets, storage.Offset{Topic: "orders", Next: off})
		if _, err := e.Record(ctx, &bt); err != nil {
			b.Fatal(err)
		}
		// Keep a bounded backlog, as the consumer's backpressure would.
		for {
			if q, _ := e.Stats(); q < 4*batch {
				break
			}
			if err := e.WaitIdle(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := e.WaitIdle(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(off)/b.Elapsed().Seconds(), "sagas/s")
	b.StopTimer()
	cancel()
	<-done
}
