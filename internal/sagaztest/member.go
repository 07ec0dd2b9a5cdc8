// Package sagaztest runs consumer-group members in-process for tests: a
// bbolt store, an engine and a consumer, started together and stopped
// together.
package sagaztest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Member is one consumer-group member.
type Member struct {
	t        testing.TB
	Dir      string
	Store    *storage.Bolt
	Engine   *engine.Engine
	Consumer *consumer.Consumer
	Metrics  *consumer.Metrics
	// Finished counts sagas that reached a terminal status.
	Finished  atomic.Int64
	Changelog *consumer.Changelog
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	runErr    [2]error
}

// Logger discards logs unless SAGAZ_TEST_LOG=1.
func Logger() *slog.Logger {
	if os.Getenv("SAGAZ_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Start starts a member of group on seeds with its store in dir (a new
// temporary directory when empty). mut adjusts the consumer config. The
// member stops at the end of the test.
func Start(t testing.TB, seeds []string, group, dir string, reg *engine.Registry, mut func(*consumer.Config)) *Member {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := &Member{t: t, Dir: dir, Store: st}
	log := Logger()
	m.Metrics = consumer.NewMetrics(nil)
	cfg := consumer.Config{
		Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: group, CreateTopics: true, Logger: log, Metrics: m.Metrics,
		SessionTimeout: 10 * time.Second,
	}
	if mut != nil {
		mut(&cfg)
	}
	m.Changelog, err = consumer.NewChangelog(cfg.Group, cfg.Client, log, m.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Changelog = m.Changelog
	m.Engine, err = engine.New(engine.Config{Store: st, Registry: reg, Logger: log, ShutdownTimeout: 5 * time.Second,
		OnFinish: func(*storage.Saga) { m.Finished.Add(1) }, Partitioned: true, OnRecorded: m.Changelog.Append})
	if err != nil {
		t.Fatal(err)
	}
	m.Consumer, err = consumer.New(m.Engine, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.runErr[0] = m.Engine.Run(ctx) }()
	go func() { defer m.wg.Done(); m.runErr[1] = m.Consumer.Run(ctx) }()
	t.Cleanup(m.Stop)
	return m
}

// Stop stops the member (leaving the group) and closes its store.
func (m *Member) Stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.wg.Wait()
	m.Changelog.Close()
	m.cancel = nil
	for _, err := range m.runErr {
		if err != nil {
			m.t.Errorf("member stopped with: %v", err)
		}
	}
	if err := m.Store.Close(); err != nil {
		m.t.Error(err)
	}
}

// WaitIdle waits (bounded) until the member has no pending or running saga.
func (m *Member) WaitIdle(timeout time.Duration) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := m.Engine.WaitIdle(ctx); err != nil {
		m.t.Fatalf("member not idle after %s", timeout)
	}
}

// Sagas returns every saga recorded in the member's store.
func Sagas(t testing.TB, st storage.Store) []*storage.Saga {
	t.Helper()
	var out []*storage.Saga
	if err := st.Scan(context.Background(), storage.Statuses, func(s *storage.Saga) error { out = append(out, s); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// CheckOrders asserts that every order id in want has exactly one saga of
// saga name across the given stores' sagas, with the wanted status. A saga
// whose partition moved between members is in several stores under one ID:
// its newest version counts. Sagas of orders not in want fail the check
// unless ignoreOthers is set (a broker shared with earlier runs).
func CheckOrders(t testing.TB, name string, want map[string]storage.Status, all []*storage.Saga, ignoreOthers bool) {
	t.Helper()
	newest := map[string]*storage.Saga{}
	for _, s := range all {
		if s.Name != name {
			continue
		}
		if prev, ok := newest[s.ID()]; !ok || s.Version > prev.Version {
			newest[s.ID()] = s
		}
	}
	seen := map[string]*storage.Saga{}
	for _, s := range newest {
		w, ok := want[s.IdempotencyKey]
		if !ok {
			if ignoreOthers {
				continue
			}
			t.Fatalf("saga %s for unknown order %q", s.ID(), s.IdempotencyKey)
		}
		if prev, dup := seen[s.IdempotencyKey]; dup {
			t.Fatalf("two sagas for %s: %s and %s", s.IdempotencyKey, prev.ID(), s.ID())
		}
		seen[s.IdempotencyKey] = s
		if s.Status != w {
			t.Fatalf("saga %s (%s): %s, want %s", s.ID(), s.IdempotencyKey, s.Status, w)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("%d of %d orders have a saga", len(seen), len(want))
	}
}
