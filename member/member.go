// Package member assembles one member of a Sagaz consumer group from a
// Config: the bbolt store, the changelog, the engine, the Kafka consumer,
// the cron scheduler and the HTTP server. New builds them wired to each
// other; Run runs them and, when its context ends, stops and closes them in
// the order the commit protocol needs. The binary, the benchmark harness
// and the tests all build their members here, so the ordering rules live in
// one place:
//
//   - the engine mirrors every durable write into the changelog (the engine
//     is built with it, and the consumer takes it from the engine: a member
//     that would skip the changelog cannot be built);
//   - the changelog is closed after the consumer and the engine have
//     stopped (their last writes and the consumer's final commit are
//     mirrored first);
//   - the store is closed last.
package member

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"golang.org/x/sync/errgroup"

	"github.com/sagaz-go/sagaz/console"
	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/deadletter"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/metrics"
	"github.com/sagaz-go/sagaz/roster"
	"github.com/sagaz-go/sagaz/storage"
)

// Config configures a member. Zero values take the documented defaults.
type Config struct {
	// DataDir holds the member's store (sagaz.db). Required. One data
	// directory belongs to one process at a time.
	DataDir string
	// Store tunes the bbolt store.
	Store storage.BoltOptions
	// Registry holds the sagas (default engine.DefaultRegistry()).
	Registry *engine.Registry
	// Consumer configures the group member: Client (the Kafka connection
	// options: seed brokers, TLS, SASL) is required; Group defaults to
	// "sagaz". New sets its Logger and Metrics.
	Consumer consumer.Config
	// MaxInFlight bounds the sagas executing at once (default 1024).
	MaxInFlight int
	// ShutdownTimeout is how long running steps get to finish when Run's
	// context ends (default 10s).
	ShutdownTimeout time.Duration
	// LogCompleted logs completed sagas at info (default: debug; see
	// engine.Config.LogCompleted).
	LogCompleted bool
	// OnFinish, if set, is called after a saga reaches a terminal status and
	// that status is recorded (besides the metrics).
	OnFinish func(*storage.Saga)
	// NoScheduler leaves the cron scheduler out: the member still consumes
	// the cron topic (runs the sagas of ticks published there) but
	// publishes no ticks itself. For tests that drive a cron.Scheduler of
	// their own, whose clock they set.
	NoScheduler bool
	// HTTPAddr is the HTTP server's address ("" disables it): /healthz,
	// /readyz, /metrics, and the API when API is set.
	HTTPAddr string
	// API, if set, serves the admin API, webhooks and manual firing, and
	// the operator console at /ui/. New fills in what it assembles (Engine,
	// Store, Producer, Owner, Schedules, EventsTopic, CronTopic, and the
	// console's Group, DeadLetters and Counters); the caller sets the rest
	// (tokens, secrets, limits).
	API *httpapi.API
	// Auth guards the HTTP server's /api routes and /metrics (tokens, or
	// the loopback checks).
	Auth httpapi.Auth
	// AdvertiseURL is where the other members (and clients) reach this
	// member's HTTP server (default http://<the address it listens on>).
	// Members publish it to the "<group>-members" topic so that any member
	// answers for the whole group. MemberKey identifies this member there
	// across restarts (default: the static group instance id, or an id kept
	// in the data directory).
	AdvertiseURL, MemberKey string
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Metrics receives the member's Prometheus metrics (default: a new
	// registry, served at /metrics).
	Metrics *prometheus.Registry
	// KafkaMetrics adds franz-go's client metrics (sagaz_kafka_*) of the
	// group member's client to Metrics.
	KafkaMetrics bool
}

// Member is one assembled group member. Its parts are exposed for
// inspection (tests, benchmarks); Run owns their lifecycle.
type Member struct {
	Store     *storage.Bolt
	Changelog *consumer.Changelog
	Engine    *engine.Engine
	Consumer  *consumer.Consumer
	Scheduler *cron.Scheduler // nil without cron triggers
	Roster    *roster.Roster  // nil without the HTTP API
	HTTP      *httpapi.Server // nil without HTTPAddr
	// Metrics is the registry the member's metrics are registered on;
	// ConsumerMetrics the consumer's own.
	Metrics         *prometheus.Registry
	ConsumerMetrics *consumer.Metrics
	// Health holds the conditions that keep the member from being ready
	// (/readyz, sagaz_not_ready{condition}).
	Health *health.Conditions

	cfg     Config
	log     *slog.Logger
	damaged chan error // the store found damage while running

	peerMu   sync.Mutex // guards the peer cache
	peerList []httpapi.Peer
	peerAt   time.Time
	closers  []func() // in reverse order of creation; run once by Close
	closed   bool
	ran      bool
}

// StorePath is where a member with this data directory keeps its store.
func StorePath(dataDir string) string { return filepath.Join(dataDir, "sagaz.db") }

