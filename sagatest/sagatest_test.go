package sagatest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/sagatest"
	"github.com/sagaz-go/sagaz/storage"
)

func set(key string, v any) engine.StepFunc {
	return func(_ context.Context, r *engine.Run) error { r.Set(key, v); return nil }
}

// shop: a, b (nothing to undo), c, d; no jitter, so back-off is exact.
func shop() engine.Saga {
	pol := engine.RetryPolicy{MaxAttempts: 4, InitialDelay: time.Second, Multiplier: 2}
	return engine.Saga{
		Name: "shop",
		Steps: []engine.Step{
			{Name: "a", Action: set("a", 1), Compensate: set("a_undone", true), Retry: pol, CompensateRetry: pol},
			{Name: "b", Action: set("b", "done"), Retry: pol},
			{Name: "c", Action: set("c", 2.5), Compensate: set("c_undone", true), Retry: pol, CompensateRetry: pol},
			{Name: "d", Action: func(_ context.Context, r *engine.Run) error {
				if n, err := r.Int("qty"); err != nil || n < 1 {
					return engine.Permanent(errors.New("qty must be a positive integer"))
				}
				r.Set("d", "shipped")
				return nil
			}, Retry: pol},
		},
		Triggers: []engine.Trigger{engine.Kafka("shop.orders", engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))},
	}
}

