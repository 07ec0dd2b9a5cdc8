package engine

import (
	"context"
	"math"
	"time"
)

// Saga declares a saga: a name, ordered steps, and the triggers that start
// it. Declare sagas in the sagas package and register them in init():
//
//	func init() { engine.Register(engine.Saga{Name: "order", ...}) }
type Saga struct {
	// Name identifies the saga: 1-200 characters of [A-Za-z0-9._-], unique
	// in the binary. It is part of every saga ID, so do not rename a saga
	// that has sagas in flight.
	Name     string
	Steps    []Step
	Triggers []Trigger
	// Sensitive lists fields of the saga's context (dotted paths, e.g.
	// "card.number"; arrays are entered element by element) that the HTTP
	// API and the console show masked as "***". The store and the changelog
	// keep them as they are. An idempotency key taken from a sensitive field
	// is masked too.
	Sensitive []string
	// Previous lists earlier definitions of this saga that sagas in flight
	// may have started with, so that a deploy which adds, removes, renames
	// or reorders steps finishes those sagas the old way. Only each
	// version's Steps are used (its Name, if set, must be this saga's; its
	// triggers are not active). A saga runs to its end with the definition
	// its first step started with (recorded as its fingerprint, see
	// Fingerprint); a saga whose definition this build does not declare is
	// parked, not failed. docs/upgrading.md shows how to change a saga.
	Previous []Saga
}

// StepFunc is a step's action or compensation. It must honour ctx (the step
// timeout and shutdown cancel it). Steps run at least once: after a crash a
// step whose result was not yet recorded runs again, so actions and
// compensations must be idempotent (use Run.ID as the idempotency key of
// the calls they make). Return Permanent(err) to fail without retrying.
type StepFunc func(ctx context.Context, r *Run) error

// Step is one step of a saga.
type Step struct {
	// Name is unique within the saga.
	Name string
	// Action does the step's work. Required.
	Action StepFunc
	// Compensate undoes a completed Action when a later step fails for good.
	// Optional: a step without one is skipped during compensation.
	Compensate StepFunc
	// Retry is the action's retry policy (zero value: DefaultRetry).
	Retry RetryPolicy
	// CompensateRetry is the compensation's retry policy (zero value:
	// DefaultCompensateRetry).
	CompensateRetry RetryPolicy
	// Timeout bounds one attempt; its context is cancelled when it passes.
	// Zero means no timeout. For a command or await step it is how long an
	// attempt waits for its reply or event (required): a durable deadline,
	// not a context.
	Timeout time.Duration

	// Command makes this a command step (instead of Action): each attempt
	// produces the command and waits, holding no goroutine, for the
	// participant's reply (docs/architecture.md). A reply that does not
	// come within Timeout fails the attempt; a step that fails for good that
	// way may still have run at the participant, so it is compensated like
	// a completed step.
	Command *Command
	// CompensateCommand makes the compensation a command (instead of
	// Compensate), retried by CompensateRetry.
	CompensateCommand *Command
	// Await makes this an await step: it waits, holding no goroutine, for an
	// event matching a correlation; Timeout bounds each attempt.
	Await *Await
	// Sleep makes this a sleep step: it waits this long (a durable timer:
	// it survives restarts and rebalances).
	Sleep time.Duration
}

// RetryPolicy says how often and how fast a failing step is retried:
// exponential backoff with jitter, capped at MaxDelay. The zero value means
// "use the default"; a non-zero policy is taken as given, with MaxAttempts
// below 1 treated as 1 and Multiplier below 1 treated as 1.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included.
	MaxAttempts int
	// InitialDelay is the wait after the first failure.
	InitialDelay time.Duration
	// MaxDelay caps every wait (0: no cap).
	MaxDelay time.Duration
	// Multiplier grows the wait after each failure.
	Multiplier float64
	// Jitter spreads each wait uniformly over ±Jitter of its value
	// (0.2 = ±20%; 0 = none).
	Jitter float64
}

// Default retry policies.
var (
	DefaultRetry           = RetryPolicy{MaxAttempts: 3, InitialDelay: 100 * time.Millisecond, MaxDelay: 10 * time.Second, Multiplier: 2, Jitter: 0.2}
	DefaultCompensateRetry = RetryPolicy{MaxAttempts: 5, InitialDelay: 200 * time.Millisecond, MaxDelay: 30 * time.Second, Multiplier: 2, Jitter: 0.2}
)

func (p RetryPolicy) orDefault(def RetryPolicy) RetryPolicy {
	if p == (RetryPolicy{}) {
		return def
	}
	p.MaxAttempts = max(p.MaxAttempts, 1)
	p.Multiplier = max(p.Multiplier, 1)
	p.Jitter = min(max(p.Jitter, 0), 1)
	return p
}

// Delay returns the wait after the given failed attempt (1 = the first),
// with r a uniform random number in [0,1) for the jitter.
func (p RetryPolicy) Delay(attempt int, r float64) time.Duration {
	d := float64(p.InitialDelay) * math.Pow(p.Multiplier, float64(max(attempt-1, 0)))
	if p.MaxDelay > 0 {
		d = min(d, float64(p.MaxDelay))
	}
	d *= 1 + p.Jitter*(2*r-1)
	if p.MaxDelay > 0 {
		d = min(d, float64(p.MaxDelay))
	}
	if d > math.MaxInt64/2 {
		d = math.MaxInt64 / 2
	}
	return time.Duration(max(d, 0))
}
