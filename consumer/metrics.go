package consumer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sagaz-go/sagaz/engine"
)

// Metrics are the consumer's Prometheus metrics.
type Metrics struct {
	RecordsConsumed  *prometheus.CounterVec // by topic
	SagasStarted     *prometheus.CounterVec // by saga
	Deduplicated     *prometheus.CounterVec // by saga: events that matched an existing saga
	Ignored          prometheus.Counter     // events every trigger ignored
	DeadLetters      *prometheus.CounterVec // by reason
	CommitLatency    prometheus.Histogram   // Kafka offset commit
	StoreLatency     prometheus.Histogram   // durable Start of one batch
	RecordLatency    prometheus.Histogram   // event timestamp → saga durably recorded
	CommitErrors     prometheus.Counter     // failed offset commits (retried)
	BatchErrors      prometheus.Counter     // batches rewound and retried
	Paused           prometheus.Gauge       // 1 while fetching is paused by backpressure
	Rebalances       *prometheus.CounterVec // by kind: assigned, revoked, lost
	Partitions       prometheus.Gauge       // partitions owned
	ChangelogRecords prometheus.Counter     // records appended to changelogs
	RestoredRecords  prometheus.Counter     // changelog records read back on assignment
	RestoreSeconds   prometheus.Histogram   // time to restore one partition
	Restoring        prometheus.Gauge       // partitions being restored now
	Expired          prometheus.Counter     // terminal sagas expired after the retention
	StartsForwarded  prometheus.Counter     // keyed sagas' starts produced to the keys topic
	Refused          prometheus.Gauge       // owned partitions not consumed: they hold records of a newer release
	SignalsForwarded prometheus.Counter     // events of awaited topics produced to the keys topic
	RepliesApplied   prometheus.Counter     // replies (and await resumes) that moved their saga on
	RepliesIgnored   *prometheus.CounterVec // by reason: malformed, unknown, late, duplicate
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &Metrics{
		RecordsConsumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_records_consumed_total", Help: "Kafka records consumed, by topic."}, []string{"topic"}),
		SagasStarted:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_sagas_started_total", Help: "Sagas recorded (new), by saga."}, []string{"saga"}),
		Deduplicated:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_events_deduplicated_total", Help: "Events that matched an existing saga (re-delivery or same idempotency key), by saga."}, []string{"saga"}),
		Ignored:         prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_events_ignored_total", Help: "Trigger evaluations that ignored the event."}),
		DeadLetters:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_dead_letters_total", Help: "Records sent to the dead-letter topic, by reason."}, []string{"reason"}),
		CommitLatency:   prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sagaz_offset_commit_seconds", Help: "Latency of Kafka offset commits.", Buckets: buckets}),
		StoreLatency:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sagaz_batch_record_seconds", Help: "Latency of recording one poll batch durably.", Buckets: buckets}),
		RecordLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sagaz_event_record_latency_seconds",
			Help:    "From the event's record timestamp (produce time) to its saga durably recorded.",
			Buckets: []float64{.0005, .001, .002, .003, .004, .005, .006, .008, .01, .0125, .015, .0175, .02, .0225, .025, .03, .04, .05, .075, .1, .15, .2, .3, .5, 1, 2, 5, 10, 30, 60}}),
		CommitErrors:     prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_offset_commit_errors_total", Help: "Failed offset commits (retried with the next commit)."}),
		BatchErrors:      prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_batch_errors_total", Help: "Poll batches that could not be handled and were rewound."}),
		Paused:           prometheus.NewGauge(prometheus.GaugeOpts{Name: "sagaz_consumer_paused", Help: "1 while fetching is paused because too many sagas are pending."}),
		Rebalances:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_rebalance_events_total", Help: "Partition assignment changes, by kind."}, []string{"kind"}),
		Partitions:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "sagaz_partitions_owned", Help: "Partitions this member owns."}),
		ChangelogRecords: prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_changelog_records_total", Help: "State changes appended to the changelog topics."}),
		RestoredRecords:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_changelog_restored_records_total", Help: "Changelog records read back when partitions were assigned."}),
		RestoreSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sagaz_changelog_restore_seconds", Help: "Time to restore one assigned partition from its changelog.",
			Buckets: []float64{.001, .01, .1, .5, 1, 2, 5, 10, 30, 60, 120, 300}}),
		Restoring: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sagaz_changelog_restoring_partitions", Help: "Partitions being restored from their changelog now."}),
		Expired:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_sagas_expired_total", Help: "Terminal sagas deleted (with a changelog tombstone) after the retention."}),
		StartsForwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_keyed_starts_forwarded_total",
			Help: "Starts of keyed sagas produced to the keys topic (the partition that owns the key records them)."}),
		Refused: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sagaz_partitions_refused",
			Help: "Assigned partitions this member does not consume because their changelog or store holds records of a newer release (see /readyz, condition incompatible)."}),
		SignalsForwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_signals_forwarded_total",
			Help: "Events of awaited topics produced to the keys topic, where await steps are correlated."}),
		RepliesApplied: prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_replies_applied_total",
			Help: "Replies to commands, and events of await steps, that moved their saga on."}),
		RepliesIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_replies_ignored_total",
			Help: "Replies ignored, by reason: malformed, unknown (no such saga), late (for an attempt that timed out), duplicate (the saga does not wait for it)."}, []string{"reason"}),
	}
	for _, r := range []string{engine.IgnoreMalformed, engine.IgnoreUnknown, engine.IgnoreLate, engine.IgnoreDuplicate} {
		m.RepliesIgnored.WithLabelValues(r)
	}
	// Labelled counters exist from the start, at 0, for every label value
	// known in advance: a rate() or an alert needs the series before the
	// first increment.
	for _, r := range DeadLetterReasons {
		m.DeadLetters.WithLabelValues(r)
	}
	for _, k := range []string{"assigned", "revoked", "lost"} {
		m.Rebalances.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(m.RecordsConsumed, m.SagasStarted, m.Deduplicated, m.Ignored, m.DeadLetters, m.CommitLatency,
			m.StoreLatency, m.RecordLatency, m.CommitErrors, m.BatchErrors, m.Paused, m.Rebalances, m.Partitions,
			m.ChangelogRecords, m.RestoredRecords, m.RestoreSeconds, m.Restoring, m.Expired, m.StartsForwarded, m.Refused,
			m.SignalsForwarded, m.RepliesApplied, m.RepliesIgnored)
	}
	return m
}

// known creates the per-topic and per-saga series of a member's routes at 0.
func (m *Metrics) known(routes *engine.Routes, topics []string) {
	for _, t := range topics {
		m.RecordsConsumed.WithLabelValues(t)
	}
	for _, name := range routes.SagaNames() {
		m.SagasStarted.WithLabelValues(name)
		m.Deduplicated.WithLabelValues(name)
	}
}
