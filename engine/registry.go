package engine

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/robfig/cron/v3"

	"github.com/sagaz-go/sagaz/storage"
)

// CronParser parses trigger schedules: five fields, an optional leading
// seconds field, descriptors (@daily, @every 30s) and a CRON_TZ= or TZ=
// prefix.
var CronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Registry holds saga declarations. Sagas compiled into the binary register
// themselves in init() with Register (the default registry); tests build
// their own with NewRegistry. Mistakes are recorded, not panicked on, and
// reported together by Routes, so start-up fails with every problem listed.
type Registry struct {
	mu     sync.Mutex
	sagas  []*Saga
	byName map[string]*Saga
	errs   []error
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{byName: map[string]*Saga{}} }

var defaultRegistry = NewRegistry()

// DefaultRegistry is the registry Register adds to.
func DefaultRegistry() *Registry { return defaultRegistry }

// Register adds a saga to the default registry. Call it from init().
func Register(s Saga) { defaultRegistry.Register(s) }

// Register adds a saga declaration. Errors (duplicate name, missing
// transformer, bad topic or schedule, ...) surface from Routes.
func (r *Registry) Register(s Saga) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sg := s
	sg.Steps = append([]Step(nil), s.Steps...)
	sg.Triggers = append([]Trigger(nil), s.Triggers...)
	sg.Sensitive = append([]string(nil), s.Sensitive...)
	sg.Previous = append([]Saga(nil), s.Previous...)
	for i := range sg.Previous {
		sg.Previous[i].Steps = append([]Step(nil), s.Previous[i].Steps...)
	}
	if errs := validateSaga(&sg); len(errs) > 0 {
		r.errs = append(r.errs, errs...)
		return
	}
	if _, dup := r.byName[sg.Name]; dup {
		r.errs = append(r.errs, fmt.Errorf("saga %q: registered twice (saga names must be unique)", sg.Name))
		return
	}
	r.byName[sg.Name] = &sg
	r.sagas = append(r.sagas, &sg)
}

func validateSaga(s *Saga) []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("saga %q: %s", s.Name, fmt.Sprintf(format, a...)))
	}
	if !storage.ValidName(s.Name) {
		bad("invalid name: use 1-200 characters of [A-Za-z0-9._-]")
	}
	if len(s.Steps) == 0 {
		bad("has no steps")
	}
	steps := map[string]bool{}
	for i, st := range s.Steps {
		switch {
		case st.Name == "":
			bad("step %d has no name", i)
		case steps[st.Name]:
			bad("step %q declared twice", st.Name)
		}
		steps[st.Name] = true
		validateKafkaStep(&st, bad)
		if st.Timeout < 0 {
			bad("step %q has a negative timeout", st.Name)
		}
	}
	validatePrevious(s, bad)
	for _, p := range s.Sensitive {
		if !validSensitivePath(p) {
			bad("sensitive field %q: want a dotted path such as \"card.number\"", p)
		}
	}
	if len(s.Triggers) == 0 {
		bad("has no triggers")
	}
	seen := map[string]bool{}
	for i := range s.Triggers {
		t := &s.Triggers[i]
		if t.source == SourceCron && t.target == "" {
			t.target = s.Name
		}
		what := fmt.Sprintf("trigger %d (%s)", i, t.ID())
		switch t.source {
		case SourceKafka:
			if err := validTopic(t.target); err != nil {
				bad("%s: %v", what, err)
			}
		case SourceCron:
			if !storage.ValidName(t.target) {
				bad("%s: invalid schedule name %q: use 1-200 characters of [A-Za-z0-9._-]", what, t.target)
			}
			if t.schedule == "" {
				bad("%s: empty schedule", what)
			} else if _, err := CronParser.Parse(t.schedule); err != nil {
				bad("%s: invalid schedule %q: %v", what, t.schedule, err)
			}
			switch t.cron.CatchUp {
			case "", CatchUpSkip, CatchUpLatest, CatchUpAll:
			default:
				bad("%s: catch-up policy %q: want skip, latest or all", what, t.cron.CatchUp)
			}
			switch t.cron.Overlap {
			case "", OverlapAllowAll, OverlapSkip, OverlapBufferOne:
			default:
				bad("%s: overlap policy %q: want allow_all, skip or buffer_one", what, t.cron.Overlap)
			}
			if t.cron.CatchUpWindow < 0 || t.cron.Jitter < 0 {
				bad("%s: negative catch-up window or jitter", what)
			}
		case SourceWebhook:
			if !storage.ValidName(t.target) {
				bad("%s: invalid webhook name %q: use 1-200 characters of [A-Za-z0-9._-]", what, t.target)
			}
		case SourceManual:
			if t.target == "" {
				bad("%s: empty event type", what)
			}
		default:
			bad("trigger %d: not built with engine.Kafka, Cron, Webhook or Manual", i)
			continue
		}
		if t.transform == nil {
			bad("%s: no transformer", what)
		}
		if t.signed && t.source != SourceWebhook {
			bad("%s: engine.Signed() applies to webhook triggers only", what)
		}
		if t.maxConc < 0 {
			bad("%s: negative MaxConcurrent", what)
		}
		if !t.concKey.IsZero() && t.concMax < 1 {
			bad("%s: a concurrency key needs a limit of at least 1 saga per value", what)
		}
		if t.rate.PerSecond < 0 || t.rate.Burst < 0 {
			bad("%s: negative rate limit", what)
		}
		if seen[t.ID()] {
			bad("%s: declared twice", what)
		}
		seen[t.ID()] = true
	}
	return errs
}

