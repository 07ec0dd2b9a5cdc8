package declarative_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// startEngine runs an engine with the YAML sagas at path on a bbolt store
// in dir until the test ends.
func startEngine(t *testing.T, path, dir string) (*engine.Engine, *storage.Bolt) {
	t.Helper()
	reg := engine.NewRegistry()
	if err := declarative.Register(reg, path); err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Config{Store: st, Registry: reg, ShutdownTimeout: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = st.Close()
	})
	select {
	case <-e.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("engine not ready after 10s")
	}
	return e, st
}

func waitIdle(t *testing.T, e *engine.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.WaitIdle(ctx); err != nil {
		q, r := e.Stats()
		t.Fatalf("not idle after 20s: %d queued, %d running", q, r)
	}
}

func fire(t *testing.T, e *engine.Engine, src engine.Source, name, body string) []engine.Outcome {
	t.Helper()
	ev := engine.Event{Name: name, Value: []byte(body)}
	if src == engine.SourceKafka {
		ev = engine.Event{Topic: name, Value: []byte(body)}
	}
	out, err := e.Fire(context.Background(), src, ev)
	if err != nil {
		t.Fatalf("Fire(%s %s %s): %v", src, name, body, err)
	}
	return out
}

// shop is a participant: /reserve, /charge, /ship and their undo
// endpoints; an order's "fail" names the step that answers 422, "flaky"
// the step that answers 503 that many times first.
type shop struct {
	mu    sync.Mutex
	calls []recorded
	flaky map[string]int
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var o struct {
		ID    string `json:"id"`
		Fail  string `json:"fail"`
		Flaky int    `json:"flaky"`
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = json.NewDecoder(r.Body).Decode(&o)
	s.calls = append(s.calls, recorded{method: r.Method, path: r.URL.Path, key: r.Header.Get("Idempotency-Key")})
	step := strings.Trim(r.URL.Path, "/")
	if o.Fail == step {
		w.WriteHeader(422)
		fmt.Fprint(w, `{"error":"refused"}`)
		return
	}
	if k := r.Header.Get("Idempotency-Key"); o.Flaky > 0 && s.flaky[k] < o.Flaky {
		s.flaky[k]++
		w.WriteHeader(503)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"ref": "%s-%s"}`, step, o.ID)
}

func (s *shop) all() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.calls...)
}

func shopSaga(url string) string {
	step := func(name string, undo bool) string {
		out := fmt.Sprintf(`  - name: %[1]s
    action:
      http:
        method: POST
        url: %[2]s/%[1]s
        body:
          id: ${{ context.id }}
          fail: ${{ context.fail }}
          flaky: ${{ context.flaky }}
        save:
          %[1]s_ref: ${{ response.body.ref }}
      retry: {max_attempts: 4, initial_delay: 1ms, max_delay: 5ms}
`, name, url)
		if undo {
			out += fmt.Sprintf(`    compensation:
      http:
        method: POST
        url: %[2]s/undo-%[1]s
        body:
          id: ${{ context.id }}
          ref: ${{ context.%[1]s_ref }}
      retry: {initial_delay: 1ms}
`, name, url)
		}
		return out
	}
	return `name: shop
triggers:
  - manual: order
    idempotency_key: id
  - kafka: orders
    idempotency_key: id
    when: event.amount > 0
    context:
      id: ${{ event.id }}
      fail: ""
      flaky: 0
      source: ${{ meta.source }}
context:
  id: ${{ event.id }}
  fail: ${{ event.?fail.orValue("") }}
  flaky: ${{ event.?flaky.orValue(0) }}
steps:
` + step("reserve", true) + step("charge", true) + step("ship", false)
}

// TestYAMLSagaThroughEngine runs a YAML saga through engine.Engine and
// engine.Fire: a success, a permanent failure that compensates the
// completed steps in reverse order, retries with one Idempotency-Key, a
// trigger condition, a duplicate event.
func TestYAMLSagaThroughEngine(t *testing.T) {
	sh := &shop{flaky: map[string]int{}}
	srv := httptest.NewServer(sh)
	defer srv.Close()
	path := write(t, t.TempDir(), "shop.yaml", shopSaga(srv.URL))
	e, st := startEngine(t, path, t.TempDir())

	ok := fire(t, e, engine.SourceManual, "order", `{"id":"o-1"}`)
	failed := fire(t, e, engine.SourceManual, "order", `{"id":"o-2","fail":"ship"}`)
	flaky := fire(t, e, engine.SourceManual, "order", `{"id":"o-3","flaky":2}`)
	dup := fire(t, e, engine.SourceManual, "order", `{"id":"o-1"}`)
	ignored := fire(t, e, engine.SourceKafka, "orders", `{"id":"o-4","amount":0}`)
	kafka := fire(t, e, engine.SourceKafka, "orders", `{"id":"o-5","amount":1.5}`)
	waitIdle(t, e)

	if dup[0].Created || dup[0].ID != ok[0].ID {
		t.Errorf("duplicate idempotency key started a saga: %+v", dup)
	}
	if len(ignored) != 0 {
		t.Errorf("when: event.amount > 0 let amount 0 through: %+v", ignored)
	}
	get := func(id string) *storage.Saga {
		s, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := get(ok[0].ID); s.Status != storage.StatusCompleted || !strings.Contains(string(s.Context), `"ship_ref":"ship-o-1"`) {
		t.Errorf("o-1: %s %s", s.Status, s.Context)
	}
	s := get(failed[0].ID)
	if s.Status != storage.StatusRolledBack || !strings.Contains(s.Error, "422") ||
		s.Steps[0].Status != storage.StepCompensated || s.Steps[1].Status != storage.StepCompensated || s.Steps[2].Status != storage.StepFailed {
		t.Errorf("o-2: %s %q %+v", s.Status, s.Error, s.Steps)
	}
	if s.Steps[2].Attempts != 1 {
		t.Errorf("o-2: a 422 was retried: %d attempts", s.Steps[2].Attempts)
	}
	if s := get(flaky[0].ID); s.Status != storage.StatusCompleted || s.Steps[0].Attempts != 3 {
		t.Errorf("o-3: %s, reserve attempts %d (want 3: two 503s then success)", s.Status, s.Steps[0].Attempts)
	}
	if s := get(kafka[0].ID); s.Status != storage.StatusCompleted || !strings.Contains(string(s.Context), `"source":"kafka"`) {
		t.Errorf("o-5 (kafka trigger with its own context): %s %s", s.Status, s.Context)
	}

	// o-2: reserve, charge, ship (422), then undo-charge, undo-reserve,
	// each compensation with its own key and the saved references.
	var o2, o3 []string
	for _, c := range sh.all() {
		switch {
		case strings.HasPrefix(c.key, failed[0].ID+"/"):
			o2 = append(o2, c.path+" "+strings.TrimPrefix(c.key, failed[0].ID))
		case strings.HasPrefix(c.key, flaky[0].ID+"/"):
			o3 = append(o3, c.path+" "+strings.TrimPrefix(c.key, flaky[0].ID))
		}
	}
	want2 := "/reserve /reserve|/charge /charge|/ship /ship|/undo-charge /charge/compensation|/undo-reserve /reserve/compensation"
	if got := strings.Join(o2, "|"); got != want2 {
		t.Errorf("o-2 calls:\n got %s\nwant %s", got, want2)
	}
	want3 := "/reserve /reserve|/reserve /reserve|/reserve /reserve|/charge /charge|/charge /charge|/charge /charge|/ship /ship|/ship /ship|/ship /ship"
	if got := strings.Join(o3, "|"); got != want3 {
		t.Errorf("o-3 calls (the key is the same on every retry):\n got %s\nwant %s", got, want3)
	}
}

// TestYAMLSagaBadEventsAreRejected: an event the context template cannot
// evaluate is rejected (dead-lettered by the consumer), never started.
func TestYAMLSagaBadEventsAreRejected(t *testing.T) {
	srv := httptest.NewServer(&shop{flaky: map[string]int{}})
	defer srv.Close()
	e, _ := startEngine(t, write(t, t.TempDir(), "shop.yaml", shopSaga(srv.URL)), t.TempDir())
	out, err := e.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "orders", Value: []byte(`{"amount":"lots","id":"x"}`)})
	if err == nil || len(out) != 1 || out[0].Reason != engine.ReasonTransform || !strings.Contains(err.Error(), "when:") {
		t.Fatalf("want a transform rejection naming the condition, got %+v %v", out, err)
	}
	out, err = e.Fire(context.Background(), engine.SourceManual, engine.Event{Name: "order", Value: []byte(`{"no_id":1}`)})
	if err == nil || out[0].Reason != engine.ReasonTransform || !strings.Contains(err.Error(), "context: id") {
		t.Fatalf("want a transform rejection naming the context field, got %+v %v", out, err)
	}
}
