package health

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestConditions(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := New(reg)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := t0
	c.now = func() time.Time { return now }
	if c.Err() != nil {
		t.Fatal("a new set is not ready")
	}
	c.Set(Brokers, "dial tcp: refused")
	now = now.Add(time.Second)
	c.Set(Store, "no space left on device")
	c.Set(Brokers, "dial tcp: timeout") // same condition: reason updated, clock kept
	var nr *NotReady
	if err := c.Err(); !errors.As(err, &nr) || len(nr.Conditions) != 2 {
		t.Fatalf("Err = %v", err)
	}
	if nr.Conditions[0].Name != Brokers || nr.Conditions[0].Reason != "dial tcp: timeout" || !nr.Conditions[0].Since.Equal(t0) {
		t.Fatalf("oldest condition: %+v", nr.Conditions[0])
	}
	if !strings.Contains(nr.Error(), "store: no space left on device") {
		t.Fatalf("message: %s", nr.Error())
	}
	if got := testutil.ToFloat64(c.gauge.WithLabelValues(Store)); got != 1 {
		t.Fatalf("sagaz_not_ready{condition=store} = %v", got)
	}
	c.Clear(Brokers)
	c.Clear(Store)
	c.Clear(Stalled) // not set: no-op
	if c.Err() != nil || testutil.ToFloat64(c.gauge.WithLabelValues(Store)) != 0 {
		t.Fatal("conditions not cleared")
	}
	if n, err := testutil.GatherAndCount(reg, "sagaz_not_ready", "sagaz_ready"); err != nil || n != len(Names)+1 {
		t.Fatalf("exported series: %d, %v (every condition exported from the start)", n, err)
	}
}

func TestLogLimiter(t *testing.T) {
	l := NewLogLimiter(time.Second)
	now := time.Unix(0, 0)
	l.now = func() time.Time { return now }
	if ok, n := l.Allow("a"); !ok || n != 0 {
		t.Fatal("first line refused")
	}
	for range 5 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("a repeated line within the interval was allowed")
		}
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key was limited")
	}
	now = now.Add(time.Second)
	if ok, n := l.Allow("a"); !ok || n != 5 {
		t.Fatalf("after the interval: %v, suppressed %d (want 5)", ok, n)
	}
}
