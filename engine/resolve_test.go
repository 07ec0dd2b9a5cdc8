package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// stuckOrder is a saga that fails for good on a bad amount and whose
// first compensation gives up while broken is set: it ends failed.
type stuckOrder struct {
	broken                           atomic.Bool
	reserved, charged, shipped, undo atomic.Int32
	mu                               sync.Mutex
	amounts                          []string // what charge saw, per attempt
}

func (o *stuckOrder) saga() engine.Saga {
	return orderSaga("order",
		engine.Step{Name: "reserve", Action: func(context.Context, *engine.Run) error { o.reserved.Add(1); return nil },
			Compensate: func(context.Context, *engine.Run) error {
				if o.broken.Load() {
					return engine.Permanent(errors.New("warehouse down"))
				}
				o.undo.Add(1)
				return nil
			}},
		engine.Step{Name: "charge", Action: func(_ context.Context, r *engine.Run) error {
			o.mu.Lock()
			o.amounts = append(o.amounts, r.String("amount"))
			o.mu.Unlock()
			if _, err := r.Float("amount"); err != nil {
				return engine.Permanent(err)
			}
			o.charged.Add(1)
			return nil
		}},
		engine.Step{Name: "ship", Action: func(context.Context, *engine.Run) error { o.shipped.Add(1); return nil }},
	)
}

// failed starts an order whose amount is a string: it fails for good.
func (o *stuckOrder) failed(t *testing.T, h *harness) string {
	t.Helper()
	o.broken.Store(true)
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1","amount":"12.50"}`)[0].ID
	h.idle()
	if s := h.get(id); s.Status != storage.StatusFailed {
		t.Fatalf("set-up: %s %q, want failed", s.Status, s.Error)
	}
	return id
}

// A retry with an edited context replaces the context, and the saga goes
// forward again from the step that failed, with the new context: the step
// whose compensation gave up is not run again, the steps after the failed
// one run. The history records the edit (with the replaced context, the
// reason and who did it), and survives a reopen of the store.
func TestRetryWithEditedContextRerunsFromTheFailedStep(t *testing.T) {
	o := &stuckOrder{}
	reg := engine.NewRegistry()
	reg.Register(o.saga())
	dir := t.TempDir()
	h := start(t, reg, dir)
	id := o.failed(t, h)
	before := h.get(id)
	ctx := context.Background()
	err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Context: json.RawMessage(`{"order_id": "o-1", "amount": 12.5}`),
		Audit: engine.Audit{Reason: "amount was sent as a string", By: "token:0123abcd"}})
	if err != nil {
		t.Fatal(err)
	}
	h.idle()
	s := h.get(id)
	if s.Status != storage.StatusCompleted || s.Error != "" {
		t.Fatalf("after retry with context: %s %q %+v", s.Status, s.Error, s.Steps)
	}
	if string(s.Context) != `{"order_id":"o-1","amount":12.5}` {
		t.Errorf("context %s, want the edited one", s.Context)
	}
	if o.reserved.Load() != 1 || o.charged.Load() != 1 || o.shipped.Load() != 1 || o.undo.Load() != 0 {
		t.Errorf("reserve ran %d, charge succeeded %d, ship ran %d, reserve undone %d: want 1, 1, 1, 0",
			o.reserved.Load(), o.charged.Load(), o.shipped.Load(), o.undo.Load())
	}
	if want := []string{"12.50", "12.5"}; strings.Join(o.amounts, ",") != strings.Join(want, ",") {
		t.Errorf("charge saw amounts %q, want %q (the second with the new context)", o.amounts, want)
	}
	if st := s.Steps[1]; st.Status != storage.StepCompleted || st.Attempts != 2 || st.Error != "" {
		t.Errorf("charge step %+v, want completed at its second attempt", st)
	}
	check := func(s *storage.Saga) {
		t.Helper()
		if len(s.History) != 1 {
			t.Fatalf("history %+v, want one entry", s.History)
		}
		e := s.History[0]
		if e.Action != storage.ActionRetryWithContext || e.Reason != "amount was sent as a string" || e.By != "token:0123abcd" ||
			string(e.PreviousContext) != string(before.Context) || e.PreviousContextTruncated() || e.At.IsZero() {
			t.Errorf("history entry %+v (previous context %s), want the edit with the context it replaced %s", e, e.PreviousContext, before.Context)
		}
	}
	check(s)
	h.stop()
	h = start(t, reg, dir)
	check(h.get(id))
}