// New assembles a member: it opens the store, creates the changelog
// writer, the engine (mirroring into the changelog), the consumer, the cron
// scheduler when a saga has cron triggers (ensuring the cron topic exists),
// and the HTTP server (listening already, so a busy port is reported here).
// Nothing runs until Run. On error everything opened is closed again.
func New(ctx context.Context, cfg Config) (m *Member, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("member: Config.DataDir is required")
	}
	if cfg.Registry == nil {
		cfg.Registry = engine.DefaultRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Consumer.Group == "" {
		cfg.Consumer.Group = "sagaz"
	}
	routes, err := cfg.Registry.Routes()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	m = &Member{cfg: cfg, log: log, Metrics: cfg.Metrics}
	defer func() {
		if err != nil {
			m.Close()
			m = nil
		}
	}()
	kopts := cfg.Consumer.Client

	// A damaged store is moved aside (kept for inspection) and replaced by
	// an empty one: the partitions this member gets are restored from their
	// changelog like those of a new member. Damage found while running
	// stops the member (Run returns it) so that the next start does this.
	m.damaged = make(chan error, 1)
	damage := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sagaz_store_damage_total",
		Help: "Damage found in the saga store: when=open (the file was moved aside and replaced) or running (the member stopped)."}, []string{"when"})
	damage.WithLabelValues("open")
	damage.WithLabelValues("running")
	cfg.Metrics.MustRegister(damage)
	sopts := cfg.Store
	sopts.OnDamage = func(err error) {
		damage.WithLabelValues("running").Inc()
		m.damaged <- err
	}
	var rec *storage.Recovery
	if m.Store, rec, err = storage.OpenOrRecover(StorePath(cfg.DataDir), sopts); err != nil {
		return m, err
	}
	if rec != nil {
		damage.WithLabelValues("open").Inc()
		log.Error("the saga store was damaged: moved aside, kept for inspection, and replaced by an empty store; assigned partitions are restored from their changelog",
			"moved_to", rec.MovedTo, "cause", rec.Cause)
	}
	if mg := m.Store.Migration(); mg != nil {
		log.Warn("the saga store was upgraded to this release's schema; the file as it was is kept (delete it once the member runs well)",
			"from_schema", mg.From, "to_schema", mg.To, "copy", mg.Backup, "took", mg.Took.Round(time.Millisecond))
	}
	m.onClose(func() {
		if err := m.Store.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	})
	registerWriterStats(cfg.Metrics, m.Store)
	m.Health = health.New(cfg.Metrics)
	m.Health.Set(health.Recovering, "queueing the unfinished sagas found in the store")
	m.ConsumerMetrics = consumer.NewMetrics(cfg.Metrics)
	if m.Changelog, err = consumer.NewChangelog(cfg.Consumer.Group, kopts, log, m.ConsumerMetrics); err != nil {
		return m, err
	}
	m.onClose(m.Changelog.Close)

	// Command and await steps: their records go out through the sender,
	// their replies come back on the replies topic of the saga's topic.
	cc := cfg.Consumer.Defaults()
	var sender engine.Sender
	if len(routes.TalkingRoutes()) > 0 {
		s, err := consumer.NewSender(kopts, log)
		if err != nil {
			return m, err
		}
		m.onClose(s.Close)
		sender = s
	}

	em := metrics.NewEngine(cfg.Metrics, func() (int, int) { return m.Engine.Stats() })
	onFinish := em.OnFinish
	if f := cfg.OnFinish; f != nil {
		onFinish = func(s *storage.Saga) { em.OnFinish(s); f(s) }
	}
	if m.Engine, err = engine.New(engine.Config{Store: m.Store, Registry: cfg.Registry, Logger: log,
		MaxInFlight: cfg.MaxInFlight, ShutdownTimeout: cfg.ShutdownTimeout, Health: m.Health,
		OnFinish: onFinish, OnStep: em.OnStep, Changelog: m.Changelog, LogCompleted: cfg.LogCompleted,
		Sender: sender, ReplyTopic: consumer.ReplyTopics(routes, cc), KeysTopic: cc.KeysTopic,
		OutboxStallTimeout: cfg.Consumer.StallTimeout}); err != nil {
		return m, err
	}
	// Series known in advance exist at 0; failed sagas are counted from the
	// store's status index at scrape time, over the partitions owned here.
	em.Known(routes.SagaNames())
	countOwned := func(st storage.Status) metrics.CountFunc {
		return func(ctx context.Context) (map[string]int, error) {
			return m.Store.CountStatus(ctx, st, func(p storage.Partition) bool {
				return m.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition})
			})
		}
	}
	metrics.RegisterFailed(cfg.Metrics, routes.SagaNames(), countOwned(storage.StatusFailed))
	metrics.RegisterParked(cfg.Metrics, routes.SagaNames(), countOwned(storage.StatusParked))

	metrics.RegisterWaiting(cfg.Metrics, func(ctx context.Context) (int, error) {
		return m.Store.CountWaiting(ctx, func(p storage.Partition) bool {
			return m.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition})
		})
	})

	ccfg := cfg.Consumer
	ccfg.Logger, ccfg.Metrics, ccfg.Health = log, m.ConsumerMetrics, m.Health
	if cfg.KafkaMetrics {
		ccfg.GroupClientOpts = append(append([]kgo.Opt(nil), ccfg.GroupClientOpts...),
			kgo.WithHooks(kprom.NewMetrics("sagaz_kafka", kprom.Registerer(cfg.Metrics))))
	}
	if m.Consumer, err = consumer.New(m.Engine, m.Store, ccfg); err != nil {
		return m, err
	}
	cfg.Metrics.MustRegister(m.Consumer.LagCollector())

	// Schedules: ticks published to the cron topic by the owner of each
	// schedule's partition (placed once the consumer has found or created
	// the cron topic).
	if hasCron(routes) && !cfg.NoScheduler {
		cc := m.Consumer.Config()
		producer, err := kgo.NewClient(append(append([]kgo.Opt(nil), kopts...), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
		if err != nil {
			return m, err
		}
		m.onClose(producer.Close)
		if m.Scheduler, err = cron.New(cron.Config{Routes: routes, Topic: cc.CronTopic, Producer: producer, Store: m.Store,
			AwaitPartitions: func(ctx context.Context) (int32, error) { return m.Consumer.PartitionCount(ctx, cc.CronTopic) },
			Owns: func(p storage.Partition) bool {
				return m.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition})
			}, Mirror: m.Changelog.AppendMeta, WhileOwned: m.Consumer.WhileOwned, Logger: log}); err != nil {
			return m, err
		}
	}

	if cfg.HTTPAddr != "" {
		api := cfg.API
		if api != nil {
			producer, err := kgo.NewClient(kopts...) // acks=all, idempotent: a 202 means durable in Kafka
			if err != nil {
				return m, err
			}
			m.onClose(producer.Close)
			api.Engine, api.Store, api.Producer, api.Owner = m.Engine, m.Store, producer, m.Consumer.Owner
			api.KeyPartition = m.Consumer.KeyPartition
			cc := m.Consumer.Config()
			api.EventsTopic, api.CronTopic, api.Schedules = cc.EventsTopic, cc.CronTopic, m.Scheduler
			// The console's sources: the group, the dead letters, throughput.
			api.Group = m.Consumer.Describe
			if api.DeadLetters, err = deadletter.New(deadletter.Config{Client: kopts, Topic: cc.DeadLetterTopic}); err != nil {
				return m, err
			}
			api.Counters = map[string]prometheus.Collector{"started": m.ConsumerMetrics.SagasStarted, "finished": em.Finished}
		}
		var ui http.Handler
		if api != nil {
			ui = console.Handler()
		}
		if m.HTTP, err = httpapi.New(httpapi.Config{Addr: cfg.HTTPAddr, Gatherer: metrics.Gatherer(cfg.Metrics), Logger: log, API: api, Auth: cfg.Auth, UI: ui, Ready: m.Ready}); err != nil {
			return m, fmt.Errorf("http server: %w", err)
		}
		m.onClose(func() { _ = m.HTTP.Close() })
		if api != nil { // any member answers for the group: tell the others where this one is
			if err := m.joinRoster(cfg, api); err != nil {
				return m, err
			}
		}
	}
	return m, nil
}

