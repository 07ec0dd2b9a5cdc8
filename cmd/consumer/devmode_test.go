package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestDevModeServesAndKeepsState runs what `make run` runs: the embedded
// broker, the consumer and the HTTP server; the demo subcommand produces
// orders; a restart on the same data directory keeps the broker's topics
// and offsets (no order is consumed twice).
func TestDevModeServesAndKeepsState(t *testing.T) {
	dir := t.TempDir()
	port := sagaztest.FreeAddr(t)
	_, p, _ := net.SplitHostPort(port)
	httpAddr := sagaztest.FreeAddr(t)
	env := func(string) string { return "" }
	args := []string{"run", "--data-dir", dir, "--dev-broker-port", p, "--http-addr", httpAddr, "--log-level", "error"}

	metric := func(name string) float64 { return sagaztest.Metric(httpAddr, name) }
	for round, want := range []float64{12, 5} {
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuf{}
		done := make(chan error, 1)
		go func() { done <- run(ctx, args, out, env) }()
		kafkatest.WaitFor(t, 30*time.Second, "/readyz", func() bool {
			resp, err := http.Get("http://" + httpAddr + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
		if round == 0 && !strings.Contains(out.String(), "kcat -P -b 127.0.0.1:"+p) {
			t.Errorf("banner does not say how to send an event:\n%s", out.String())
		}
		var dout bytes.Buffer
		if err := run(ctx, []string{"demo", "--brokers", "127.0.0.1:" + p, "--count", strconv.Itoa(int(want)), "--prefix", "r" + strconv.Itoa(round)}, &dout, env); err != nil {
			t.Fatal(err)
		}
		kafkatest.WaitFor(t, 30*time.Second, "the demo orders to be consumed", func() bool {
			return metric(`sagaz_sagas_started_total{saga="order"}`) == want
		})
		kafkatest.WaitFor(t, 30*time.Second, "the demo sagas to finish", func() bool {
			return metric("sagaz_sagas_pending") == 0 && metric("sagaz_sagas_executing") == 0
		})
		if got := metric(`sagaz_records_consumed_total{topic="orders.created"}`); got != want {
			t.Fatalf("round %d consumed %v records, want %v (a restart must not re-consume)", round, got, want)
		}
		if round == 0 {
			checkMetricsDocumented(t, httpAddr)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: run: %v", round, err)
		}
	}
}

func TestDevBrokerPortTakenIsClear(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	err = run(context.Background(), []string{"run", "--data-dir", t.TempDir(), "--dev-broker-port", p, "--http-addr", ""}, &bytes.Buffer{}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "port "+p+" is taken") {
		t.Fatalf("run = %v, want a clear 'port taken' error", err)
	}
}

// TestCLIOverTheAPI drives a dev-mode service with the CLI subcommands.
func TestCLIOverTheAPI(t *testing.T) {
	_, port, _ := net.SplitHostPort(sagaztest.FreeAddr(t))
	httpAddr := sagaztest.FreeAddr(t)
	env := func(k string) string {
		if k == "SAGAZ_API" {
			return "http://" + httpAddr
		}
		return ""
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--data-dir", t.TempDir(), "--dev-broker-port", port, "--http-addr", httpAddr, "--log-level", "error"}, &syncBuf{}, env)
	}()
	defer func() { cancel(); <-done }()
	kafkatest.WaitFor(t, 30*time.Second, "/readyz", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	cli := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, args, &out, env); err != nil {
			t.Fatalf("sagaz %s: %v", strings.Join(args, " "), err)
		}
		return out.String()
	}
	if out := cli("triggers"); !strings.Contains(out, "order.requested") || !strings.Contains(out, "orders.created") {
		t.Fatalf("triggers:\n%s", out)
	}
	var acc struct {
		SagaIDs []string `json:"saga_ids"`
	}
	if err := json.Unmarshal([]byte(cli("fire", "order.requested", `{"order_id":"cli-1","fail_at":"ship"}`, "-o", "json")), &acc); err != nil || len(acc.SagaIDs) != 1 {
		t.Fatalf("fire: %v %+v", err, acc)
	}
	id := acc.SagaIDs[0]
	kafkatest.WaitFor(t, 30*time.Second, "the fired saga to roll back", func() bool {
		var out bytes.Buffer
		err := run(ctx, []string{"sagas", "show", id, "-o", "json"}, &out, env) // 404 until the consumer has recorded it
		return err == nil && strings.Contains(out.String(), `"status": "rolled_back"`)
	})
	if out := cli("sagas", "list", "--status", "rolled_back"); !strings.Contains(out, id) {
		t.Fatalf("list:\n%s", out)
	}
	// Schedules: the demo's nightly report, triggered by hand and backfilled.
	if out := cli("schedules", "list"); !strings.Contains(out, "nightly-report:nightly-report") {
		t.Fatalf("schedules list:\n%s", out)
	}
	kafkatest.WaitFor(t, 30*time.Second, "the schedule to be owned", func() bool {
		var out bytes.Buffer
		return run(ctx, []string{"schedules", "trigger", "nightly-report:nightly-report"}, &out, env) == nil
	})
	if out := cli("schedules", "backfill", "nightly-report:nightly-report", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-22T23:00:00Z"); !strings.Contains(out, "nightly-report:nightly-report: 3 ticks published") {
		t.Fatalf("backfill:\n%s", out)
	}
	kafkatest.WaitFor(t, 30*time.Second, "four nightly reports", func() bool {
		var out bytes.Buffer
		return run(ctx, []string{"sagas", "list", "--saga", "nightly-report", "--status", "completed"}, &out, env) == nil &&
			strings.Count(out.String(), "sagaz.cron:") == 4
	})
	// The text views: a saga's steps with their compensations; the schedule
	// with every tick counted (one by hand, three backfilled) and, paused,
	// no next fire time.
	show := cli("sagas", "show", id)
	for _, want := range []string{"Status   rolled_back", "reserve", "compensated", "↳ compensation", "ship", "failed", "demo: asked to fail at ship", "Context"} {
		if !strings.Contains(show, want) {
			t.Errorf("sagas show lacks %q:\n%s", want, show)
		}
	}
	schedule := func() []string {
		for _, l := range strings.Split(cli("schedules", "list"), "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == "nightly-report:nightly-report" {
				return f
			}
		}
		t.Fatal("schedules list: no nightly-report line")
		return nil
	}
	// ID SPEC(2 fields: CRON_TZ=... 0 2 * * * is 6) HERE NEXT LAST FIRED SKIPPED: read from the end.
	f := schedule()
	if n := len(f); f[n-2] != "4" || f[n-3] == "-" || strings.HasPrefix(f[n-4], "0001") {
		t.Errorf("schedule line %q: want FIRED 4, a LAST TICK, a NEXT fire time", strings.Join(f, " "))
	}
	if out := cli("schedules", "pause", "nightly-report:nightly-report"); !strings.Contains(out, "pause accepted") {
		t.Errorf("pause: %q", out)
	}
	if f := schedule(); f[len(f)-4] != "paused" {
		t.Errorf("paused schedule line %q: want NEXT paused", strings.Join(f, " "))
	}
	var out bytes.Buffer
	for args, code := range map[string]string{
		"schedules pause nope:nope": "404",
		"schedules backfill nightly-report:nightly-report --from 2026-11-22T00:00:00Z --to 2026-11-20T00:00:00Z": "400",
	} {
		if err := run(ctx, strings.Fields(args), &out, env); err == nil || !strings.Contains(err.Error(), code) {
			t.Errorf("sagaz %s: %v, want %s", args, err, code)
		}
	}
	if err := run(ctx, []string{"sagas", "cancel", id}, &out, env); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("cancelling a finished saga: %v", err)
	}
	if err := run(ctx, []string{"sagas", "show", "no:pe"}, &out, env); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("show with a bad id: %v", err)
	}
	// without a ':' the argument is a saga name: its definition, not an instance
	if err := run(ctx, []string{"sagas", "show", "nope"}, &out, env); err == nil || !strings.Contains(err.Error(), `no saga named "nope"`) {
		t.Fatalf("show with an unknown name: %v", err)
	}

	// Dead letters: a record that is not JSON, listed and replayed (it is
	// dead-lettered again, carrying sagaz.replay.of).
	prod := kafkatest.Client(t, []string{"127.0.0.1:" + port})
	kafkatest.Produce(t, prod, &kgo.Record{Topic: "orders.created", Key: []byte("poison"), Value: []byte("not json")})
	var coord string
	kafkatest.WaitFor(t, 30*time.Second, "the poison record in the dead-letter topic", func() bool {
		var page dlqPage
		out.Reset()
		if run(ctx, []string{"dlq", "list", "--reason", "decode", "--json"}, &out, env) != nil || json.Unmarshal(out.Bytes(), &page) != nil {
			return false
		}
		for _, l := range page.DeadLetters {
			if l.Key == "poison" && l.Original.Topic == "orders.created" {
				coord = fmt.Sprintf("%d/%d", l.Partition, l.Offset)
				return true
			}
		}
		return false
	})
	if out := cli("dlq", "list", "--topic", "orders.created"); !strings.Contains(out, coord) || !strings.Contains(out, "decode") {
		t.Fatalf("dlq list:\n%s", out)
	}
	if out := cli("dlq", "replay", coord); !strings.Contains(out, "replayed to orders.created") {
		t.Fatalf("dlq replay:\n%s", out)
	}
	kafkatest.WaitFor(t, 30*time.Second, "the replayed poison record dead-lettered again", func() bool {
		out.Reset()
		return run(ctx, []string{"dlq", "list", "--json"}, &out, env) == nil && strings.Contains(out.String(), `"sagaz.replay.of"`)
	})
	if err := run(ctx, []string{"dlq", "replay", "0/999999"}, &out, env); err == nil || !strings.Contains(err.Error(), "not replayed") {
		t.Fatalf("replaying a missing dead letter: %v", err)
	}
	if err := run(ctx, []string{"dlq", "replay", "zero"}, &out, env); err == nil || !strings.Contains(err.Error(), "<partition>/<offset>") {
		t.Fatalf("replaying a bad coordinate: %v", err)
	}
	// The console is served by the binary.
	resp, err := http.Get("http://" + httpAddr + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Sagaz console") {
		t.Fatalf("GET /ui/: %d %s", resp.StatusCode, body)
	}
}

