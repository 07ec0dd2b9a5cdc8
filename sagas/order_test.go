package sagas_test

import (
	"slices"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/sagatest"
	"github.com/sagaz-go/sagaz/storage"
)

// Tests of the demo sagas (order, payment-confirmed, nightly-report).

func TestDemoSagasAreRouted(t *testing.T) {
	rs := routes(t)
	for _, src := range []struct {
		s    engine.Source
		name string
		saga string
	}{{engine.SourceKafka, sagas.OrderTopic, "order"}, {engine.SourceManual, "order.requested", "order"},
		{engine.SourceWebhook, "payments", "payment-confirmed"}, {engine.SourceCron, "nightly-report:nightly-report", "nightly-report"}} {
		if r := rs.Match(src.s, src.name); len(r) != 1 || r[0].Saga.Name != src.saga {
			t.Errorf("%s %s: routes %v", src.s, src.name, r)
		}
	}
}

func TestOrderSagaOutcomes(t *testing.T) {
	h := sagatest.New(t, sagas.Order)
	cases := []struct {
		body        string
		status      storage.Status
		steps       []storage.StepStatus
		compensated []string
	}{
		{`{"order_id":"o-1","amount":10}`, storage.StatusCompleted, []storage.StepStatus{storage.StepCompleted, storage.StepCompleted, storage.StepCompleted}, nil},
		{`{"order_id":"o-2","fail_at":"charge","sleep_ms":5}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepCompensated, storage.StepFailed, storage.StepPending}, []string{"reserve"}},
		{`{"order_id":"o-3","fail_at":"ship"}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepCompensated, storage.StepCompensated, storage.StepFailed}, []string{"charge", "reserve"}},
		{`{"order_id":"o-4","fail_at":"reserve"}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepFailed, storage.StepPending, storage.StepPending}, nil},
		{`{"order_id":"o-5","sleep_ms":"5"}`, storage.StatusRolledBack, []storage.StepStatus{storage.StepFailed, storage.StepPending, storage.StepPending}, nil}, // sleep_ms must be a number
	}
	for _, c := range cases {
		res, err := h.RunEvent(engine.SourceKafka, engine.Event{Topic: sagas.OrderTopic, Value: []byte(c.body)})
		if err != nil {
			t.Fatalf("%s: %v", c.body, err)
		}
		if res.Status != c.status {
			t.Errorf("%s: %s, want %s (%s)", c.body, res.Status, c.status, res.Error)
		}
		for j, want := range c.steps {
			if res.Steps[j].Status != want {
				t.Errorf("%s: step %s %s, want %s", c.body, res.Steps[j].Name, res.Steps[j].Status, want)
			}
		}
		if got := res.Compensated(); !slices.Equal(got, c.compensated) && len(got)+len(c.compensated) > 0 {
			t.Errorf("%s: compensated %v, want %v", c.body, got, c.compensated)
		}
	}
	// A charge that fails twice, then works: retried, completed.
	res, err := h.RunEvent(engine.SourceKafka, engine.Event{Topic: sagas.OrderTopic, Value: []byte(`{"order_id":"o-6"}`)}, sagatest.FailStep("charge", 2))
	if err != nil || res.Status != storage.StatusCompleted || res.Attempts("charge", false) != 3 || res.Context["payment_id"] != "charge-o-6" {
		t.Fatalf("flaky charge: %+v %v", res, err)
	}
	// A bad fail_at and a missing order_id are rejected, not started.
	for _, bad := range []string{`{"order_id":"o-7","fail_at":"nowhere"}`, `{"amount":1}`, `not json`} {
		if res, err := h.RunEvent(engine.SourceKafka, engine.Event{Topic: sagas.OrderTopic, Value: []byte(bad)}); err == nil {
			t.Errorf("%s: accepted (%+v)", bad, res)
		}
	}
}
