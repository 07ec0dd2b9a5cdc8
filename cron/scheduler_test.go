package cron_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

const group = "cron-test"

// clock is a settable clock (Tick is driven directly; nothing sleeps).
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time                                   { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) set(t time.Time)                                  { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *clock) Sleep(ctx context.Context, d time.Duration) error { return ctx.Err() }
func (c *clock) AfterFunc(d time.Duration, f func()) func() bool  { return func() bool { return true } }

type world struct {
	t     *testing.T
	seeds []string
	m     *sagaztest.Member
	prod  *kgo.Client
	clock *clock
	reg   *engine.Registry
	parts int32
}

func cronSaga(name, spec string, pol engine.CronPolicy, step engine.StepFunc) engine.Saga {
	if step == nil {
		step = func(context.Context, *engine.Run) error { return nil }
	}
	return engine.Saga{Name: name, Steps: []engine.Step{{Name: "work", Action: step}},
		Triggers: []engine.Trigger{engine.Cron(spec, engine.WithCronPolicy(pol))}}
}

func newWorld(t *testing.T, sagas ...engine.Saga) *world {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, "sagaz.cron"))
	seeds := c.ListenAddrs()
	reg := engine.NewRegistry()
	for _, s := range sagas {
		reg.Register(s)
	}
	// The member's own scheduler stays out: it would tick with the real
	// clock and, taking over a schedule after a test's scheduler saved its
	// state, fire the latest tick it missed (a saga the test never asked for).
	m := sagaztest.StartWith(t, seeds, group, "", reg, func(c *member.Config) { c.NoScheduler = true })
	kafkatest.WaitFor(t, 30*time.Second, "the member to own the cron topic", m.Consumer.Ready)
	return &world{t: t, seeds: seeds, m: m, reg: reg, clock: &clock{}, parts: 3,
		prod: kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))}
}

// scheduler builds a scheduler over the member (a new one: what a restart
// would build, with state only from the store).
func (w *world) scheduler() *cron.Scheduler {
	s, err := cron.New(cron.Config{Routes: w.m.Engine.Routes(), Topic: "sagaz.cron", Partitions: w.parts, Producer: w.prod, Store: w.m.Store,
		Owns: func(p storage.Partition) bool {
			return w.m.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition})
		},
		Mirror: w.m.Changelog.AppendMeta, Clock: w.clock, Logger: sagaztest.Logger()})
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

func (w *world) tick(s *cron.Scheduler, at time.Time) {
	w.clock.set(at)
	s.Tick(context.Background(), at)
}

// ticksOf returns the scheduled times of the sagas of saga name, once every
// tick published so far is recorded.
func (w *world) ticksOf(name string, want int) []time.Time {
	w.t.Helper()
	var got []time.Time
	kafkatest.WaitFor(w.t, 30*time.Second, "the ticks' sagas of "+name, func() bool {
		got = got[:0]
		for _, s := range sagaztest.Sagas(w.t, w.m.Store) {
			if s.Name != name {
				continue
			}
			var ev cron.TickEvent
			if err := json.Unmarshal(s.Context, &ev); err != nil {
				w.t.Fatal(err)
			}
			got = append(got, ev.ScheduledAt)
		}
		return len(got) >= want
	})
	return got
}

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func TestCatchUpPolicies(t *testing.T) {
	w := newWorld(t,
		cronSaga("skip", "@every 1m", engine.CronPolicy{CatchUp: engine.CatchUpSkip}, nil),
		cronSaga("latest", "@every 1m", engine.CronPolicy{CatchUp: engine.CatchUpLatest}, nil),
		cronSaga("all", "@every 1m", engine.CronPolicy{CatchUp: engine.CatchUpAll}, nil))
	w.tick(w.scheduler(), t0) // the first member to run them: no history
	// The process is down for five ticks; a new scheduler takes over.
	w.tick(w.scheduler(), t0.Add(5*time.Minute+30*time.Second))
	if got := w.ticksOf("all", 5); len(got) != 5 {
		t.Fatalf("all: %d ticks caught up, want 5: %v", len(got), got)
	}
	if got := w.ticksOf("latest", 1); len(got) != 1 || !got[0].Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("latest: %v, want only %s", got, t0.Add(5*time.Minute))
	}
	if got := w.ticksOf("skip", 0); len(got) != 0 {
		t.Fatalf("skip: %v, want none", got)
	}
}

func TestOverlapSkipRecordsSkippedTicks(t *testing.T) {
	release := make(chan struct{})
	w := newWorld(t, cronSaga("slow", "@every 1m", engine.CronPolicy{Overlap: engine.OverlapSkip},
		func(ctx context.Context, r *engine.Run) error { <-release; return nil }))
	s := w.scheduler()
	w.tick(s, t0)
	w.tick(s, t0.Add(time.Minute)) // starts a saga that runs on
	w.ticksOf("slow", 1)
	w.tick(s, t0.Add(2*time.Minute)) // skipped
	w.tick(s, t0.Add(3*time.Minute)) // skipped
	close(release)
	w.m.WaitIdle(30 * time.Second)
	w.tick(s, t0.Add(4*time.Minute)) // runs again
	got := w.ticksOf("slow", 2)
	if len(got) != 2 || !got[1].Equal(t0.Add(4*time.Minute)) {
		t.Fatalf("ticks started: %v", got)
	}
	row := s.Table(t0.Add(4 * time.Minute))[0]
	if row.State.Skipped != 2 || len(row.State.SkippedAt) != 2 || !row.State.SkippedAt[0].Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("skipped ticks not recorded: %+v", row.State)
	}
}

