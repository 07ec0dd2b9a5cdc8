package cron

import (
	"context"
	"fmt"
	"time"

	robfig "github.com/robfig/cron/v3"

	"github.com/sagaz-go/sagaz/engine"
)

// Row is one schedule in the schedule table (GET /api/schedules).
type Row struct {
	ID        string `json:"id"`
	Saga      string `json:"saga"`
	Spec      string `json:"spec"`
	Partition int32  `json:"partition"`
	OwnedHere bool   `json:"owned_here"`
	Paused    bool   `json:"paused"`
	// Next is the next fire time; zero (absent) while paused.
	Next   time.Time `json:"next_fire,omitzero"`
	State  State     `json:"state"`
	Policy Policy    `json:"policy"`
}

// Policy is a schedule's effective cron policy as the API shows it:
// snake_case names, durations as strings ("24h0m0s").
type Policy struct {
	CatchUp       engine.CatchUp `json:"catch_up"`
	CatchUpWindow string         `json:"catch_up_window"`
	Overlap       engine.Overlap `json:"overlap"`
	Jitter        string         `json:"jitter"`
}

func policyOf(p engine.CronPolicy) Policy {
	return Policy{CatchUp: p.CatchUp, CatchUpWindow: p.CatchUpWindow.String(), Overlap: p.Overlap, Jitter: p.Jitter.String()}
}

// Table lists the schedules; the state is known for the ones owned here.
func (s *Scheduler) Table(now time.Time) []Row {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Row, 0, len(s.order))
	for _, id := range s.order {
		sc := s.sched[id]
		r := Row{ID: id, Saga: sc.route.Saga.Name, Spec: sc.route.Trigger.Schedule(), Partition: sc.part.Partition, OwnedHere: sc.owned,
			Policy: policyOf(sc.policy)}
		if sc.owned {
			r.State, r.Paused = sc.state, sc.state.Paused
			if !sc.state.Paused {
				n := sc.spec.Next(maxTime(sc.state.LastTick, now))
				r.Next = n.Add(jitter(sc, n))
			}
		} else {
			r.Next = sc.spec.Next(now)
		}
		out = append(out, r)
	}
	return out
}

// owned returns the schedule if this member owns it (taking it over now if
// the partition came here since the last evaluation).
func (s *Scheduler) owned(ctx context.Context, id string) (*sched, error) {
	sc, ok := s.sched[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownSchedule, id)
	}
	if sc.part.Partition < 0 {
		return nil, fmt.Errorf("%w: %s is not placed yet (waiting for topic %s)", ErrNotOwner, id, sc.part.Topic)
	}
	if !s.cfg.Owns(sc.part) {
		sc.owned = false
		return nil, fmt.Errorf("%w: %s is in partition %d of %s", ErrNotOwner, id, sc.part.Partition, sc.part.Topic)
	}
	if !sc.owned {
		if err := s.takeOver(ctx, sc, s.cfg.Clock.Now()); err != nil {
			return nil, err
		}
	}
	return sc, nil
}

// Pause stops a schedule's ticks; Resume starts them again from now (the
// ticks of the pause are not caught up).
func (s *Scheduler) Pause(ctx context.Context, id string) error  { return s.setPaused(ctx, id, true) }
func (s *Scheduler) Resume(ctx context.Context, id string) error { return s.setPaused(ctx, id, false) }

func (s *Scheduler) setPaused(ctx context.Context, id string, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, err := s.owned(ctx, id)
	if err != nil {
		return err
	}
	if sc.state.Paused == paused {
		return nil
	}
	sc.state.Paused = paused
	if !paused {
		sc.state.LastTick = s.cfg.Clock.Now()
	}
	return s.save(ctx, sc)
}

// TriggerNow publishes a tick for now (to the second), outside the
// schedule and its overlap policy; it starts one saga like any tick.
func (s *Scheduler) TriggerNow(ctx context.Context, id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, err := s.owned(ctx, id)
	if err != nil {
		return "", err
	}
	t := s.cfg.Clock.Now().Truncate(time.Second)
	if _, err := s.publish(ctx, sc, t, true); err != nil {
		return "", err
	}
	s.fired(sc, t)
	if err := s.save(ctx, sc); err != nil {
		s.log.Error("cron: recording a schedule's state failed", "schedule", sc.id, "err", err)
	}
	return TickKey(id, t), nil
}

// Backfill publishes every tick of the schedule in [from, to]. Ticks
// already fired are de-duplicated by their key (schedule and time), so
// only the missing ones start a saga. It returns how many ticks it
// published.
func (s *Scheduler) Backfill(ctx context.Context, id string, from, to time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc, err := s.owned(ctx, id)
	if err != nil {
		return 0, err
	}
	start := from.Add(-time.Nanosecond)
	if every, ok := sc.spec.(robfig.ConstantDelaySchedule); ok {
		start = from.Add(-every.Delay) // "@every": ticks from `from` on, every Delay
	}
	ticks := Ticks(sc.spec, start, to, s.cfg.MaxBackfill+1)
	if len(ticks) > s.cfg.MaxBackfill {
		return 0, fmt.Errorf("%w: more than %d", ErrTooManyTicks, s.cfg.MaxBackfill)
	}
	defer func() {
		if err := s.save(ctx, sc); err != nil {
			s.log.Error("cron: recording a schedule's state failed", "schedule", sc.id, "err", err)
		}
	}()
	for i, t := range ticks {
		if _, err := s.publish(ctx, sc, t, true); err != nil {
			return i, err
		}
		s.fired(sc, t)
	}
	return len(ticks), nil
}
