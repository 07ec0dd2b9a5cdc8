// Package sagatest runs your sagas in unit tests, as goka's tester runs
// processors: the real engine and store (a temporary bbolt file), no
// Kafka, failures you choose, and a fake clock so retries and their
// back-off cost no time. Assert on the outcome: the status, which actions
// and compensations ran and in what order, the final context.
//
//	func TestRefundIsUndoneWhenNotifyFails(t *testing.T) {
//		h := sagatest.New(t, sagas.Refund)
//		res, err := h.Run(map[string]any{"refund_id": "r-1", "amount_cents": 4200},
//			sagatest.FailStep("notify", sagatest.Always))
//		if err != nil {
//			t.Fatal(err)
//		}
//		if res.Status != storage.StatusRolledBack || !slices.Equal(res.Compensated(), []string{"reverse-charge"}) {
//			t.Fatalf("got %s, compensated %v", res.Status, res.Compensated())
//		}
//	}
//
// Run starts the saga with the given context, as a trigger's transformer
// would have produced it; RunEvent delivers an event through the saga's own
// triggers (transformer and idempotency key included). Steps run exactly as
// in the service: retry policies, Permanent errors, panics, compensation
// in reverse order — only time is fake (Step.Timeout still uses real time).
// Sleep steps and long retry back-offs, durable waits in the service, cost
// no time either: the harness moves its clock to their end. Command and
// await steps need Kafka: here they fail for good (engine.ErrNoTransport);
// test them against kfake with package participant.
package sagatest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Always makes a failure happen on every attempt (the step fails for
// good once its retry policy gives up).
const Always = -1

// runEventType is the manual event type Run fires; the harness adds a
// trigger for it to the saga under test.
const runEventType = "sagatest.run"

// Failure is a failure injected into a step's action or compensation: its
// next Times attempts (Always: every attempt) fail with Err instead of
// running. Err defaults to an error naming the step and attempt; wrap it
// with engine.Permanent to fail without retries.
type Failure struct {
	Step         string
	Compensation bool
	Times        int
	Err          error
}

// FailStep makes step's action fail its next times attempts (Always: every
// attempt), each retried as its policy says.
func FailStep(step string, times int) Failure { return Failure{Step: step, Times: times} }

// FailCompensation makes step's compensation fail its next times attempts
// (Always: every attempt; the saga then ends failed).
func FailCompensation(step string, times int) Failure {
	return Failure{Step: step, Compensation: true, Times: times}
}

// With returns the failure with err as its error.
func (f Failure) With(err error) Failure { f.Err = err; return f }

// Call is one attempt of an action or compensation, in the order they ran.
type Call struct {
	Step         string
	Compensation bool
	Attempt      int
	// Err is the attempt's error (nil: it succeeded); Injected tells a
	// failure of the test's making from the step's own.
	Err      error
	Injected bool
	// At is the fake clock's time when the attempt started.
	At time.Time
}

// Result is how one saga ended.
type Result struct {
	ID      string
	Created bool // false: the event matched an existing saga (same idempotency key)
	Status  storage.Status
	Error   string
	Steps   []storage.Step
	// Context is the saga's final data (numbers are json.Number).
	Context map[string]any
	// Calls lists every attempt of this saga's actions and compensations.
	Calls []Call
	// Elapsed is the fake time the saga took: mostly retry back-off.
	Elapsed time.Duration
}

// Actions returns the steps whose action succeeded, in the order they ran.
func (r *Result) Actions() []string { return r.succeeded(false) }

// Compensated returns the steps whose compensation succeeded, in the order
// they ran (the reverse of the actions, for a saga that rolled back).
func (r *Result) Compensated() []string { return r.succeeded(true) }

func (r *Result) succeeded(comp bool) []string {
	out := []string{}
	for _, c := range r.Calls {
		if c.Compensation == comp && c.Err == nil {
			out = append(out, c.Step)
		}
	}
	return out
}

// Attempts counts the attempts of step's action (or compensation).
func (r *Result) Attempts(step string, compensation bool) int {
	n := 0
	for _, c := range r.Calls {
		if c.Step == step && c.Compensation == compensation {
			n++
		}
	}
	return n
}

// Decode decodes the final context into into (a pointer), as
// engine.Run.Decode does.
func (r *Result) Decode(into any) error {
	b, err := json.Marshal(r.Context)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, into)
}

