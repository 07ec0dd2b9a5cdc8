package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
