// Package logx builds the service's logger and bounds the rate of log lines
// that follow events (saga outcomes, dead letters), so a burst of failures
// cannot flood the log.
package logx

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// New returns a logger writing text or JSON lines ("json") to w at level.
// In both formats durations are rendered as strings ("1.5s", "250ms"), not
// as nanoseconds.
func New(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: ReplaceAttr}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// ReplaceAttr renders time.Duration values as strings (the JSON handler
// writes them as integer nanoseconds otherwise).
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// Clock is what the limiter needs of a clock (engine.Clock qualifies).
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Default rate of one kind of line: 10 a second on average, bursts of 100.
const (
	DefaultPerSecond = 10
	DefaultBurst     = 100
)

// SuppressedMsg is the message of the line that reports suppressed lines.
const SuppressedMsg = "log lines suppressed"

// Limiter bounds log lines per kind (the message) with a token bucket each.
// Lines over the bound are dropped and counted; a second after the first
// dropped line, one line reports how many lines of that kind were dropped
// (message SuppressedMsg, attributes "kind" and "suppressed"). Safe for
// concurrent use.
type Limiter struct {
	log   *slog.Logger
	clock Clock
	per   float64
	burst int

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	lim        *rate.Limiter
	level      slog.Level
	suppressed int
	stop       func() bool // the pending report, nil when none
}

// NewLimiter returns a limiter over log: perSecond lines of each kind on
// average, in bursts of up to burst (defaults DefaultPerSecond and
// DefaultBurst when not positive). clock may be nil (the system clock).
func NewLimiter(log *slog.Logger, perSecond float64, burst int, clock Clock) *Limiter {
	if perSecond <= 0 {
		perSecond = DefaultPerSecond
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	if clock == nil {
		clock = systemClock{}
	}
	return &Limiter{log: log, clock: clock, per: perSecond, burst: burst, kinds: map[string]*kind{}}
}

// Enabled reports whether lines at level are written at all, so callers
// can skip building their arguments.
func (l *Limiter) Enabled(ctx context.Context, level slog.Level) bool {
	return l.log.Enabled(ctx, level)
}

// Log writes the line unless its kind (msg) is over its rate; lines of
// levels the logger does not write are neither written nor counted.
func (l *Limiter) Log(ctx context.Context, level slog.Level, msg string, args ...any) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.mu.Lock()
	k := l.kinds[msg]
	if k == nil {
		k = &kind{lim: rate.NewLimiter(rate.Limit(l.per), l.burst)}
		l.kinds[msg] = k
	}
	if k.lim.AllowN(l.clock.Now(), 1) {
		l.mu.Unlock()
		l.log.Log(ctx, level, msg, args...)
		return
	}
	k.suppressed++
	k.level = max(k.level, level)
	if k.stop == nil {
		k.stop = l.clock.AfterFunc(time.Second, func() { l.report(msg) })
	}
	l.mu.Unlock()
}

// report logs how many lines of a kind were dropped since the last report.
func (l *Limiter) report(msg string) {
	l.mu.Lock()
	k := l.kinds[msg]
	n, level := k.suppressed, k.level
	k.suppressed, k.level, k.stop = 0, 0, nil
	l.mu.Unlock()
	if n > 0 {
		l.log.Log(context.Background(), level, SuppressedMsg, "kind", msg, "suppressed", n)
	}
}

// Flush reports the dropped lines not reported yet, at once (at shutdown).
func (l *Limiter) Flush() {
	l.mu.Lock()
	var pending []string
	for msg, k := range l.kinds {
		if k.stop != nil && k.stop() { // stopped before it ran: report here
			pending = append(pending, msg)
		}
	}
	l.mu.Unlock()
	for _, msg := range pending {
		l.report(msg)
	}
}
