package engine

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/sagaz-go/sagaz/storage"
)

// lane queues the sagas of one trigger: its MaxConcurrent and RateLimit
// apply here. Guarded by Engine.mu.
type lane struct {
	id      string
	trigger *Trigger // nil for sagas whose trigger is no longer declared
	home    string   // the topic whose partitions its sagas live in (limits.go)
	limit   int      // this member's share of MaxConcurrent (0: none)
	rate    *rate.Limiter
	running int
	waking  bool
	queue   laneQueue
	// perKey bounds the sagas executing per concurrency-key value (0: no
	// concurrency key); keyRunning counts them.
	perKey     int
	keyRunning map[string]int
}

// keepRecords is how many queued sagas per lane keep their record in
// memory; past it only the reference is kept and the record is read back
// from the store when the saga starts. A long backlog (a throttled trigger,
// a recovery of many pending sagas) then costs a few dozen bytes a saga.
var keepRecords = 16384

// queued is a saga waiting in a lane: its record, or only where it is.
type queued struct {
	rec     *storage.Saga // nil: read it from the store at start
	pos     storage.Position
	name    string
	status  storage.Status
	concKey string // the saga's concurrency-key value ("" when none)
}

func (l *lane) len() int { return l.queue.len() }

// push queues s, keeping its record while the lane holds fewer than
// keepRecords sagas.
func (l *lane) push(s *storage.Saga) {
	q := queued{pos: s.Source, name: s.Name, status: s.Status, concKey: s.ConcurrencyKey}
	if l.len() < keepRecords {
		q.rec = s
	}
	l.queue.push(q)
}

func (l *lane) peek() queued { return l.queue.peek() }

// drop removes the queued sagas matching fn and returns how many.
func (l *lane) drop(fn func(queued) bool) int { return l.queue.drop(fn) }

func (l *lane) pop() queued { return l.queue.pop() }

// laneFor returns (creating) the lane with the given id; t may be nil for
// sagas whose trigger is no longer declared (no limits then).
func (e *Engine) laneFor(id string, t *Trigger) *lane {
	if l, ok := e.lanes[id]; ok {
		return l
	}
	l := &lane{id: id, trigger: t}
	if t != nil {
		l.limit = t.maxConc
		l.perKey = t.concMax
		if t.rate.PerSecond > 0 {
			l.rate = rate.NewLimiter(rate.Limit(t.rate.PerSecond), max(t.rate.Burst, 1))
		}
		l.home = e.homeTopic(t)
	}
	e.lanes[id] = l
	e.order = append(e.order, l)
	return l
}

// enqueue queues a recorded saga for execution, if its partition is owned
// here (otherwise it stays recorded for the owner to run).
func (e *Engine) enqueue(s *storage.Saga) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.partOf(s.Source) == nil {
		return
	}
	var l *lane
	if rt := routeOf(e.routes, s.Name, s.Trigger); rt != nil {
		l = e.laneFor(rt.ID(), rt.Trigger)
	} else {
		l = e.laneFor("saga:"+s.Name, nil)
	}
	if !e.busy {
		e.idle, e.busy = make(chan struct{}), true
	}
	l.push(s)
	e.queued++
	e.dispatchLocked()
}

