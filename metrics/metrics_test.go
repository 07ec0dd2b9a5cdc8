package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/sagaz-go/sagaz/metrics"
)

func families(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func TestFinishedSeriesExistAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.NewEngine(reg, func() (int, int) { return 0, 0 })
	m.Known([]string{"order", "refund"})
	if n := testutil.CollectAndCount(m.Finished); n != 8 {
		t.Fatalf("%d finished series, want 2 sagas x 4 terminal statuses", n)
	}
	for _, st := range []string{"completed", "rolled_back", "failed", "resolved"} {
		if v := testutil.ToFloat64(m.Finished.WithLabelValues("refund", st)); v != 0 {
			t.Errorf("refund %s = %v", st, v)
		}
	}
}

func TestFailedGaugeCountsAtScrapeTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	counts := map[string]int{"order": 2}
	var err error
	metrics.RegisterFailed(reg, []string{"order", "refund"}, func(context.Context) (map[string]int, error) {
		out := map[string]int{}
		for k, v := range counts {
			out[k] = v
		}
		return out, err
	})
	want := `
# HELP sagaz_sagas_failed Sagas currently failed (a compensation gave up: they wait for an operator), in the partitions this member owns, by saga.
# TYPE sagaz_sagas_failed gauge
sagaz_sagas_failed{saga="order"} 2
sagaz_sagas_failed{saga="refund"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sagaz_sagas_failed"); err != nil {
		t.Fatal(err)
	}
	counts["order"], counts["refund"] = 0, 1 // read again at the next scrape
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.NewReplacer(`"order"} 2`, `"order"} 0`, `"refund"} 0`, `"refund"} 1`).Replace(want)), "sagaz_sagas_failed"); err != nil {
		t.Fatal(err)
	}
	err = errors.New("store closed")
	if got := families(t, reg); got["sagaz_sagas_failed"] != nil {
		t.Fatalf("a failing count still reported %v (the scrape must not fail either)", got["sagaz_sagas_failed"])
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.RegisterBuildInfo(reg, "v1.2.3", "abc", "go1.26")
	want := `
# HELP sagaz_build_info The running build (always 1): version, commit and Go version as labels.
# TYPE sagaz_build_info gauge
sagaz_build_info{commit="abc",go_version="go1.26",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sagaz_build_info"); err != nil {
		t.Fatal(err)
	}
}

// No gauge may be named like a counter: franz-go's kprom names two buffer
// gauges "..._total"; the gatherer serves them without the suffix.
func TestNoGaugeNamedTotal(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics.NewEngine(reg, func() (int, int) { return 0, 0 })
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.WithHooks(kprom.NewMetrics("sagaz_kafka", kprom.Registerer(reg))))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if raw := families(t, reg); raw["sagaz_kafka_buffered_produce_records_total"].GetType() != dto.MetricType_GAUGE {
		t.Fatalf("kprom no longer registers the gauge this fixes: %v", raw["sagaz_kafka_buffered_produce_records_total"])
	}
	fixed := families(t, metrics.Gatherer(reg))
	for name, mf := range fixed {
		if mf.GetType() == dto.MetricType_GAUGE && strings.HasSuffix(name, "_total") {
			t.Errorf("gauge %s is named like a counter", name)
		}
	}
	for _, name := range []string{"sagaz_kafka_buffered_produce_records", "sagaz_kafka_buffered_fetch_records", "sagaz_sagas_pending"} {
		if fixed[name] == nil {
			t.Errorf("%s missing after the rename", name)
		}
	}
}

func TestParkedGaugeCountsAtScrapeTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := 3
	metrics.RegisterParked(reg, []string{"order", "refund"}, func(context.Context) (map[string]int, error) {
		return map[string]int{"order": n}, nil
	})
	want := `
# HELP sagaz_sagas_parked Sagas currently parked (no definition this member declares can run them: they wait for a member that has it, or an operator), in the partitions this member owns, by saga.
# TYPE sagaz_sagas_parked gauge
sagaz_sagas_parked{saga="order"} 3
sagaz_sagas_parked{saga="refund"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "sagaz_sagas_parked"); err != nil {
		t.Fatal(err)
	}
	n = 1
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(want, `"order"} 3`, `"order"} 1`, 1)), "sagaz_sagas_parked"); err != nil {
		t.Fatal(err)
	}
}