func TestOverlapBufferOne(t *testing.T) {
	release := make(chan struct{})
	w := newWorld(t, cronSaga("buf", "@every 1m", engine.CronPolicy{Overlap: engine.OverlapBufferOne},
		func(ctx context.Context, r *engine.Run) error { <-release; return nil }))
	s := w.scheduler()
	w.tick(s, t0)
	w.tick(s, t0.Add(time.Minute))
	w.ticksOf("buf", 1)
	w.tick(s, t0.Add(2*time.Minute)) // buffered
	w.tick(s, t0.Add(3*time.Minute)) // skipped: one is buffered already
	close(release)
	w.m.WaitIdle(30 * time.Second)
	w.tick(s, t0.Add(3*time.Minute+10*time.Second)) // the buffered tick starts
	got := w.ticksOf("buf", 2)
	if len(got) != 2 || !got[1].Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("ticks started: %v", got)
	}
	if state := s.Table(t0)[0].State; state.Skipped != 1 {
		t.Fatalf("state %+v", state)
	}
}

func TestBackfillStartsOnlyMissingTicks(t *testing.T) {
	w := newWorld(t, cronSaga("report", "@every 1m", engine.CronPolicy{}, nil))
	s := w.scheduler()
	w.tick(s, t0)
	w.tick(s, t0.Add(2*time.Minute)) // fires 12:01 and 12:02
	w.ticksOf("report", 2)
	n, err := s.Backfill(context.Background(), "report:report", t0.Add(time.Minute), t0.Add(5*time.Minute))
	if err != nil || n != 5 {
		t.Fatalf("Backfill = %d, %v", n, err)
	}
	got := w.ticksOf("report", 5)
	seen := map[time.Time]bool{}
	for _, g := range got {
		if seen[g] {
			t.Fatalf("tick %s started twice", g)
		}
		seen[g] = true
	}
	if len(got) != 5 {
		t.Fatalf("%d sagas for 5 ticks: %v", len(got), got)
	}
	if _, err := s.Backfill(context.Background(), "nope:nope", t0, t0); err == nil {
		t.Fatal("backfill of an unknown schedule")
	}
}

func TestPauseResumeAndTriggerNow(t *testing.T) {
	w := newWorld(t, cronSaga("report", "@every 1m", engine.CronPolicy{CatchUp: engine.CatchUpAll}, nil))
	s := w.scheduler()
	ctx := context.Background()
	w.tick(s, t0)
	if err := s.Pause(ctx, "report:report"); err != nil {
		t.Fatal(err)
	}
	w.tick(s, t0.Add(3*time.Minute)) // paused: nothing
	if err := s.Resume(ctx, "report:report"); err != nil {
		t.Fatal(err)
	}
	w.tick(s, t0.Add(3*time.Minute+30*time.Second)) // resumed from now: nothing caught up
	w.tick(s, t0.Add(4*time.Minute))                // 12:04 fires
	w.clock.set(t0.Add(4*time.Minute + 20*time.Second))
	if _, err := s.TriggerNow(ctx, "report:report"); err != nil { // a tick of its own: 12:04:20
		t.Fatal(err)
	}
	got := w.ticksOf("report", 2)
	if len(got) != 2 {
		t.Fatalf("ticks after pause/resume and trigger: %v", got)
	}
}

// The schedule table tells what happened: nothing fired yet is no last
// tick; manual and backfilled ticks count; a paused schedule has no next
// fire; the policy is snake_case with durations as strings.
func TestScheduleTableCountsEveryTickAndShowsPause(t *testing.T) {
	w := newWorld(t, cronSaga("report", "@every 1m", engine.CronPolicy{CatchUpWindow: 6 * time.Hour, Jitter: 30 * time.Second}, nil))
	s := w.scheduler()
	ctx := context.Background()
	w.tick(s, t0.Add(10*time.Second)) // taken over: position at now, nothing fired
	row := s.Table(t0.Add(10 * time.Second))[0]
	if !row.State.LastFiredTick.IsZero() || row.State.Fired != 0 || row.State.LastTick.IsZero() {
		t.Fatalf("fresh schedule: %+v", row.State)
	}
	w.clock.set(t0.Add(20 * time.Second))
	if _, err := s.TriggerNow(ctx, "report:report"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Backfill(ctx, "report:report", t0.Add(-3*time.Minute), t0.Add(-time.Minute)); err != nil || n != 3 {
		t.Fatalf("Backfill = %d, %v", n, err)
	}
	row = s.Table(t0.Add(20 * time.Second))[0]
	if row.State.Fired != 4 || !row.State.LastFiredTick.Equal(t0.Add(20*time.Second)) {
		t.Fatalf("after a manual tick and 3 backfilled: fired %d, last fired tick %v", row.State.Fired, row.State.LastFiredTick)
	}
	// The counts live in the stored state: a restarted scheduler sees them.
	if err := s.Pause(ctx, "report:report"); err != nil {
		t.Fatal(err)
	}
	s2 := w.scheduler()
	w.tick(s2, t0.Add(30*time.Second))
	row = s2.Table(t0.Add(30 * time.Second))[0]
	if row.State.Fired != 4 || !row.Paused || !row.Next.IsZero() {
		t.Fatalf("restarted, paused: %+v next %v", row.State, row.Next)
	}
	b, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	_ = json.Unmarshal(b, &raw)
	pol, _ := raw["policy"].(map[string]any)
	if pol["catch_up"] != "latest" || pol["catch_up_window"] != "6h0m0s" || pol["overlap"] != "allow_all" || pol["jitter"] != "30s" {
		t.Errorf("policy JSON = %v", raw["policy"])
	}
	if _, ok := raw["next_fire"]; ok {
		t.Errorf("a paused schedule has next_fire %v", raw["next_fire"])
	}
}