// validTopic applies Kafka's topic name rules.
func validTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case len(t) > 249:
		return fmt.Errorf("topic %q longer than 249 characters", t)
	case t == "." || t == "..":
		return fmt.Errorf("topic %q is not allowed", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic %q has %q: use [A-Za-z0-9._-]", t, c)
		}
	}
	return nil
}

// ScheduleID identifies a cron trigger's schedule across the binary:
// "<saga>:<name>". Ticks carry it, and its ticks are tracked under it.
func ScheduleID(r *Route) string { return r.Saga.Name + ":" + r.Trigger.target }

// Route is one (saga, trigger) pair.
type Route struct {
	Saga    *Saga
	Trigger *Trigger
	// id and triggerID are ID() and Trigger.ID(), kept by Registry.Routes
	// (every saga recorded names its trigger: no string built per saga).
	id, triggerID string
}

// ID is "<saga>/<trigger id>".
func (r *Route) ID() string {
	if r.id != "" {
		return r.id
	}
	return r.Saga.Name + "/" + r.Trigger.ID()
}

// TriggerID is Trigger.ID().
func (r *Route) TriggerID() string {
	if r.triggerID != "" {
		return r.triggerID
	}
	return r.Trigger.ID()
}

// Routes is the validated routing table: which triggers an event reaches.
type Routes struct {
	all      []*Route
	match    map[Source]map[string][]*Route
	sagas    map[string]*Saga
	byID     map[string]*Route
	versions map[string][]version // by saga name: the declaration, then its previous versions
}

// Routes validates the registry and returns its routing table, or every
// registration error at once.
func (r *Registry) Routes() (*Routes, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		return nil, fmt.Errorf("%w:\n  %w", ErrInvalidSaga, errors.Join(r.errs...))
	}
	rs := &Routes{match: map[Source]map[string][]*Route{}, sagas: map[string]*Saga{}, byID: map[string]*Route{}, versions: map[string][]version{}}
	for _, s := range r.sagas {
		rs.sagas[s.Name] = s
		rs.versions[s.Name] = versionsOf(s)
		for i := range s.Triggers {
			rt := &Route{Saga: s, Trigger: &s.Triggers[i]}
			rt.triggerID = rt.Trigger.ID()
			rt.id = s.Name + "/" + rt.triggerID
			rs.all = append(rs.all, rt)
			rs.byID[rt.ID()] = rt
			m := rs.match[rt.Trigger.source]
			if m == nil {
				m = map[string][]*Route{}
				rs.match[rt.Trigger.source] = m
			}
			key := rt.Trigger.target
			if rt.Trigger.source == SourceCron { // schedules are global: "<saga>:<name>"
				key = ScheduleID(rt)
			}
			m[key] = append(m[key], rt)
		}
	}
	return rs, nil
}

// Match returns the routes an event reaches: by topic for kafka, by
// schedule, webhook name or event type for the others.
func (rs *Routes) Match(src Source, name string) []*Route { return rs.match[src][name] }