// The steps compensated before the compensation gave up run again too
// (their effect was undone); a step whose compensation gave up does not.
func TestRetryWithContextRerunsCompensatedSteps(t *testing.T) {
	var aRan, bRan, cRan, dRan atomic.Int32
	var broken atomic.Bool
	broken.Store(true)
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "a", Action: func(context.Context, *engine.Run) error { aRan.Add(1); return nil }, Compensate: ok},
		engine.Step{Name: "b", Action: func(context.Context, *engine.Run) error { bRan.Add(1); return nil }, Compensate: func(context.Context, *engine.Run) error {
			if broken.Load() {
				return engine.Permanent(errors.New("cannot undo b"))
			}
			return nil
		}},
		engine.Step{Name: "c", Action: func(context.Context, *engine.Run) error { cRan.Add(1); return nil }, Compensate: ok},
		engine.Step{Name: "d", Action: func(_ context.Context, r *engine.Run) error {
			dRan.Add(1)
			if r.String("fixed") != "yes" {
				return engine.Permanent(errors.New("not fixed"))
			}
			return nil
		}},
	))
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	s := h.get(id)
	if s.Status != storage.StatusFailed || s.Steps[0].Status != storage.StepCompleted || s.Steps[1].Status != storage.StepCompensationFailed ||
		s.Steps[2].Status != storage.StepCompensated || s.Steps[3].Status != storage.StepFailed {
		t.Fatalf("set-up: %s %+v", s.Status, s.Steps)
	}
	if err := h.eng.RetryWith(context.Background(), id, engine.RetryOptions{Context: json.RawMessage(`{"order_id":"o","fixed":"yes"}`)}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if s := h.get(id); s.Status != storage.StatusCompleted {
		t.Fatalf("after retry: %s %q %+v", s.Status, s.Error, s.Steps)
	}
	if aRan.Load() != 1 || bRan.Load() != 1 || cRan.Load() != 2 || dRan.Load() != 2 {
		t.Errorf("a ran %d, b %d, c %d, d %d times; want 1, 1, 2, 2", aRan.Load(), bRan.Load(), cRan.Load(), dRan.Load())
	}
}

// A plain retry is recorded in the history too (action retry), and a
// saga that fails again on a retry with a context compensates with it.
func TestRetryIsAudited(t *testing.T) {
	o := &stuckOrder{}
	reg := engine.NewRegistry()
	reg.Register(o.saga())
	h := start(t, reg, "")
	id := o.failed(t, h)
	ctx := context.Background()
	if err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Audit: engine.Audit{By: "token:1"}}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	s := h.get(id)
	if s.Status != storage.StatusFailed || len(s.History) != 1 || s.History[0].Action != storage.ActionRetry || s.History[0].By != "token:1" {
		t.Fatalf("after a plain retry while still broken: %s %+v", s.Status, s.History)
	}
	if o.charged.Load() != 0 || len(o.amounts) != 1 {
		t.Fatalf("a plain retry ran the failed step again (%v)", o.amounts)
	}
	// Still a bad amount, now a compensation that works: forward, fails
	// again, compensated.
	o.broken.Store(false)
	if err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Context: json.RawMessage(`{"order_id":"o-1","amount":"twelve"}`)}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	s = h.get(id)
	if s.Status != storage.StatusRolledBack || o.undo.Load() != 1 || len(s.History) != 2 || s.History[1].Action != storage.ActionRetryWithContext {
		t.Fatalf("after a retry with a context that is still wrong: %s %q undone %d %+v", s.Status, s.Error, o.undo.Load(), s.History)
	}
	if !strings.Contains(s.Error, `"twelve"`) {
		t.Errorf("error %q does not come from the new context", s.Error)
	}
}

// Bad edits are refused with a clear error and change nothing; only a
// failed saga can be retried; an unknown saga is not found.
func TestRetryWithContextRefusesBadInput(t *testing.T) {
	o := &stuckOrder{}
	reg := engine.NewRegistry()
	reg.Register(o.saga())
	h := start(t, reg, "", func(c *engine.Config) { c.MaxContextBytes = 64 })
	id := o.failed(t, h)
	before := h.get(id)
	ctx := context.Background()
	for _, c := range []struct{ ctx, want string }{
		{`[1, 2]`, "the context is an array; want a JSON object"},
		{`"x"`, `the context is the string "x"; want a JSON object`},
		{`null`, "the context is null; want a JSON object"},
		{`{"a": 1`, "not valid JSON"},
		{`{"a": 1} {"b": 2}`, "data after its JSON value"},
		{`   `, "the context is empty"},
		{`{"order_id": "` + strings.Repeat("x", 80) + `"}`, "over the limit of 64"},
	} {
		err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Context: json.RawMessage(c.ctx)})
		if !errors.Is(err, engine.ErrInvalidContext) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("context %s: %v, want ErrInvalidContext saying %q", c.ctx, err, c.want)
		}
	}
	if err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Audit: engine.Audit{Reason: strings.Repeat("r", storage.MaxReasonBytes+1)}}); !errors.Is(err, engine.ErrInvalidReason) {
		t.Errorf("a reason that is too long: %v, want ErrInvalidReason", err)
	}
	if s := h.get(id); s.Status != storage.StatusFailed || len(s.History) != 0 || string(s.Context) != string(before.Context) || s.Version != before.Version {
		t.Fatalf("refused edits changed the saga: %s %s %+v", s.Status, s.Context, s.History)
	}
	done := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-2","amount":1}`)[0].ID
	h.idle()
	if err := h.eng.RetryWith(ctx, done, engine.RetryOptions{Context: json.RawMessage(`{}`)}); !errors.Is(err, engine.ErrConflict) {
		t.Errorf("retrying a completed saga: %v, want ErrConflict", err)
	}
	if err := h.eng.RetryWith(ctx, "order:key:nope", engine.RetryOptions{}); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("retrying an unknown saga: %v, want ErrNotFound", err)
	}
}