// dispatchLocked starts queued sagas while slots are free: round-robin over
// lanes, each within its MaxConcurrent and rate limit.
func (e *Engine) dispatchLocked() {
	if e.state != stateRunning {
		return
	}
	now := e.clock.Now()
	for e.running < e.maxIn && e.queued > 0 {
		var picked *lane
		for i := range e.order {
			l := e.order[(e.rr+i)%len(e.order)]
			if l.len() == 0 || l.limit > 0 && l.running >= l.limit || !l.hasEligible() {
				continue
			}
			if l.rate != nil && l.peek().status == storage.StatusPending {
				r := l.rate.ReserveN(now, 1)
				if d := r.DelayFrom(now); d > 0 {
					r.CancelAt(now)
					e.wakeLocked(l, d)
					continue
				}
			}
			picked = l
			e.rr = (e.rr + i + 1) % len(e.order)
			break
		}
		if picked == nil {
			return
		}
		s, ok := picked.popEligible()
		if !ok {
			return
		}
		e.queued--
		ps := e.partOf(s.pos)
		if ps == nil { // released meanwhile (Release drops its queue; defensive)
			continue
		}
		if !e.claimLocked(sagaRef{s.pos, s.name}) {
			continue // it runs: its goroutine runs it again as it ends (wait.go)
		}
		ps.running++
		picked.running++
		picked.keyStarted(s)
		e.running++
		if s.status == storage.StatusPending {
			e.starting++ // until execute records it executing
		}
		// Registered now, under the lock: from here on Cancel and Retry
		// find it running (there is no moment when it is neither queued
		// nor active).
		cancelled := new(atomic.Bool)
		e.active[sagaRef{s.pos, s.name}] = cancelled
		e.wg.Add(1)
		go e.execute(picked, s, ps, cancelled)
	}
}

// wakeLocked dispatches again once a rate-limited lane has a token.
func (e *Engine) wakeLocked(l *lane, d time.Duration) {
	if l.waking {
		return
	}
	l.waking = true
	e.clock.AfterFunc(d, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		l.waking = false
		e.dispatchLocked()
	})
}

func (e *Engine) finished(l *lane, ps *partState, starting bool, concKey string) {
	e.mu.Lock()
	if starting {
		e.starting--
	}
	l.running--
	l.keyEnded(concKey)
	e.running--
	ps.running--
	if ps.released && ps.running == 0 {
		close(ps.drained)
	}
	e.maybeIdleLocked()
	e.dispatchLocked()
	e.mu.Unlock()
	e.wg.Done()
}

// maybeIdleLocked closes the idle channel when nothing waits or runs.
func (e *Engine) maybeIdleLocked() {
	if e.busy && e.queued == 0 && e.running == 0 {
		close(e.idle)
		e.busy = false
	}
}

type stepResult int

const (
	stepOK stepResult = iota
	stepFailed
	stepAbandoned // shutdown: leave the saga where it is recorded
	stepWaiting   // the saga waits (recorded): a reply, an event or a timer resumes it
)