// Resolve is the one routing function of every source: it returns the
// routes ev reaches. A record of a synthetic topic (the events topic of
// webhooks and manual events, the cron topic of ticks) names its source and
// trigger in headers (HeaderSource, HeaderName): Resolve reads them into
// ev.Source and ev.Name first. Otherwise ev.Source and ev.Name say it, the
// record's topic standing in for the name of a plain Kafka record. It
// returns an error wrapping ErrNoRoute when no trigger matches.
func (rs *Routes) Resolve(ev *Event, synthetic bool) ([]*Route, error) {
	if synthetic {
		src, _ := ev.Header(HeaderSource)
		name, _ := ev.Header(HeaderName)
		ev.Source, ev.Name = Source(src), string(name)
		if ev.Source == SourceKafka { // never from a synthetic topic
			ev.Source = ""
		}
	}
	name := ev.Name
	if ev.Source == SourceKafka && name == "" {
		name = ev.Topic
	}
	routes := rs.match[ev.Source][name]
	if len(routes) == 0 {
		if !ev.Source.Valid() {
			return nil, fmt.Errorf("%w: unknown source %q", ErrNoRoute, ev.Source)
		}
		return nil, fmt.Errorf("%w: no %s trigger named %q in this binary", ErrNoRoute, ev.Source, name)
	}
	return routes, nil
}

// All returns every route in registration order.
func (rs *Routes) All() []*Route { return rs.all }

// Saga returns the declaration of a saga by name.
func (rs *Routes) Saga(name string) *Saga { return rs.sagas[name] }

// SagaNames returns the names of the declared sagas, sorted.
func (rs *Routes) SagaNames() []string {
	out := make([]string, 0, len(rs.sagas))
	for n := range rs.sagas {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Route returns a route by its ID.
func (rs *Routes) Route(id string) *Route { return rs.byID[id] }

// routeOf returns the route of a saga name and trigger ID, without
// building its ID as a string (nil when there is none).
func routeOf[T string | []byte](rs *Routes, saga, trigger T) *Route {
	var buf [128]byte
	id := append(append(append(buf[:0], saga...), '/'), trigger...)
	return rs.byID[string(id)]
}

// Topics returns the Kafka topics the kafka triggers name, sorted.
func (rs *Routes) Topics() []string {
	var out []string
	for t := range rs.match[SourceKafka] {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// TableRow is one line of the trigger table (GET /api/triggers).
type TableRow struct {
	Source         Source  `json:"source"`
	Name           string  `json:"name"` // topic, schedule id, webhook or event type
	Schedule       string  `json:"schedule,omitempty"`
	Saga           string  `json:"saga"`
	IdempotencyKey string  `json:"idempotency_key"`
	MaxConcurrent  int     `json:"max_concurrent"`
	RatePerSecond  float64 `json:"rate_per_second,omitempty"`
	Steps          int     `json:"steps"`
	// Signed: a webhook declared with engine.Signed (calls must be signed).
	Signed bool `json:"signed,omitempty"`
}

// Table returns the routing table, sorted by source and name.
func (rs *Routes) Table() []TableRow {
	var rows []TableRow
	for _, r := range rs.all {
		name := r.Trigger.target
		if r.Trigger.source == SourceCron {
			name = ScheduleID(r)
		}
		rows = append(rows, TableRow{
			Source: r.Trigger.source, Name: name, Schedule: r.Trigger.schedule, Saga: r.Saga.Name,
			IdempotencyKey: r.Trigger.key.String(), MaxConcurrent: r.Trigger.maxConc,
			RatePerSecond: r.Trigger.rate.PerSecond, Steps: len(r.Saga.Steps), Signed: r.Trigger.signed,
		})
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Source != rows[j].Source {
			return rows[i].Source < rows[j].Source
		}
		return rows[i].Name < rows[j].Name
	})
	return rows
}

// WriteTable prints the routing table for humans.
func (rs *Routes) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tNAME\tSAGA\tSTEPS\tIDEMPOTENCY KEY\tMAX CONCURRENT")
	for _, r := range rs.Table() {
		mc := "unbounded"
		if r.MaxConcurrent > 0 {
			mc = strconv.Itoa(r.MaxConcurrent)
		}
		name := r.Name
		if r.Schedule != "" {
			name += " (" + r.Schedule + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Source, name, r.Saga, r.Steps, r.IdempotencyKey, mc)
	}
	return tw.Flush()
}
