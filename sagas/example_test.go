package sagas_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/sagatest"
)

// The saga of the README's "Writing a saga", as a user adds it to sagas/
// (README_TestSnippetIsTheExample keeps the two the same).

// README:begin
// Refund reverses a charge and tells the customer; if telling fails for
// good, the reversal is undone.
var Refund = engine.Saga{
	Name: "refund",
	Steps: []engine.Step{
		{Name: "reverse-charge", Action: reverseCharge, Compensate: recharge,
			Retry:   engine.RetryPolicy{MaxAttempts: 5, InitialDelay: 200 * time.Millisecond, Multiplier: 2, MaxDelay: 10 * time.Second, Jitter: 0.2},
			Timeout: 30 * time.Second},
		{Name: "notify", Action: notify},
	},
	Triggers: []engine.Trigger{
		engine.Kafka("refunds.requested", engine.PassThrough,
			engine.WithKey(engine.KeyField("refund_id")), engine.WithMaxConcurrent(20)),
	},
}

func init() { engine.Register(Refund) }

func reverseCharge(ctx context.Context, r *engine.Run) error {
	// r.ID is stable across retries and restarts: use it as the idempotency
	// key of the calls you make. Typed getters fail on a missing or mistyped
	// field instead of giving a zero.
	cents, err := r.Int("amount_cents")
	if err != nil {
		return engine.Permanent(err) // retrying will not make the event right
	}
	r.Set("reversed_cents", cents) // recorded with the step's result
	return nil
}

func recharge(ctx context.Context, r *engine.Run) error {
	r.Set("reversed_cents", 0)
	return nil
}

func notify(ctx context.Context, r *engine.Run) error { return nil }

// README:end

// Unit-test a saga with sagatest: the real engine, no Kafka, failures of
// your choosing and a fake clock (retry back-off costs no time).
func Example_refund() {
	h, err := sagatest.Start(Refund)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()

	ok, _ := h.Run(map[string]any{"refund_id": "r-1", "amount_cents": 4200})
	fmt.Println(ok.Status, ok.Actions(), ok.Context["reversed_cents"])

	// notify fails on every attempt: the reversal is compensated.
	undone, _ := h.Run(map[string]any{"refund_id": "r-2", "amount_cents": 4200}, sagatest.FailStep("notify", sagatest.Always))
	fmt.Println(undone.Status, undone.Compensated(), undone.Attempts("notify", false), undone.Context["reversed_cents"])

	// A mistyped amount fails at once, with the field named.
	bad, _ := h.Run(map[string]any{"refund_id": "r-3", "amount_cents": "42.00"})
	fmt.Println(bad.Status, bad.Error)
	// Output:
	// completed [reverse-charge notify] 4200
	// rolled_back [reverse-charge] 3 0
	// rolled_back step "reverse-charge" failed after 1 attempt(s): saga data field "amount_cents": want an integer, got the string "42.00"
}
