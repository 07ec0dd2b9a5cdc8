// Package health keeps the truth about a member's readiness: the named
// conditions that make it not ready right now, each with a reason and the
// time it began, for /readyz, the metrics and the logs. Components set a
// condition while a fault lasts and clear it when it ends.
package health

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The conditions a member reports. Each makes /readyz answer 503.
const (
	Recovering = "recovering" // unfinished local sagas are being queued at start
	Brokers    = "brokers"    // the brokers cannot be reached
	Topics     = "topics"     // topics the member needs are missing
	Joining    = "joining"    // the member has not (re)joined its group
	Restoring  = "restoring"  // assigned partitions are being restored from their changelog
	Store      = "store"      // the saga store cannot be written (full disk, I/O error)
	Stalled    = "stalled"    // an owned partition with lag has made no progress for the stall timeout
	Damaged    = "damaged"    // the saga store is damaged
	// Outbox: producing the records sagas send (commands, await
	// registrations) has kept failing for the stall timeout.
	Outbox = "outbox"
	// Group: the group coordinator refuses this member's fetches or
	// commits (its session was lost: UNKNOWN_MEMBER_ID and the like).
	Group = "group"
	// Incompatible: partitions hold records written by a newer release
	// (a record format this one does not read); they are not consumed here.
	Incompatible = "incompatible"
)

// Names lists every condition.
var Names = []string{Recovering, Brokers, Topics, Joining, Restoring, Store, Stalled, Damaged, Incompatible, Outbox, Group}

// Reporter is what components need: set a condition with its reason (the
// first Set starts its clock; later ones update the reason), and clear it.
// Safe for concurrent use.
type Reporter interface {
	Set(name, reason string)
	Clear(name string)
}

// Condition is one reason a member is not ready.
type Condition struct {
	Name   string    `json:"condition"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// Conditions is the set of conditions holding now. The zero value is not
// usable; call New.
type Conditions struct {
	mu    sync.Mutex
	set   map[string]Condition
	now   func() time.Time
	gauge *prometheus.GaugeVec
}

// New returns an empty set whose state is exported on reg (nil: not
// exported) as sagaz_ready (1 or 0) and sagaz_not_ready{condition}.
func New(reg prometheus.Registerer) *Conditions {
	c := &Conditions{set: map[string]Condition{}, now: time.Now,
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sagaz_not_ready",
			Help: "1 while the condition keeps the member from being ready (see /readyz)."}, []string{"condition"})}
	for _, n := range Names {
		c.gauge.WithLabelValues(n).Set(0)
	}
	if reg != nil {
		reg.MustRegister(c.gauge, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sagaz_ready",
			Help: "1 when the member is ready (no not-ready condition holds), else 0."}, func() float64 {
			if c.Err() == nil {
				return 1
			}
			return 0
		}))
	}
	return c
}

// Set records that a condition holds, with its reason.
func (c *Conditions) Set(name, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cond, ok := c.set[name]
	if !ok {
		cond = Condition{Name: name, Since: c.now().UTC()}
		c.gauge.WithLabelValues(name).Set(1)
	}
	cond.Reason = reason
	c.set[name] = cond
}

// Clear records that a condition no longer holds.
func (c *Conditions) Clear(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.set[name]; ok {
		delete(c.set, name)
		c.gauge.WithLabelValues(name).Set(0)
	}
}

// Holds reports whether a condition holds.
func (c *Conditions) Holds(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.set[name]
	return ok
}

// List returns the conditions holding now, oldest first.
func (c *Conditions) List() []Condition {
	c.mu.Lock()
	out := make([]Condition, 0, len(c.set))
	for _, cond := range c.set {
		out = append(out, cond)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Err returns nil when no condition holds, else a *NotReady listing them.
func (c *Conditions) Err() error {
	l := c.List()
	if len(l) == 0 {
		return nil
	}
	return &NotReady{Conditions: l}
}

// NotReady is the error of a member that is not ready: the conditions
// holding, oldest first.
type NotReady struct {
	Conditions []Condition
}

func (e *NotReady) Error() string {
	parts := make([]string, len(e.Conditions))
	for i, c := range e.Conditions {
		parts[i] = fmt.Sprintf("%s: %s (since %s)", c.Name, c.Reason, c.Since.Format(time.RFC3339))
	}
	return strings.Join(parts, "; ")
}

// LogLimiter bounds how often a repeated log line is written: at most one
// line per key per interval; the lines left out are counted and reported
// with the next line that is written. Safe for concurrent use.
type LogLimiter struct {
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	last  map[string]time.Time
	quiet map[string]int
}

// NewLogLimiter allows one line per key every interval.
func NewLogLimiter(every time.Duration) *LogLimiter {
	return &LogLimiter{every: every, now: time.Now, last: map[string]time.Time{}, quiet: map[string]int{}}
}

// Allow reports whether a line for key may be written now and, if so, how
// many lines for key were left out since the last one.
func (l *LogLimiter) Allow(key string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if last, seen := l.last[key]; seen && now.Sub(last) < l.every {
		l.quiet[key]++
		return false, 0
	}
	l.last[key] = now
	suppressed = l.quiet[key]
	delete(l.quiet, key)
	return true, suppressed
}
