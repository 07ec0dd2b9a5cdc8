// Package metrics holds the engine's Prometheus metrics (the consumer's are
// in package consumer): saga outcomes and the pending/executing gauges.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
