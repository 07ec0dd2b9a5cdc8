package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
)

func noEnv(string) string { return "" }

// TestValidateCommand: exit 0 (nil) with the sagas listed when valid; an
// error with every located problem otherwise, also for a name a compiled
// saga has.
func TestValidateCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"validate", "../../examples/sagas"}, &out, noEnv); err != nil {
		t.Fatalf("examples: %v", err)
	}
	if !strings.Contains(out.String(), "ok  order-http  (../../examples/sagas/order-http.yaml:") || !strings.Contains(out.String(), "3 steps, sha256:") {
		t.Errorf("validate output:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "ok  transfer-yaml  (../../examples/sagas/transfer.yaml:") {
		t.Errorf("validate output lacks the YAML transfer example:\n%s", out.String())
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: order\ntriggers: [{manual: x}]\nsteps:\n  - name: a\n    action: {http: {method: GET, url: 'http://127.0.0.1/'}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"validate", bad}, &out, noEnv)
	if err == nil || !strings.Contains(err.Error(), bad+`:1:1: name: saga "order" is already declared (compiled into the binary)`) {
		t.Fatalf("a compiled saga's name: %v", err)
	}
	if err := os.WriteFile(bad, []byte("name: x\ntriggers: [{manual: x}]\nsteps:\n  - name: a\n    action:\n      sleep: 5s\n      timeout: 1s\n  - name: b\n    action: {http: {method: GET, url: '${{ context.u + }}'}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"validate", bad}, &out, noEnv)
	if err != nil && strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want exactly two problems:\n%v", err)
	}
	for _, w := range []string{bad + ":7:7: steps[0].action.timeout: a sleep step has no timeout", bad + ":9:56: steps[1].action.http.url: expression \"context.u +\": Syntax error"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("want %q in %v", w, err)
		}
	}
	if err := run(context.Background(), []string{"validate"}, &out, noEnv); err == nil || !strings.Contains(err.Error(), "usage: sagaz validate PATH") {
		t.Errorf("no path: %v", err)
	}
}

// TestSagasShowDefinition: a name (no ':') shows a definition, of a YAML
// saga or a compiled one.
func TestSagasShowDefinition(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"sagas", "show", "order-http", "--sagas", "../../examples/sagas"}, &out, noEnv); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"saga:         order-http", "manual order.http  idempotency_key=order_id", "1. reserve",
		"compensation:  DELETE ${{ context.participant }}/inventory/reservations/", "3. ship", "compensation:  none"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("show order-http lacks %q:\n%s", w, out.String())
		}
	}
	out.Reset()
	env := func(k string) string {
		if k == "SAGAZ_SAGAS" {
			return "../../examples/sagas"
		}
		return ""
	}
	if err := run(context.Background(), []string{"sagas", "show", "order"}, &out, env); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "compiled into this binary") || !strings.Contains(out.String(), "kafka orders.created") {
		t.Errorf("show order:\n%s", out.String())
	}
	err := run(context.Background(), []string{"sagas", "show", "nope"}, &out, env)
	if err == nil || !strings.Contains(err.Error(), `no saga named "nope"`) || !strings.Contains(err.Error(), "[order-http transfer-yaml]") {
		t.Errorf("unknown name: %v", err)
	}
}