// execute carries one saga as far as it goes: the remaining steps, then
// compensation if a step fails for good.
func (e *Engine) execute(l *lane, q queued, ps *partState, cancelled *atomic.Bool) {
	starting := q.status == storage.StatusPending // counted in e.starting (dispatchLocked)
	defer func() { e.finished(l, ps, starting, q.concKey) }()
	defer e.deactivate(sagaRef{q.pos, q.name}, cancelled)
	stop := ps.ctx // done: start no new step (shutdown or partition released)
	ref := sagaRef{q.pos, q.name}
	rec := q.rec
	if rec == nil {
		var err error
		if rec, err = e.store.Get(context.Background(), storage.FormatID(q.pos, q.name)); err != nil {
			// Only a closed or broken store gets here; the saga stays
			// recorded as it is and resumes at the next start.
			e.log.Error("cannot read queued saga", "saga_id", storage.FormatID(q.pos, q.name), "err", err)
			return
		}
	}
	if rec.Status.Terminal() { // what was delivered to it comes too late (wait.go)
		for _, d := range e.takeInbox(ref) {
			d.finish(Handled(IgnoreDuplicate))
		}
		return
	}
	// The definition the saga runs with (park.go): none here parks it.
	decl, ok := e.bindOrPark(rec, cancelled)
	if !ok {
		return
	}
	run := &Run{ID: rec.ID(), Saga: rec.Name, Source: rec.Source, base: e.log, raw: rec.Context, maxCtx: e.maxCtx}
	if rec.Status == storage.StatusPending {
		e.logOutcome(rec, slog.LevelDebug, "saga started")
		// Recorded before the first step starts, so that the listing, the
		// saga's view and the metrics agree that it executes. The write
		// joins the store's group commit like every transition.
		if stop.Err() != nil {
			return
		}
		rec.Status = storage.StatusExecuting
		ok := e.persist(rec)
		if starting { // a parked saga resumed as pending was not counted
			e.mu.Lock()
			e.starting--
			starting = false
			e.mu.Unlock()
		}
		if !ok {
			return
		}
	}
	if r := e.resume(decl, rec, run, ref); r != stepOK { // what was delivered while it waited (wait.go)
		return
	}
	if rec.Status == storage.StatusExecuting {
		for i := range decl.Steps {
			if rec.Steps[i].Status == storage.StepCompleted {
				continue
			}
			if stop.Err() != nil {
				return
			}
			if cancelled.Load() { // an operator cancelled it: undo what is done
				rec.Status, rec.Error = storage.StatusCompensating, "cancelled"
				e.takeCancelNotes(rec, cancelled)
				if !needsCompensation(decl, rec) {
					rec.Status = storage.StatusRolledBack
				}
				if !e.persist(rec) {
					return
				}
				break
			}
			r := stepOK
			if decl.Steps[i].waits() { // a command, an await or a sleep (wait.go)
				r = e.startWaiting(stop, decl, rec, run, i, false)
			} else {
				r = e.runAction(stop, decl, rec, run, i)
			}
			if r != stepOK {
				if r == stepAbandoned || r == stepWaiting {
					return
				}
				break
			}
		}
	}
	if rec.Status == storage.StatusCompensating {
		e.compensate(stop, decl, rec, run)
	}
}

// PendingSteps returns the step records of a saga that has not started:
// every step pending. Sagas are recorded without them until they run.
func PendingSteps(decl *Saga) []storage.Step {
	steps := make([]storage.Step, len(decl.Steps))
	for i := range steps {
		steps[i] = storage.Step{Name: decl.Steps[i].Name, Status: storage.StepPending}
	}
	return steps
}

func (e *Engine) now() time.Time { return e.clock.Now().UTC() }

// runAction runs step i's action with its retry policy and records the
// result.
func (e *Engine) runAction(stop context.Context, decl *Saga, rec *storage.Saga, run *Run, i int) stepResult {
	st, sd := &rec.Steps[i], &decl.Steps[i]
	pol := sd.Retry.orDefault(DefaultRetry)
	run.Step, run.Compensating = sd.Name, false
	if st.StartedAt.IsZero() {
		st.StartedAt = e.now()
	}
	for attempt := run.firstAttempt(i, false); ; attempt++ {
		run.Attempt = attempt
		st.Attempts++
		err := e.call(sd.Action, sd.Timeout, run)
		if err == nil {
			raw, cerr := run.commit()
			if cerr == nil {
				rec.Context = raw
				st.Status, st.EndedAt, st.Error = storage.StepCompleted, e.now(), ""
				if i == len(decl.Steps)-1 {
					rec.Status = storage.StatusCompleted
				}
				if !e.persist(rec) {
					return stepAbandoned
				}
				return stepOK
			}
			err = Permanent(cerr)
		}
		run.discard()
		if e.runCtx.Err() != nil {
			return stepAbandoned // cut off by shutdown, not the step's failure
		}
		st.Error = err.Error()
		if IsPermanent(err) || attempt >= pol.MaxAttempts {
			st.Status, st.EndedAt = storage.StepFailed, e.now()
			rec.Error = fmt.Sprintf("step %q failed after %d attempt(s): %v", sd.Name, attempt, err)
			rec.Status = storage.StatusCompensating
			if !needsCompensation(decl, rec) {
				rec.Status = storage.StatusRolledBack
			}
			if !e.persist(rec) {
				return stepAbandoned
			}
			return stepFailed
		}
		d := pol.Delay(attempt, rand.Float64())
		run.Logger().Debug("step failed; retrying", "step", sd.Name, "attempt", attempt, "in", d, "err", err)
		if e.durableDelay(d) { // a long back-off holds no goroutine (wait.go)
			return e.waitRetry(rec, i, false, uint32(attempt), d)
		}
		if e.clock.Sleep(stop, d) != nil {
			return stepAbandoned
		}
	}
}

