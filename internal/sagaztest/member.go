// Package sagaztest runs consumer-group members in-process for tests (the
// member package's members, started with test settings and stopped at the
// end of the test) and the built binary as a process.
package sagaztest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

// Member is one consumer-group member (a member.Member, stopped at the
// end of the test).
type Member struct {
	*member.Member
	t   testing.TB
	Dir string
	// Metrics are the member's consumer metrics.
	Metrics *consumer.Metrics
	// Finished counts sagas that reached a terminal status.
	Finished atomic.Int64
	cancel   context.CancelFunc
	done     chan error
}

// Logger discards logs unless SAGAZ_TEST_LOG=1.
func Logger() *slog.Logger {
	if os.Getenv("SAGAZ_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Start starts a member of group on seeds with its store in dir (a new
// temporary directory when empty). mut adjusts the member's config (its
// Consumer field holds the consumer settings). The member stops at the end
// of the test.
func Start(t testing.TB, seeds []string, group, dir string, reg *engine.Registry, mut func(*consumer.Config)) *Member {
	t.Helper()
	return StartWith(t, seeds, group, dir, reg, func(c *member.Config) {
		if mut != nil {
			mut(&c.Consumer)
		}
	})
}

// StartWith is Start with access to the whole member config.
func StartWith(t testing.TB, seeds []string, group, dir string, reg *engine.Registry, mut func(*member.Config)) *Member {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	m := &Member{t: t, Dir: dir}
	cfg := member.Config{
		DataDir: dir, Registry: reg, Logger: Logger(), ShutdownTimeout: 5 * time.Second,
		OnFinish: func(*storage.Saga) { m.Finished.Add(1) },
		Consumer: consumer.Config{
			Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: group, CreateTopics: true, SessionTimeout: 10 * time.Second,
		},
	}
	if mut != nil {
		mut(&cfg)
	}
	var err error
	if m.Member, err = member.New(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	m.Metrics = m.ConsumerMetrics
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan error, 1)
	go func() { m.done <- m.Run(ctx) }()
	t.Cleanup(m.Stop)
	return m
}

// Stop stops the member (leaving the group) and closes its store.
func (m *Member) Stop() {
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	if err := <-m.done; err != nil {
		m.t.Errorf("member stopped with: %v", err)
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
	if err := OrdersMismatch(name, want, all, ignoreOthers); err != nil {
		t.Fatal(err)
	}
}

// OrdersMismatch is CheckOrders' check: nil when it holds, else what is
// wrong (for a test that waits for it to hold).
func OrdersMismatch(name string, want map[string]storage.Status, all []*storage.Saga, ignoreOthers bool) error {
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
			return fmt.Errorf("saga %s for unknown order %q", s.ID(), s.IdempotencyKey)
		}
		if prev, dup := seen[s.IdempotencyKey]; dup {
			return fmt.Errorf("two sagas for %s: %s and %s", s.IdempotencyKey, prev.ID(), s.ID())
		}
		seen[s.IdempotencyKey] = s
		if s.Status != w {
			return fmt.Errorf("saga %s (%s): %s (version %d), want %s", s.ID(), s.IdempotencyKey, s.Status, s.Version, w)
		}
	}
	if len(seen) != len(want) {
		return fmt.Errorf("%d of %d orders have a saga", len(seen), len(want))
	}
	return nil
}

// StoredSagas reads every saga of the closed stores in the data
// directories dirs (their sagaz.db), and checks each store (storage.Check)
// as an operator's `sagaz store check` would.
func StoredSagas(t testing.TB, dirs ...string) []*storage.Saga {
	t.Helper()
	var all []*storage.Saga
	for _, dir := range dirs {
		path := filepath.Join(dir, "sagaz.db")
		st, err := storage.OpenBolt(path, storage.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, Sagas(t, st)...)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if rep, err := storage.Check(context.Background(), path, 0); err != nil || !rep.OK() {
			t.Fatalf("store %s: %+v %v", path, rep, err)
		}
	}
	return all
}