// TestBinaryRunsYAMLSaga: the built binary, in dev mode, runs a saga from
// --sagas next to the compiled ones: fired through the API, its HTTP steps
// reach the participant with their Idempotency-Keys, and it completes. A
// YAML webhook gets its secret from SAGAZ_WEBHOOK_SECRET_<NAME>.
func TestBinaryRunsYAMLSaga(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.URL.Path+" "+r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ref":"r-1"}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	yaml := filepath.Join(dir, "yaml-order.yaml")
	if err := os.WriteFile(yaml, []byte(`name: yaml-order
triggers:
  - manual: yaml.go
    idempotency_key: id
  - webhook: yaml-hook
steps:
  - name: one
    action:
      http:
        method: POST
        url: `+srv.URL+`/one
        body: {id: "${{ context.id }}"}
        save: {ref: "${{ response.body.ref }}"}
  - name: two
    action:
      http: {method: POST, url: "`+srv.URL+`/two/${{ context.ref }}"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := sagaztest.BuildBinary(t, ".")
	_, port, _ := net.SplitHostPort(sagaztest.FreeAddr(t))
	t.Setenv("SAGAZ_WEBHOOK_SECRET_YAML_HOOK", "s3cret")
	p := sagaztest.StartBinary(t, bin, dir, "--sagas", yaml, "--data-dir", filepath.Join(dir, "data"), "--dev-broker-port", port)
	base := "http://" + p.HTTP
	kafkatest.WaitFor(t, 60*time.Second, "/readyz", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := http.Post(base+"/webhooks/yaml-hook", "application/json", strings.NewReader(`{"id":"w"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned call of the YAML webhook: %d, want 401 (its secret is set)", resp.StatusCode)
	}
	resp, err = http.Post(base+"/api/fire", "application/json", strings.NewReader(`{"event_type":"yaml.go","id":"o-1"}`))
	if err != nil {
		t.Fatal(err)
	}
	var acc struct {
		SagaIDs []string `json:"saga_ids"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || len(acc.SagaIDs) != 1 {
		t.Fatalf("fire: %d %+v", resp.StatusCode, acc)
	}
	id := acc.SagaIDs[0]
	kafkatest.WaitFor(t, 60*time.Second, "the YAML saga to complete", func() bool {
		resp, err := http.Get(base + "/api/sagas/" + id)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var v struct{ Status string }
		return json.NewDecoder(resp.Body).Decode(&v) == nil && v.Status == "completed"
	})
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/one " + id + "/one", "/two/r-1 " + id + "/two"}
	if strings.Join(keys, "|") != strings.Join(want, "|") {
		t.Errorf("participant calls %q, want %q", keys, want)
	}
}

// TestBinaryRunsYAMLTransfer: examples/sagas/transfer.yaml runs in the
// built binary in dev mode (every topic its commands need created) against
// the demo's accounts service (`sagaz demo-participant`, here in-process):
// a transfer completes with both replies in its context, one whose credit
// is refused is rolled back with the refund command.
func TestBinaryRunsYAMLTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	dir := t.TempDir()
	bin := sagaztest.BuildBinary(t, ".")
	_, port, _ := net.SplitHostPort(sagaztest.FreeAddr(t))
	p := sagaztest.StartBinary(t, bin, dir, "--sagas", "../../examples/sagas/transfer.yaml", "--data-dir", filepath.Join(dir, "data"), "--dev-broker-port", port)
	base := "http://" + p.HTTP
	kafkatest.WaitFor(t, 60*time.Second, "/readyz", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- demoParticipant(ctx, []string{"--brokers", "127.0.0.1:" + port, "--instance-id", "yaml-test", "--log-level", "error"}, io.Discard, noEnv)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo-participant: %v", err)
		}
	}()
	admin := kadm.NewClient(kafkatest.Client(t, []string{"127.0.0.1:" + port}))
	kafkatest.WaitFor(t, 60*time.Second, "the accounts service to get its partitions", func() bool {
		gs, err := admin.DescribeGroups(context.Background(), "sagaz-demo-accounts")
		if err != nil {
			return false
		}
		g, ok := gs["sagaz-demo-accounts"]
		if !ok || g.State != "Stable" {
			return false
		}
		for _, m := range g.Members {
			if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
				return true
			}
		}
		return false
	})
	fire := func(body string) string {
		resp, err := http.Post(base+"/api/fire", "application/json", strings.NewReader(`{"event_type":"transfer.yaml",`+body[1:]))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var acc struct {
			SagaIDs []string `json:"saga_ids"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&acc)
		if resp.StatusCode != http.StatusAccepted || len(acc.SagaIDs) != 1 {
			t.Fatalf("fire %s: %d %+v", body, resp.StatusCode, acc)
		}
		return acc.SagaIDs[0]
	}
	type view struct {
		Status  string
		Context map[string]any
		Steps   []struct{ Name, Status string }
	}
	ended := func(id string) *view {
		var v view
		kafkatest.WaitFor(t, 90*time.Second, id+" to end", func() bool {
			resp, err := http.Get(base + "/api/sagas/" + id)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			v = view{}
			return json.NewDecoder(resp.Body).Decode(&v) == nil && (v.Status == "completed" || v.Status == "rolled_back" || v.Status == "failed")
		})
		return &v
	}
	okID := fire(`{"transfer_id":"y-1","from":"alice","to":"bob","amount":10}`)
	badID := fire(`{"transfer_id":"y-2","from":"alice","to":"bob","amount":10,"fail_at":"credit"}`)
	ok := ended(okID)
	debit, _ := ok.Context["debit"].(map[string]any)
	credit, _ := ok.Context["credit"].(map[string]any)
	if ok.Status != "completed" || debit["amount"] != float64(-10) || debit["account"] != "alice" || credit["amount"] != float64(10) || credit["account"] != "bob" {
		t.Errorf("%s: %s, context %v: want completed with the debit and credit replies", okID, ok.Status, ok.Context)
	}
	bad := ended(badID)
	refund, _ := bad.Context["refund"].(map[string]any)
	if bad.Status != "rolled_back" || refund["amount"] != float64(10) || refund["account"] != "alice" {
		t.Errorf("%s: %s, context %v: want rolled_back with the debit refunded", badID, bad.Status, bad.Context)
	}
}
