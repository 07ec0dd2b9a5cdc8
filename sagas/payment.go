package sagas

import (
	"context"

	"github.com/sagaz-go/sagaz/engine"
)

// A webhook-triggered demo: a payment provider calls POST /webhooks/payments
// with {"payment_id": ..., "order_id": ..., "status": "succeeded"}; other
// statuses are ignored. The webhook must be signed (engine.Signed): against
// a real cluster the service does not start without
// SAGAZ_WEBHOOK_SECRET_PAYMENTS; in dev mode it accepts unsigned calls when
// no secret is set.
func init() { engine.Register(PaymentConfirmed) }

// PaymentConfirmed is the webhook demo saga.
var PaymentConfirmed = engine.Saga{
	Name: "payment-confirmed",
	Steps: []engine.Step{
		{Name: "mark-paid", Action: func(context.Context, *engine.Run) error { return nil }},
		{Name: "notify", Action: func(context.Context, *engine.Run) error { return nil }},
	},
	Triggers: []engine.Trigger{
		engine.Webhook("payments", paymentContext, engine.WithKey(engine.KeyField("payment_id")), engine.Signed()),
	},
}

func paymentContext(ev *engine.Event) (map[string]any, error) {
	m, err := ev.JSON()
	if err != nil {
		return nil, err
	}
	if m["status"] != "succeeded" {
		return nil, engine.ErrIgnore
	}
	return map[string]any{"payment_id": m["payment_id"], "order_id": m["order_id"]}, nil
}
