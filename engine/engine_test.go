package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
	"github.com/twmb/franz-go/pkg/kgo"
)

func orderSaga(name string, steps ...engine.Step) engine.Saga {
	if len(steps) == 0 {
		steps = []engine.Step{{Name: "only", Action: ok}}
	}
	return engine.Saga{Name: name, Steps: steps, Triggers: []engine.Trigger{engine.Kafka("orders", engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))}}
}

func TestTransformerIgnoreStartsNothing(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "big", Steps: []engine.Step{{Name: "s", Action: ok}}, Triggers: []engine.Trigger{engine.Kafka("orders", func(ev *engine.Event) (map[string]any, error) {
		m, err := ev.JSON()
		if err != nil {
			return nil, err
		}
		switch m["kind"] {
		case "small":
			return nil, engine.ErrIgnore
		case "none":
			return nil, nil
		}
		return m, nil
	})}})
	h := start(t, reg, "")
	for _, kind := range []string{"small", "none"} {
		if out := h.fire(engine.SourceKafka, "orders", `{"kind":"`+kind+`"}`); len(out) != 0 {
			t.Errorf("ignored event (%s) produced outcomes %+v", kind, out)
		}
	}
	out := h.fire(engine.SourceKafka, "orders", `{"kind":"big"}`)
	if len(out) != 1 || !out[0].Created {
		t.Fatalf("outcomes = %+v", out)
	}
	h.idle()
	if n := h.count(storage.Query{}); n != 1 {
		t.Fatalf("%d sagas stored, want 1", n)
	}
}

func TestTwoSagasOnOneSourceBothStart(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order"))
	reg.Register(orderSaga("audit"))
	h := start(t, reg, "")
	out := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1"}`)
	if len(out) != 2 || !out[0].Created || !out[1].Created || out[0].ID == out[1].ID {
		t.Fatalf("outcomes = %+v, want two new sagas", out)
	}
	h.idle()
	for _, o := range out {
		if s := h.get(o.ID); s.Status != storage.StatusCompleted {
			t.Errorf("%s: %s", o.ID, s.Status)
		}
	}
}

func TestOneSagaTwoSourcesGetsEachSourcesFields(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{
		Name:  "refund",
		Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("refunds", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			return map[string]any{"via": "kafka", "id": m["refund_id"]}, err
		}), engine.Webhook("stripe", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			return map[string]any{"via": "webhook", "id": m["data"].(map[string]any)["id"]}, err
		}), engine.Manual("refund_requested", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			return map[string]any{"via": "manual", "id": m["ticket"]}, err
		})},
	})
	h := start(t, reg, "")
	cases := []struct {
		src  engine.Source
		name string
		body string
		want string
	}{
		{engine.SourceKafka, "refunds", `{"refund_id":"k1"}`, `{"id":"k1","via":"kafka"}`},
		{engine.SourceWebhook, "stripe", `{"data":{"id":"w1"}}`, `{"id":"w1","via":"webhook"}`},
		{engine.SourceManual, "refund_requested", `{"ticket":"m1"}`, `{"id":"m1","via":"manual"}`},
	}
	for _, c := range cases {
		out := h.fire(c.src, c.name, c.body)
		if len(out) != 1 || !out[0].Created {
			t.Fatalf("%s: outcomes %+v", c.src, out)
		}
		s := h.get(out[0].ID)
		if string(s.Context) != c.want || s.Trigger != string(c.src)+":"+c.name {
			t.Errorf("%s: context %s trigger %s, want %s", c.src, s.Context, s.Trigger, c.want)
		}
	}
	if _, err := h.eng.Fire(context.Background(), engine.SourceWebhook, engine.Event{Name: "nope"}); !errors.Is(err, engine.ErrNoRoute) {
		t.Fatalf("unknown webhook: %v, want ErrNoRoute", err)
	}
}

func TestMissingIdempotencyKeyIsClearError(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order"))
	h := start(t, reg, "")
	out, err := h.eng.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "orders", Value: []byte(`{"id":"o-1","amount":3}`)})
	var mk *engine.MissingKeyError
	if !errors.As(err, &mk) {
		t.Fatalf("err = %v, want MissingKeyError", err)
	}
	for _, want := range []string{`"order_id"`, `"order"`, "amount", "id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if len(out) != 1 || out[0].Reason != engine.ReasonMissingKey || out[0].Created {
		t.Fatalf("outcomes = %+v", out)
	}
	if n := h.count(storage.Query{}); n != 0 {
		t.Fatalf("%d sagas stored for a rejected event", n)
	}
}

