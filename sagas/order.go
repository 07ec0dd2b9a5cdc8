package sagas

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sagaz-go/sagaz/engine"
)

// The demo saga: an order reserves stock, charges the
// customer and ships. Events on orders.created look like
//
//	{"order_id": "o-1", "amount": 42.5, "fail_at": "charge", "sleep_ms": 200}
//
// fail_at (reserve, charge or ship) makes that step fail for good, so the
// completed steps are compensated; sleep_ms makes every step take that long,
// so the concurrency limit can be watched at work.
func init() { engine.Register(Order) }

// OrderTopic is the topic the order saga consumes.
const OrderTopic = "orders.created"

// Order is the demo order saga.
var Order = engine.Saga{
	Name: "order",
	Steps: []engine.Step{
		{Name: "reserve", Action: demoStep("reserve", "reservation_id"), Compensate: demoStep("release", ""), Timeout: time.Minute},
		{Name: "charge", Action: demoStep("charge", "payment_id"), Compensate: demoStep("refund", ""), Timeout: time.Minute},
		{Name: "ship", Action: demoStep("ship", "shipment_id"), Timeout: time.Minute},
	},
	Triggers: []engine.Trigger{
		engine.Kafka(OrderTopic, orderContext, engine.WithKey(engine.KeyField("order_id")), engine.WithMaxConcurrent(64)),
		// The same saga fired by hand: sagaz fire order.requested '{"order_id":"o-9"}'
		engine.Manual("order.requested", orderContext, engine.WithKey(engine.KeyField("order_id")), engine.WithMaxConcurrent(64)),
	},
}

func orderContext(ev *engine.Event) (map[string]any, error) {
	m, err := ev.JSON()
	if err != nil {
		return nil, err
	}
	ctx := map[string]any{"order_id": m["order_id"]}
	for _, k := range []string{"amount", "customer", "fail_at", "sleep_ms"} {
		if v, ok := m[k]; ok {
			ctx[k] = v
		}
	}
	if f, ok := m["fail_at"]; ok {
		switch f {
		case "reserve", "charge", "ship":
		default:
			return nil, fmt.Errorf("fail_at = %v: want reserve, charge or ship", f)
		}
	}
	return ctx, nil
}

// demoStep sleeps sleep_ms, fails if fail_at names it, and records an id
// under key (when key is set) so later steps and compensations can use it.
func demoStep(name, key string) engine.StepFunc {
	return func(ctx context.Context, r *engine.Run) error {
		n, err := r.Int("sleep_ms")
		switch {
		case errors.Is(err, engine.ErrNoField):
			n = 0
		case err != nil:
			return engine.Permanent(err) // "12" or 1.5: the event is wrong, retrying will not help
		case n < 0:
			return engine.Permanent(fmt.Errorf("sleep_ms = %d: want a non-negative integer", n))
		}
		if n > 0 {
			t := time.NewTimer(time.Duration(n) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		if !r.Compensating && r.String("fail_at") == name {
			return engine.Permanent(fmt.Errorf("demo: asked to fail at %s", name))
		}
		if key != "" {
			r.Set(key, name+"-"+r.String("order_id"))
		}
		return nil
	}
}
