package engine

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

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

// valueOf is value, scanning the field from the event's bytes when scan
// is set (the value is known to be one JSON object, jsonscan.go); what the
// scan cannot answer goes the slow way, which writes the error.
func (k Key) valueOf(saga string, ev *Event, scan bool) (string, error) {
	if scan && k.field != "" {
		if s, ok := scanField(ev.Value, k.field); ok && s != "" {
			return s, nil
		}
	}
	return k.value(saga, ev)
}

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

// Transformer turns an event into the saga's initial context. It returns
// ErrIgnore (or a nil map and nil error) to start nothing. Any other error,
// and any panic, sends the event to the dead-letter topic. The context must
// be JSON-encodable; it is stored with the saga.
type Transformer func(ev *Event) (map[string]any, error)

// PassThrough is the transformer that starts the saga with the event's JSON
// object as it is (stored as the event's own bytes, without re-encoding).
// Events whose value is not a JSON object go to the dead-letter topic.
func PassThrough(ev *Event) (map[string]any, error) { return ev.JSON() }

// Trigger declares when a saga starts. Build one with Kafka, Cron, Webhook
// or Manual: each takes what its source needs, so a trigger cannot name a
// topic and a schedule at once, or lack a transformer.
type Trigger struct {
	source    Source
	target    string // the topic, webhook name or event type; the schedule name for cron
	schedule  string // cron: the spec
	transform Transformer
	key       Key
	maxConc   int
	rate      RateLimit
	concKey   Key // WithConcurrencyKey
	concMax   int
	cron      CronPolicy
	signed    bool
}

// Kafka starts the saga for records on topic, turned into its context by
// transform (PassThrough keeps the record's JSON as it is).
//
//	engine.Kafka("orders.created", engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))
func Kafka(topic string, transform Transformer, opts ...Option) Trigger {
	t := Trigger{source: SourceKafka, target: topic, transform: transform}
	for _, o := range opts {
		o.applyEvent(&t)
	}
	return t
}

// Webhook starts the saga for calls to POST /webhooks/{name}; the JSON body
// is the event.
func Webhook(name string, transform Transformer, opts ...Option) Trigger {
	t := Trigger{source: SourceWebhook, target: name, transform: transform}
	for _, o := range opts {
		o.applyEvent(&t)
	}
	return t
}

// Manual starts the saga for events fired by hand (POST /api/fire with
// this event_type, `sagaz fire`, or Engine.Fire).
func Manual(eventType string, transform Transformer, opts ...Option) Trigger {
	t := Trigger{source: SourceManual, target: eventType, transform: transform}
	for _, o := range opts {
		o.applyEvent(&t)
	}
	return t
}

// Cron starts the saga at each tick of a schedule: five fields, or six with
// seconds first; @hourly, @daily, @every 30s; an optional CRON_TZ= or TZ=
// prefix ("*/5 * * * *", "CRON_TZ=Europe/Berlin 0 2 * * *"). The tick's
// event is {"schedule", "saga", "scheduled_at", "scheduled_at_local",
// "published_at"}; the saga's context is that object unless WithTransform
// says otherwise. A tick is keyed by schedule and scheduled time: one saga
// per tick.
func Cron(spec string, opts ...CronOption) Trigger {
	t := Trigger{source: SourceCron, schedule: spec, transform: PassThrough}
	for _, o := range opts {
		o.applyCron(&t)
	}
	return t
}

// Option adjusts a Kafka, Webhook or Manual trigger.
type Option interface{ applyEvent(*Trigger) }

// CronOption adjusts a Cron trigger.
type CronOption interface{ applyCron(*Trigger) }

// LimitOption adjusts any trigger.
type LimitOption interface {
	Option
	CronOption
}

type eventOpt func(*Trigger)

func (f eventOpt) applyEvent(t *Trigger) { f(t) }

type cronOpt func(*Trigger)

func (f cronOpt) applyCron(t *Trigger) { f(t) }

type anyOpt func(*Trigger)

func (f anyOpt) applyEvent(t *Trigger) { f(t) }
func (f anyOpt) applyCron(t *Trigger)  { f(t) }

// WithKey de-duplicates events by an idempotency key: a second event with
// the same key returns the existing saga instead of starting one. Without
// it, the record's position is the key, so only re-deliveries of the same
// record are de-duplicated. (Cron ticks are keyed by schedule and time.)
func WithKey(k Key) Option { return eventOpt(func(t *Trigger) { t.key = k }) }