func TestIdempotencyKeySameAndDifferent(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order"))
	h := start(t, reg, "")
	a := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1"}`)[0]
	b := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1","retry":true}`)[0]
	c := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-2"}`)[0]
	d := h.fire(engine.SourceKafka, "orders", `{"order_id":2}`)[0]
	if !a.Created || b.Created || b.ID != a.ID {
		t.Fatalf("same key: %+v then %+v", a, b)
	}
	if !c.Created || c.ID == a.ID || !d.Created {
		t.Fatalf("different keys: %+v %+v", c, d)
	}
	h.idle()
	if n := h.count(storage.Query{Name: "order"}); n != 3 {
		t.Fatalf("%d sagas, want 3", n)
	}
}

func TestConcurrentSameKeyStartsOneSaga(t *testing.T) {
	reg := engine.NewRegistry()
	var runs atomic.Int32
	reg.Register(orderSaga("order", engine.Step{Name: "s", Action: func(context.Context, *engine.Run) error { runs.Add(1); return nil }}))
	h := start(t, reg, "")
	var wg sync.WaitGroup
	var created atomic.Int32
	ids := sync.Map{}
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := h.eng.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "orders", Value: []byte(`{"order_id":"same"}`)})
			if err != nil {
				t.Error(err)
				return
			}
			if out[0].Created {
				created.Add(1)
			}
			ids.Store(out[0].ID, true)
		}()
	}
	wg.Wait()
	h.idle()
	n := 0
	ids.Range(func(any, any) bool { n++; return true })
	if created.Load() != 1 || n != 1 || runs.Load() != 1 {
		t.Fatalf("64 concurrent starts of one key: %d created, %d ids, step ran %d times; want 1, 1, 1", created.Load(), n, runs.Load())
	}
	if c := h.count(storage.Query{}); c != 1 {
		t.Fatalf("%d sagas stored", c)
	}
}

func TestMaxConcurrentQueuesWithoutDropping(t *testing.T) {
	var cur, peak atomic.Int32
	step := func(ctx context.Context, r *engine.Run) error {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select { // the step's own work: hold the slot for a while
		case <-time.After(15 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "slow", Steps: []engine.Step{{Name: "a", Action: step}, {Name: "b", Action: step}},
		Triggers: []engine.Trigger{engine.Kafka("orders", engine.PassThrough, engine.WithMaxConcurrent(2))}})
	h := start(t, reg, "")
	for i := range 20 {
		h.fire(engine.SourceKafka, "orders", fmt.Sprintf(`{"i":%d}`, i))
	}
	if q, _ := h.eng.Stats(); q == 0 {
		t.Error("expected sagas waiting as pending behind the limit")
	}
	h.idle()
	if n := h.count(storage.Query{Status: storage.StatusCompleted}); n != 20 {
		t.Fatalf("%d of 20 sagas completed", n)
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrency inside steps = %d, want 2", p)
	}
}

func TestCompensationReverseOrderOfCompletedSteps(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	rec := func(s string) engine.StepFunc {
		return func(context.Context, *engine.Run) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, s)
			return nil
		}
	}
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "a", Action: rec("a"), Compensate: rec("undo a")},
		engine.Step{Name: "b", Action: rec("b")}, // nothing to undo
		engine.Step{Name: "c", Action: rec("c"), Compensate: rec("undo c")},
		engine.Step{Name: "d", Action: func(context.Context, *engine.Run) error { return engine.Permanent(errors.New("card declined")) }, Compensate: rec("undo d")},
		engine.Step{Name: "e", Action: rec("e"), Compensate: rec("undo e")},
	))
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	if got := strings.Join(calls, ","); got != "a,b,c,undo c,undo a" {
		t.Fatalf("calls = %s", got)
	}
	s := h.get(id)
	want := []storage.StepStatus{storage.StepCompensated, storage.StepCompleted, storage.StepCompensated, storage.StepFailed, storage.StepPending}
	for i, st := range s.Steps {
		if st.Status != want[i] {
			t.Errorf("step %s: %s, want %s", st.Name, st.Status, want[i])
		}
	}
	if s.Status != storage.StatusRolledBack || !strings.Contains(s.Error, "card declined") || s.Steps[3].Error != "card declined" {
		t.Fatalf("saga = %s %q step d error %q", s.Status, s.Error, s.Steps[3].Error)
	}
}

