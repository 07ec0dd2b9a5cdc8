package logx

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestJSONLogsRenderDurationsAsStrings(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, "json", slog.LevelInfo).Info("done", "took", 1500*time.Millisecond, "n", 3)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not a JSON line: %q", buf.String())
	}
	if line["took"] != "1.5s" || line["n"] != float64(3) {
		t.Errorf("line = %v, want took \"1.5s\"", line)
	}
	buf.Reset()
	New(&buf, "text", slog.LevelInfo).Info("done", "took", 250*time.Millisecond)
	if !strings.Contains(buf.String(), "took=250ms") {
		t.Errorf("text line = %q", buf.String())
	}
	buf.Reset()
	New(&buf, "text", slog.LevelWarn).Info("hidden")
	if buf.Len() != 0 {
		t.Errorf("info written at level warn: %q", buf.String())
	}
}

// manualClock fires AfterFunc callbacks when Advance passes them.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

type timer struct {
	at   time.Time
	f    func()
	done bool
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *manualClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.done
		t.done = true
		return was
	}
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*timer
	for _, t := range c.timers {
		if !t.done && !t.at.After(c.now) {
			t.done = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

type lines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }

func (l *lines) all(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if s == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("bad line %q", s)
		}
		out = append(out, m)
	}
	return out
}

func count(ls []map[string]any, msg string) int {
	n := 0
	for _, l := range ls {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

func TestLimiterBoundsEachKindAndReportsWhatItDropped(t *testing.T) {
	out := &lines{}
	clock := &manualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(New(out, "json", slog.LevelInfo), 2, 3, clock)
	ctx := context.Background()
	for range 10 {
		l.Log(ctx, slog.LevelWarn, "saga failed", "saga_id", "x")
	}
	l.Log(ctx, slog.LevelInfo, "saga rolled back") // another kind has its own bucket
	l.Log(ctx, slog.LevelDebug, "saga started")    // not written at info: not counted
	got := out.all(t)
	if count(got, "saga failed") != 3 || count(got, "saga rolled back") != 1 || count(got, "saga started") != 0 || count(got, SuppressedMsg) != 0 {
		t.Fatalf("burst of 10 at 3: %v", got)
	}
	clock.Advance(time.Second) // the report comes a second after the first dropped line
	got = out.all(t)
	var report map[string]any
	for _, g := range got {
		if g["msg"] == SuppressedMsg {
			report = g
		}
	}
	if report == nil || report["kind"] != "saga failed" || report["suppressed"] != float64(7) || report["level"] != "WARN" {
		t.Fatalf("report = %v (lines %v)", report, got)
	}
	// The bucket refilled at 2/s: two more pass, the third is dropped and
	// reported by Flush (shutdown) without waiting.
	for range 3 {
		l.Log(ctx, slog.LevelWarn, "saga failed")
	}
	l.Flush()
	got = out.all(t)
	if count(got, "saga failed") != 5 || count(got, SuppressedMsg) != 2 {
		t.Fatalf("after refill: %v", got)
	}
	if last := got[len(got)-1]; last["msg"] != SuppressedMsg || last["suppressed"] != float64(1) {
		t.Fatalf("flush report = %v", last)
	}
	clock.Advance(time.Minute) // the stopped timer reports nothing twice
	if n := count(out.all(t), SuppressedMsg); n != 2 {
		t.Fatalf("%d reports after flush, want 2", n)
	}
}
