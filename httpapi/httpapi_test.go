package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sagaz-go/sagaz/httpapi"
)

func TestHealthReadinessMetrics(t *testing.T) {
	var ready atomic.Bool
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Add(3)
	srv, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Gatherer: reg, Logger: slog.New(slog.DiscardHandler), Ready: func() error {
		if !ready.Load() {
			return errors.New("joining the consumer group")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	code, body := get("/readyz")
	var e struct{ Error, Detail string }
	if code != 503 || json.Unmarshal([]byte(body), &e) != nil || e.Error != "not ready" || e.Detail != "joining the consumer group" {
		t.Errorf("/readyz before ready = %d %s", code, body)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "sagaz_test_total 3") {
		t.Errorf("/metrics = %d %s", code, body)
	}
	if code, body := get("/nope"); code != 404 || !strings.Contains(body, `"error":"not found"`) {
		t.Errorf("/nope = %d %s", code, body)
	}
}

func TestBusyPortIsAnError(t *testing.T) {
	a, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := httpapi.New(httpapi.Config{Addr: a.Addr()}); err == nil {
		t.Fatal("second listener on a busy port")
	}
}