// Option configures a Harness.
type Option func(*options)

type options struct {
	logger *slog.Logger
	start  time.Time
	wait   time.Duration
}

// WithLogger sends the engine's logs to log (default: discarded).
func WithLogger(log *slog.Logger) Option { return func(o *options) { o.logger = log } }

// WithStart sets the fake clock's start (default 2026-01-01T00:00:00Z).
func WithStart(t time.Time) Option { return func(o *options) { o.start = t } }

// WithTimeout bounds (in real time) how long Run waits for the saga to end
// (default 30s): a step that never returns fails the run instead of
// hanging the test.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.wait = d } }

// Harness runs one saga declaration. Runs are sequential; a Harness is
// safe for use by one goroutine at a time.
type Harness struct {
	saga   engine.Saga
	opts   options
	dir    string
	store  *storage.Bolt
	eng    *engine.Engine
	cancel context.CancelFunc
	done   chan error
	steps  map[string]bool

	// Clock is the engine's fake clock: retries sleep on it without
	// waiting. Advance it to move time on between runs.
	Clock *Clock

	mu     sync.Mutex
	faults map[faultKey]*Failure
	calls  []Call
}

type faultKey struct {
	step string
	comp bool
}

// New starts a harness for saga and stops it when the test ends; a
// failure to start fails the test.
func New(t testing.TB, saga engine.Saga, opts ...Option) *Harness {
	t.Helper()
	h, err := Start(saga, opts...)
	if err != nil {
		t.Fatalf("sagatest: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("sagatest: %v", err)
		}
	})
	return h
}

// Start starts a harness for saga (validated as the service validates it).
// Close it when done.
func Start(saga engine.Saga, opts ...Option) (*Harness, error) {
	o := options{logger: slog.New(slog.DiscardHandler), start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), wait: 30 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	h := &Harness{saga: saga, opts: o, Clock: NewClock(o.start), faults: map[faultKey]*Failure{}, steps: map[string]bool{}}
	test := saga
	test.Steps = make([]engine.Step, len(saga.Steps))
	for i, st := range saga.Steps {
		h.steps[st.Name] = true
		if st.Action != nil {
			st.Action = h.wrap(st.Name, false, st.Action)
		}
		if st.Compensate != nil {
			st.Compensate = h.wrap(st.Name, true, st.Compensate)
		}
		test.Steps[i] = st
	}
	test.Triggers = append(append([]engine.Trigger(nil), saga.Triggers...), engine.Manual(runEventType, engine.PassThrough))
	reg := engine.NewRegistry()
	reg.Register(test)
	dir, err := os.MkdirTemp("", "sagatest-")
	if err != nil {
		return nil, err
	}
	h.dir = dir
	h.store, err = storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{Now: h.Clock.Now, ReleaseInterval: -1})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	h.eng, err = engine.New(engine.Config{Store: h.store, Registry: reg, Logger: o.logger, Clock: h.Clock, ShutdownTimeout: time.Second})
	if err != nil {
		h.store.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.eng.Run(ctx) }()
	select {
	case <-h.eng.Ready():
	case err := <-h.done:
		cancel()
		h.store.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("engine stopped: %v", err)
	}
	return h, nil
}

