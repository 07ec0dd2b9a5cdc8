package httpapi_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

// A parked saga over HTTP: listed under status=parked with its reason,
// moved on by POST /api/sagas/{id}/retry with a step mapping (400 for a
// mapping that does not fit or a malformed body), and the retry of a
// saga that is neither failed nor parked is 409.
func TestRetryParkedSagaOverHTTP(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sagaz.db")
	v1 := []engine.Step{{Name: "reserve", Action: noop}, {Name: "charge", Action: noop}, {Name: "ship", Action: noop}}
	old := engine.Fingerprint(&engine.Saga{Steps: v1})
	st, err := storage.OpenBolt(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := &storage.Saga{Name: "order", Trigger: "manual:order.placed", Source: storage.Position{Topic: "orders"}, Context: []byte(`{}`)}
	if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{s}}); err != nil {
		t.Fatal(err)
	}
	s.Status, s.Definition = storage.StatusExecuting, old
	s.Steps = []storage.Step{{Name: "reserve", Status: storage.StepCompleted}, {Name: "charge", Status: storage.StepCompleted}, {Name: "ship", Status: storage.StepPending}}
	if err := st.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	// The new build renamed charge to capture.
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "order", Steps: []engine.Step{{Name: "reserve", Action: noop}, {Name: "capture", Action: noop}, {Name: "ship", Action: noop}},
		Triggers: []engine.Trigger{engine.Manual("order.placed", engine.PassThrough)}})
	eng, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: sagaztest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	engDone := make(chan error, 1)
	go func() { engDone <- eng.Run(ctx) }()
	srv, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Logger: sagaztest.Logger(), Auth: httpapi.Auth{AdminTokens: []string{token}},
		API: &httpapi.API{Engine: eng, Store: st, Producer: fakeProducer{}, EventsTopic: "sagaz.events", MaxBodyBytes: 2048}})
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-srvDone; <-engDone; _ = st.Close() })
	e := &env{t: t, base: "http://" + srv.Addr()}
	id := s.ID()

	got := e.waitSaga(id, "parked")
	parked, _ := got["parked"].(map[string]any)
	if parked["from"] != "executing" || !strings.Contains(parked["reason"].(string), old) || got["definition"] != old {
		t.Fatalf("parked saga: %v", got)
	}
	if l := e.expect(200, "GET", "/api/sagas?status=parked", "")["sagas"].([]any); len(l) != 1 {
		t.Fatalf("status=parked lists %v", l)
	}
	if l := e.expect(200, "GET", "/api/sagas?status=executing", "")["sagas"].([]any); len(l) != 0 {
		t.Fatalf("status=executing lists the parked saga: %v", l)
	}
	// The executor that parked it lets go of it a moment after the park is
	// stored; until then a retry answers 409 "being resumed right now; try
	// again" (RetryWith), as an operator would see.
	kafkatest.WaitFor(t, 10*time.Second, "the executor to let go of the parked saga", func() bool {
		code, o := e.call(http.MethodPost, "/api/sagas/"+id+"/retry", "")
		detail, _ := o["detail"].(string)
		return code != http.StatusConflict || !strings.Contains(detail, "right now")
	})
	out := e.expect(400, "POST", "/api/sagas/"+id+"/retry", "") // by name: charge has no place
	if !strings.Contains(out["detail"].(string), `"charge"`) {
		t.Fatalf("400 detail %v does not name the step", out["detail"])
	}
	e.expect(400, "POST", "/api/sagas/"+id+"/retry", `{"steps":{"charge":"nope"}}`)
	e.expect(400, "POST", "/api/sagas/"+id+"/retry", `{"step":{"charge":"capture"}}`) // unknown field
	e.expect(400, "POST", "/api/sagas/"+id+"/retry", `[1]`)
	e.expect(202, "POST", "/api/sagas/"+id+"/retry", `{"steps":{"charge":"capture"}}`)
	done := e.waitSaga(id, "completed")
	if steps := done["steps"].([]any); steps[1].(map[string]any)["name"] != "capture" || steps[1].(map[string]any)["status"] != "completed" {
		t.Fatalf("steps after the retry: %v", steps)
	}
	e.expect(409, "POST", "/api/sagas/"+id+"/retry", `{"steps":{"charge":"capture"}}`) // completed now
	kafkatest.WaitFor(t, 10*time.Second, "nothing left to run", func() bool { q, r := eng.Stats(); return q == 0 && r == 0 })
	if code, _ := e.call(http.MethodGet, "/api/sagas?status=parked", ""); code != 200 {
		t.Fatal(code)
	}
}