func TestRetriesFollowPolicy(t *testing.T) {
	clock := newFakeClock()
	var attempts atomic.Int32
	pol := engine.RetryPolicy{MaxAttempts: 4, InitialDelay: 100 * time.Millisecond, Multiplier: 3, MaxDelay: time.Second}
	reg := engine.NewRegistry()
	reg.Register(orderSaga("flaky", engine.Step{Name: "s", Retry: pol, Action: func(_ context.Context, r *engine.Run) error {
		if attempts.Add(1); r.Attempt < 4 {
			return fmt.Errorf("attempt %d failed", r.Attempt)
		}
		return nil
	}}))
	reg.Register(engine.Saga{Name: "hopeless", Steps: []engine.Step{{Name: "s", Retry: pol, Action: func(context.Context, *engine.Run) error {
		return errors.New("down")
	}}}, Triggers: []engine.Trigger{engine.Manual("x", engine.PassThrough)}})
	h := start(t, reg, "", withClock(clock))

	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	if got, want := fmt.Sprint(clock.Sleeps()), "[100ms 300ms 900ms]"; got != want {
		t.Fatalf("back-off = %s, want %s", got, want)
	}
	s := h.get(id)
	if s.Status != storage.StatusCompleted || s.Steps[0].Attempts != 4 || attempts.Load() != 4 {
		t.Fatalf("flaky: %s attempts %d (ran %d)", s.Status, s.Steps[0].Attempts, attempts.Load())
	}

	id = h.fire(engine.SourceManual, "x", `{}`)[0].ID
	h.idle()
	if got, want := fmt.Sprint(clock.Sleeps()[3:]), "[100ms 300ms 900ms]"; got != want {
		t.Fatalf("back-off = %s, want %s", got, want)
	}
	s = h.get(id)
	if s.Status != storage.StatusRolledBack || s.Steps[0].Attempts != 4 || s.Steps[0].Status != storage.StepFailed || s.Steps[0].Error != "down" {
		t.Fatalf("hopeless: %+v", s)
	}
}

func TestRetryDelay(t *testing.T) {
	p := engine.RetryPolicy{MaxAttempts: 10, InitialDelay: time.Second, Multiplier: 2, MaxDelay: 5 * time.Second, Jitter: 0.5}
	cases := []struct {
		attempt  int
		r        float64
		min, max time.Duration
	}{
		{1, 0.5, time.Second, time.Second},
		{2, 0.0, time.Second, time.Second}, // 2s - 50%
		{2, 0.999, 2990 * time.Millisecond, 3 * time.Second},
		{3, 0.5, 4 * time.Second, 4 * time.Second},
		{8, 0.999, 5 * time.Second, 5 * time.Second}, // capped after jitter too
		{60, 0.0, 2500 * time.Millisecond, 2500 * time.Millisecond},
	}
	for _, c := range cases {
		if d := p.Delay(c.attempt, c.r); d < c.min || d > c.max {
			t.Errorf("Delay(%d, %v) = %v, want in [%v, %v]", c.attempt, c.r, d, c.min, c.max)
		}
	}
}

func TestCompensationGivingUpEndsFailed(t *testing.T) {
	clock := newFakeClock()
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "reserve", Action: ok, Compensate: func(context.Context, *engine.Run) error { return errors.New("warehouse down") },
			CompensateRetry: engine.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Second}},
		engine.Step{Name: "charge", Action: func(context.Context, *engine.Run) error { return engine.Permanent(errors.New("declined")) }},
	))
	h := start(t, reg, "", withClock(clock))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	s := h.finish(clock, id) // back-offs of a second and more are durable waits
	st := s.Steps[0]
	if s.Status != storage.StatusFailed || st.Status != storage.StepCompensationFailed || st.CompAttempts != 3 || st.CompError != "warehouse down" {
		t.Fatalf("saga %s step %+v", s.Status, st)
	}
	if !strings.Contains(s.Error, "warehouse down") || !strings.Contains(s.Error, "declined") {
		t.Fatalf("saga error %q should name both failures", s.Error)
	}
}