func TestCompletesWithTheFinalContext(t *testing.T) {
	h := sagatest.New(t, shop())
	res, err := h.Run(map[string]any{"order_id": "o-1", "qty": 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != storage.StatusCompleted || !slices.Equal(res.Actions(), []string{"a", "b", "c", "d"}) || len(res.Compensated()) != 0 {
		t.Fatalf("status %s actions %v compensated %v", res.Status, res.Actions(), res.Compensated())
	}
	var ctx struct {
		A   int     `json:"a"`
		B   string  `json:"b"`
		C   float64 `json:"c"`
		D   string  `json:"d"`
		Qty int     `json:"qty"`
	}
	if err := res.Decode(&ctx); err != nil || ctx.A != 1 || ctx.B != "done" || ctx.C != 2.5 || ctx.D != "shipped" || ctx.Qty != 2 {
		t.Fatalf("context %+v (%v), raw %v", ctx, err, res.Context)
	}
	if res.Elapsed != 0 {
		t.Errorf("elapsed %s without a retry", res.Elapsed)
	}
}

func TestStepFailingForGoodIsCompensatedInReverse(t *testing.T) {
	h := sagatest.New(t, shop())
	res, err := h.Run(map[string]any{"qty": 1}, sagatest.FailStep("d", sagatest.Always))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != storage.StatusRolledBack {
		t.Fatalf("status %s (%s)", res.Status, res.Error)
	}
	if got := res.Compensated(); !slices.Equal(got, []string{"c", "a"}) {
		t.Errorf("compensated %v, want [c a] (b has nothing to undo)", got)
	}
	if n := res.Attempts("d", false); n != 4 {
		t.Errorf("d attempted %d times, want its policy's 4", n)
	}
	if res.Elapsed != 7*time.Second { // 1s + 2s + 4s of back-off, on the fake clock
		t.Errorf("elapsed %s, want 7s", res.Elapsed)
	}
	if res.Context["a_undone"] != true || res.Context["c_undone"] != true || !strings.Contains(res.Error, `step "d" failed after 4 attempt(s): sagatest: step "d" fails (attempt 4)`) {
		t.Errorf("context %v error %q", res.Context, res.Error)
	}
}

func TestStepFailingTwiceSucceedsOnItsThirdAttempt(t *testing.T) {
	h := sagatest.New(t, shop())
	res, err := h.Run(map[string]any{"qty": 1}, sagatest.FailStep("b", 2))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != storage.StatusCompleted || res.Attempts("b", false) != 3 || res.Steps[1].Attempts != 3 || res.Elapsed != 3*time.Second {
		t.Fatalf("status %s, b attempts %d (recorded %d), elapsed %s", res.Status, res.Attempts("b", false), res.Steps[1].Attempts, res.Elapsed)
	}
	injected := 0
	for _, c := range res.Calls {
		if c.Injected {
			injected++
		}
	}
	if injected != 2 {
		t.Errorf("%d injected failures, want 2", injected)
	}
	// The next run starts clean: failures are per run.
	if res, err := h.Run(map[string]any{"qty": 1}); err != nil || res.Attempts("b", false) != 1 {
		t.Fatalf("next run: %v %v", res, err)
	}
}

func TestCompensationGivingUpEndsFailed(t *testing.T) {
	h := sagatest.New(t, shop())
	res, err := h.Run(map[string]any{"qty": 0}, sagatest.FailCompensation("a", sagatest.Always).With(errors.New("warehouse down")))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != storage.StatusFailed || !slices.Equal(res.Compensated(), []string{"c"}) || res.Steps[0].Status != storage.StepCompensationFailed {
		t.Fatalf("status %s compensated %v steps %+v", res.Status, res.Compensated(), res.Steps)
	}
	if !strings.Contains(res.Error, "warehouse down") || !strings.Contains(res.Error, "qty must be a positive integer") {
		t.Errorf("error %q should name the compensation's failure and its cause", res.Error)
	}
	if _, err := h.Run(nil, sagatest.FailStep("nope", 1)); err == nil || !strings.Contains(err.Error(), `no step "nope"`) {
		t.Errorf("unknown step: %v", err)
	}
}

func TestRunEventGoesThroughTheSagasTriggers(t *testing.T) {
	h := sagatest.New(t, shop())
	first, err := h.RunEvent(engine.SourceKafka, engine.Event{Topic: "shop.orders", Value: []byte(`{"order_id":"o-7","qty":1}`)})
	if err != nil || !first.Created || first.Status != storage.StatusCompleted {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := h.RunEvent(engine.SourceKafka, engine.Event{Topic: "shop.orders", Value: []byte(`{"order_id":"o-7","qty":1}`)})
	if err != nil || again.Created || again.ID != first.ID || len(again.Calls) != 0 {
		t.Fatalf("same idempotency key: %+v %v", again, err)
	}
	if _, err := h.RunEvent(engine.SourceKafka, engine.Event{Topic: "shop.orders", Value: []byte(`{"qty":1}`)}); err == nil || !strings.Contains(err.Error(), "order_id") {
		t.Fatalf("an event without its key: %v, want the rejection", err)
	}
}

func TestPanicsAreFailures(t *testing.T) {
	s := shop()
	s.Steps[1].Action = func(context.Context, *engine.Run) error { panic("boom") }
	h := sagatest.New(t, s)
	res, err := h.Run(map[string]any{"qty": 1})
	if err != nil {
		t.Fatal(err)
	}
	var pe *engine.PanicError
	if res.Status != storage.StatusRolledBack || len(res.Calls) < 2 || !errors.As(res.Calls[1].Err, &pe) || !slices.Equal(res.Compensated(), []string{"a"}) {
		t.Fatalf("status %s calls %+v", res.Status, res.Calls)
	}
}

// Sleep steps and long retry back-offs are durable waits in the service;
// the harness moves its fake clock over them.
func TestSleepsAndLongBackoffsCostNoTime(t *testing.T) {
	saga := engine.Saga{Name: "slow",
		Steps: []engine.Step{
			{Name: "nap", Sleep: time.Hour},
			{Name: "flaky", Action: func(context.Context, *engine.Run) error { return nil },
				Retry: engine.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Minute}},
		},
		Triggers: []engine.Trigger{engine.Manual("slow", engine.PassThrough)}}
	h := sagatest.New(t, saga)
	res, err := h.Run(map[string]any{"id": 1}, sagatest.FailStep("flaky", 2))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != storage.StatusCompleted || res.Attempts("flaky", false) != 3 || res.Elapsed < time.Hour+2*time.Minute {
		t.Fatalf("status %s, %d attempts, elapsed %s", res.Status, res.Attempts("flaky", false), res.Elapsed)
	}
}