// A sensitive field given back as "***" (as the API shows it) keeps its
// recorded value; one given a value takes it.
func TestRetryWithContextKeepsMaskedSensitiveFields(t *testing.T) {
	var seen atomic.Value
	var fail atomic.Bool
	fail.Store(true)
	reg := engine.NewRegistry()
	saga := orderSaga("pay",
		engine.Step{Name: "hold", Action: ok, Compensate: func(context.Context, *engine.Run) error {
			if fail.Load() {
				return engine.Permanent(errors.New("stuck"))
			}
			return nil
		}},
		engine.Step{Name: "charge", Action: func(_ context.Context, r *engine.Run) error {
			seen.Store(r.String("card") + "|" + r.String("note"))
			if r.String("note") != "go" {
				return engine.Permanent(errors.New("not yet"))
			}
			return nil
		}})
	saga.Sensitive = []string{"card", "missing"}
	reg.Register(saga)
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"p","card":"4111","note":"wait"}`)[0].ID
	h.idle()
	if s := h.get(id); s.Status != storage.StatusFailed {
		t.Fatalf("set-up: %s", s.Status)
	}
	ctx := context.Background()
	if err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Context: json.RawMessage(`{"order_id":"p","card":"***","missing":"***","note":"go"}`)}); !errors.Is(err, engine.ErrInvalidContext) ||
		!strings.Contains(err.Error(), `"missing"`) {
		t.Fatalf("a masked field with nothing recorded: %v, want ErrInvalidContext naming it", err)
	}
	if err := h.eng.RetryWith(ctx, id, engine.RetryOptions{Context: json.RawMessage(`{"order_id":"p","card":"***","note":"go"}`)}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if s := h.get(id); s.Status != storage.StatusCompleted || seen.Load() != "4111|go" {
		t.Fatalf("after retry: %s, charge saw %v; want completed with the recorded card", s.Status, seen.Load())
	}
}

// Resolve marks a failed saga resolved with a reason: it no longer counts
// as failed, cannot be retried, stays resolved across a reopen; resolving
// needs a reason and a failed saga.
func TestResolveAFailedSaga(t *testing.T) {
	o := &stuckOrder{}
	reg := engine.NewRegistry()
	reg.Register(o.saga())
	dir := t.TempDir()
	h := start(t, reg, dir)
	id := o.failed(t, h)
	ctx := context.Background()
	if err := h.eng.Resolve(ctx, id, engine.Audit{Reason: "  "}); !errors.Is(err, engine.ErrInvalidReason) || !strings.Contains(err.Error(), "reason is required") {
		t.Fatalf("resolve without a reason: %v, want ErrInvalidReason", err)
	}
	if err := h.eng.Resolve(ctx, id, engine.Audit{Reason: "stock released by hand in the warehouse", By: "token:abcd"}); err != nil {
		t.Fatal(err)
	}
	counts := func() (failed, resolved int) {
		f, err := h.store.CountStatus(ctx, storage.StatusFailed, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := h.store.CountStatus(ctx, storage.StatusResolved, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f["order"], r["order"]
	}
	check := func(when string) {
		t.Helper()
		s := h.get(id)
		if s.Status != storage.StatusResolved || len(s.History) != 1 || s.History[0].Action != storage.ActionResolve ||
			s.History[0].Reason != "stock released by hand in the warehouse" || s.History[0].By != "token:abcd" {
			t.Fatalf("%s: %s %+v", when, s.Status, s.History)
		}
		if f, r := counts(); f != 0 || r != 1 {
			t.Errorf("%s: %d failed, %d resolved; want 0 and 1", when, f, r)
		}
		if n := h.count(storage.Query{Status: storage.StatusFailed}); n != 0 {
			t.Errorf("%s: the failed listing holds %d sagas", when, n)
		}
		if n := h.count(storage.Query{Status: storage.StatusResolved}); n != 1 {
			t.Errorf("%s: the resolved listing holds %d sagas, want 1", when, n)
		}
	}
	check("resolved")
	err := h.eng.Retry(ctx, id)
	if !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "resolved by hand") || !strings.Contains(err.Error(), "stock released") {
		t.Errorf("retrying a resolved saga: %v, want ErrConflict saying it was resolved and why", err)
	}
	if err := h.eng.Resolve(ctx, id, engine.Audit{Reason: "again"}); !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "already resolved") {
		t.Errorf("resolving twice: %v, want ErrConflict", err)
	}
	done := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-2","amount":1}`)[0].ID
	h.idle()
	if err := h.eng.Resolve(ctx, done, engine.Audit{Reason: "x"}); !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "only failed sagas") {
		t.Errorf("resolving a completed saga: %v, want ErrConflict", err)
	}
	if o.undo.Load() != 0 || o.charged.Load() != 1 {
		t.Errorf("resolving ran steps: undone %d, charged %d", o.undo.Load(), o.charged.Load())
	}
	h.stop()
	h = start(t, reg, dir)
	check("after a reopen")
}

