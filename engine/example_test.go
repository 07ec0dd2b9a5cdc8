package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Declare a saga, fire an event in-process, and watch it complete. In the
// service, sagas live in the sagas package and register with
// engine.Register in init(); events arrive from Kafka.
func ExampleEngine_Fire() {
	dir, _ := os.MkdirTemp("", "sagaz-example")
	defer os.RemoveAll(dir)
	store, _ := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	defer store.Close()

	reg := engine.NewRegistry()
	reg.Register(engine.Saga{
		Name: "greet",
		Steps: []engine.Step{{Name: "hello", Action: func(_ context.Context, r *engine.Run) error {
			r.Set("greeting", "hello, "+r.String("name"))
			return nil
		}}},
		Triggers: []engine.Trigger{engine.Manual("user_signed_up", engine.PassThrough, engine.WithKey(engine.KeyField("name")))},
	})
	e, err := engine.New(engine.Config{Store: store, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	out, _ := e.Fire(ctx, engine.SourceManual, engine.Event{Name: "user_signed_up", Value: []byte(`{"name":"ada"}`)})
	again, _ := e.Fire(ctx, engine.SourceManual, engine.Event{Name: "user_signed_up", Value: []byte(`{"name":"ada"}`)})
	_ = e.WaitIdle(ctx)
	s, _ := store.Get(ctx, out[0].ID)
	fmt.Println(out[0].ID, s.Status, string(s.Context))
	fmt.Println("second event started a saga:", again[0].Created, "- same saga:", again[0].ID == out[0].ID)
	cancel()
	<-done
	// Output:
	// greet:key:ada completed {"greeting":"hello, ada","name":"ada"}
	// second event started a saga: false - same saga: true
}
