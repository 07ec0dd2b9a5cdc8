package member_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

func registry() *engine.Registry {
	reg := engine.NewRegistry()
	reg.Register(sagas.Order)
	return reg
}

func config(dir string, seeds []string) member.Config {
	return member.Config{DataDir: dir, Registry: registry(), Logger: slog.New(slog.DiscardHandler), HTTPAddr: "127.0.0.1:0",
		Consumer: consumer.Config{Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: "member-test", CreateTopics: true, SessionTimeout: 10 * time.Second}}
}

// A member runs a saga end to end, reports ready over HTTP, and on stop
// mirrors its sagas' last state into the changelog before it closes the
// store: a new member with an empty data directory restores the finished
// saga from the changelog alone.
func TestMemberRunsAndStopsInOrder(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, sagas.OrderTopic))
	seeds := c.ListenAddrs()
	m, err := member.New(context.Background(), config(t.TempDir(), seeds))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	kafkatest.WaitFor(t, 30*time.Second, "/readyz to answer 200", func() bool {
		resp, err := http.Get("http://" + m.HTTP.Addr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	kafkatest.Produce(t, kafkatest.Client(t, seeds), &kgo.Record{Topic: sagas.OrderTopic, Key: []byte("o-1"), Value: []byte(`{"order_id":"o-1"}`)})
	var id string
	kafkatest.WaitFor(t, 30*time.Second, "the order saga to complete", func() bool {
		page, err := m.Store.List(context.Background(), storage.Query{Status: storage.StatusCompleted})
		if err != nil || len(page.Sagas) != 1 {
			return false
		}
		id = page.Sagas[0].ID()
		return true
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := m.Store.Get(context.Background(), id); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("store after Run returned: %v, want ErrClosed", err)
	}
	if err := m.Run(context.Background()); err == nil {
		t.Fatal("a second Run was accepted")
	}

	// A fresh member (empty data directory) in the same group restores the
	// completed saga from the changelog.
	m2, err := member.New(context.Background(), config(t.TempDir(), seeds))
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- m2.Run(ctx2) }()
	defer func() { cancel2(); <-done2 }()
	kafkatest.WaitFor(t, 30*time.Second, "the saga restored from the changelog", func() bool {
		s, err := m2.Store.Get(context.Background(), id)
		return err == nil && s.Status == storage.StatusCompleted
	})
}

// A member that fails to assemble releases what it opened: the data
// directory can be used again at once (the store's file lock is free).
func TestNewReleasesWhatItOpenedOnError(t *testing.T) {
	dir := t.TempDir()
	bad := config(dir, []string{"127.0.0.1:1"})
	bad.HTTPAddr = "not an address"
	if _, err := member.New(context.Background(), bad); err == nil {
		t.Fatal("New accepted a bad HTTP address")
	}
	good := config(dir, []string{"127.0.0.1:1"})
	good.Store.LockTimeout = 100 * time.Millisecond
	m, err := member.New(context.Background(), good)
	if err != nil {
		t.Fatalf("the data directory stayed locked: %v", err)
	}
	m.Close()
	m.Close() // idempotent
}

// A member whose store file was damaged while it was down starts anyway:
// the file is moved aside (kept), and the member's sagas come back from the
// changelog. A record damaged while the member runs stops the member (Run
// returns the damage); the next start recovers the same way.
func TestDamagedStoreIsRebuiltFromTheChangelog(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, sagas.OrderTopic))
	seeds := c.ListenAddrs()
	dir := t.TempDir()
	run := func() (*member.Member, context.CancelFunc, chan error) {
		m, err := member.New(context.Background(), config(dir, seeds))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		return m, cancel, done
	}
	m, cancel, done := run()
	var recs []*kgo.Record
	for i := range 200 {
		id := fmt.Sprintf("needle-%06d", i)
		recs = append(recs, &kgo.Record{Topic: sagas.OrderTopic, Key: []byte(id), Value: []byte(`{"order_id":"` + id + `"}`)})
	}
	kafkatest.Produce(t, kafkatest.Client(t, seeds), recs...)
	completed := func(m *member.Member) int {
		n := 0
		_ = m.Store.Scan(context.Background(), []storage.Status{storage.StatusCompleted}, func(*storage.Saga) error { n++; return nil })
		return n
	}
	kafkatest.WaitFor(t, 60*time.Second, "200 completed sagas", func() bool { return completed(m) == 200 })
	// The store writer's counters (sagaz_store_*): 200 sagas of 3 steps
	// took at least 600 writes (one as each step ends; starts are batched),
	// fewer commits, some time and pages.
	writes, commits := value(t, m, "sagaz_store_writes_total"), value(t, m, "sagaz_store_commits_total")
	if writes < 600 || commits < 1 || commits > writes {
		t.Errorf("sagaz_store_writes_total = %v, sagaz_store_commits_total = %v: want at least 600 writes in at most as many commits", writes, commits)
	}
	if busy, pages := value(t, m, "sagaz_store_writer_busy_seconds_total"), value(t, m, "sagaz_store_page_bytes_total"); busy <= 0 || pages < 4096 {
		t.Errorf("sagaz_store_writer_busy_seconds_total = %v, sagaz_store_page_bytes_total = %v: want both counted", busy, pages)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Damage the pages while the member is down.
	path := member.StorePath(dir)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2 * os.Getpagesize(); i < len(raw); i++ { // every page but the two meta pages
		raw[i] ^= 0x5a
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	m, cancel, done = run()
	kafkatest.WaitFor(t, 60*time.Second, "the sagas restored from the changelog", func() bool { return completed(m) == 200 })
	if moved, _ := filepath.Glob(path + ".damaged-*"); len(moved) != 1 {
		t.Fatalf("damaged files kept: %v", moved)
	}
	if got := testutil.ToFloat64(counter(t, m, "sagaz_store_damage_total", "open")); got != 1 {
		t.Fatalf("sagaz_store_damage_total{when=open} = %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Damage one record's bytes (the pages stay consistent); reading it
	// stops the member.
	raw, err = os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	needle := []byte(`{"order_id":"needle-000007"`)
	if bytes.Count(raw, needle) == 0 {
		t.Fatal("record not found in the file")
	}
	for i := bytes.Index(raw, needle); i >= 0; i = bytes.Index(raw, needle) { // every copy: old ones sit in free pages
		raw[i+len(`{"order_id":"needle-0000`)] = '9'
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read the damaged saga before the member runs (a partition restored
	// from the changelog could replace the record meanwhile).
	m, err = member.New(context.Background(), config(dir, seeds))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Store.Get(context.Background(), storage.FormatKeyedID("order", "needle-000007")); !errors.Is(err, storage.ErrDamaged) {
		t.Fatalf("reading the damaged saga: %v, want ErrDamaged", err)
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	done = make(chan error, 1)
	go func() { done <- m.Run(ctx3) }()
	select {
	case err := <-done:
		if !errors.Is(err, storage.ErrDamaged) {
			t.Fatalf("Run returned %v, want the damage", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a member whose store served a damaged record kept running")
	}
	m, cancel, done = run()
	defer func() { cancel(); <-done }()
	kafkatest.WaitFor(t, 60*time.Second, "the sagas restored again", func() bool { return completed(m) == 200 })
}

// value is the value of an unlabelled counter or gauge of m's registry.
func value(t *testing.T, m *member.Member, name string) float64 {
	t.Helper()
	mfs, err := m.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			mt := mf.GetMetric()[0]
			if c := mt.GetCounter(); c != nil {
				return c.GetValue()
			}
			return mt.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func counter(t *testing.T, m *member.Member, name, when string) prometheus.Collector {
	t.Helper()
	mfs, err := m.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "when" && l.GetValue() == when {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return mt.GetCounter().GetValue() })
				}
			}
		}
	}
	t.Fatalf("metric %s{when=%s} not found", name, when)
	return nil
}
