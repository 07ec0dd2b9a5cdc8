package engine

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Steps that talk over Kafka (docs/architecture.md, "Steps that talk over
// Kafka"): a command step produces a command and waits for its reply, an
// await step waits for an event, a sleep step waits for a duration. While a
// saga waits it holds no goroutine: its wait is recorded with it, and a
// reply, an event, its deadline or a cancel resumes it.

// Command declares the record a command step (or a command compensation)
// produces. The participant that consumes Topic replies to the partition
// the command's headers name (package participant does it for Go
// services); the reply's JSON object is merged into the saga's context.
type Command struct {
	// Topic the command is produced to.
	Topic string
	// Key returns the record key (nil: the saga's ID). Give the commands of
	// one saga for one participant the same key (an account, an order):
	// they then stay in order in one partition, and a participant built
	// with package participant sees an action and its compensation there.
	Key func(r *Run) string
	// Payload returns the record value (nil: the saga's context as JSON).
	// An error fails the attempt (Permanent: at once).
	Payload func(r *Run) ([]byte, error)
}

// Await declares what an await step waits for: an event on Topic whose JSON
// field Field (top level; a string, number or boolean, compared as text)
// equals Value. The event's JSON is stored in the saga's context under Into.
type Await struct {
	Topic string
	Field string
	// Value returns the correlation value from the saga's context (see
	// ContextValue). An error fails the step for good.
	Value func(r *Run) (string, error)
	// Into is the context field the event is stored under (default: the
	// step's name).
	Into string
}

// ContextValue returns a function reading a field of the saga's context as
// text (Run.String), failing when it is missing or empty: for Await.Value.
// A value that is an object or an array is an error too: no event field
// compares equal to it as text.
func ContextValue(field string) func(r *Run) (string, error) {
	return func(r *Run) (string, error) {
		switch v := r.Get(field).(type) {
		case map[string]any, []any:
			return "", &FieldError{Key: field, Want: "a string, number or boolean", Value: v, Err: ErrFieldType}
		}
		if v := r.String(field); v != "" {
			return v, nil
		}
		return "", &FieldError{Key: field, Err: ErrNoField}
	}
}

// waits reports whether the step waits on Kafka or the clock instead of
// running a function.
func (s *Step) waits() bool { return s.Command != nil || s.Await != nil || s.Sleep > 0 }

// talks reports whether the saga produces commands or awaits events: its
// partitions need a replies topic and the engine a Sender.
func (s *Saga) talks() bool {
	for i := range s.Steps {
		if st := &s.Steps[i]; st.Command != nil || st.CompensateCommand != nil || st.Await != nil {
			return true
		}
	}
	return false
}

// Talks reports whether the saga has command or await steps (or command
// compensations): the topics its sagas live in need a replies topic.
func (s *Saga) Talks() bool { return s.talks() }

func validateKafkaStep(st *Step, bad func(format string, a ...any)) {
	kinds := 0
	for _, set := range []bool{st.Action != nil, st.Command != nil, st.Await != nil, st.Sleep != 0} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		bad("step %q has no action (set Action, Command, Await or Sleep)", st.Name)
	case kinds > 1:
		bad("step %q sets more than one of Action, Command, Await and Sleep", st.Name)
	}
	if st.Compensate != nil && st.CompensateCommand != nil {
		bad("step %q sets both Compensate and CompensateCommand", st.Name)
	}
	if st.Sleep < 0 {
		bad("step %q has a negative Sleep", st.Name)
	}
	if st.Sleep > 0 && (st.Compensate != nil || st.CompensateCommand != nil) {
		bad("step %q: a sleep step has nothing to compensate", st.Name)
	}
	for _, c := range []struct {
		cmd  *Command
		what string
	}{{st.Command, "command"}, {st.CompensateCommand, "compensation command"}} {
		if c.cmd == nil {
			continue
		}
		if err := validTopic(c.cmd.Topic); err != nil {
			bad("step %q %s: %v", st.Name, c.what, err)
		}
		if st.Timeout <= 0 {
			bad("step %q: a %s needs a Timeout (how long to wait for the reply)", st.Name, c.what)
		}
	}
	if a := st.Await; a != nil {
		if err := validTopic(a.Topic); err != nil {
			bad("step %q await: %v", st.Name, err)
		}
		if a.Field == "" {
			bad("step %q await: no Field (the event's field to correlate on)", st.Name)
		}
		if a.Value == nil {
			bad("step %q await: no Value (the correlation value, e.g. engine.ContextValue(\"order_id\"))", st.Name)
		}
		if st.Timeout <= 0 {
			bad("step %q: an await step needs a Timeout (how long to wait for the event)", st.Name)
		}
	}
}

// CommandTopics returns the topics command steps (and compensations)
// produce to, sorted.
func (rs *Routes) CommandTopics() []string {
	set := map[string]bool{}
	for _, s := range rs.sagas {
		for _, st := range s.Steps {
			for _, c := range []*Command{st.Command, st.CompensateCommand} {
				if c != nil {
					set[c.Topic] = true
				}
			}
		}
	}
	return sortedKeys(set)
}

// Awaited returns, per awaited topic, the fields await steps correlate on
// (sorted).
func (rs *Routes) Awaited() map[string][]string {
	set := map[string]map[string]bool{}
	for _, s := range rs.sagas {
		for _, st := range s.Steps {
			if a := st.Await; a != nil {
				if set[a.Topic] == nil {
					set[a.Topic] = map[string]bool{}
				}
				set[a.Topic][a.Field] = true
			}
		}
	}
	out := make(map[string][]string, len(set))
	for t, fs := range set {
		out[t] = sortedKeys(fs)
	}
	return out
}

// TalkingRoutes returns the routes whose sagas talk over Kafka (Saga.Talks).
func (rs *Routes) TalkingRoutes() []*Route {
	var out []*Route
	for _, r := range rs.all {
		if r.Saga.talks() {
			out = append(out, r)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ErrNoTransport: a command or await step ran in an engine that cannot
// produce records or receive replies for the saga (no Config.Sender, or a
// saga of a local partition, started in-process by Fire).
var ErrNoTransport = errors.New("engine: no Kafka transport for this saga's command and await steps")

// timeoutError is the error of an attempt whose deadline passed.
func timeoutError(kind string, d time.Duration) error {
	return fmt.Errorf("no %s within %s: timed out", kind, d)
}
