package httpapi

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/storage"
)

// counter counts stored sagas per partition, name and status (storage.Bolt).
type counter interface {
	Counts(ctx context.Context) ([]storage.Count, error)
}

// historySize is how many overview samples are kept (at the default
// interval of 5s, 15 minutes).
const historySize = 180

// Overview answers GET /api/overview: the member's state for the console.
type Overview struct {
	At time.Time `json:"at"`
	// Interval is how long this overview is served before it is computed
	// again, in seconds.
	Interval float64 `json:"interval_seconds"`
	Ready    bool    `json:"ready"`
	// NotReady says why /readyz answers 503.
	NotReady string `json:"not_ready,omitempty"`
	// ByStatus and BySaga count the sagas of the partitions this member
	// runs (its own store, not the whole group's).
	ByStatus map[string]int            `json:"by_status"`
	BySaga   map[string]map[string]int `json:"by_saga"`
	// StaleCopies counts sagas kept in this store for partitions another
	// member runs now (left from before a rebalance; not counted above).
	StaleCopies int `json:"stale_copies"`
	// Pending and Executing are the engine's queued and running sagas.
	Pending   int                 `json:"pending_in_process"`
	Executing int                 `json:"executing_in_process"`
	Owned     []storage.Partition `json:"owned_partitions"`
	// Counters are the totals of API.Counters (throughput: the console
	// divides their change between two samples by the time between them).
	Counters   map[string]float64  `json:"counters"`
	Group      *consumer.GroupInfo `json:"group,omitempty"`
	GroupError string              `json:"group_error,omitempty"`
	StoreError string              `json:"store_error,omitempty"`
	// History holds the earlier samples, oldest first.
	History []Sample `json:"history"`
}

// Sample is one point of the overview's history.
type Sample struct {
	At       time.Time          `json:"at"`
	ByStatus map[string]int     `json:"by_status"`
	BySaga   map[string]int     `json:"by_saga"`
	Counters map[string]float64 `json:"counters"`
}

// overviewCache serves one computed overview to every caller for an
// interval; the first caller after it computes the next one while the
// others wait for it.
type overviewCache struct {
	mu      sync.Mutex
	cur     *Overview
	history []Sample
}

func (a *API) getOverview(w http.ResponseWriter, r *http.Request) {
	c := a.overview
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil || time.Since(c.cur.At) >= a.OverviewInterval {
		// Not tied to this caller: the others wait for the same computation.
		ov := a.computeOverview(context.WithoutCancel(r.Context()))
		c.history = append(c.history, Sample{At: ov.At, ByStatus: ov.ByStatus, BySaga: sagaTotals(ov.BySaga), Counters: ov.Counters})
		if len(c.history) > historySize {
			c.history = append(c.history[:0], c.history[len(c.history)-historySize:]...)
		}
		ov.History = append([]Sample(nil), c.history...)
		c.cur = ov
	}
	writeJSON(w, http.StatusOK, c.cur)
}

func (a *API) computeOverview(ctx context.Context) *Overview {
	ov := &Overview{At: time.Now().UTC(), Interval: a.OverviewInterval.Seconds(), Ready: true, ByStatus: map[string]int{},
		BySaga: map[string]map[string]int{}, Counters: map[string]float64{}, Owned: a.Engine.Owned()}
	for _, st := range storage.Statuses {
		ov.ByStatus[st.String()] = 0
	}
	if a.ready != nil {
		if err := a.ready(); err != nil {
			ov.Ready, ov.NotReady = false, err.Error()
		}
	}
	sort.Slice(ov.Owned, func(i, j int) bool {
		x, y := ov.Owned[i], ov.Owned[j]
		return x.Topic < y.Topic || x.Topic == y.Topic && x.Partition < y.Partition
	})
	ov.Pending, ov.Executing = a.Engine.Stats()
	if cs, ok := a.Store.(counter); ok {
		counts, err := cs.Counts(ctx)
		if err != nil {
			ov.StoreError = err.Error()
		}
		for _, c := range counts {
			if !a.Engine.Owns(storage.Position{Topic: c.Partition.Topic, Partition: c.Partition.Partition}) {
				ov.StaleCopies += c.N
				continue
			}
			ov.ByStatus[c.Status.String()] += c.N
			m := ov.BySaga[c.Saga]
			if m == nil {
				m = map[string]int{}
				ov.BySaga[c.Saga] = m
			}
			m[c.Status.String()] += c.N
		}
	}
	for name, col := range a.Counters {
		ov.Counters[name] = sum(col)
	}
	if a.Group != nil {
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		g, err := a.Group(gctx)
		cancel()
		if err != nil {
			ov.GroupError = err.Error()
		} else {
			ov.Group = &g
		}
	}
	return ov
}

func sagaTotals(by map[string]map[string]int) map[string]int {
	out := make(map[string]int, len(by))
	for name, st := range by {
		for _, n := range st {
			out[name] += n
		}
	}
	return out
}

// sum adds up the values of a collector's counters and gauges.
func sum(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() { c.Collect(ch); close(ch) }()
	var total float64
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		switch {
		case d.Counter != nil:
			total += d.Counter.GetValue()
		case d.Gauge != nil:
			total += d.Gauge.GetValue()
		}
	}
	return total
}
