package cron

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Producer is what the scheduler needs of a Kafka client: *kgo.Client.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// Errors of the scheduler.
var (
	ErrUnknownSchedule = errors.New("cron: unknown schedule")
	ErrNotOwner        = errors.New("cron: the schedule's partition is owned by another member")
	ErrTooManyTicks    = errors.New("cron: backfill range holds too many ticks")
)

// Config configures a Scheduler.
type Config struct {
	Routes *engine.Routes
	// Topic is the cron topic (default "sagaz.cron"); Partitions its
	// partition count: a schedule lives in partition hash(id) mod Partitions.
	Topic      string
	Partitions int32
	// AwaitPartitions, used when Partitions is 0, waits for the cron topic
	// and returns its partition count (e.g. once the consumer has created
	// or found its topics). Until then no schedule is placed: nothing is
	// published and operations answer ErrNotOwner.
	AwaitPartitions func(ctx context.Context) (int32, error)
	// Producer publishes ticks (acks=all), with a manual partitioner: the
	// record's Partition is used as given.
	Producer Producer
	Store    storage.Store
	// Owns reports whether this member owns a partition of the cron topic.
	Owns func(storage.Partition) bool
	// Mirror, if set, copies a schedule's state to the changelog
	// (Changelog.AppendMeta), so it follows the partition.
	Mirror func(p storage.Partition, key string, value []byte)
	// WhileOwned, if set, runs fn only while this member still owns
	// partition p, with the partition's release held off meanwhile, and
	// reports whether it ran (consumer.Consumer.WhileOwned). A schedule's
	// state is recorded and mirrored through it, so that none is appended
	// to the changelog of a partition given up during a tick or an
	// operation: it would come after the next owner's. Without it, Owns is
	// checked before a tick and the write is not ordered against a
	// release.
	WhileOwned func(p storage.Partition, fn func()) bool
	Clock      engine.Clock
	Logger     *slog.Logger
	// MaxBackfill bounds the ticks of one backfill (default 10,000).
	MaxBackfill int
}

// State is what a schedule remembers; it lives with its partition.
type State struct {
	// LastTick is the schedule's position: the latest scheduled time handled
	// (fired or skipped), or the time it started or resumed from; the next
	// tick is computed from it.
	LastTick time.Time `json:"last_tick,omitzero"`
	// LastFiredTick is the scheduled time of the latest tick published —
	// scheduled, triggered by hand or backfilled (zero: none yet).
	LastFiredTick time.Time `json:"last_fired_tick,omitzero"`
	LastSagaID    string    `json:"last_saga_id,omitempty"` // saga of the latest scheduled tick fired
	LastFiredAt   time.Time `json:"last_fired_at,omitzero"` // when the latest tick was published
	// Fired counts the ticks published: scheduled, triggered by hand and
	// backfilled (a backfilled tick that had fired already starts no saga).
	Fired     int64       `json:"fired"`
	Skipped   int64       `json:"skipped"`
	SkippedAt []time.Time `json:"recent_skipped,omitempty"` // the latest 20 skipped ticks
	Buffered  time.Time   `json:"buffered,omitzero"`        // buffer_one: the tick waiting for the running saga
	Paused    bool        `json:"paused"`
}

type sched struct {
	id     string
	route  *engine.Route
	spec   Schedule
	policy engine.CronPolicy
	part   storage.Partition
	owned  bool
	state  State
}

// Scheduler publishes the ticks of the schedules this member owns.
type Scheduler struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	sched map[string]*sched
	order []string
}

