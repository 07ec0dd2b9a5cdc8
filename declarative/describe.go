package declarative

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/sagaz-go/sagaz/engine"
)

// Describe writes a saga's definition for people: where it comes from,
// its fingerprint, triggers, and steps with their compensations. def is
// the loaded definition of a YAML saga; nil describes a compiled one from
// its declaration alone.
func Describe(w io.Writer, s *engine.Saga, def *Definition) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "saga:\t%s\n", s.Name)
	if def != nil {
		fmt.Fprintf(tw, "defined in:\t%s:%d:%d\n", def.File, def.Line, def.Column)
		if def.Description != "" {
			fmt.Fprintf(tw, "description:\t%s\n", strings.TrimSpace(def.Description))
		}
	} else {
		fmt.Fprintf(tw, "defined in:\tcompiled into this binary\n")
	}
	fmt.Fprintf(tw, "fingerprint:\t%s\n", Fingerprint(s))
	for i := range s.Previous {
		p := &s.Previous[i]
		names := make([]string, len(p.Steps))
		for j := range p.Steps {
			names[j] = p.Steps[j].Name
		}
		fmt.Fprintf(tw, "previous version:\t%s (steps %s): sagas started with it finish with it\n", Fingerprint(p), strings.Join(names, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "triggers:")
	if def != nil {
		for _, t := range def.Triggers {
			fmt.Fprintf(w, "  %s\n", t)
		}
	} else {
		for i := range s.Triggers {
			fmt.Fprintf(w, "  %s\n", triggerWords(&s.Triggers[i]))
		}
	}
	fmt.Fprintln(w, "steps:")
	for i, st := range s.Steps {
		fmt.Fprintf(w, "  %d. %s\n", i+1, st.Name)
		if def != nil && i < len(def.Steps) {
			info := def.Steps[i]
			fmt.Fprintf(w, "       action:        %s\n", callWords(info.Action))
			if info.Compensation != nil {
				fmt.Fprintf(w, "       compensation:  %s\n", callWords(*info.Compensation))
			} else {
				fmt.Fprintf(w, "       compensation:  none\n")
			}
			continue
		}
		fmt.Fprintf(w, "       action:        %s\n", compiledWords(&st, false))
		if st.Compensate != nil || st.CompensateCommand != nil {
			fmt.Fprintf(w, "       compensation:  %s\n", compiledWords(&st, true))
		} else {
			fmt.Fprintf(w, "       compensation:  none\n")
		}
	}
	return nil
}

func callWords(c CallInfo) string {
	var b strings.Builder
	switch c.Kind {
	case kindSleep:
		return fmt.Sprintf("sleep %s  (a durable timer)", c.Sleep)
	case kindCommand:
		fmt.Fprintf(&b, "command to %s, key %s, payload %s  (the reply's JSON object merged into the context; ", c.Topic, orDefault(c.Key, "the saga ID"), map[bool]string{true: "as declared", false: "the context"}[c.Payload])
	case kindAwait:
		fmt.Fprintf(&b, "await an event on %s with %s = %s, stored under %s  (", c.Topic, c.Field, c.Value, c.Into)
	default:
		fmt.Fprintf(&b, "%s %s  (", c.Method, c.URL)
	}
	if c.Expect != nil {
		fmt.Fprintf(&b, "expect %v, ", c.Expect)
	}
	b.WriteString(retryWords(c.Retry, engine.RetryPolicy{}))
	b.WriteString(timeoutWords(c.Timeout))
	if len(c.Save) > 0 {
		fmt.Fprintf(&b, ", saves %s", strings.Join(c.Save, ", "))
	}
	b.WriteString(")")
	return b.String()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// compiledWords describes a compiled step's action or compensation from
// its declaration.
func compiledWords(st *engine.Step, compensation bool) string {
	pol, def := st.Retry, engine.DefaultRetry
	cmd := st.Command
	if compensation {
		pol, def, cmd = st.CompensateRetry, engine.DefaultCompensateRetry, st.CompensateCommand
	}
	switch {
	case cmd != nil:
		return fmt.Sprintf("command to %s  (%s%s)", cmd.Topic, retryWords(pol, def), timeoutWords(st.Timeout))
	case !compensation && st.Await != nil:
		into := orDefault(st.Await.Into, st.Name)
		return fmt.Sprintf("await an event on %s by %s, stored under %s  (%s%s)", st.Await.Topic, st.Await.Field, into, retryWords(pol, def), timeoutWords(st.Timeout))
	case !compensation && st.Sleep > 0:
		return fmt.Sprintf("sleep %s  (a durable timer)", st.Sleep)
	}
	return fmt.Sprintf("Go function  (%s%s)", retryWords(pol, def), timeoutWords(st.Timeout))
}

func retryWords(p, def engine.RetryPolicy) string {
	if p == (engine.RetryPolicy{}) {
		p = def
	}
	return fmt.Sprintf("%d attempts, backoff %s x%g up to %s, jitter %g", p.MaxAttempts, p.InitialDelay, p.Multiplier, p.MaxDelay, p.Jitter)
}

func timeoutWords(d interface{ String() string }) string {
	s := d.String()
	if s == "0s" {
		return ", no timeout"
	}
	return ", timeout " + s
}

func triggerWords(t *engine.Trigger) string {
	var parts []string
	switch t.Source() {
	case engine.SourceKafka:
		parts = append(parts, "kafka "+t.Topic())
	case engine.SourceWebhook:
		parts = append(parts, "webhook "+t.Webhook())
	case engine.SourceManual:
		parts = append(parts, "manual "+t.EventType())
	case engine.SourceCron:
		parts = append(parts, "cron "+t.Schedule()+" (schedule "+t.ScheduleName()+")")
		if p := t.CronPolicy(); p != (engine.CronPolicy{}) {
			parts = append(parts, fmt.Sprintf("catch_up=%s overlap=%s jitter=%s", p.CatchUp, p.Overlap, p.Jitter))
		}
	}
	if t.Source() != engine.SourceCron {
		parts = append(parts, "idempotency_key="+t.Key().String())
	}
	if n := t.MaxConcurrent(); n > 0 {
		parts = append(parts, fmt.Sprintf("max_concurrent=%d", n))
	}
	if r := t.RateLimit(); r.PerSecond > 0 {
		parts = append(parts, fmt.Sprintf("rate_limit=%g/s burst %d", r.PerSecond, max(r.Burst, 1)))
	}
	return strings.Join(parts, "  ")
}