// causeMarker joins a failed compensation's error and the reason the saga
// was compensating.
const causeMarker = " (compensating because: "

// compensationCause says why a failed saga was compensating: the text kept
// after causeMarker in its error, else its failed step's error. A retry
// puts it back as the saga's error, so the cause is not lost.
func compensationCause(rec *storage.Saga) string {
	for _, marker := range []string{causeMarker, " (after: "} { // the second: records of older versions
		if _, after, ok := strings.Cut(rec.Error, marker); ok && after != ")" {
			return strings.TrimSuffix(after, ")")
		}
	}
	for i := range rec.Steps {
		if st := &rec.Steps[i]; st.Status == storage.StepFailed {
			return fmt.Sprintf("step %q failed after %d attempt(s): %s", st.Name, st.Attempts, st.Error)
		}
	}
	return ""
}

// needsCompensation reports whether a completed step has a compensation
// still to run.
func needsCompensation(decl *Saga, rec *storage.Saga) bool {
	for i := range rec.Steps {
		if compensable(decl, rec, i) {
			return true
		}
	}
	return false
}

// compensate undoes the completed steps in reverse order. A compensation
// that gives up ends the saga failed, with the error recorded; the steps
// before it are left as they are for an operator to look at (and retry).
func (e *Engine) compensate(stop context.Context, decl *Saga, rec *storage.Saga, run *Run) {
	for i := len(decl.Steps) - 1; i >= 0; i-- {
		st, sd := &rec.Steps[i], &decl.Steps[i]
		if !compensable(decl, rec, i) {
			continue
		}
		if stop.Err() != nil {
			return
		}
		if sd.CompensateCommand != nil { // a command: the reply resumes the saga (wait.go)
			if e.startWaiting(stop, decl, rec, run, i, true) != stepFailed || rec.Status != storage.StatusCompensating {
				return
			}
			continue
		}
		pol := sd.CompensateRetry.orDefault(DefaultCompensateRetry)
		run.Step, run.Compensating = sd.Name, true
		for attempt := run.firstAttempt(i, true); ; attempt++ {
			run.Attempt = attempt
			st.CompAttempts++
			err := e.call(sd.Compensate, sd.Timeout, run)
			if err == nil {
				if raw, cerr := run.commit(); cerr != nil {
					err = Permanent(cerr)
				} else {
					rec.Context = raw
				}
			}
			if err == nil {
				st.Status, st.CompEndedAt, st.CompError = storage.StepCompensated, e.now(), ""
				if !needsCompensation(decl, rec) {
					rec.Status = storage.StatusRolledBack
				}
				if !e.persist(rec) {
					return
				}
				break
			}
			run.discard()
			if e.runCtx.Err() != nil {
				return
			}
			st.CompError = err.Error()
			if IsPermanent(err) || attempt >= pol.MaxAttempts {
				// No CompEndedAt: it says when the step was compensated,
				// and it was not (the saga's UpdatedAt says when it gave up).
				st.Status, st.CompEndedAt = storage.StepCompensationFailed, time.Time{}
				cause := rec.Error // why it was compensating
				rec.Status = storage.StatusFailed
				rec.Error = fmt.Sprintf("compensation of step %q failed after %d attempt(s): %v", sd.Name, attempt, err)
				if cause != "" {
					rec.Error += causeMarker + cause + ")"
				}
				e.persist(rec)
				return
			}
			d := pol.Delay(attempt, rand.Float64())
			run.Logger().Debug("compensation failed; retrying", "step", sd.Name, "attempt", attempt, "in", d, "err", err)
			if e.durableDelay(d) {
				e.waitRetry(rec, i, true, uint32(attempt), d)
				return
			}
			if e.clock.Sleep(stop, d) != nil {
				return
			}
		}
	}
	if rec.Status == storage.StatusCompensating { // nothing was left to compensate
		rec.Status = storage.StatusRolledBack
		e.persist(rec)
	}
}

