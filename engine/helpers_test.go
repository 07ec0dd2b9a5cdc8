package engine_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// fakeClock: Sleep returns at once (recording the duration and moving time
// forward); AfterFunc fires when Advance passes its deadline.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.mu.Unlock()
	c.Advance(d)
	return ctx.Err()
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// Advance moves time forward and fires the timers that come due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		go t.f()
	}
}

type harness struct {
	t      *testing.T
	dir    string
	store  *storage.Bolt
	eng    *engine.Engine
	cancel context.CancelFunc
	done   chan error
}

type opt func(*engine.Config)

func withClock(c engine.Clock) opt { return func(cfg *engine.Config) { cfg.Clock = c } }

// start opens a store in dir (a new temp dir when empty), builds an engine
// for reg and runs it until the test ends.
func start(t *testing.T, reg *engine.Registry, dir string, opts ...opt) *harness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := engine.Config{Store: st, Registry: reg, ShutdownTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := engine.New(cfg)
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, dir: dir, store: st, eng: e, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- e.Run(ctx) }()
	t.Cleanup(h.stop)
	select {
	case <-e.Ready():
	case err := <-h.done:
		t.Fatalf("engine stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("engine not ready after 10s")
	}
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	h.cancel = nil
	_ = h.store.Close()
}

// idle waits (bounded) until no saga is queued or running.
func (h *harness) idle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.eng.WaitIdle(ctx); err != nil {
		q, r := h.eng.Stats()
		h.t.Fatalf("not idle after 20s: %d queued, %d running", q, r)
	}
}

func (h *harness) fire(src engine.Source, name string, value string) []engine.Outcome {
	h.t.Helper()
	ev := engine.Event{Name: name, Value: []byte(value)}
	if src == engine.SourceKafka {
		ev = engine.Event{Topic: name, Value: []byte(value)}
	}
	out, err := h.eng.Fire(context.Background(), src, ev)
	if err != nil {
		h.t.Fatalf("Fire(%s %s %s): %v", src, name, value, err)
	}
	return out
}

func (h *harness) get(id string) *storage.Saga {
	h.t.Helper()
	s, err := h.store.Get(context.Background(), id)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	return s
}

func (h *harness) count(q storage.Query) int {
	h.t.Helper()
	n := 0
	q.Limit = 1000
	for {
		p, err := h.store.List(context.Background(), q)
		if err != nil {
			h.t.Fatal(err)
		}
		n += len(p.Sagas)
		if p.Next == "" {
			return n
		}
		q.Cursor = p.Next
	}
}

func ok(context.Context, *engine.Run) error { return nil }

// finish waits until saga id ends, moving the fake clock on whenever
// nothing runs (durable back-offs and sleeps wait on the clock's timers).
func (h *harness) finish(clock *fakeClock, id string) *storage.Saga {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		h.idle()
		s := h.get(id)
		if s.Status.Terminal() {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("saga %s still %s (wait %+v) after 20s", id, s.Status, s.Wait)
		}
		if s.Wait != nil && !s.Wait.Deadline.IsZero() {
			clock.Advance(max(s.Wait.Deadline.Sub(clock.Now()), time.Millisecond))
		} else {
			time.Sleep(time.Millisecond)
		}
	}
}