// New builds the scheduler of every cron trigger in routes.
func New(cfg Config) (*Scheduler, error) {
	if cfg.Topic == "" {
		cfg.Topic = "sagaz.cron"
	}
	if cfg.Clock == nil {
		cfg.Clock = engine.SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBackfill <= 0 {
		cfg.MaxBackfill = 10000
	}
	if cfg.Partitions <= 0 && cfg.AwaitPartitions == nil {
		return nil, errors.New("cron: Config.Partitions must be the cron topic's partition count (or set AwaitPartitions)")
	}
	s := &Scheduler{cfg: cfg, log: cfg.Logger, sched: map[string]*sched{}}
	for _, r := range cfg.Routes.All() {
		if r.Trigger.Source() != engine.SourceCron {
			continue
		}
		spec, err := Parse(r.Trigger.Schedule())
		if err != nil {
			return nil, fmt.Errorf("cron: saga %q schedule %q: %w", r.Saga.Name, r.Trigger.Schedule(), err)
		}
		pol := r.Trigger.CronPolicy()
		if pol.CatchUp == "" {
			pol.CatchUp = engine.CatchUpLatest
		}
		if pol.Overlap == "" {
			pol.Overlap = engine.OverlapAllowAll
		}
		if pol.CatchUpWindow == 0 {
			pol.CatchUpWindow = 24 * time.Hour
		}
		id := engine.ScheduleID(r)
		part := int32(-1) // not placed yet
		if cfg.Partitions > 0 {
			part = PartitionOf(id, cfg.Partitions)
		}
		s.sched[id] = &sched{id: id, route: r, spec: spec, policy: pol, part: storage.Partition{Topic: cfg.Topic, Partition: part}}
		s.order = append(s.order, id)
	}
	sort.Strings(s.order)
	return s, nil
}

// PartitionOf maps a schedule to its partition of the cron topic.
func PartitionOf(id string, partitions int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int32(h.Sum32() % uint32(partitions))
}

// Len is the number of schedules.
func (s *Scheduler) Len() int { return len(s.sched) }

// Run evaluates the schedules until ctx ends: at each fire time, and at
// least every second (ownership changes with rebalances).
func (s *Scheduler) Run(ctx context.Context) error {
	if s.cfg.Partitions <= 0 {
		n, err := s.cfg.AwaitPartitions(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cron: partitions of %s: %w", s.cfg.Topic, err)
		}
		s.mu.Lock()
		for id, sc := range s.sched {
			sc.part.Partition = PartitionOf(id, n)
		}
		s.mu.Unlock()
	}
	for ctx.Err() == nil {
		now := s.cfg.Clock.Now()
		s.Tick(ctx, now)
		wait := time.Second
		if next := s.nextDue(now); !next.IsZero() && next.Sub(now) < wait {
			wait = max(next.Sub(now), 10*time.Millisecond)
		}
		if s.cfg.Clock.Sleep(ctx, wait) != nil {
			break
		}
	}
	return nil
}

func (s *Scheduler) nextDue(now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best time.Time
	for _, sc := range s.sched {
		if !sc.owned || sc.state.Paused {
			continue
		}
		n := sc.spec.Next(maxTime(sc.state.LastTick, now.Add(-time.Second)))
		if n = n.Add(jitter(sc, n)); best.IsZero() || n.Before(best) {
			best = n
		}
	}
	return best
}

// Tick publishes what is due at now for the schedules this member owns
// (and catches up those it has just come to own).
func (s *Scheduler) Tick(ctx context.Context, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.order {
		sc := s.sched[id]
		if !s.cfg.Owns(sc.part) {
			sc.owned = false
			continue
		}
		if !sc.owned {
			if err := s.takeOver(ctx, sc, now); err != nil {
				s.log.Error("cron: taking over a schedule failed; retrying", "schedule", id, "err", err)
				continue
			}
		}
		if err := s.due(ctx, sc, now); err != nil {
			s.log.Error("cron: publishing a tick failed; retrying", "schedule", id, "err", err)
		}
	}
}

// takeOver loads the schedule's state (restored with its partition) and
// applies the catch-up policy to the ticks missed since its last tick.
func (s *Scheduler) takeOver(ctx context.Context, sc *sched, now time.Time) error {
	st, err := s.load(ctx, sc)
	if err != nil {
		return err
	}
	sc.state, sc.owned = st, true
	if st.LastTick.IsZero() { // a new schedule: from now on
		sc.state.LastTick = now
		return s.save(ctx, sc)
	}
	if st.Paused {
		return nil
	}
	missed := Ticks(sc.spec, st.LastTick, now, 1_000_000)
	if len(missed) == 0 {
		return nil
	}
	var fire []time.Time
	switch sc.policy.CatchUp {
	case engine.CatchUpLatest:
		fire = missed[len(missed)-1:]
	case engine.CatchUpAll:
		for _, t := range missed {
			if !t.Before(now.Add(-sc.policy.CatchUpWindow)) {
				fire = append(fire, t)
			}
		}
	}
	s.log.Info("cron: took over a schedule", "schedule", sc.id, "last_tick", st.LastTick, "missed", len(missed), "catch_up", sc.policy.CatchUp, "firing", len(fire))
	for _, t := range fire {
		if err := s.fire(ctx, sc, t, false); err != nil {
			return err
		}
	}
	sc.state.LastTick = missed[len(missed)-1]
	return s.save(ctx, sc)
}

// due fires the ticks that came due since the last one.
func (s *Scheduler) due(ctx context.Context, sc *sched, now time.Time) error {
	if sc.state.Paused {
		return nil
	}
	changed := false
	defer func() {
		if changed {
			switch err := s.save(ctx, sc); {
			case errors.Is(err, ErrNotOwner): // a rebalance during the tick
				s.log.Info("cron: schedule given up during a tick; its next owner goes on from the state it has", "schedule", sc.id)
			case err != nil:
				s.log.Error("cron: recording a schedule's state failed", "schedule", sc.id, "err", err)
			}
		}
	}()
	if !sc.state.Buffered.IsZero() && !s.running(ctx, sc, now) {
		t := sc.state.Buffered
		sc.state.Buffered = time.Time{}
		changed = true
		if err := s.fire(ctx, sc, t, true); err != nil {
			return err
		}
	}
	for t := sc.spec.Next(sc.state.LastTick); !t.IsZero() && !t.Add(jitter(sc, t)).After(now); t = sc.spec.Next(t) {
		if err := s.fire(ctx, sc, t, false); err != nil {
			return err
		}
		sc.state.LastTick = t
		changed = true
	}
	return nil
}

// running reports whether the latest fired tick's saga has not ended (a
// saga not recorded yet counts as running for a minute after its tick).
func (s *Scheduler) running(ctx context.Context, sc *sched, now time.Time) bool {
	if sc.state.LastSagaID == "" {
		return false
	}
	saga, err := s.cfg.Store.Get(ctx, sc.state.LastSagaID)
	if errors.Is(err, storage.ErrNotFound) {
		return now.Sub(sc.state.LastFiredAt) < time.Minute
	}
	return err == nil && !saga.Status.Terminal()
}

// fire applies the overlap policy and publishes the tick (force: a
// buffered tick whose turn has come).
func (s *Scheduler) fire(ctx context.Context, sc *sched, t time.Time, force bool) error {
	if !force && sc.policy.Overlap != engine.OverlapAllowAll && s.running(ctx, sc, s.cfg.Clock.Now()) {
		if sc.policy.Overlap == engine.OverlapBufferOne && sc.state.Buffered.IsZero() {
			sc.state.Buffered = t
			return nil
		}
		sc.state.Skipped++
		sc.state.SkippedAt = append(sc.state.SkippedAt, t)
		if len(sc.state.SkippedAt) > 20 {
			sc.state.SkippedAt = sc.state.SkippedAt[len(sc.state.SkippedAt)-20:]
		}
		s.log.Warn("cron: tick skipped: the previous tick's saga is still running", "schedule", sc.id, "tick", t, "running", sc.state.LastSagaID)
		return nil
	}
	rec, err := s.publish(ctx, sc, t, false)
	if err != nil {
		return err
	}
	s.fired(sc, t)
	sc.state.LastSagaID = storage.FormatID(storage.Position{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}, sc.route.Saga.Name)
	return nil
}

// fired counts a published tick (of any kind) in the schedule's state.
func (s *Scheduler) fired(sc *sched, t time.Time) {
	sc.state.Fired++
	sc.state.LastFiredAt = s.cfg.Clock.Now()
	if t.After(sc.state.LastFiredTick) {
		sc.state.LastFiredTick = t
	}
}

// Tick is the event a tick publishes (the value of the cron record).
type TickEvent struct {
	Schedule         string    `json:"schedule"`
	Saga             string    `json:"saga"`
	ScheduledAt      time.Time `json:"scheduled_at"`       // UTC
	ScheduledAtLocal string    `json:"scheduled_at_local"` // RFC 3339 in the schedule's zone
	PublishedAt      time.Time `json:"published_at"`
	Manual           bool      `json:"manual,omitempty"` // trigger-now or backfill
}

// TickKey is the idempotency key of a tick: one saga per schedule and time.
func TickKey(id string, t time.Time) string { return id + "@" + t.UTC().Format(time.RFC3339Nano) }

func (s *Scheduler) publish(ctx context.Context, sc *sched, t time.Time, manual bool) (*kgo.Record, error) {
	local := t
	if ds, ok := sc.spec.(*dstSafe); ok {
		local = t.In(ds.loc)
	}
	v, err := json.Marshal(TickEvent{Schedule: sc.id, Saga: sc.route.Saga.Name, ScheduledAt: t.UTC(), ScheduledAtLocal: local.Format(time.RFC3339),
		PublishedAt: s.cfg.Clock.Now().UTC(), Manual: manual})
	if err != nil {
		return nil, err
	}
	rec := &kgo.Record{Topic: sc.part.Topic, Partition: sc.part.Partition, Key: []byte(sc.id), Value: v, Timestamp: s.cfg.Clock.Now(),
		Headers: []kgo.RecordHeader{
			{Key: engine.HeaderSource, Value: []byte(engine.SourceCron)},
			{Key: engine.HeaderName, Value: []byte(sc.id)},
			{Key: engine.HeaderIdempotencyKey, Value: []byte(TickKey(sc.id, t))},
		}}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cfg.Producer.ProduceSync(pctx, rec).FirstErr(); err != nil {
		return nil, err
	}
	return rec, nil
}

func metaKey(id string) string { return "cron/" + id }

func (s *Scheduler) load(ctx context.Context, sc *sched) (State, error) {
	var st State
	v, ok, err := s.cfg.Store.GetMeta(ctx, sc.part, metaKey(sc.id))
	if err != nil || !ok {
		return st, err
	}
	return st, json.Unmarshal(v, &st)
}

func (s *Scheduler) save(ctx context.Context, sc *sched) error {
	v, err := json.Marshal(sc.state)
	if err != nil {
		return err
	}
	write := func() error {
		if err := s.cfg.Store.PutMeta(ctx, sc.part, metaKey(sc.id), v); err != nil {
			return err
		}
		if s.cfg.Mirror != nil {
			s.cfg.Mirror(sc.part, metaKey(sc.id), v)
		}
		return nil
	}
	if s.cfg.WhileOwned == nil {
		return write()
	}
	if !s.cfg.WhileOwned(sc.part, func() { err = write() }) {
		sc.owned = false // its next owner loads the state it has
		return fmt.Errorf("%w: %s was given up before its state was recorded", ErrNotOwner, sc.id)
	}
	return err
}

// jitter is a stable delay below the schedule's Jitter for tick t, the
// same on every member.
func jitter(sc *sched, t time.Time) time.Duration {
	if sc.policy.Jitter <= 0 {
		return 0
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s@%d", sc.id, t.UnixNano())
	return time.Duration(h.Sum64() % uint64(sc.policy.Jitter))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