func TestPanicsAreFailuresNotCrashes(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "a", Action: ok, Compensate: func(context.Context, *engine.Run) error { panic("boom in compensation") },
			CompensateRetry: engine.RetryPolicy{MaxAttempts: 1}},
		engine.Step{Name: "b", Action: func(context.Context, *engine.Run) error { panic("boom") }, Retry: engine.RetryPolicy{MaxAttempts: 1}},
	))
	reg.Register(engine.Saga{Name: "bad-transformer", Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("orders", func(*engine.Event) (map[string]any, error) {
			var m map[string]any
			m["x"] = 1 // nil map write
			return m, nil
		})}})
	h := start(t, reg, "")
	out, err := h.eng.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "orders", Value: []byte(`{"order_id":"o"}`)})
	var pe *engine.PanicError
	if !errors.As(err, &pe) || len(out) != 2 {
		t.Fatalf("Fire = %+v, %v; want one saga and one panic reject", out, err)
	}
	if out[1].Reason != engine.ReasonPanic || !out[0].Created {
		t.Fatalf("outcomes %+v", out)
	}
	h.idle()
	s := h.get(out[0].ID)
	if s.Status != storage.StatusFailed || !strings.Contains(s.Steps[1].Error, "panic: boom") || !strings.Contains(s.Steps[0].CompError, "boom in compensation") {
		t.Fatalf("saga %s steps %+v", s.Status, s.Steps)
	}
}

func TestStepTimeoutCancelsContext(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order", engine.Step{Name: "hang", Timeout: 20 * time.Millisecond, Retry: engine.RetryPolicy{MaxAttempts: 1},
		Action: func(ctx context.Context, _ *engine.Run) error { <-ctx.Done(); return ctx.Err() }}))
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	if s := h.get(id); s.Status != storage.StatusRolledBack || !strings.Contains(s.Steps[0].Error, "deadline exceeded") {
		t.Fatalf("saga %s step error %q", s.Status, s.Steps[0].Error)
	}
}

func TestStepDataIsRecorded(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "charge", Action: func(_ context.Context, r *engine.Run) error {
			r.Set("payment_id", "p-"+r.String("order_id"))
			return nil
		},
			Compensate: func(_ context.Context, r *engine.Run) error { r.Set("refunded", r.String("payment_id")); return nil }},
		engine.Step{Name: "ship", Action: func(_ context.Context, r *engine.Run) error {
			r.Set("half-done", true) // discarded: the step fails
			return engine.Permanent(errors.New("no stock"))
		}},
	))
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-9"}`)[0].ID
	h.idle()
	var data map[string]any
	s := h.get(id)
	if err := json.Unmarshal(s.Context, &data); err != nil {
		t.Fatal(err)
	}
	if data["payment_id"] != "p-o-9" || data["refunded"] != "p-o-9" || data["half-done"] != nil {
		t.Fatalf("context = %s", s.Context)
	}
}

func TestRateLimitDelaysStartsWithoutDropping(t *testing.T) {
	clock := newFakeClock()
	var started atomic.Int32
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "limited", Steps: []engine.Step{{Name: "s", Action: func(context.Context, *engine.Run) error { started.Add(1); return nil }}},
		Triggers: []engine.Trigger{engine.Manual("go", engine.PassThrough, engine.WithRateLimit(10, 1))}})
	h := start(t, reg, "", withClock(clock))
	for range 5 {
		h.fire(engine.SourceManual, "go", `{}`)
	}
	waitFor(t, func() bool { q, r := h.eng.Stats(); return started.Load() == 1 && q == 4 && r == 0 })
	for i := 2; i <= 5; i++ {
		clock.Advance(100 * time.Millisecond)
		waitFor(t, func() bool { return started.Load() == int32(i) })
	}
	h.idle()
	if n := h.count(storage.Query{Status: storage.StatusCompleted}); n != 5 {
		t.Fatalf("%d of 5 completed", n)
	}
}

// waitFor polls cond with a deadline (it never sleeps a fixed time and hopes).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBadInputReachesTransformerAsRawBytes(t *testing.T) {
	var seen [][]byte
	var errs []error
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "raw", Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("in", func(ev *engine.Event) (map[string]any, error) {
			seen = append(seen, ev.Value)
			_, err := ev.JSON()
			errs = append(errs, err)
			return map[string]any{"raw": string(ev.Value)}, nil
		})}})
	reg.Register(engine.Saga{Name: "strict", Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("in", engine.PassThrough)}})
	h := start(t, reg, "")
	for _, v := range []string{"", "not json", "[1,2]", "null", `{"a":1} trailing`} {
		out, err := h.eng.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "in", Value: []byte(v)})
		var de *engine.DecodeError
		if !errors.As(err, &de) {
			t.Errorf("value %q: err %v, want DecodeError from the strict saga", v, err)
		}
		if len(out) != 2 || !out[0].Created || out[1].Reason != engine.ReasonDecode {
			t.Errorf("value %q: outcomes %+v", v, out)
		}
	}
	for i, err := range errs {
		var de *engine.DecodeError
		if !errors.As(err, &de) {
			t.Errorf("value %q: JSON() err %v, want *DecodeError", seen[i], err)
		}
	}
	h.idle()
}