// settle waits until the saga ends, or waits for something no fake time
// brings (a command's reply, an event): while it waits for a sleep or a
// retry back-off, the fake clock moves on to the deadline.
func (h *Harness) settle(ctx context.Context, id string) (*storage.Saga, error) {
	for {
		if err := h.eng.WaitIdle(ctx); err != nil {
			return nil, fmt.Errorf("sagatest: saga %q did not end within %s (a step that never returns?)", h.saga.Name, h.opts.wait)
		}
		s, err := h.store.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		w := s.Wait
		if s.Status.Terminal() || w == nil || w.Deadline.IsZero() || w.Kind != storage.WaitSleep && w.Kind != storage.WaitRetry {
			return s, nil
		}
		h.Clock.Advance(max(w.Deadline.Sub(h.Clock.Now()), 0))
		for { // the timer loop resumes it; wait for its next recorded state
			g, err := h.store.Get(ctx, id)
			if err != nil {
				return nil, err
			}
			if g.Version != s.Version {
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("sagatest: saga %q did not resume after its %s ended", h.saga.Name, w.Kind)
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// Close stops the engine and removes the store.
func (h *Harness) Close() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	h.cancel = nil
	var err error
	select {
	case err = <-h.done:
	case <-time.After(h.opts.wait):
		h.Clock.Advance(time.Hour) // the engine's shutdown timeout runs on the fake clock
		err = <-h.done
	}
	err = errors.Join(err, h.store.Close(), os.RemoveAll(h.dir))
	return err
}

// wrap injects the planned failures and records every attempt.
func (h *Harness) wrap(step string, comp bool, fn engine.StepFunc) engine.StepFunc {
	return func(ctx context.Context, r *engine.Run) (err error) {
		call := Call{Step: step, Compensation: comp, Attempt: r.Attempt, At: h.Clock.Now()}
		defer func() {
			if p := recover(); p != nil {
				call.Err = &engine.PanicError{Value: p}
				h.record(call)
				panic(p) // the engine turns it into a failure, as in the service
			}
			call.Err = err
			h.record(call)
		}()
		h.mu.Lock()
		f := h.faults[faultKey{step, comp}]
		inject := f != nil && f.Times != 0
		if inject && f.Times > 0 {
			f.Times--
		}
		h.mu.Unlock()
		if inject {
			call.Injected = true
			if f.Err != nil {
				return f.Err
			}
			what := "step"
			if comp {
				what = "compensation of step"
			}
			return fmt.Errorf("sagatest: %s %q fails (attempt %d)", what, step, r.Attempt)
		}
		return fn(ctx, r)
	}
}

func (h *Harness) record(c Call) {
	h.mu.Lock()
	h.calls = append(h.calls, c)
	h.mu.Unlock()
}

// Run starts the saga with data as its context (as its trigger's
// transformer would have returned it) and returns once it has ended.
func (h *Harness) Run(data map[string]any, failures ...Failure) (*Result, error) {
	if data == nil {
		data = map[string]any{}
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("sagatest: context is not JSON-encodable: %w", err)
	}
	return h.run(engine.SourceManual, engine.Event{Name: runEventType, Value: raw}, failures)
}

// RunEvent delivers ev through the saga's own triggers of source src (for
// kafka, ev.Topic selects them; otherwise ev.Name: the webhook name, event
// type, or schedule id "<saga>:<name>") and returns once the saga it
// started has ended. An event a trigger rejects (it would go to the
// dead-letter topic) is an error; one every trigger ignores gives a nil
// Result.
func (h *Harness) RunEvent(src engine.Source, ev engine.Event, failures ...Failure) (*Result, error) {
	return h.run(src, ev, failures)
}

func (h *Harness) run(src engine.Source, ev engine.Event, failures []Failure) (*Result, error) {
	h.mu.Lock()
	clear(h.faults)
	for _, f := range failures {
		if !h.steps[f.Step] {
			h.mu.Unlock()
			return nil, fmt.Errorf("sagatest: saga %q has no step %q", h.saga.Name, f.Step)
		}
		f := f
		h.faults[faultKey{f.Step, f.Compensation}] = &f
	}
	h.calls = nil
	h.mu.Unlock()

	began := h.Clock.Now()
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.wait)
	defer cancel()
	out, err := h.eng.Fire(ctx, src, ev)
	if err != nil {
		return nil, fmt.Errorf("sagatest: event rejected: %w", err)
	}
	if len(out) == 0 {
		return nil, nil // ignored
	}
	s, err := h.settle(ctx, out[0].ID)
	if err != nil {
		return nil, err
	}
	res := &Result{ID: s.ID(), Created: out[0].Created, Status: s.Status, Error: s.Error, Steps: s.Steps, Elapsed: h.Clock.Now().Sub(began)}
	if len(s.Context) > 0 {
		d := json.NewDecoder(bytes.NewReader(s.Context))
		d.UseNumber()
		if err := d.Decode(&res.Context); err != nil {
			return nil, err
		}
	}
	h.mu.Lock()
	res.Calls = append([]Call(nil), h.calls...)
	h.mu.Unlock()
	return res, nil
}
