// Package engine runs sagas: the declarations (Saga, Step, Trigger), the
// registry sagas join in init(), the routing of events to triggers, and the
// executor that carries every recorded saga to an end — completed, or
// compensated step by step — across crashes.
//
// The engine never holds a saga only in memory: Start records new sagas
// durably (one storage transaction per batch) before they run, every step
// result is recorded before the next step starts, and Run resumes every
// unfinished saga it finds in the store.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/logx"
	"github.com/sagaz-go/sagaz/storage"
)

// Config configures an Engine.
type Config struct {
	// Store records sagas. Required.
	Store storage.Store
	// Registry holds the saga declarations (default: DefaultRegistry()).
	Registry *Registry
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// Clock (default SystemClock).
	Clock Clock
	// MaxInFlight bounds the sagas executing at once in this process, over
	// all triggers (default 1024). The rest wait as pending.
	MaxInFlight int
	// ShutdownTimeout is how long running steps get to finish when Run's
	// context ends; then their contexts are cancelled (default 10s).
	ShutdownTimeout time.Duration
	// OnFinish, if set, is called after a saga reaches a terminal status and
	// that status is recorded.
	OnFinish func(*storage.Saga)
	// OnStep, if set, is called after every attempt of a step's action or
	// compensation with its duration and error (metrics).
	OnStep func(saga, step string, compensation bool, took time.Duration, err error)
	// MaxContextBytes bounds a saga's context (default
	// DefaultMaxContextBytes).
	MaxContextBytes int
	// Health, if set, hears of store faults: the "store" condition is set
	// while recording a saga's state fails, and cleared when it works again.
	Health health.Reporter
	// Changelog makes the engine a member of a consumer group: every durable
	// write of a Kafka partition's saga is mirrored into it, and sagas of
	// Kafka partitions run only while their partition is owned (Acquire /
	// Release, driven by the group); Run then recovers only the local
	// partitions of Fire. Without it every stored saga runs (single-process
	// library use). The consumer package's Changelog is the implementation.
	Changelog Changelog
	// LogCompleted logs completed sagas at info (default: debug). Sagas that
	// start are logged at debug, rolled back at info, failed at warn; each
	// line carries the saga id, saga, trigger, idempotency key and error.
	LogCompleted bool
	// LogLimit bounds those lines per outcome (default 10 a second, bursts
	// of 100); dropped lines are counted and the count logged.
	LogLimit RateLimit
	// Sender produces the records of command and await steps (a group
	// member's is consumer.Sender). Without one those steps fail for good
	// (ErrNoTransport).
	Sender Sender
	// ReplyTopic names the topic replies to the sagas of a topic come back
	// on (a group member's: consumer.ReplyTopic); "" when there is none.
	ReplyTopic func(topic string) string
	// KeysTopic is where await steps register and events are correlated
	// (the consumer's keys topic).
	KeysTopic string
	// DurableDelay: a retry back-off of at least this long is recorded as a
	// durable wait (the saga's goroutine returns; a timer resumes it)
	// instead of slept (default 1s; negative: never, every back-off is
	// slept). Back-offs of command and await steps are always durable.
	DurableDelay time.Duration
	// SignalWindow is how long an event of an awaited topic is kept for
	// await steps that start waiting after it arrived (default
	// DefaultSignalWindow).
	SignalWindow time.Duration
	// OutboxStallTimeout: while producing an outbox record (a command, an
	// await registration or resume) has kept failing for this long, the
	// "outbox" condition is set on Health, naming the topic, the time it
	// began and the error; it is cleared once the records are produced (or
	// dropped, or their partition is no longer owned here). Default 60s,
	// the consumer's StallTimeout.
	OutboxStallTimeout time.Duration
}

// Changelog mirrors the state of a group member's partitions so that it
// follows a partition to its next owner (consumer.Changelog implements it).
type Changelog interface {
	// Append mirrors a saga's durable state. It is called synchronously
	// after each durable write of a Kafka partition's saga (its start and
	// every transition); it must not block nor keep s.
	Append(s *storage.Saga)
	// Next returns the changelog offset after the last acknowledged record
	// of partition p: every change below it is reflected in the store.
	Next(p storage.Partition) int64
	// AppendMeta mirrors a meta record of a partition (storage.PutMeta,
	// storage.Meta; nil value: deleted), as Append does a saga.
	AppendMeta(p storage.Partition, key string, value []byte)
}