func TestRegistryReportsEveryProblem(t *testing.T) {
	reg := engine.NewRegistry()
	good := orderSaga("order")
	reg.Register(good)
	reg.Register(good)
	reg.Register(engine.Saga{Name: "no-topic", Steps: good.Steps, Triggers: []engine.Trigger{engine.Kafka("", engine.PassThrough)}})
	reg.Register(engine.Saga{Name: "no-transformer", Steps: good.Steps, Triggers: []engine.Trigger{engine.Kafka("t", nil)}})
	reg.Register(engine.Saga{Name: "bad-cron", Steps: good.Steps, Triggers: []engine.Trigger{engine.Cron("61 * * * *", engine.WithTransform(engine.PassThrough))}})
	reg.Register(engine.Saga{Name: "bad name!", Steps: good.Steps, Triggers: good.Triggers})
	reg.Register(engine.Saga{Name: "no-steps", Triggers: good.Triggers})
	reg.Register(engine.Saga{Name: "zero-trigger", Steps: good.Steps, Triggers: []engine.Trigger{{}}})
	reg.Register(engine.Saga{Name: "signed-kafka", Steps: good.Steps, Triggers: []engine.Trigger{engine.Kafka("t", engine.PassThrough, engine.Signed())}})
	reg.Register(engine.Saga{Name: "signed-manual", Steps: good.Steps, Triggers: []engine.Trigger{engine.Manual("e", engine.PassThrough, engine.Signed())}})
	_, err := reg.Routes()
	if !errors.Is(err, engine.ErrInvalidSaga) {
		t.Fatalf("Routes() = %v", err)
	}
	for _, want := range []string{`saga "order": registered twice`, `"no-topic"`, "empty topic", `"no-transformer"`, "no transformer",
		`"bad-cron"`, `"61 * * * *"`, `"bad name!"`, `"no-steps": has no steps`, `"zero-trigger": trigger 0: not built with engine.Kafka`,
		`"signed-kafka": trigger 0 (kafka:t): engine.Signed() applies to webhook triggers only`, `"signed-manual": trigger 0 (manual:e): engine.Signed()`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	good2 := engine.NewRegistry()
	for _, spec := range []string{"*/5 * * * *", "0 */5 * * * *", "@daily", "@every 30s", "CRON_TZ=Europe/Berlin 0 2 * * *"} {
		good2.Register(engine.Saga{Name: "c" + fmt.Sprint(len(spec)), Steps: good.Steps, Triggers: []engine.Trigger{engine.Cron(spec, engine.WithTransform(engine.PassThrough))}})
	}
	if _, err := good2.Routes(); err != nil {
		t.Fatalf("valid schedules rejected: %v", err)
	}
	signed := engine.NewRegistry()
	signed.Register(engine.Saga{Name: "hook", Steps: good.Steps, Triggers: []engine.Trigger{
		engine.Webhook("a", engine.PassThrough, engine.Signed()), engine.Webhook("b", engine.PassThrough)}})
	routes, err := signed.Routes()
	if err != nil {
		t.Fatalf("a signed webhook rejected: %v", err)
	}
	for _, r := range routes.All() {
		if want := r.Trigger.Webhook() == "a"; r.Trigger.SignatureRequired() != want {
			t.Errorf("webhook %s: SignatureRequired() = %v, want %v", r.Trigger.Webhook(), !want, want)
		}
	}
	if rows := routes.Table(); !rows[0].Signed || rows[1].Signed {
		t.Errorf("trigger table: %+v", rows)
	}
}

func TestRecoveryResumesFromLastRecordedStep(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	calls := map[string]int{}
	rec := func(s string) engine.StepFunc {
		return func(_ context.Context, r *engine.Run) error {
			mu.Lock()
			defer mu.Unlock()
			calls[r.String("order_id")+"/"+s]++
			return nil
		}
	}
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "a", Action: rec("a"), Compensate: rec("undo a")},
		engine.Step{Name: "b", Action: rec("b"), Compensate: rec("undo b")},
		engine.Step{Name: "c", Action: rec("c")},
	))
	// Record sagas as a crashed process would have left them, without running them.
	st, err := storage.OpenBolt(dir+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(off int64, key string, status storage.Status, steps ...storage.StepStatus) {
		s := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Partition: 0, Offset: off},
			IdempotencyKey: key, Context: []byte(`{"order_id":"` + key + `"}`)}
		for i, n := range []string{"a", "b", "c"} {
			s.Steps = append(s.Steps, storage.Step{Name: n, Status: steps[i]})
		}
		if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{s}}); err != nil {
			t.Fatal(err)
		}
		s.Status = status
		if err := st.Update(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	P, C, F, X := storage.StepPending, storage.StepCompleted, storage.StepFailed, storage.StepCompensated
	mk(0, "pending", storage.StatusPending, P, P, P)
	mk(1, "exec", storage.StatusExecuting, C, P, P)
	mk(2, "comp", storage.StatusCompensating, C, C, F)
	mk(3, "comp2", storage.StatusCompensating, C, X, F)
	mk(4, "done", storage.StatusCompleted, C, C, C)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	h := start(t, reg, dir)
	h.idle()
	want := map[string]int{
		"pending/a": 1, "pending/b": 1, "pending/c": 1,
		"exec/b": 1, "exec/c": 1,
		"comp/undo b": 1, "comp/undo a": 1,
		"comp2/undo a": 1,
	}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("calls after recovery:\n got %v\nwant %v", calls, want)
	}
	for off, status := range []storage.Status{storage.StatusCompleted, storage.StatusCompleted, storage.StatusRolledBack, storage.StatusRolledBack, storage.StatusCompleted} {
		id := storage.FormatID(storage.Position{Topic: "orders", Offset: int64(off)}, "order")
		if s := h.get(id); s.Status != status {
			t.Errorf("%s: %s, want %s", id, s.Status, status)
		}
	}
}