// sagaRef names a saga by where it lives: its position and saga name.
type sagaRef struct {
	pos  storage.Position
	name string
}

// deactivate forgets a saga that leaves the executor — unless it was
// queued and dispatched again meanwhile (a cancelled parked saga): that
// run's registration stays.
func (e *Engine) deactivate(r sagaRef, flag *atomic.Bool) {
	e.mu.Lock()
	if e.active[r] == flag {
		delete(e.active, r)
		if len(e.inbox[r]) > 0 { // delivered while it ran: it runs again (wait.go)
			e.wakeSagaLocked(r)
		}
	}
	delete(e.cancelNotes, flag) // a cancel that came as the saga ended had no effect
	e.mu.Unlock()
}

// call runs a step function with its timeout, turning a panic into an error.
func (e *Engine) call(fn StepFunc, timeout time.Duration, run *Run) (err error) {
	ctx := e.runCtx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
			run.Logger().Error("step panicked", "step", run.Step, "compensating", run.Compensating, "panic", r, "stack", string(err.(*PanicError).Stack))
		}
		if e.onStep != nil {
			e.onStep(run.Saga, run.Step, run.Compensating, time.Since(start), err)
		}
	}()
	return fn(ctx, run)
}

// persist records the saga durably, retrying while the store fails (a full
// disk, say) until shutdown. It reports whether the state was recorded.
func (e *Engine) persist(rec *storage.Saga) bool { return e.persistWith(rec, nil) }

// finishedLog logs a saga's end: completed at debug (info with
// Config.LogCompleted), rolled back at info, failed at warn — a failed saga
// needs a person.
func (e *Engine) finishedLog(rec *storage.Saga) {
	switch rec.Status {
	case storage.StatusCompleted:
		lvl := slog.LevelDebug
		if e.logCompleted {
			lvl = slog.LevelInfo
		}
		e.logOutcome(rec, lvl, "saga completed")
	case storage.StatusRolledBack:
		e.logOutcome(rec, slog.LevelInfo, "saga rolled back")
	case storage.StatusFailed:
		e.logOutcome(rec, slog.LevelWarn, "saga failed", "action", "inspect with `sagaz sagas show "+rec.ID()+"`, then retry (with an edited context if need be) or resolve")
	case storage.StatusResolved:
		var reason, by string
		if n := len(rec.History); n > 0 {
			reason, by = rec.History[n-1].Reason, rec.History[n-1].By
		}
		e.logOutcome(rec, slog.LevelInfo, "saga resolved by hand", "reason", reason, "by", by)
	}
}

// logOutcome writes one lifecycle line, bounded per kind.
func (e *Engine) logOutcome(rec *storage.Saga, lvl slog.Level, msg string, extra ...any) {
	if !e.outcomes.Enabled(context.Background(), lvl) {
		return // the arguments (the saga's id) cost an allocation per saga
	}
	args := []any{"saga_id", rec.ID(), "saga", rec.Name, "trigger", rec.Trigger, "idempotency_key", rec.IdempotencyKey}
	if rec.Error != "" {
		args = append(args, "error", rec.Error)
	}
	if rec.Status.Terminal() && !rec.CreatedAt.IsZero() {
		args = append(args, "took", rec.UpdatedAt.Sub(rec.CreatedAt).Round(time.Millisecond))
	}
	e.outcomes.Log(context.Background(), lvl, msg, append(args, extra...)...)
}