// Engine routes events to triggers, records sagas and executes them.
type Engine struct {
	store    storage.Store
	routes   *Routes
	log      *slog.Logger
	clock    Clock
	maxIn    int
	shutdown time.Duration
	onFinish func(*storage.Saga)
	mirror   Changelog // nil: not a group member
	topo     Topology  // the group's topics (limits.go), guarded by mu
	maxCtx   int
	health   health.Reporter
	storeBad atomic.Bool        // a write of a saga's state is failing
	errLog   *health.LogLimiter // repeated store errors are logged at a bounded rate
	onStep   func(saga, step string, compensation bool, took time.Duration, err error)
	parted   bool
	// lifecycle logs: bounded per outcome
	outcomes     *logx.Limiter
	logCompleted bool

	// local positions for in-process Fire, one counter per source
	local map[Source]*atomic.Int64

	mu      sync.Mutex
	lanes   map[string]*lane
	order   []*lane // round-robin order
	rr      int
	running int
	queued  int
	state   int // stateNew, stateRunning, stateStopping
	idle    chan struct{}
	busy    bool // idle is open
	parts   map[storage.Partition]*partState
	leaving map[storage.Partition]*partState // being released: their last writes still count
	active  map[sagaRef]*atomic.Bool         // sagas taken from their lane and running -> cancel requested
	always  *partState                       // local partitions, and every partition when not partitioned
	wg      sync.WaitGroup

	// cancelNotes are the history entries of cancels of running sagas, by
	// the run's cancel flag, recorded when the executor acts on them
	// (guarded by mu).
	cancelNotes map[*atomic.Bool][]storage.HistoryEntry
	// opMu serialises operator actions (retry, resolve, cancel): each reads
	// a saga, checks its status and writes it.
	opMu sync.Mutex

	// starting counts the running sagas still recorded pending: their
	// transition to executing is being written (Stats counts them pending).
	starting int

	// Kafka steps (wait.go, timers.go, outbox.go, await.go). Under mu:
	// inbox holds what was delivered to a saga until its executor applies
	// it; waking the sagas
	// queued on the resumes lane.
	inbox   map[sagaRef][]delivery
	waking  map[sagaRef]bool
	resumes *lane
	// Set by New, read-only afterwards.
	sender       Sender
	replyTopic   func(string) string
	keysTopic    string
	durable      time.Duration
	signalWindow time.Duration
	awaited      map[string][]string
	out          *relay
	// the timer loop's partitions, under tmu; twake wakes the loop
	tmu    sync.Mutex
	tparts map[storage.Partition]*timerPart
	twake  chan struct{}
	// awaitMu orders Record's correlation with the sweep of expired
	// registrations and signals.
	awaitMu sync.Mutex

	ready    chan struct{}
	base     context.Context // done when Run's context ends: no new steps
	stopBase context.CancelFunc
	runCtx   context.Context // done at hard stop: running steps cancelled
	hardStop context.CancelFunc
}

// partState is an owned partition: its sagas run while ctx is live.
type partState struct {
	ctx      context.Context // done when released or the engine stops
	cancel   context.CancelFunc
	running  int
	released bool
	drained  chan struct{} // closed once released and nothing runs
}

const (
	stateNew = iota
	stateRunning
	stateStopping
)

