package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// changelog records what the engine mirrors, as consumer.Changelog would.
type changelog struct{ appended atomic.Int32 }

func (c *changelog) Append(*storage.Saga)                         { c.appended.Add(1) }
func (c *changelog) Next(storage.Partition) int64                 { return 0 }
func (c *changelog) AppendMeta(storage.Partition, string, []byte) {}

func withPartitions(c *engine.Config) {
	if c.Changelog == nil {
		c.Changelog = new(changelog)
	}
}

func kafkaEvent(p int32, off int64, id string) *engine.Event {
	return &engine.Event{Source: engine.SourceKafka, Topic: "orders", Partition: p, Offset: off, Value: []byte(`{"order_id":"` + id + `"}`)}
}

// startBatch records events the way the consumer does.
func startBatch(t *testing.T, h *harness, evs ...*engine.Event) []storage.StartResult {
	t.Helper()
	var b engine.Batch
	for _, ev := range evs {
		h.eng.Prepare(&b, ev, false)
	}
	res, err := h.eng.Record(context.Background(), &b)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// Sagas of a partition run only while it is owned; Release stops new steps
// and waits for the running one; Acquire resumes from the recorded step.
func TestPartitionOwnership(t *testing.T) {
	var mu sync.Mutex
	runs := map[string]int{}
	release := make(chan struct{})
	var blocking atomic.Bool
	blocking.Store(true)
	entered := make(chan string, 10)
	step := func(name string) engine.StepFunc {
		return func(ctx context.Context, r *engine.Run) error {
			mu.Lock()
			runs[r.String("order_id")+"/"+name]++
			mu.Unlock()
			if name == "a" && r.String("order_id") == "slow" && blocking.Load() {
				entered <- r.ID
				<-release // the step's own work, finishing after Release began
			}
			return nil
		}
	}
	reg := engine.NewRegistry()
	// Sagas without a key live in the partition of their event (keyed sagas
	// go through the keys topic: see the consumer's tests).
	saga := orderSaga("order", engine.Step{Name: "a", Action: step("a")}, engine.Step{Name: "b", Action: step("b")})
	saga.Triggers = []engine.Trigger{engine.Kafka("orders", engine.PassThrough)}
	reg.Register(saga)
	mirror := new(changelog)
	h := start(t, reg, "", func(c *engine.Config) { c.Changelog = mirror })
	p0 := storage.Partition{Topic: "orders", Partition: 0}
	p1 := storage.Partition{Topic: "orders", Partition: 1}
	if _, err := h.eng.Acquire(context.Background(), p0); err != nil {
		t.Fatal(err)
	}
	res := startBatch(t, h, kafkaEvent(0, 0, "slow"), kafkaEvent(1, 0, "elsewhere"))
	slowID := <-entered
	// p1 is not owned: its saga is recorded but does not run.
	if s := h.get(res[1].ID); s.Status != storage.StatusPending {
		t.Fatalf("saga of an unowned partition: %s", s.Status)
	}
	released := make(chan error, 1)
	go func() { released <- h.eng.Release(context.Background(), p0) }()
	select {
	case err := <-released:
		t.Fatalf("Release returned (%v) while a step of the partition was running", err)
	case <-time.After(50 * time.Millisecond): // Release must still be waiting
	}
	close(release)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	s := h.get(slowID)
	if s.Steps[0].Status != storage.StepCompleted || s.Steps[1].Status != storage.StepPending || s.Status != storage.StatusExecuting {
		t.Fatalf("after release: %s %+v (step a recorded, step b not started)", s.Status, s.Steps)
	}
	blocking.Store(false)
	if n, err := h.eng.Acquire(context.Background(), p1); err != nil || n != 1 {
		t.Fatalf("Acquire(p1) queued %d, %v", n, err)
	}
	if n, err := h.eng.Acquire(context.Background(), p0); err != nil || n != 1 {
		t.Fatalf("Acquire(p0) queued %d, %v", n, err)
	}
	h.idle()
	for _, id := range []string{slowID, res[1].ID} {
		if s := h.get(id); s.Status != storage.StatusCompleted {
			t.Errorf("%s: %s", id, s.Status)
		}
	}
	if fmt.Sprint(runs) != "map[elsewhere/a:1 elsewhere/b:1 slow/a:1 slow/b:1]" {
		t.Errorf("runs = %v (each step once)", runs)
	}
	// The start of slow (the start of elsewhere was recorded while p1 was not
	// owned: not mirrored) and its transition to executing, slow's step a
	// (finished during the release: still mirrored), slow's step b after p0
	// was acquired again, and elsewhere's executing, a and b after p1 was.
	if got := mirror.appended.Load(); got != 7 {
		t.Errorf("Changelog.Append called %d times, want 7", got)
	}
}

// Remirror appends a saga's stored state to the changelog again, except
// while the saga runs here (its own transitions are appended; a state read
// now could be older than one it appends meanwhile), and except for a
// partition this engine does not own.
func TestRemirrorSkipsRunningSagas(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan string, 1)
	reg := engine.NewRegistry()
	saga := orderSaga("order", engine.Step{Name: "a", Action: func(ctx context.Context, r *engine.Run) error {
		if r.String("order_id") == "slow" {
			entered <- r.ID
			<-release
		}
		return nil
	}})
	saga.Triggers = []engine.Trigger{engine.Kafka("orders", engine.PassThrough, engine.WithMaxConcurrent(1))}
	reg.Register(saga)
	mirror := new(changelog)
	h := start(t, reg, "", func(c *engine.Config) { c.Changelog = mirror })
	if _, err := h.eng.Acquire(context.Background(), storage.Partition{Topic: "orders", Partition: 0}); err != nil {
		t.Fatal(err)
	}
	res := startBatch(t, h, kafkaEvent(0, 0, "slow"), kafkaEvent(0, 1, "queued"), kafkaEvent(1, 0, "unowned"))
	slowID := <-entered
	ctx := context.Background()
	before := mirror.appended.Load()
	for _, id := range []string{slowID, res[2].ID} {
		if err := h.eng.Remirror(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if got := mirror.appended.Load(); got != before {
		t.Fatalf("Remirror of a running saga and of an unowned partition's saga appended %d records", got-before)
	}
	if err := h.eng.Remirror(ctx, res[1].ID); err != nil { // waits in its lane (MaxConcurrent 1)
		t.Fatal(err)
	}
	if got := mirror.appended.Load(); got != before+1 {
		t.Fatalf("Remirror of a queued saga appended %d records, want 1", got-before)
	}
	close(release)
	h.idle()
}
