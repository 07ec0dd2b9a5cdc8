package main

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// TestExampleSagaAgainstParticipant runs examples/sagas/order-http.yaml,
// as the docs do, against this participant: an order that completes, and
// orders that fail at each step and are compensated.
func TestExampleSagaAgainstParticipant(t *testing.T) {
	srv := httptest.NewServer(newParticipant(log.New(io.Discard, "", 0)))
	defer srv.Close()
	t.Setenv("SAGAZ_VAR_PARTICIPANT_URL", srv.URL)
	reg := engine.NewRegistry()
	if err := declarative.Register(reg, "../sagas/order-http.yaml"); err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	want := map[string]storage.Status{}
	ids := map[string]string{}
	for order, body := range map[string]string{
		"o-1": `{"order_id":"o-1","amount":42}`,
		"o-2": `{"order_id":"o-2","amount":42,"fail_at":"reserve"}`,
		"o-3": `{"order_id":"o-3","amount":42,"fail_at":"charge"}`,
		"o-4": `{"order_id":"o-4","amount":42,"fail_at":"ship"}`,
	} {
		out, err := e.Fire(ctx, engine.SourceManual, engine.Event{Name: "order.http", Value: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		ids[order] = out[0].ID
		want[order] = storage.StatusRolledBack
	}
	want["o-1"] = storage.StatusCompleted
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := e.WaitIdle(wctx); err != nil {
		t.Fatal("sagas did not finish within 30s")
	}
	for order, id := range ids {
		s, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if s.Status != want[order] {
			t.Errorf("%s: %s (%s), want %s", order, s.Status, s.Error, want[order])
		}
	}
	s, _ := st.Get(ctx, ids["o-1"])
	var data map[string]any
	_ = json.Unmarshal(s.Context, &data)
	if !strings.HasPrefix(data["tracking"].(string), "TRK-") || data["reservation_id"] == nil || data["charge_id"] == nil {
		t.Errorf("o-1 context: %s", s.Context)
	}

	resp, err := http.Get(srv.URL + "/calls")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var calls []call
	if err := json.NewDecoder(resp.Body).Decode(&calls); err != nil {
		t.Fatal(err)
	}
	// o-4 failed at ship: the charge was refunded and the reservation released.
	var o4 []string
	for _, c := range calls {
		if strings.HasPrefix(c.IdempotencyKey, ids["o-4"]+"/") {
			o4 = append(o4, c.Method+" "+strings.Split(c.Path, "/")[1]+" "+http.StatusText(c.Status))
		}
	}
	wantO4 := "POST inventory Created|POST payments Created|POST shipping Unprocessable Entity|POST payments OK|DELETE inventory No Content"
	if got := strings.Join(o4, "|"); got != wantO4 {
		t.Errorf("o-4 calls:\n got %s\nwant %s", got, wantO4)
	}
}

// TestParticipantIsIdempotent: a repeated Idempotency-Key gets the first
// answer and changes nothing.
func TestParticipantIsIdempotent(t *testing.T) {
	srv := httptest.NewServer(newParticipant(log.New(io.Discard, "", 0)))
	defer srv.Close()
	post := func(key string) string {
		req, _ := http.NewRequest("POST", srv.URL+"/payments/charges", strings.NewReader(`{"order_id":"o","amount":1}`))
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	a, b, c := post("k1"), post("k1"), post("k2")
	if a != b || a == c {
		t.Errorf("answers: %s %s %s", a, b, c)
	}
}