// Signed declares that calls to a webhook trigger must be signed: the
// service refuses to start when the webhook has no secret configured
// (SAGAZ_WEBHOOK_SECRET_<NAME>), except in dev mode. Valid on webhook
// triggers only; the registry reports it on any other source.
func Signed() Option { return eventOpt(func(t *Trigger) { t.signed = true }) }

// WithMaxConcurrent bounds how many sagas started by this trigger execute
// at once; the rest wait durably as pending. 0: no bound.
func WithMaxConcurrent(n int) LimitOption { return anyOpt(func(t *Trigger) { t.maxConc = n }) }

// WithConcurrencyKey bounds how many sagas started by this trigger execute
// at once per value of a key (e.g. engine.KeyField("customer_id"), at most
// n per customer), in the whole group: sagas are placed by that value, so
// all sagas of one value live in one partition of the keys topic and its
// owner counts them exactly. The idempotency key (if any) must determine
// the concurrency key (an order belongs to one customer): keys are unique
// within the partition of their concurrency value. An event without the
// value goes to the dead-letter topic (missing_key).
func WithConcurrencyKey(k Key, n int) Option {
	return eventOpt(func(t *Trigger) { t.concKey, t.concMax = k, n })
}

// ConcurrencyKey is the trigger's concurrency key and its limit per value
// (zero Key: none).
func (t *Trigger) ConcurrencyKey() (Key, int) { return t.concKey, t.concMax }

// WithRateLimit bounds how fast sagas from this trigger start: perSecond on
// average, in bursts of up to burst (at least 1). It delays starts, never
// drops them.
func WithRateLimit(perSecond float64, burst int) LimitOption {
	return anyOpt(func(t *Trigger) { t.rate = RateLimit{PerSecond: perSecond, Burst: burst} })
}

// WithName names a cron trigger's schedule within its saga (default: the
// saga's name). Its ticks are tracked under "<saga>:<name>": change the
// spec and keep the name, and the schedule goes on from its last tick;
// rename it, and it starts over.
func WithName(name string) CronOption { return cronOpt(func(t *Trigger) { t.target = name }) }

// WithCronPolicy sets a cron trigger's catch-up, overlap and jitter
// policies.
func WithCronPolicy(p CronPolicy) CronOption { return cronOpt(func(t *Trigger) { t.cron = p }) }

// WithTransform turns a cron tick into the saga's context (default
// PassThrough).
func WithTransform(fn Transformer) CronOption { return cronOpt(func(t *Trigger) { t.transform = fn }) }

// Source is where the trigger's events come from.
func (t *Trigger) Source() Source { return t.source }

// Topic is a kafka trigger's topic ("" for other sources).
func (t *Trigger) Topic() string { return t.only(SourceKafka) }

// Webhook is a webhook trigger's name ("" for other sources).
func (t *Trigger) Webhook() string { return t.only(SourceWebhook) }

// EventType is a manual trigger's event type ("" for other sources).
func (t *Trigger) EventType() string { return t.only(SourceManual) }

// Schedule is a cron trigger's spec ("" for other sources).
func (t *Trigger) Schedule() string { return t.schedule }

// ScheduleName is a cron trigger's schedule name within its saga ("" for
// other sources).
func (t *Trigger) ScheduleName() string { return t.only(SourceCron) }

// CronPolicy is a cron trigger's catch-up, overlap and jitter policy as
// declared (zero fields mean the defaults).
func (t *Trigger) CronPolicy() CronPolicy { return t.cron }

// Transform is the trigger's transformer.
func (t *Trigger) Transform() Transformer { return t.transform }

// Key is the trigger's idempotency key declaration (zero: the record's
// position).
func (t *Trigger) Key() Key { return t.key }

// MaxConcurrent is the trigger's concurrency bound (0: none).
func (t *Trigger) MaxConcurrent() int { return t.maxConc }

// RateLimit is the trigger's start rate (zero: none).
func (t *Trigger) RateLimit() RateLimit { return t.rate }

// SignatureRequired reports whether the trigger was declared with Signed:
// its webhook must have a secret, and unsigned calls are refused.
func (t *Trigger) SignatureRequired() bool { return t.signed }

func (t *Trigger) only(src Source) string {
	if t.source != src {
		return ""
	}
	return t.target
}

// ID identifies a trigger within its saga: "<source>:<topic|schedule name|webhook|event type>".
func (t *Trigger) ID() string { return string(t.source) + ":" + t.target }

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
