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
	Finished atomic.Int64
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	runErr   [2]error
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
	m.Engine, err = engine.New(engine.Config{Store: st, Registry: reg, Logger: log, ShutdownTimeout: 5 * time.Second,
		OnFinish: func(*storage.Saga) { m.Finished.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	m.Metrics = consumer.NewMetrics(nil)
	cfg := consumer.Config{
		Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: group, CreateTopics: true, Logger: log, Metrics: m.Metrics,
		SessionTimeout: 10 * time.Second,
	}
	if mut != nil {
		mut(&cfg)
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
