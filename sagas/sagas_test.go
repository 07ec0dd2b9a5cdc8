package sagas_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	_ "github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

func TestDemoSagasRegisterCleanly(t *testing.T) {
	rs, err := engine.DefaultRegistry().Routes()
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Topics(); len(got) != 1 || got[0] != "orders.created" {
		t.Fatalf("topics = %v", got)
	}
	for _, src := range []struct {
		s    engine.Source
		name string
		saga string
	}{{engine.SourceKafka, "orders.created", "order"}, {engine.SourceWebhook, "payments", "payment-confirmed"}, {engine.SourceCron, "nightly-report:nightly-report", "nightly-report"}} {
		if r := rs.Match(src.s, src.name); len(r) != 1 || r[0].Saga.Name != src.saga {
			t.Errorf("%s %s: routes %v", src.s, src.name, r)
		}
	}
	// The payment provider's webhook must be signed outside dev mode.
	if r := rs.Match(engine.SourceWebhook, "payments"); len(r) != 1 || !r[0].Trigger.SignatureRequired() {
		t.Error("the payments webhook is not declared engine.Signed")
	}
}

func TestOrderSagaOutcomes(t *testing.T) {
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := engine.New(engine.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()

	cases := []struct {
		body   string
		status storage.Status
		steps  []storage.StepStatus
	}{
		{`{"order_id":"o-1","amount":10}`, storage.StatusCompleted, []storage.StepStatus{storage.StepCompleted, storage.StepCompleted, storage.StepCompleted}},
		{`{"order_id":"o-2","fail_at":"charge","sleep_ms":5}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepCompensated, storage.StepFailed, storage.StepPending}},
		{`{"order_id":"o-3","fail_at":"ship"}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepCompensated, storage.StepCompensated, storage.StepFailed}},
		{`{"order_id":"o-4","fail_at":"reserve"}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepFailed, storage.StepPending, storage.StepPending}},
	}
	var ids []string
	for _, c := range cases {
		out, err := e.Fire(ctx, engine.SourceKafka, engine.Event{Topic: "orders.created", Value: []byte(c.body)})
		if err != nil || len(out) != 1 {
			t.Fatalf("%s: %v %v", c.body, out, err)
		}
		ids = append(ids, out[0].ID)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := e.WaitIdle(wctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		s, err := st.Get(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != c.status {
			t.Errorf("%s: %s, want %s", c.body, s.Status, c.status)
		}
		for j, want := range c.steps {
			if s.Steps[j].Status != want {
				t.Errorf("%s: step %s %s, want %s", c.body, s.Steps[j].Name, s.Steps[j].Status, want)
			}
		}
	}
	// A bad fail_at and a missing order_id are rejected, not started.
	for _, bad := range []string{`{"order_id":"o-5","fail_at":"nowhere"}`, `{"amount":1}`, `not json`} {
		if out, err := e.Fire(ctx, engine.SourceKafka, engine.Event{Topic: "orders.created", Value: []byte(bad)}); err == nil || out[0].Created {
			t.Errorf("%s: accepted (%+v)", bad, out)
		}
	}
}
