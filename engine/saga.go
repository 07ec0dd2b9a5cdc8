package engine

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
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
	// Zero means no timeout.
	Timeout time.Duration
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

// Transformer turns an event into the saga's initial context. It returns
// ErrIgnore (or a nil map and nil error) to start nothing. Any other error,
// and any panic, sends the event to the dead-letter topic. The context must
// be JSON-encodable; it is stored with the saga.
type Transformer func(ev *Event) (map[string]any, error)

// Trigger declares when a saga starts. Set Source and the one field that
// goes with it: Topic (kafka), Schedule (cron), Webhook (webhook) or
// EventType (manual).
type Trigger struct {
	Source    Source
	Topic     string // kafka: the topic to consume
	Schedule  string // cron: a robfig/cron spec ("*/5 * * * *", "@hourly", "CRON_TZ=Europe/Berlin 0 2 * * *")
	Webhook   string // webhook: served at POST /webhooks/{Webhook}
	EventType string // manual: the event_type that fires it

	// Transform is required.
	Transform Transformer

	// IdempotencyKey de-duplicates events: a second event with the same key
	// (in the same partition) returns the existing saga instead of starting
	// one. Zero value: the record's position is the key, so only
	// re-deliveries of the same record are de-duplicated.
	IdempotencyKey Key
	// MaxConcurrent bounds how many sagas started by this trigger execute
	// at once in this process; the rest wait durably as pending. 0: no bound.
	MaxConcurrent int
	// RateLimit bounds how fast sagas from this trigger start. It delays
	// starts, never drops them. Zero value: no limit.
	RateLimit RateLimit

	// Name names a cron trigger's schedule within its saga (default: the
	// saga's name). Ticks are tracked under "<saga>/<Name>": change Spec and
	// keep Name, and the schedule goes on from its last tick; rename it, and
	// it starts over.
	Name string
	// Cron holds the catch-up, overlap and jitter policies of a cron trigger.
	Cron CronPolicy
}

// CronPolicy says what a schedule does after downtime and while a tick's
// saga still runs (Temporal's vocabulary).
type CronPolicy struct {
	// CatchUp: ticks missed while no member published the schedule —
	// CatchUpSkip (only future ticks), CatchUpLatest (the most recent missed
	// tick, once; the default) or CatchUpAll (every missed tick within
	// CatchUpWindow, in order).
	CatchUp CatchUp
	// CatchUpWindow bounds CatchUpAll (default 24h).
	CatchUpWindow time.Duration
	// Overlap: OverlapAllowAll (default) starts every tick; OverlapSkip does
	// not start a tick while the previous tick's saga runs (the tick is
	// recorded as skipped); OverlapBufferOne keeps one such tick and starts
	// it when the previous saga ends.
	Overlap Overlap
	// Jitter delays each tick by a random duration below it (0: none).
	Jitter time.Duration
}

// CatchUp is a catch-up policy.
type CatchUp string

// Overlap is an overlap policy.
type Overlap string

// Catch-up and overlap policies.
const (
	CatchUpSkip      CatchUp = "skip"
	CatchUpLatest    CatchUp = "latest"
	CatchUpAll       CatchUp = "all"
	OverlapAllowAll  Overlap = "allow_all"
	OverlapSkip      Overlap = "skip"
	OverlapBufferOne Overlap = "buffer_one"
)

// RateLimit is a token bucket: PerSecond starts per second on average,
// bursts of up to Burst (default 1).
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// ID identifies a trigger within its saga: "<source>:<topic|schedule|webhook|event type>".
func (t *Trigger) ID() string { return string(t.Source) + ":" + t.name() }

func (t *Trigger) name() string {
	switch t.Source {
	case SourceKafka:
		return t.Topic
	case SourceCron:
		return t.Name
	case SourceWebhook:
		return t.Webhook
	case SourceManual:
		return t.EventType
	}
	return ""
}

// Key says how a trigger finds an event's idempotency key.
type Key struct {
	field string
	fn    func(ev *Event) (string, error)
}

// KeyField takes the idempotency key from a field of the event's JSON value
// (a dotted path for nested fields). A missing or empty field is an error
// (the event goes to the dead-letter topic).
func KeyField(name string) Key { return Key{field: name} }

// KeyFunc computes the idempotency key from the event. An empty key or an
// error sends the event to the dead-letter topic.
func KeyFunc(fn func(ev *Event) (string, error)) Key { return Key{fn: fn} }

// IsZero reports whether no key is declared.
func (k Key) IsZero() bool { return k.field == "" && k.fn == nil }

// Field returns the declared field name, if the key is a field.
func (k Key) Field() string { return k.field }

func (k Key) String() string {
	switch {
	case k.field != "":
		return "field " + strconv.Quote(k.field)
	case k.fn != nil:
		return "function"
	}
	return "record position"
}

// Value computes the key of an event for a saga, as the engine does: a
// *DecodeError when a field key meets a value that is not a JSON object, a
// *MissingKeyError when the field is missing or empty (or the function
// fails).
func (k Key) Value(saga string, ev *Event) (string, error) { return k.value(saga, ev) }

func (k Key) value(saga string, ev *Event) (string, error) {
	if k.fn != nil {
		v, err := k.fn(ev)
		if err == nil && v == "" {
			err = errors.New("empty key")
		}
		if err != nil {
			return "", &MissingKeyError{Saga: saga, Err: err}
		}
		return v, nil
	}
	m, err := ev.JSON()
	if err != nil {
		return "", err
	}
	v, ok := lookup(m, k.field)
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	case bool:
		s = strconv.FormatBool(x)
	}
	if !ok || s == "" {
		return "", &MissingKeyError{Saga: saga, Field: k.field, Fields: fieldNames(m)}
	}
	return s, nil
}