// A cancel is recorded with its reason: at once for a pending saga, when
// it stops for an executing one.
func TestCancelIsAudited(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "slow", Steps: []engine.Step{
		{Name: "a", Action: func(_ context.Context, r *engine.Run) error {
			if r.String("block") == "yes" {
				entered <- struct{}{}
				<-release
			}
			return nil
		}, Compensate: ok},
		{Name: "b", Action: ok},
	}, Triggers: []engine.Trigger{engine.Manual("go", engine.PassThrough, engine.WithMaxConcurrent(1))}})
	h := start(t, reg, "")
	running := h.fire(engine.SourceManual, "go", `{"block":"yes"}`)[0].ID
	<-entered
	pending := h.fire(engine.SourceManual, "go", `{}`)[0].ID
	ctx := context.Background()
	if err := h.eng.CancelWith(ctx, pending, engine.Audit{Reason: "duplicate", By: "token:p"}); err != nil {
		t.Fatal(err)
	}
	if err := h.eng.CancelWith(ctx, running, engine.Audit{Reason: "customer called", By: "token:r"}); err != nil {
		t.Fatal(err)
	}
	close(release)
	h.idle()
	for id, want := range map[string]string{pending: "duplicate", running: "customer called"} {
		s := h.get(id)
		if s.Status != storage.StatusRolledBack || len(s.History) != 1 || s.History[0].Action != storage.ActionCancel || s.History[0].Reason != want {
			t.Errorf("%s: %s %+v, want rolled back with one cancel entry %q", id, s.Status, s.History, want)
		}
	}
}

// A parked saga's retry (with a step mapping) and cancel are recorded in
// its history; an edited context is for failed sagas only.
func TestParkedSagaActionsAreAudited(t *testing.T) {
	executing := []storage.Step{step("a", storage.StepCompleted), step("b", storage.StepCompleted), step("c", storage.StepPending)}
	var c calls
	h, _ := parkedRenamed(t, &c, storage.StatusExecuting, executing...)
	ctx := context.Background()
	mapping := map[string]string{"b": "b2"}
	err := h.eng.RetryWith(ctx, id(0), engine.RetryOptions{Steps: mapping, Context: json.RawMessage(`{"x":1}`)})
	if !errors.Is(err, engine.ErrInvalidContext) || !strings.Contains(err.Error(), "failed sagas only") {
		t.Fatalf("a context for a parked saga: %v, want ErrInvalidContext", err)
	}
	if g := h.get(id(0)); g.Status != storage.StatusParked || len(g.History) != 0 {
		t.Fatalf("the refused retry changed the saga: %s %+v", g.Status, g.History)
	}
	if err := h.eng.RetryWith(ctx, id(0), engine.RetryOptions{Steps: mapping, Audit: engine.Audit{Reason: "b is b2 now", By: "token:m"}}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusCompleted || len(g.History) != 1 || g.History[0].Action != storage.ActionRetry || g.History[0].Reason != "b is b2 now" {
		t.Fatalf("after the retry: %s %+v", g.Status, g.History)
	}

	c = calls{}
	h, _ = parkedRenamed(t, &c, storage.StatusExecuting, step("a", storage.StepCompleted), step("b", storage.StepPending), step("c", storage.StepPending))
	if err := h.eng.CancelWith(ctx, id(0), engine.Audit{Reason: "not needed any more"}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusRolledBack || len(g.History) != 1 || g.History[0].Action != storage.ActionCancel || g.History[0].Reason != "not needed any more" {
		t.Fatalf("after the cancel: %s %+v", g.Status, g.History)
	}
}
