// Package metrics holds the engine's Prometheus metrics (the consumer's are
// in package consumer): saga outcomes, the pending/executing gauges, the
// gauge of failed sagas, build information, and the gatherer that serves
// them.
package metrics

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sagaz-go/sagaz/storage"
)

// Engine are the engine-level metrics.
type Engine struct {
	Finished *prometheus.CounterVec   // by saga and terminal status
	Steps    *prometheus.HistogramVec // step attempts by saga, step, kind and outcome
}

// NewEngine registers the engine metrics on reg; stats reports the pending
// and executing sagas (engine.Engine.Stats), read at scrape time. Wire
// OnFinish into engine.Config.OnFinish.
func NewEngine(reg prometheus.Registerer, stats func() (pending, executing int)) *Engine {
	m := &Engine{
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_sagas_finished_total",
			Help: "Sagas that reached a terminal status, by saga and status."}, []string{"saga", "status"}),
		Steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "sagaz_step_duration_seconds",
			Help:    "Duration of step attempts, by saga, step, kind (action or compensation) and outcome (ok or error).",
			Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60}}, []string{"saga", "step", "kind", "outcome"}),
	}
	reg.MustRegister(m.Finished, m.Steps,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sagaz_sagas_pending", Help: "Sagas waiting to execute in this process."},
			func() float64 { q, _ := stats(); return float64(q) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sagaz_sagas_executing", Help: "Sagas executing in this process."},
			func() float64 { _, r := stats(); return float64(r) }),
	)
	return m
}

// OnStep observes a step attempt (engine.Config.OnStep).
func (m *Engine) OnStep(saga, step string, compensation bool, took time.Duration, err error) {
	kind, outcome := "action", "ok"
	if compensation {
		kind = "compensation"
	}
	if err != nil {
		outcome = "error"
	}
	m.Steps.WithLabelValues(saga, step, kind, outcome).Observe(took.Seconds())
}

// OnFinish counts a finished saga.
func (m *Engine) OnFinish(s *storage.Saga) {
	m.Finished.WithLabelValues(s.Name, s.Status.String()).Inc()
}

// Known creates the sagaz_sagas_finished_total series of these sagas at 0,
// one per terminal status, so rates and alerts have them before the first
// saga ends.
func (m *Engine) Known(sagas []string) {
	for _, name := range sagas {
		for _, st := range storage.Statuses {
			if st.Terminal() {
				m.Finished.WithLabelValues(name, st.String())
			}
		}
	}
}

// CountFunc counts sagas per saga name (e.g. storage.Bolt.CountStatus of
// the failed status over the partitions owned here).
type CountFunc func(ctx context.Context) (map[string]int, error)

var failedDesc = prometheus.NewDesc("sagaz_sagas_failed",
	"Sagas currently failed (a compensation gave up: they wait for an operator), in the partitions this member owns, by saga.",
	[]string{"saga"}, nil)

var parkedDesc = prometheus.NewDesc("sagaz_sagas_parked",
	"Sagas currently parked (no definition this member declares can run them: they wait for a member that has it, or an operator), in the partitions this member owns, by saga.",
	[]string{"saga"}, nil)

// RegisterFailed registers sagaz_sagas_failed{saga}, computed at scrape
// time by count (bounded to 5s; on error the gauge is left out of the
// scrape). sagas are reported at 0 when count finds none.
func RegisterFailed(reg prometheus.Registerer, sagas []string, count CountFunc) {
	reg.MustRegister(&countCollector{desc: failedDesc, sagas: sagas, count: count})
}

// RegisterParked registers sagaz_sagas_parked{saga} like RegisterFailed
// (count: the parked status).
func RegisterParked(reg prometheus.Registerer, sagas []string, count CountFunc) {
	reg.MustRegister(&countCollector{desc: parkedDesc, sagas: sagas, count: count})
}

type countCollector struct {
	desc  *prometheus.Desc
	sagas []string
	count CountFunc
}

func (c *countCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *countCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.count(ctx)
	if err != nil {
		return // absent rather than failing the whole scrape (a closing store)
	}
	for _, s := range c.sagas {
		if _, ok := n[s]; !ok {
			n[s] = 0
		}
	}
	for s, v := range n {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), s)
	}
}

// RegisterBuildInfo registers sagaz_build_info{version,commit,go_version},
// always 1: which build each member runs.
func RegisterBuildInfo(reg prometheus.Registerer, version, commit, goVersion string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sagaz_build_info",
		Help:        "The running build (always 1): version, commit and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "go_version": goVersion}})
	g.Set(1)
	reg.MustRegister(g)
}

// Gatherer serves g with gauges named like counters fixed: a gauge whose
// name ends in "_total" (franz-go's kprom names two of its buffer gauges
// so, sagaz_kafka_buffered_{produce,fetch}_records_total) is served
// without the suffix, since "_total" promises a counter to rate().
func Gatherer(g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := g.Gather()
		renamed := false
		for _, mf := range mfs {
			if mf.GetType() == dto.MetricType_GAUGE && strings.HasSuffix(mf.GetName(), "_total") {
				name := strings.TrimSuffix(mf.GetName(), "_total")
				mf.Name = &name
				renamed = true
			}
		}
		if renamed {
			sort.Slice(mfs, func(i, j int) bool { return mfs[i].GetName() < mfs[j].GetName() })
		}
		return mfs, err
	})
}

var waitingDesc = prometheus.NewDesc("sagaz_sagas_waiting",
	"Sagas waiting, holding no goroutine, for a command's reply, an event, a sleep or a retry back-off, in the partitions this member owns.",
	nil, nil)

// RegisterWaiting registers sagaz_sagas_waiting, counted at scrape time by
// count (bounded to 5s; on error the gauge is left out of the scrape).
func RegisterWaiting(reg prometheus.Registerer, count func(ctx context.Context) (int, error)) {
	reg.MustRegister(&waitingCollector{count: count})
}

type waitingCollector struct {
	count func(ctx context.Context) (int, error)
}

func (c *waitingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- waitingDesc }

func (c *waitingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := c.count(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(n))
	}
}