// New validates the registry and returns an engine. Call Run to execute
// sagas; Start, Fire and Prepare may be used before Run (sagas are recorded
// and wait).
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: Config.Store is required")
	}
	if cfg.Registry == nil {
		cfg.Registry = DefaultRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.MaxContextBytes <= 0 {
		cfg.MaxContextBytes = DefaultMaxContextBytes
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.DurableDelay == 0 {
		cfg.DurableDelay = time.Second
	}
	if cfg.SignalWindow <= 0 {
		cfg.SignalWindow = DefaultSignalWindow
	}
	if cfg.OutboxStallTimeout <= 0 {
		cfg.OutboxStallTimeout = 60 * time.Second
	}
	routes, err := cfg.Registry.Routes()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		store: cfg.Store, routes: routes, log: cfg.Logger, clock: cfg.Clock,
		maxIn: cfg.MaxInFlight, shutdown: cfg.ShutdownTimeout, onFinish: cfg.OnFinish,
		mirror: cfg.Changelog, maxCtx: cfg.MaxContextBytes, health: cfg.Health, errLog: health.NewLogLimiter(5 * time.Second), onStep: cfg.OnStep, parted: cfg.Changelog != nil, active: map[sagaRef]*atomic.Bool{}, cancelNotes: map[*atomic.Bool][]storage.HistoryEntry{},
		local: map[Source]*atomic.Int64{}, lanes: map[string]*lane{},
		ready: make(chan struct{}), parts: map[storage.Partition]*partState{}, leaving: map[storage.Partition]*partState{},
		outcomes:     logx.NewLimiter(cfg.Logger, cfg.LogLimit.PerSecond, cfg.LogLimit.Burst, cfg.Clock),
		logCompleted: cfg.LogCompleted,
		inbox:        map[sagaRef][]delivery{}, waking: map[sagaRef]bool{},
		sender: cfg.Sender, replyTopic: cfg.ReplyTopic, keysTopic: cfg.KeysTopic, durable: cfg.DurableDelay, signalWindow: cfg.SignalWindow,
		awaited: routes.Awaited(), out: newRelay(cfg.OutboxStallTimeout), tparts: map[storage.Partition]*timerPart{}, twake: make(chan struct{}, 1),
	}
	e.resumes = &lane{id: "~resume"}
	e.order = append(e.order, e.resumes)
	if cfg.Sender == nil {
		for _, r := range routes.TalkingRoutes() {
			e.log.Warn("saga has command or await steps but the engine has no Sender: those steps fail (run it in a group member)", "saga", r.Saga.Name)
			break
		}
	}
	e.base, e.stopBase = context.WithCancel(context.Background())
	e.always = &partState{ctx: e.base, cancel: func() {}}
	e.idle = make(chan struct{})
	close(e.idle)
	for _, src := range []Source{SourceKafka, SourceCron, SourceWebhook, SourceManual, sourceKeys} {
		next, _, err := cfg.Store.NextOffset(context.Background(), storage.Partition{Topic: localTopic(src)})
		if err != nil {
			return nil, fmt.Errorf("engine: read local offsets: %w", err)
		}
		c := new(atomic.Int64)
		c.Store(next)
		e.local[src] = c
	}
	for _, r := range routes.All() {
		e.laneFor(r.ID(), r.Trigger)
		if !r.Trigger.key.IsZero() {
			continue
		}
		switch r.Trigger.source {
		case SourceKafka:
			e.log.Info("trigger has no idempotency key; the record position (topic, partition, offset) is the key",
				"saga", r.Saga.Name, "trigger", r.Trigger.ID())
		case SourceWebhook, SourceManual:
			e.log.Info("trigger has no idempotency key; the caller's Idempotency-Key header is the key, else the event's position",
				"saga", r.Saga.Name, "trigger", r.Trigger.ID())
		} // cron ticks are keyed by schedule and scheduled time
	}
	return e, nil
}

// Partitioned reports whether sagas of Kafka partitions run only while
// their partition is owned: the engine is a group member (Config.Changelog).
func (e *Engine) Partitioned() bool { return e.parted }

// Changelog returns the changelog the engine mirrors into (nil when it is
// not a group member).
func (e *Engine) Changelog() Changelog { return e.mirror }

// Routes returns the routing table.
func (e *Engine) Routes() *Routes { return e.routes }

// Ready is closed once Run has queued every unfinished saga found in the
// store and started executing.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

// Run recovers unfinished sagas from the store, then executes sagas until
// ctx ends. It then stops starting steps, gives running steps
// ShutdownTimeout to finish, cancels the rest and returns once every saga
// goroutine has returned. Interrupted sagas stay recorded where they stand
// and resume at the next Run. Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.state != stateNew {
		e.mu.Unlock()
		return errors.New("engine: Run called twice")
	}
	e.runCtx, e.hardStop = context.WithCancel(context.WithoutCancel(ctx))
	e.mu.Unlock()
	defer e.hardStop()
	stopBase := context.AfterFunc(ctx, e.stopBase)
	defer stopBase()

	var loops sync.WaitGroup
	loopCtx, stopLoops := context.WithCancel(ctx)
	loops.Add(2)
	go func() { defer loops.Done(); e.timerLoop(loopCtx) }()
	go func() { defer loops.Done(); e.relayLoop(loopCtx) }()
	defer func() { stopLoops(); loops.Wait() }()

	start := e.clock.Now()
	var n, waiting int
	recover := func(s *storage.Saga) error {
		if s.Wait != nil { // resumed by its reply, event or timer
			waiting++
			return nil
		}
		n++
		e.enqueue(s)
		return nil
	}
	// Kafka partitions of a group member are resumed when assigned
	// (Acquire); the rest here. A partition holding a record of a newer
	// release is left alone (said, and reported as incompatible), the
	// others go on.
	ps, err := e.store.Partitions(ctx)
	for _, p := range ps {
		if err != nil {
			break
		}
		if e.parted && !isLocal(p.Topic) {
			continue
		}
		err = e.store.ScanPartition(ctx, p, storage.NonTerminal, recover)
		if err == nil { // its waiting sagas: timers watched, outbox produced
			e.timerWatch(p)
			_, err = e.resendOutbox(ctx, p)
		}
		if errors.Is(err, storage.ErrNewerRecord) {
			e.log.Error("partition not resumed: it holds records written by a newer release", "partition", p.String(), "err", err)
			if e.health != nil {
				e.health.Set(health.Incompatible, fmt.Sprintf("partition %s holds records written by a newer release: its sagas do not run here (docs/upgrading.md)", p))
			}
			err = nil
		}
	}
	if err != nil {
		e.mu.Lock()
		e.state = stateStopping
		e.mu.Unlock()
		return fmt.Errorf("engine: recovery: %w", err)
	}
	e.log.Info("recovery done", "unfinished_sagas", n, "waiting_sagas", waiting, "took", e.clock.Now().Sub(start).Round(time.Millisecond))

	e.mu.Lock()
	e.state = stateRunning
	e.dispatchLocked()
	e.mu.Unlock()
	close(e.ready)

	<-ctx.Done()
	e.stopBase()
	e.mu.Lock()
	e.state = stateStopping
	running := e.running
	e.mu.Unlock()
	e.log.Info("stopping: letting running steps finish", "running", running, "timeout", e.shutdown)
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	stop := e.clock.AfterFunc(e.shutdown, e.hardStop)
	<-done
	stop()
	e.outcomes.Flush()
	return nil
}

