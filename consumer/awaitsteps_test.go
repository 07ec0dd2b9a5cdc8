package consumer_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// gates holds each order's "prepare" step until the test opens it.
type gates struct {
	mu      sync.Mutex
	g       map[string]chan struct{}
	started map[string]bool
}

func (g *gates) gate(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g[id] == nil {
		g.g[id] = make(chan struct{})
	}
	return g.g[id]
}

func (g *gates) isStarted(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.started[id]
}

func shipmentSaga(g *gates) *engine.Registry {
	prepare := func(ctx context.Context, r *engine.Run) error {
		id := r.String("order_id")
		g.mu.Lock()
		g.started[id] = true
		g.mu.Unlock()
		select {
		case <-g.gate(id):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "shipment",
		Steps: []engine.Step{
			{Name: "prepare", Action: prepare},
			{Name: "paid", Await: &engine.Await{Topic: "payments", Field: "order_id", Value: engine.ContextValue("order_id"), Into: "payment"},
				Timeout: time.Minute},
		},
		Triggers: []engine.Trigger{engine.Kafka("orders.placed", engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))},
	})
	return reg
}

// An await step through Kafka, over two members: the events of the awaited
// topic are forwarded to the keys partition that owns their correlation,
// whichever member consumes them. An event that comes after the saga
// started but before it waits is kept and matched when it registers; one
// that comes while it waits resumes it; records without the field (or not
// JSON) are nobody's business: no signal, no dead letter.
func TestAwaitEventsBeforeAndAfterTheWait(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, "orders.placed", "payments"))
	seeds := c.ListenAddrs()
	g := &gates{g: map[string]chan struct{}{}, started: map[string]bool{}}
	a := startMember(t, seeds, "", shipmentSaga(g), nil)
	b := startMember(t, seeds, "", shipmentSaga(g), nil)
	kafkatest.WaitFor(t, 60*time.Second, "both members ready", func() bool {
		return a.Ready() == nil && b.Ready() == nil && len(a.Engine.Owned()) > 0 && len(b.Engine.Owned()) > 0
	})
	cl := kafkatest.Client(t, seeds)
	kafkatest.Produce(t, cl,
		&kgo.Record{Topic: "orders.placed", Key: []byte("o-1"), Value: []byte(`{"order_id":"o-1"}`)},
		&kgo.Record{Topic: "orders.placed", Key: []byte("o-2"), Value: []byte(`{"order_id":"o-2"}`)})
	kafkatest.WaitFor(t, 30*time.Second, "both sagas to start", func() bool { return g.isStarted("o-1") && g.isStarted("o-2") })
	forwarded := func() float64 {
		return testutil.ToFloat64(a.Metrics.SignalsForwarded) + testutil.ToFloat64(b.Metrics.SignalsForwarded)
	}

	// o-1's payment comes before o-1 waits for it.
	kafkatest.Produce(t, cl,
		&kgo.Record{Topic: "payments", Key: []byte("x"), Value: []byte(`{"order_id":"o-1","paid":42}`)},
		&kgo.Record{Topic: "payments", Key: []byte("y"), Value: []byte(`{"no_order":"here"}`)},
		&kgo.Record{Topic: "payments", Key: []byte("z"), Value: []byte(`not json`)})
	kafkatest.WaitFor(t, 30*time.Second, "o-1's payment to be kept in its keys partition", func() bool {
		return forwarded() == 1 && keptSignals(t, a)+keptSignals(t, b) == 1
	})
	close(g.gate("o-1"))

	// o-2 waits, then its payment comes.
	close(g.gate("o-2"))
	kafkatest.WaitFor(t, 30*time.Second, "o-2 to wait for its payment", func() bool {
		s := find(t, "shipment:key:o-2", a, b)
		return s != nil && s.Wait != nil && s.Wait.Kind == storage.WaitEvent
	})
	kafkatest.Produce(t, cl, &kgo.Record{Topic: "payments", Key: []byte("w"), Value: []byte(`{"order_id":"o-2","paid":7}`)})

	kafkatest.WaitFor(t, 30*time.Second, "both shipments to complete", func() bool { return a.Finished.Load()+b.Finished.Load() >= 2 })
	for id, paid := range map[string]float64{"o-1": 42, "o-2": 7} {
		s := find(t, "shipment:key:"+id, a, b)
		var ctx map[string]map[string]any
		_ = json.Unmarshal(s.Context, &ctx)
		if s.Status != storage.StatusCompleted || ctx["payment"]["paid"] != paid {
			t.Errorf("%s: %s, context %s", id, s.Status, s.Context)
		}
	}
	if end := kafkatest.EndOffsets(t, seeds, dlq); end[0]+end[1]+end[2]+end[3] != 0 {
		t.Errorf("dead letters: %v", end)
	}
}

// find returns the saga id from the member that owns it.
func find(t *testing.T, id string, ms ...*testMember) *storage.Saga {
	t.Helper()
	for _, m := range ms {
		s, err := m.Store.Get(context.Background(), id)
		if err == nil && m.Engine.Owns(s.Source) {
			return s
		}
	}
	return nil
}

// keptSignals counts the signals kept in the keys partitions m owns.
func keptSignals(t *testing.T, m *testMember) int {
	t.Helper()
	n := 0
	for _, p := range m.Engine.Owned() {
		if p.Topic != group+"-keys" {
			continue
		}
		if err := m.Store.ScanMeta(context.Background(), p, "\x00sig/", func(string, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return n
}
