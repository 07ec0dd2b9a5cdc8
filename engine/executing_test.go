package engine_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// gateStore holds the first write that records a saga executing until the
// test opens the gate.
type gateStore struct {
	storage.Store
	once sync.Once
	held chan *storage.Saga
	open chan struct{}
}

func (g *gateStore) Update(ctx context.Context, sagas ...*storage.Saga) error {
	for _, s := range sagas {
		if s.Status == storage.StatusExecuting {
			g.once.Do(func() {
				g.held <- s.Clone()
				<-g.open
			})
		}
	}
	return g.Store.Update(ctx, sagas...)
}

// TestExecutingIsRecordedBeforeTheFirstStep: a pending saga is recorded
// executing before its first step starts; until that write is durable it
// counts as pending in Stats (the metrics), after it as executing, so the
// counts follow what the store says.
func TestExecutingIsRecordedBeforeTheFirstStep(t *testing.T) {
	bolt, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	st := &gateStore{Store: bolt, held: make(chan *storage.Saga, 1), open: make(chan struct{})}
	entered, release := make(chan struct{}, 1), make(chan struct{})
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "slow", Steps: []engine.Step{
		{Name: "first", Action: func(ctx context.Context, _ *engine.Run) error {
			entered <- struct{}{}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{Name: "second", Action: ok},
	}, Triggers: []engine.Trigger{engine.Manual("go", engine.PassThrough)}})
	e, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-e.Ready()
	out, err := e.Fire(ctx, engine.SourceManual, engine.Event{Name: "go", Value: []byte(`{}`)})
	if err != nil || len(out) != 1 {
		t.Fatalf("Fire: %v %v", out, err)
	}
	id := out[0].ID

	// The write of executing is in flight: the step has not started, the
	// store says pending, and so do the counts.
	var held *storage.Saga
	select {
	case held = <-st.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no write of executing within 10s: the transition must be recorded before the first step")
	}
	if held.ID() != id || held.Steps[0].Status != storage.StepPending || held.Steps[0].Attempts != 0 {
		t.Fatalf("executing recorded as %+v, want it before the first step's first attempt", held)
	}
	select {
	case <-entered:
		t.Fatal("the first step started before executing was recorded")
	default:
	}
	if s, err := bolt.Get(ctx, id); err != nil || s.Status != storage.StatusPending {
		t.Fatalf("store: %v %v, want pending while the write is in flight", s, err)
	}
	if q, r := e.Stats(); q != 1 || r != 0 {
		t.Fatalf("Stats while executing is being recorded = %d pending, %d executing; want 1, 0", q, r)
	}

	// Recorded: the step runs, and the store, the listing and the counts
	// all say executing.
	close(st.open)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first step did not start within 10s")
	}
	if s, err := bolt.Get(ctx, id); err != nil || s.Status != storage.StatusExecuting {
		t.Fatalf("store: %v %v, want executing while the first step runs", s, err)
	}
	page, err := bolt.List(ctx, storage.Query{Status: storage.StatusExecuting})
	if err != nil || len(page.Sagas) != 1 || page.Sagas[0].ID() != id {
		t.Fatalf("List(executing) = %v %v", page.Sagas, err)
	}
	if q, r := e.Stats(); q != 0 || r != 1 {
		t.Fatalf("Stats while the first step runs = %d pending, %d executing; want 0, 1", q, r)
	}
	close(release)
	if err := e.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := bolt.Get(ctx, id); s.Status != storage.StatusCompleted || s.Version != 4 {
		t.Fatalf("after the steps: %s version %d, want completed after 4 writes (start, executing, 2 steps)", s.Status, s.Version)
	}
	if q, r := e.Stats(); q != 0 || r != 0 {
		t.Fatalf("Stats when idle = %d, %d", q, r)
	}
}