// A stored saga this build does not declare is parked with the reason:
// not failed (another build may run it), not stuck in its lane.
func TestUnknownSagaInStoreIsParkedNotStuck(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.OpenBolt(dir+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &storage.Saga{Name: "retired", Trigger: "kafka:x", Source: storage.Position{Topic: "x"}, Steps: []storage.Step{{Name: "a", Status: storage.StepPending}}}
	if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{s}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order"))
	h := start(t, reg, dir)
	h.idle()
	got := h.get(s.ID())
	if got.Status != storage.StatusParked || got.Park == nil || got.Park.From != storage.StatusPending || !strings.Contains(got.Park.Reason, `"retired" is not declared`) {
		t.Fatalf("retired saga: %s %+v", got.Status, got.Park)
	}
}

func TestShutdownLeavesSagaResumable(t *testing.T) {
	dir := t.TempDir()
	entered := make(chan struct{}, 1)
	var block atomic.Bool
	block.Store(true)
	var bRuns atomic.Int32
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "a", Action: ok},
		engine.Step{Name: "b", Action: func(ctx context.Context, _ *engine.Run) error {
			bRuns.Add(1)
			if block.Load() {
				entered <- struct{}{}
				<-ctx.Done() // ignores nothing: returns when cancelled at hard stop
				return ctx.Err()
			}
			return nil
		}},
	))
	h := start(t, reg, dir, func(c *engine.Config) { c.ShutdownTimeout = 50 * time.Millisecond })
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	<-entered
	h.stop()

	st, _ := storage.OpenBolt(dir+"/sagaz.db", storage.BoltOptions{})
	s, _ := st.Get(context.Background(), id)
	st.Close()
	if s.Status != storage.StatusExecuting || s.Steps[0].Status != storage.StepCompleted || s.Steps[1].Status != storage.StepPending {
		t.Fatalf("after shutdown: %s %+v (the interrupted step must not count as failed)", s.Status, s.Steps)
	}
	block.Store(false)
	h = start(t, reg, dir)
	h.idle()
	if s := h.get(id); s.Status != storage.StatusCompleted || bRuns.Load() != 2 {
		t.Fatalf("after restart: %s, step b ran %d times", s.Status, bRuns.Load())
	}
}