func (m *Member) onClose(f func()) { m.closers = append(m.closers, f) }

func hasCron(routes *engine.Routes) bool {
	for _, r := range routes.All() {
		if r.Trigger.Source() == engine.SourceCron {
			return true
		}
	}
	return false
}

// Ready returns nil once the member is ready, or a *health.NotReady naming
// every condition that keeps it from being ready: recovering unfinished
// sagas, waiting for brokers or topics, joining the group, restoring
// partitions, a store that cannot be written, a partition that makes no
// progress, a damaged store.
func (m *Member) Ready() error { return m.Health.Err() }

// Run runs the member until ctx ends or a part fails: the engine, the
// consumer, the scheduler and the HTTP server. Then it stops them — the
// consumer finishes and commits the batch in hand and leaves the group,
// running steps get ShutdownTimeout — and closes the changelog, the
// producers and the store, in that order. Run may be called once; the
// member is closed when it returns.
func (m *Member) Run(ctx context.Context) error {
	if m.ran || m.closed {
		return errors.New("member: Run called twice or after Close")
	}
	m.ran = true
	defer m.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-m.Engine.Ready():
			m.Health.Clear(health.Recovering)
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error {
		select {
		case err := <-m.damaged:
			m.Health.Set(health.Damaged, err.Error())
			return fmt.Errorf("member: stopping: %w (the next start moves the store aside and restores its partitions from the changelog)", err)
		case <-gctx.Done():
			return nil
		}
	})
	g.Go(func() error { return m.Engine.Run(gctx) })
	g.Go(func() error { return m.Consumer.Run(gctx) })
	if m.HTTP != nil {
		g.Go(func() error { return m.HTTP.Run(gctx) })
	}
	if m.Scheduler != nil {
		g.Go(func() error { return m.Scheduler.Run(gctx) })
	}
	if m.Roster != nil {
		g.Go(func() error {
			select { // the members topic is among the consumer's topics
			case <-m.Consumer.TopicsReady():
			case <-gctx.Done():
				return nil
			}
			return m.Roster.Run(gctx)
		})
	}
	return g.Wait()
}