// Stats reports how many sagas of this process are pending (queued, or
// taken from the queue while their transition to executing is being
// recorded) and how many execute (recorded executing or compensating, and
// running here). The counts follow the recorded statuses: a saga counts as
// executing once the store says so.
func (e *Engine) Stats() (queued, running int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queued + e.starting, e.running - e.starting
}

// WaitIdle blocks until no saga is queued or running in this process, or
// ctx ends.
func (e *Engine) WaitIdle(ctx context.Context) error {
	for {
		e.mu.Lock()
		ch := e.idle
		e.mu.Unlock()
		select {
		case <-ch:
			e.mu.Lock()
			idle := e.queued == 0 && e.running == 0
			e.mu.Unlock()
			if idle {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Outcome is what Fire did for one trigger.
type Outcome struct {
	Saga    string
	Trigger string
	// ID of the saga started, or of the existing saga the event matched.
	ID      string
	Created bool
	// Err is set when the trigger rejected the event (Reason says why).
	Err    error
	Reason Reason
}

func localTopic(src Source) string { return "~" + string(src) }

// sourceKeys names the local partition where a library engine records its
// keyed sagas ("~keys").
const sourceKeys Source = "keys"

// isLocal reports whether topic is a local partition of Fire (not Kafka).
func isLocal(topic string) bool { return strings.HasPrefix(topic, "~") }

// recorded mirrors a durable write of a Kafka partition's saga to the changelog
// — unless the partition was given up meanwhile (a step that outlived its
// release): the next owner's state must not be overwritten by it.
func (e *Engine) recorded(s *storage.Saga) {
	defer storage.DropRecord(s) // the store's record of this state, if the changelog did not take it
	if e.mirror == nil || isLocal(s.Source.Topic) {
		return
	}
	e.mu.Lock()
	owned := e.partOf(s.Source) != nil || e.leaving[s.Source.TopicPartition()] != nil
	e.mu.Unlock()
	if owned {
		e.mirror.Append(s)
	}
}

// Remirror appends the stored state of saga id to the changelog again
// (the consumer's batch, for sagas whose earlier changelog records may be
// missing), unless the saga is running here: a running saga appends each
// of its transitions itself, and its stored state read now could be older
// than one it appends meanwhile (appended after it, the older state would
// be the changelog's last word). The saga is read and appended under the
// engine's lock, so no executor takes it from its lane in between.
func (e *Engine) Remirror(ctx context.Context, id string) error {
	if e.mirror == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	s, err := e.store.Get(ctx, id)
	if err != nil {
		return err
	}
	if isLocal(s.Source.Topic) || e.partOf(s.Source) == nil {
		return nil
	}
	if _, running := e.active[sagaRef{pos: s.Source, name: s.Name}]; running {
		return nil
	}
	e.mirror.Append(s)
	return nil
}

// Acquire makes this engine the owner of partition p (the consumer calls it
// when the group assigns p, after restoring p's state): p's unfinished
// sagas are queued, and new ones run. It returns how many were queued.
func (e *Engine) Acquire(ctx context.Context, p storage.Partition) (int, error) {
	e.mu.Lock()
	if _, ok := e.parts[p]; ok {
		e.mu.Unlock()
		return 0, nil
	}
	ps := &partState{drained: make(chan struct{})}
	ps.ctx, ps.cancel = context.WithCancel(e.base)
	e.parts[p] = ps
	e.rescaleLocked()
	e.mu.Unlock()
	n := 0
	err := e.store.ScanPartition(ctx, p, storage.NonTerminal, func(s *storage.Saga) error {
		if s.Wait != nil { // resumed by its reply, event or timer
			return nil
		}
		n++
		e.enqueue(s)
		return nil
	})
	if err != nil {
		return n, err
	}
	e.timerWatch(p) // timers that fell due while no one owned p fire now
	_, err = e.resendOutbox(ctx, p)
	return n, err
}

// Release gives up partition p: its queued sagas are dropped from memory
// (they stay recorded), no new step of its sagas starts, and Release waits
// until the steps running now have finished and been recorded, or ctx ends.
// After it returns nil no saga of p runs here.
func (e *Engine) Release(ctx context.Context, p storage.Partition) error {
	e.mu.Lock()
	ps := e.parts[p]
	if ps == nil {
		e.mu.Unlock()
		return nil
	}
	delete(e.parts, p)
	e.rescaleLocked()
	e.leaving[p] = ps
	ps.released = true
	ps.cancel()
	for _, l := range e.order {
		e.queued -= l.drop(func(q queued) bool { return q.pos.TopicPartition() == p })
	}
	dropped := e.dropDeliveriesLocked(p)
	if ps.running == 0 {
		close(ps.drained)
	}
	e.maybeIdleLocked()
	e.mu.Unlock()
	e.timerForget(p)
	for _, d := range dropped {
		d.finish(Dropped)
	}
	defer func() {
		e.mu.Lock()
		if e.leaving[p] == ps {
			delete(e.leaving, p)
		}
		e.mu.Unlock()
	}()
	select {
	case <-ps.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("engine: release of %s: steps still running: %w", p, ctx.Err())
	}
}

// Owns reports whether sagas at pos run in this engine (their partition is
// owned here, or local).
func (e *Engine) Owns(pos storage.Position) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.partOf(pos) != nil
}

// Owned lists the Kafka partitions this engine owns.
func (e *Engine) Owned() []storage.Partition {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]storage.Partition, 0, len(e.parts))
	for p := range e.parts {
		out = append(out, p)
	}
	return out
}

// partOf returns the state a saga at pos runs under, or nil when its
// partition is not owned. Called with e.mu held.
func (e *Engine) partOf(pos storage.Position) *partState {
	if !e.parted || isLocal(pos.Topic) {
		return e.always
	}
	return e.parts[pos.TopicPartition()]
}

// Fire delivers an event in-process, without Kafka: for library users and
// tests. src and ev.Name (or ev.Topic for kafka) select the triggers. The
// event gets a position on the local partition "~<source>"/0, and the sagas
// it starts are recorded durably before Fire returns. Triggers that ignore
// the event are left out of the outcomes; those that reject it are reported
// with Err set, and Fire's error joins them.
func (e *Engine) Fire(ctx context.Context, src Source, ev Event) ([]Outcome, error) {
	if !src.Valid() {
		return nil, fmt.Errorf("engine: unknown source %q", src)
	}
	name := ev.Name
	if src == SourceKafka {
		name = ev.Topic
	}
	ev.Source, ev.Name = src, name
	if _, err := e.routes.Resolve(&ev, false); err != nil {
		return nil, err
	}
	ev.Topic, ev.Partition = localTopic(src), 0
	ev.Offset = e.local[src].Add(1) - 1
	if ev.Timestamp.IsZero() {
		ev.Timestamp = e.clock.Now().UTC()
	}
	b := Batch{Offsets: []storage.Offset{{Topic: ev.Topic, Next: ev.Offset + 1}}}
	e.Prepare(&b, &ev, false)
	for _, s := range b.Forward { // in-process: keyed sagas go to the local keys partition
		s.Source = storage.Position{Topic: localTopic(sourceKeys), Offset: e.local[sourceKeys].Add(1) - 1}
		b.Sagas = append(b.Sagas, s)
	}
	b.Forward = b.Forward[:0]
	res, err := e.Record(ctx, &b)
	if err != nil {
		return nil, err
	}
	var out []Outcome
	var errs []error
	for i, s := range b.Sagas {
		out = append(out, Outcome{Saga: s.Name, Trigger: s.Trigger, ID: res[i].ID, Created: res[i].Created})
	}
	for _, r := range b.Rejects {
		out = append(out, Outcome{Saga: r.Route.Saga.Name, Trigger: r.Route.Trigger.ID(), Err: r.Err, Reason: r.Reason})
		errs = append(errs, r.Err)
	}
	return out, errors.Join(errs...)
}
