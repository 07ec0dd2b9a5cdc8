package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

func TestCancelPendingAndRunningSagas(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var bRan, undone atomic.Int32
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "slow", Steps: []engine.Step{
		{Name: "a", Action: func(ctx context.Context, r *engine.Run) error {
			if r.String("block") == "yes" {
				entered <- struct{}{}
				<-release
			}
			return nil
		}, Compensate: func(context.Context, *engine.Run) error { undone.Add(1); return nil }},
		{Name: "b", Action: func(context.Context, *engine.Run) error { bRan.Add(1); return nil }},
	}, Triggers: []engine.Trigger{engine.Manual("go", engine.PassThrough, engine.WithMaxConcurrent(1))}})
	h := start(t, reg, "")
	running := h.fire(engine.SourceManual, "go", `{"block":"yes"}`)[0].ID
	<-entered
	pending := h.fire(engine.SourceManual, "go", `{}`)[0].ID
	ctx := context.Background()
	if err := h.eng.Cancel(ctx, pending); err != nil {
		t.Fatal(err)
	}
	if err := h.eng.Cancel(ctx, running); err != nil {
		t.Fatal(err)
	}
	close(release)
	h.idle()
	if s := h.get(pending); s.Status != storage.StatusRolledBack || s.Error != "cancelled" || s.Steps[0].Status != storage.StepPending {
		t.Errorf("cancelled pending saga: %s %q %+v", s.Status, s.Error, s.Steps)
	}
	s := h.get(running)
	if s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepCompensated || s.Steps[1].Status != storage.StepPending {
		t.Errorf("cancelled running saga: %s %+v", s.Status, s.Steps)
	}
	if bRan.Load() != 0 || undone.Load() != 1 {
		t.Errorf("after cancel: step b ran %d times, a undone %d times; want 0 and 1", bRan.Load(), undone.Load())
	}
	if err := h.eng.Cancel(ctx, running); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("cancelling a finished saga: %v, want ErrConflict", err)
	}
	if err := h.eng.Cancel(ctx, "nope:0:0:slow"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("cancelling an unknown saga: %v, want ErrNotFound", err)
	}
}

func TestRetryResumesAFailedCompensation(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	var undone atomic.Int32
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "reserve", Action: ok, Compensate: func(context.Context, *engine.Run) error {
			if broken.Load() {
				return engine.Permanent(errors.New("warehouse down"))
			}
			undone.Add(1)
			return nil
		}},
		engine.Step{Name: "charge", Action: func(context.Context, *engine.Run) error { return engine.Permanent(errors.New("declined")) }},
	))
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	const cause = `step "charge" failed after 1 attempt(s): declined`
	failedWell := func(when string) {
		t.Helper()
		s := h.get(id)
		if s.Status != storage.StatusFailed {
			t.Fatalf("%s: %s", when, s.Status)
		}
		// The error says what failed and why the saga was compensating.
		if !strings.HasPrefix(s.Error, `compensation of step "reserve" failed after 1 attempt(s): warehouse down`) ||
			!strings.Contains(s.Error, cause) || strings.Contains(s.Error, "(after: )") {
			t.Errorf("%s: error %q lost the cause %q", when, s.Error, cause)
		}
		// A compensation that gave up was not compensated: no compensated_at.
		if st := s.Steps[0]; st.Status != storage.StepCompensationFailed || !st.CompEndedAt.IsZero() || st.CompError != "warehouse down" {
			t.Errorf("%s: step %+v, want compensation_failed without an end time", when, st)
		}
		if b, _ := json.Marshal(s.Steps[0]); strings.Contains(string(b), "compensated_at") {
			t.Errorf("%s: step JSON %s carries compensated_at", when, b)
		}
	}
	failedWell("before retry")
	for range 2 { // retried while still broken, twice: the cause stays
		if err := h.eng.Retry(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		h.idle()
		failedWell("retry while still broken")
		if undone.Load() != 0 {
			t.Fatal("compensated while broken")
		}
	}
	broken.Store(false)
	if err := h.eng.Retry(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	h.idle()
	s := h.get(id)
	if s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepCompensated || undone.Load() != 1 {
		t.Fatalf("after retry: %s %+v", s.Status, s.Steps)
	}
	if s.Error != cause || s.Steps[0].CompEndedAt.IsZero() {
		t.Errorf("after retry: error %q (want %q), compensated at %v", s.Error, cause, s.Steps[0].CompEndedAt)
	}
	if err := h.eng.Retry(context.Background(), id); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("retrying a rolled-back saga: %v, want ErrConflict", err)
	}
}