// Close releases what New opened: the changelog (its pending records are
// written, bounded), the producers, then the store. Run calls it when it
// returns; call it yourself only for a member that never ran. It is
// idempotent.
func (m *Member) Close() {
	if m.closed {
		return
	}
	m.closed = true
	for i := len(m.closers) - 1; i >= 0; i-- {
		m.closers[i]()
	}
}

// joinRoster creates the roster that publishes this member's advertised
// URL, and points the API at the group's members.
func (m *Member) joinRoster(cfg Config, api *httpapi.API) error {
	adv := cfg.AdvertiseURL
	if adv == "" {
		adv = "http://" + m.HTTP.Addr()
	}
	key := cfg.MemberKey
	if key == "" {
		key = m.Consumer.Config().InstanceID
	}
	if key == "" {
		var err error
		if key, err = memberKey(cfg.DataDir); err != nil {
			return err
		}
	}
	cc := m.Consumer.Config()
	var err error
	if m.Roster, err = roster.New(roster.Config{Client: cc.Client, Topic: consumer.MembersTopic(cc.Group),
		Self: roster.Entry{Key: key, URL: adv}, MemberID: m.Consumer.MemberID, Logger: m.log}); err != nil {
		return err
	}
	if len(cfg.Auth.AdminTokens) > 0 {
		api.PeerToken = cfg.Auth.AdminTokens[0] // the group shares its tokens
	}
	api.Peers = m.peers
	return nil
}

// peers lists the group's members for the API: the group's assignment,
// each member's advertised URL from the roster. The answer is cached for
// half a second (a listing asks once, a console polls).
func (m *Member) peers(ctx context.Context) ([]httpapi.Peer, error) {
	m.peerMu.Lock()
	defer m.peerMu.Unlock()
	if time.Since(m.peerAt) < 500*time.Millisecond && m.peerList != nil {
		return m.peerList, nil
	}
	assigned, err := m.Consumer.Assignment(ctx)
	if err != nil {
		return nil, err
	}
	self := m.Consumer.MemberID()
	out := make([]httpapi.Peer, 0, len(assigned))
	for id, ps := range assigned {
		p := httpapi.Peer{MemberID: id, Partitions: ps, Self: id == self}
		p.URL, _ = m.Roster.URLOf(id)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MemberID < out[j].MemberID })
	m.peerList, m.peerAt = out, time.Now()
	return out, nil
}

// memberKey returns the id this member publishes its URL under, kept in
// the data directory so a restart replaces its old entry.
func memberKey(dir string) (string, error) {
	path := filepath.Join(dir, "member-id")
	if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := "m-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("member: keeping the member id in %s: %w", dir, err)
	}
	return id, nil
}

// registerWriterStats serves the store writer's counts (storage.WriterStats)
// as counters read at scrape time.
func registerWriterStats(reg prometheus.Registerer, st *storage.Bolt) {
	counter := func(name, help string, v func(storage.WriterStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return v(st.WriterStats()) })
	}
	reg.MustRegister(
		counter("sagaz_store_commits_total", "Write transactions the store's writer committed (each fsyncs twice).",
			func(w storage.WriterStats) float64 { return float64(w.Commits) }),
		counter("sagaz_store_writes_total", "Writes (a poll batch's starts, a saga's transition, a restore's call) the store committed; writes queued during a transaction share the next one.",
			func(w storage.WriterStats) float64 { return float64(w.Writes) }),
		counter("sagaz_store_writer_busy_seconds_total", "Time the store's writer spent in transactions, fsync and the one running now included; divided by the commits, the time a commit takes (under load its rate is near 1: the writer starts a transaction as soon as a write is queued).",
			func(w storage.WriterStats) float64 { return w.Busy.Seconds() }),
		counter("sagaz_store_page_bytes_total", "Bytes of pages the store's write transactions wrote (bbolt's dirty pages).",
			func(w storage.WriterStats) float64 { return float64(w.PageBytes) }),
	)
}