// A long queue keeps only references; those sagas are read back from the
// store when they start, with their data intact.
func TestLongQueueKeepsReferencesOnly(t *testing.T) {
	defer engine.SetKeepRecords(3)()
	var mu sync.Mutex
	seen := map[string]bool{}
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "one-at-a-time", Steps: []engine.Step{{Name: "s", Action: func(_ context.Context, r *engine.Run) error {
		mu.Lock()
		defer mu.Unlock()
		seen[r.String("i")] = true
		r.Set("done", true)
		return nil
	}}}, Triggers: []engine.Trigger{engine.Manual("go", engine.PassThrough, engine.WithMaxConcurrent(1))}})
	h := start(t, reg, "")
	var ids []string
	for i := range 20 {
		ids = append(ids, h.fire(engine.SourceManual, "go", fmt.Sprintf(`{"i":"%d"}`, i))[0].ID)
	}
	h.idle()
	if len(seen) != 20 {
		t.Fatalf("steps saw %d distinct events, want 20: %v", len(seen), seen)
	}
	for _, id := range ids {
		if s := h.get(id); s.Status != storage.StatusCompleted || !strings.Contains(string(s.Context), `"done":true`) {
			t.Fatalf("%s: %s %s", id, s.Status, s.Context)
		}
	}
}

// A transformer that passes the event through stores the event's bytes;
// one that builds its own map stores that map.
func TestPassthroughContextKeepsEventBytes(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "pass", Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Manual("go", engine.PassThrough)}})
	reg.Register(engine.Saga{Name: "own", Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Manual("go", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			c := maps.Clone(m)
			c["extra"] = 1
			return c, err
		})}})
	h := start(t, reg, "")
	body := `{"b": 2, "a": 1.50}`
	out := h.fire(engine.SourceManual, "go", body)
	h.idle()
	if got := string(h.get(out[0].ID).Context); got != body {
		t.Errorf("passthrough stored %s, want the event bytes %s", got, body)
	}
	if got := string(h.get(out[1].ID).Context); got != `{"a":1.50,"b":2,"extra":1}` {
		t.Errorf("own map stored %s", got)
	}
}

// Routes.Resolve is the one routing function: plain records route by
// topic, records of a synthetic topic by the source and name in their
// headers (never to kafka triggers), in-process events by source and name.
func TestResolveRoutesEverySource(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "s", Steps: []engine.Step{{Name: "a", Action: ok}}, Triggers: []engine.Trigger{
		engine.Kafka("orders", engine.PassThrough), engine.Webhook("hook", engine.PassThrough),
		engine.Manual("go", engine.PassThrough), engine.Cron("@hourly", engine.WithName("tick")),
	}})
	rs, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	hdr := func(src, name string) []engine.Header {
		return []engine.Header{{Key: engine.HeaderSource, Value: []byte(src)}, {Key: engine.HeaderName, Value: []byte(name)}}
	}
	cases := []struct {
		ev        engine.Event
		synthetic bool
		want      string // trigger id, or "" for no route
	}{
		{engine.Event{Source: engine.SourceKafka, Topic: "orders"}, false, "kafka:orders"},
		{engine.Event{Source: engine.SourceKafka, Topic: "other"}, false, ""},
		{engine.Event{Source: engine.SourceKafka, Topic: "sagaz.events", Headers: hdr("webhook", "hook")}, true, "webhook:hook"},
		{engine.Event{Source: engine.SourceKafka, Topic: "sagaz.events", Headers: hdr("manual", "go")}, true, "manual:go"},
		{engine.Event{Source: engine.SourceKafka, Topic: "sagaz.cron", Headers: hdr("cron", "s:tick")}, true, "cron:tick"},
		{engine.Event{Source: engine.SourceKafka, Topic: "sagaz.events", Headers: hdr("kafka", "orders")}, true, ""}, // forged
		{engine.Event{Source: engine.SourceKafka, Topic: "sagaz.events", Headers: hdr("webhook", "nope")}, true, ""},
		{engine.Event{Source: engine.SourceKafka, Topic: "sagaz.events"}, true, ""},
		{engine.Event{Source: engine.SourceManual, Name: "go"}, false, "manual:go"},
		// a plain record's headers are data, not routing
		{engine.Event{Source: engine.SourceKafka, Topic: "orders", Headers: hdr("webhook", "hook")}, false, "kafka:orders"},
	}
	for i, c := range cases {
		routes, err := rs.Resolve(&c.ev, c.synthetic)
		switch {
		case c.want == "" && !errors.Is(err, engine.ErrNoRoute):
			t.Errorf("case %d: routes %v, err %v; want ErrNoRoute", i, routes, err)
		case c.want != "" && (err != nil || len(routes) != 1 || routes[0].Trigger.ID() != c.want):
			t.Errorf("case %d: routes %v, err %v; want %s", i, routes, err, c.want)
		}
	}
}

