package sagas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/participant"
)

// The demo saga of command steps: a transfer debits one account and
// credits another, each through a command to the accounts service (here
// `sagaz demo-participant`, whose handler is TransferCommands). Events on
// transfers.requested look like
//
//	{"transfer_id": "t-1", "from": "alice", "to": "bob", "amount": 10}
//
// and may carry, for the participant: "fail_at": "debit" or "credit" (it
// refuses that command for good: a refused credit rolls the transfer back
// with a refund command), "delay_ms": N (it replies after N ms), "no_reply":
// "debit" or "credit" (it stays silent: the step times out, is retried,
// then fails; a command that timed out may have happened all the same, so
// it is compensated: a debit refunded, a credit reversed).
func init() { engine.Register(Transfer) }

// Topics of the transfer demo.
const (
	TransferTopic = "transfers.requested"
	AccountsTopic = "accounts.commands"
)

// Transfer is the demo saga of command steps.
var Transfer = engine.Saga{
	Name: "transfer",
	Steps: []engine.Step{
		{Name: "debit",
			Command:           &engine.Command{Topic: AccountsTopic, Key: account("from"), Payload: transferCommand("debit", "from")},
			CompensateCommand: &engine.Command{Topic: AccountsTopic, Key: account("from"), Payload: transferCommand("refund", "from")},
			Timeout:           3 * time.Second, Retry: transferRetry, CompensateRetry: refundRetry},
		{Name: "credit",
			Command: &engine.Command{Topic: AccountsTopic, Key: account("to"), Payload: transferCommand("credit", "to")},
			// A credit that timed out for good may have happened: it is
			// reversed (the accounts service answers "nothing to undo" for
			// a credit it never made).
			CompensateCommand: &engine.Command{Topic: AccountsTopic, Key: account("to"), Payload: transferCommand("reverse", "to")},
			Timeout:           3 * time.Second, Retry: transferRetry, CompensateRetry: refundRetry},
	},
	Triggers: []engine.Trigger{
		engine.Kafka(TransferTopic, transferContext, engine.WithKey(engine.KeyField("transfer_id"))),
	},
}

// Each command gets two attempts, half a second apart; a refund is tried
// for about two minutes (money owed back must not give up while the
// accounts service restarts).
var (
	transferRetry = engine.RetryPolicy{MaxAttempts: 2, InitialDelay: 500 * time.Millisecond, Multiplier: 2}
	refundRetry   = engine.RetryPolicy{MaxAttempts: 30, InitialDelay: 500 * time.Millisecond, Multiplier: 2, MaxDelay: 5 * time.Second}
)

func transferContext(ev *engine.Event) (map[string]any, error) {
	m, err := ev.JSON()
	if err != nil {
		return nil, err
	}
	ctx := map[string]any{}
	for _, k := range []string{"transfer_id", "from", "to"} {
		s, ok := m[k].(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("%s = %v: want a non-empty string", k, m[k])
		}
		ctx[k] = s
	}
	n, ok := m["amount"].(json.Number)
	if a, err := n.Int64(); !ok || err != nil || a <= 0 {
		return nil, fmt.Errorf("amount = %v: want a positive integer (minor units)", m["amount"])
	}
	ctx["amount"] = n
	for _, k := range []string{"fail_at", "no_reply"} {
		if v, ok := m[k]; ok {
			if v != "debit" && v != "credit" {
				return nil, fmt.Errorf("%s = %v: want debit or credit", k, v)
			}
			ctx[k] = v
		}
	}
	if v, ok := m["delay_ms"]; ok {
		n, ok := v.(json.Number)
		if d, err := n.Int64(); !ok || err != nil || d < 0 || d > 10000 {
			return nil, fmt.Errorf("delay_ms = %v: want an integer from 0 to 10000", v)
		}
		ctx["delay_ms"] = v
	}
	return ctx, nil
}

func account(field string) func(*engine.Run) string {
	return func(r *engine.Run) string { return r.String(field) }
}

// TransferCommandBody is a command of the transfer demo.
type TransferCommandBody struct {
	Op         string `json:"op"` // debit, credit, refund (of a debit) or reverse (of a credit)
	TransferID string `json:"transfer_id"`
	Account    string `json:"account"`
	Amount     int64  `json:"amount"`
	FailAt     string `json:"fail_at,omitempty"`
	NoReply    string `json:"no_reply,omitempty"`
	DelayMS    int64  `json:"delay_ms,omitempty"`
}

func transferCommand(op, accountField string) func(*engine.Run) ([]byte, error) {
	return func(r *engine.Run) ([]byte, error) {
		amount, err := r.Int("amount")
		if err != nil {
			return nil, engine.Permanent(err)
		}
		delay, err := r.Int("delay_ms")
		if err != nil && !errors.Is(err, engine.ErrNoField) {
			return nil, engine.Permanent(err)
		}
		return json.Marshal(TransferCommandBody{Op: op, TransferID: r.String("transfer_id"), Account: r.String(accountField), Amount: amount,
			FailAt: r.String("fail_at"), NoReply: r.String("no_reply"), DelayMS: delay})
	}
}

// TransferEffect is what a transfer command did to an account (the
// participant's reply, merged into the saga's context under its op).
type TransferEffect struct {
	ID      string `json:"id"`
	Account string `json:"account"`
	Amount  int64  `json:"amount"` // signed: a debit is negative
}

// TransferCommands is the accounts service of the demo (run by `sagaz
// demo-participant`): it applies debit, credit, refund and reverse commands
// as the command asks (fail_at refuses, delay_ms delays, no_reply stays
// silent). Its effects are its replies, recorded by the participant once
// per (saga, step): a refund or a reversal runs only for a debit or credit
// that succeeded.
func TransferCommands(ctx context.Context, c *participant.Command) ([]byte, error) {
	var b TransferCommandBody
	if err := json.Unmarshal(c.Value, &b); err != nil || b.Account == "" || b.Amount <= 0 {
		return nil, participant.Refuse(fmt.Errorf("not a transfer command (want op, transfer_id, account, amount): %s", c.Value))
	}
	if b.DelayMS > 0 {
		t := time.NewTimer(time.Duration(b.DelayMS) * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	if !c.Compensation {
		if b.NoReply == c.Step {
			return nil, participant.ErrNoReply
		}
		if b.FailAt == c.Step {
			return nil, participant.Refuse(fmt.Errorf("account %s refuses the %s of transfer %s (fail_at)", b.Account, c.Step, b.TransferID))
		}
	}
	amount := b.Amount
	if b.Op == "debit" || b.Op == "reverse" {
		amount = -amount
	}
	return json.Marshal(map[string]TransferEffect{b.Op: {ID: b.Op + "-" + b.TransferID, Account: b.Account, Amount: amount}})
}