// checkMetricsDocumented: every sagaz_* metric the service exposes is in
// docs/operations.md; no gauge is named like a counter; the series that
// must exist before their first event do.
func checkMetricsDocumented(t *testing.T, httpAddr string) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	for name, typ := range types {
		if typ == "gauge" && strings.HasSuffix(name, "_total") {
			t.Errorf("gauge %s is named like a counter", name)
		}
		if strings.HasPrefix(name, "sagaz_") && !strings.HasPrefix(name, "sagaz_kafka_") && !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s (%s) is not in docs/operations.md", name, typ)
		}
	}
	for _, series := range []string{`sagaz_sagas_failed{saga="order"}`, `sagaz_dead_letters_total{reason="decode"}`,
		`sagaz_sagas_finished_total{saga="payment-confirmed",status="failed"}`, `sagaz_sagas_started_total{saga="nightly-report"}`} {
		if v := sagaztest.Metric(httpAddr, series); v != 0 {
			t.Errorf("%s = %v, want 0 before any such event", series, v)
		}
	}
	if !strings.Contains(string(body), "sagaz_build_info{") || types["sagaz_batch_record_seconds"] != "histogram" ||
		sagaztest.Metric(httpAddr, "sagaz_batch_record_seconds_count") <= 0 {
		t.Error("sagaz_build_info missing, or sagaz_batch_record_seconds never observed")
	}
}