// What the store or the changelog would refuse is refused per event, with
// a reason: an over-long key, a value that is not UTF-8 (decoding would
// make different ids equal), a context too large for one changelog record,
// and a step that grows the context past the limit.
func TestPoisonEventsAreRejectedOneByOne(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "order", Steps: []engine.Step{{Name: "grow", Action: func(_ context.Context, r *engine.Run) error {
		if r.String("grow") == "yes" {
			r.Set("blob", strings.Repeat("x", 6000))
		}
		return nil
	}}}, Triggers: []engine.Trigger{engine.Kafka("orders", engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))}})
	h := start(t, reg, "", func(c *engine.Config) { c.MaxContextBytes = 5000 })
	fire := func(v string) ([]engine.Outcome, error) {
		return h.eng.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "orders", Value: []byte(v)})
	}
	cases := []struct {
		value  string
		reason engine.Reason // "" for a saga
	}{
		{`{"order_id":"` + strings.Repeat("k", engine.MaxKeyBytes+1) + `"}`, engine.ReasonBadKey},
		{`{"order_id":"` + strings.Repeat("k", engine.MaxKeyBytes) + `"}`, ""},
		{"{\"order_id\":\"x\xff\xfey\"}", engine.ReasonDecode},
		{"{\"order_id\":\"x\xc0\xc1y\"}", engine.ReasonDecode},
		{"{\"order_id\":\"x\uFFFD\uFFFDy\"}", ""},
		{`{"order_id":"big","pad":"` + strings.Repeat("p", 6000) + `"}`, engine.ReasonContext},
	}
	for i, c := range cases {
		out, err := fire(c.value)
		if len(out) != 1 {
			t.Fatalf("case %d: outcomes %v, err %v", i, out, err)
		}
		if out[0].Reason != c.reason || (c.reason == "") != out[0].Created {
			t.Errorf("case %d: outcome %+v, want reason %q", i, out[0], c.reason)
		}
	}
	id := func() string {
		out, err := fire(`{"order_id":"grows","grow":"yes"}`)
		if err != nil || len(out) != 1 {
			t.Fatalf("%v %v", out, err)
		}
		return out[0].ID
	}()
	h.idle()
	if s := h.get(id); s.Status != storage.StatusRolledBack || !strings.Contains(s.Steps[0].Error, "over the limit") {
		t.Fatalf("a step that grows the context past the limit: %s %+v", s.Status, s.Steps)
	}
}

// flakyStore fails the first n Updates, as a full disk would.
type flakyStore struct {
	storage.Store
	fail atomic.Int32
}

func (f *flakyStore) Update(ctx context.Context, s ...*storage.Saga) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("no space left on device")
	}
	return f.Store.Update(ctx, s...)
}

// A store that cannot be written makes the member not ready ("store")
// while it lasts; the saga goes on from where it was once writes work.
func TestStoreFaultIsReportedWhileItLasts(t *testing.T) {
	conds := health.New(nil)
	flaky := &flakyStore{}
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order"))
	h := start(t, reg, "", func(c *engine.Config) {
		flaky.Store = c.Store
		c.Store, c.Health = flaky, conds
	})
	flaky.fail.Store(5) // about 1.5 s of back-off
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1"}`)[0].ID
	waitFor(t, func() bool { return conds.Holds(health.Store) })
	if err := conds.Err(); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("readiness: %v", err)
	}
	h.idle()
	if s := h.get(id); s.Status != storage.StatusCompleted {
		t.Fatalf("saga: %s", s.Status)
	}
	if conds.Err() != nil {
		t.Fatalf("still not ready after the store recovered: %v", conds.Err())
	}
}

// KeyPartition places a start where Kafka's own clients place a record
// keyed by StartKey (murmur2, as franz-go's and Java's default
// partitioners do): the consumer produces starts with the key and lets the
// client partition them.
func TestKeyPartitionMatchesKafkasPartitioner(t *testing.T) {
	p := kgo.StickyKeyPartitioner(nil).ForTopic("sagaz-keys")
	for i := range 2000 {
		saga, key := fmt.Sprintf("saga-%d", i%7), fmt.Sprintf("key-%d-%x", i, i*7919)
		for _, n := range []int32{1, 3, 6, 12, 50} {
			want := p.Partition(&kgo.Record{Key: engine.StartKey(saga, key)}, int(n))
			if got := engine.KeyPartition(saga, key, n); int(got) != want {
				t.Fatalf("KeyPartition(%q, %q, %d) = %d, franz-go says %d", saga, key, n, got, want)
			}
		}
	}
}
