package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/logx"
	"github.com/sagaz-go/sagaz/storage"
)

// logLines collects JSON log lines.
type logLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) withMsg(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("not a JSON line: %q", s)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func outcomeSagas() *engine.Registry {
	reg := engine.NewRegistry()
	fail := func(context.Context, *engine.Run) error { return engine.Permanent(errors.New("declined")) }
	reg.Register(orderSaga("order",
		engine.Step{Name: "reserve", Action: ok, Compensate: func(_ context.Context, r *engine.Run) error {
			if r.String("stuck") != "" {
				return engine.Permanent(errors.New("warehouse down"))
			}
			return nil
		}},
		engine.Step{Name: "charge", Action: func(ctx context.Context, r *engine.Run) error {
			if r.String("decline") != "" {
				return fail(ctx, r)
			}
			return nil
		}},
	))
	return reg
}

func TestSagaOutcomesAreLogged(t *testing.T) {
	for _, logCompleted := range []bool{false, true} {
		out := &logLines{}
		h := start(t, outcomeSagas(), "", func(c *engine.Config) {
			c.Logger = logx.New(out, "json", slog.LevelDebug)
			c.LogCompleted = logCompleted
		})
		ok := h.fire(engine.SourceKafka, "orders", `{"order_id":"ok"}`)[0].ID
		rb := h.fire(engine.SourceKafka, "orders", `{"order_id":"rb","decline":"y"}`)[0].ID
		failed := h.fire(engine.SourceKafka, "orders", `{"order_id":"f","decline":"y","stuck":"y"}`)[0].ID
		h.idle()
		h.stop()

		if n := len(out.withMsg(t, "saga started")); n != 3 {
			t.Errorf("%d 'saga started' lines, want 3", n)
		}
		completedLevel := "DEBUG"
		if logCompleted {
			completedLevel = "INFO"
		}
		for _, c := range []struct{ msg, id, level, key, err string }{
			{"saga completed", ok, completedLevel, "ok", ""},
			{"saga rolled back", rb, "INFO", "rb", `step "charge" failed after 1 attempt(s): declined`},
			{"saga failed", failed, "WARN", "f", "warehouse down"},
		} {
			lines := out.withMsg(t, c.msg)
			if len(lines) != 1 {
				t.Fatalf("%q: %d lines, want 1", c.msg, len(lines))
			}
			l := lines[0]
			if l["level"] != c.level || l["saga_id"] != c.id || l["saga"] != "order" || l["trigger"] != "kafka:orders" || l["idempotency_key"] != c.key {
				t.Errorf("%q line = %v", c.msg, l)
			}
			if errText, _ := l["error"].(string); !strings.Contains(errText, c.err) || (c.err == "") != (errText == "") {
				t.Errorf("%q error = %q, want it to name %q", c.msg, errText, c.err)
			}
			if _, ok := l["took"].(string); !ok {
				t.Errorf("%q took = %v, want a duration string", c.msg, l["took"])
			}
		}
	}
}

func TestSagaOutcomeLogsAreBounded(t *testing.T) {
	clock := newFakeClock()
	out := &logLines{}
	h := start(t, outcomeSagas(), "", withClock(clock), func(c *engine.Config) {
		c.Logger = logx.New(out, "json", slog.LevelInfo)
		c.LogLimit = engine.RateLimit{PerSecond: 1, Burst: 2}
	})
	for i := range 6 {
		h.fire(engine.SourceKafka, "orders", `{"order_id":"rb-`+string(rune('a'+i))+`","decline":"y"}`)
	}
	h.idle()
	if n := len(out.withMsg(t, "saga rolled back")); n != 2 {
		t.Fatalf("%d 'saga rolled back' lines for 6 sagas at a burst of 2", n)
	}
	clock.Advance(time.Second)
	kafkatest.WaitFor(t, 10*time.Second, "the suppressed-lines report", func() bool { // it runs in the clock's goroutine
		return len(out.withMsg(t, logx.SuppressedMsg)) > 0
	})
	reports := out.withMsg(t, logx.SuppressedMsg)
	if len(reports) != 1 || reports[0]["kind"] != "saga rolled back" || reports[0]["suppressed"] != float64(4) {
		t.Fatalf("reports = %v", reports)
	}
}

// A cron trigger declares no key (ticks are keyed by schedule and time):
// start-up must not claim its record position is its key.
func TestNoKeyNoticeOnlyWhereThePositionIsTheKey(t *testing.T) {
	reg := engine.NewRegistry()
	step := []engine.Step{{Name: "s", Action: ok}}
	reg.Register(engine.Saga{Name: "tick", Steps: step, Triggers: []engine.Trigger{engine.Cron("@hourly")}})
	reg.Register(engine.Saga{Name: "raw", Steps: step, Triggers: []engine.Trigger{engine.Kafka("raw", engine.PassThrough)}})
	out := &logLines{}
	start(t, reg, "", func(c *engine.Config) { c.Logger = logx.New(out, "json", slog.LevelInfo) })
	lines := out.withMsg(t, "trigger has no idempotency key; the record position (topic, partition, offset) is the key")
	if len(lines) != 1 || lines[0]["saga"] != "raw" {
		t.Fatalf("no-key notices = %v, want one, for the kafka trigger only", lines)
	}
}

// A resolution is logged at info with its reason and who resolved it, and
// the failed line points at retry and resolve; onFinish hears the resolved
// status (metrics count it).
func TestResolutionIsLogged(t *testing.T) {
	out := &logLines{}
	var finished []string
	var mu sync.Mutex
	h := start(t, outcomeSagas(), "", func(c *engine.Config) {
		c.Logger = logx.New(out, "json", slog.LevelInfo)
		c.OnFinish = func(s *storage.Saga) { mu.Lock(); finished = append(finished, s.Status.String()); mu.Unlock() }
	})
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"f","decline":"y","stuck":"y"}`)[0].ID
	h.idle()
	if err := h.eng.Resolve(context.Background(), id, engine.Audit{Reason: "released by hand", By: "token:ab"}); err != nil {
		t.Fatal(err)
	}
	h.stop()
	if l := out.withMsg(t, "saga failed"); len(l) != 1 || !strings.Contains(l[0]["action"].(string), "resolve") {
		t.Errorf("failed line %v, want it to point at resolve", l)
	}
	l := out.withMsg(t, "saga resolved by hand")
	if len(l) != 1 || l[0]["level"] != "INFO" || l[0]["saga_id"] != id || l[0]["reason"] != "released by hand" || l[0]["by"] != "token:ab" {
		t.Fatalf("resolved lines %v", l)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(finished, ",") != "failed,resolved" {
		t.Errorf("OnFinish heard %v, want failed then resolved", finished)
	}
}
