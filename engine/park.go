package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/sagaz-go/sagaz/storage"
)

// Parking (see definition.go). The executor runs a saga only with the
// definition it is bound to; when this build has none, the saga is parked:
// recorded as parked with the reason, out of its lane, holding no slot, so
// the rest of its partition goes on. Every time the saga is queued again —
// its partition acquired by a member, the engine started — the executor
// looks again and resumes it where a definition fits.

// bindOrPark returns the definition rec runs with, resuming it if it was
// parked. Without one it parks rec (recorded; a saga parked already is left
// as it is) and returns false. rec's steps are filled in for a saga that
// has not started one, and its definition fingerprint set (recorded with
// its next write).
func (e *Engine) bindOrPark(rec *storage.Saga, cancelled *atomic.Bool) (*Saga, bool) {
	v, reason := e.routes.bind(rec)
	if reason != "" {
		if rec.Status == storage.StatusParked {
			e.log.Debug("saga stays parked: no definition of this build fits", "saga_id", rec.ID(), "reason", reason)
		} else {
			e.park(rec, reason)
		}
		if cancelled.Load() { // an operator cancelled it meanwhile
			e.takeCancelNotes(rec, cancelled)
			if err := e.cancelParked(rec); err != nil {
				e.log.Warn("cancel of a parked saga not carried out", "saga_id", rec.ID(), "err", err)
			}
		}
		return nil, false
	}
	if rec.Status == storage.StatusParked {
		from := rec.Park.From
		e.logOutcome(rec, slog.LevelInfo, "parked saga resumed: its definition is declared here", "definition", v.fp, "status", from)
		rec.Status, rec.Park = from, nil
		if rec.Definition == "" && len(rec.Steps) > 0 {
			rec.Definition = v.fp
		}
		if !e.persist(rec) {
			return nil, false
		}
	}
	if len(rec.Steps) == 0 {
		rec.Steps = PendingSteps(v.saga)
	}
	if rec.Definition == "" {
		rec.Definition = v.fp
	}
	return v.saga, true
}

// park records rec as parked with the reason.
func (e *Engine) park(rec *storage.Saga, reason string) {
	rec.Park = &storage.Park{Reason: reason, Since: e.now(), From: rec.Status}
	rec.Status = storage.StatusParked
	e.logOutcome(rec, slog.LevelWarn, "saga parked", "reason", reason,
		"action", "it resumes where a member declaring its definition owns its partition; or `sagaz sagas retry "+rec.ID()+"` (with --map OLD=NEW) or `sagaz sagas cancel "+rec.ID()+"`")
	e.persist(rec)
}

// takeOut removes the saga at r from its lane (it is queued) and returns
// its queued record, if the lane kept one. It reports whether the saga is
// running (taken from its lane already): then it is not taken out.
func (e *Engine) takeOut(r sagaRef) (*storage.Saga, *atomic.Bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if flag, ok := e.active[r]; ok {
		return nil, flag
	}
	var rec *storage.Saga
	for _, l := range e.order {
		if n := l.drop(func(x queued) bool {
			if x.pos == r.pos && x.name == r.name {
				rec = x.rec
				return true
			}
			return false
		}); n > 0 {
			e.queued -= n
		}
	}
	e.maybeIdleLocked()
	return rec, nil
}

// cancelParked undoes what a parked saga's record says was done, with the
// compensations of a definition that knows every step that took effect
// (by name; the current declaration first, then the previous versions).
// A saga none of whose steps took effect ends rolled_back at once. It
// returns an error wrapping ErrConflict when no definition knows those
// steps.
func (e *Engine) cancelParked(rec *storage.Saga) error {
	var took []string
	for _, st := range rec.Steps {
		if done(st.Status) {
			took = append(took, st.Name)
		}
	}
	var chosen *version
	var steps []storage.Step
	for _, v := range e.routes.versions[rec.Name] {
		if s, err := remap(rec, v.saga, nil); err == nil {
			chosen, steps = &v, s
			break
		}
	}
	switch {
	case chosen != nil:
		rec.Steps, rec.Definition = steps, chosen.fp
	case len(took) == 0: // nothing to undo, whatever the definition
	default:
		return fmt.Errorf("%w: %s is parked (%s) and no definition of this build has its steps that took effect %q: deploy a build that declares its definition, or retry it with a step mapping",
			ErrConflict, rec.ID(), rec.Park.Reason, took)
	}
	rec.Park, rec.Error = nil, "cancelled"
	rec.Status = storage.StatusRolledBack
	if chosen != nil && needsCompensation(chosen.saga, rec) {
		rec.Status = storage.StatusCompensating
	}
	if !e.persist(rec) {
		return errors.New("engine: cancel not recorded (store closed)")
	}
	if rec.Status == storage.StatusCompensating {
		e.enqueue(rec)
	}
	return nil
}

// RetryOptions says how RetryWith resumes a failed saga or moves a parked
// saga on, and who does it and why (recorded in the saga's history).
type RetryOptions struct {
	// Context, if set, replaces a failed saga's context: a JSON object of
	// at most Config.MaxContextBytes. A field the saga declares Sensitive
	// given as Masked ("***", as the API shows it) keeps its recorded
	// value. The replaced context is kept in the history entry (see
	// storage.AppendHistory for its bounds). Only for failed sagas.
	Context json.RawMessage
	Audit
	// Steps maps the steps a parked saga recorded to the steps of the
	// current declaration: old name -> new name. A recorded step that took
	// effect (completed, or compensated) and is not in the map keeps its
	// name; mapped to "" it is left out (its effect stays and nothing will
	// compensate it). Every recorded step that took effect must land on a
	// step of the current declaration, and no two on the same one. Only for
	// parked sagas.
	Steps map[string]string
}

// RetryWith is Retry with options, recorded in the saga's history (in the
// same write as the retry).
//
// A failed saga without a Context resumes where it stopped (a compensation
// that gave up is tried again). With a Context its context is replaced
// first, and a saga that was compensating because a step failed goes
// forward again: the steps whose effect stands (completed, or whose
// compensation gave up) count as done, and the others — compensated since,
// the step that failed, the steps after it — run again, with the new
// context, from the first of them. (A saga that failed while compensating
// for a cancel keeps compensating, with the new context; one that failed
// before compensating resumes its steps.)
//
// A parked saga is moved onto the current declaration — the steps that
// took effect mapped onto its steps (see RetryOptions) — and resumes in the
// status it was parked from: the steps left run (executing), or the
// compensation goes on (compensating).
//
// It returns an error wrapping ErrInvalidMapping for a mapping that does
// not fit, ErrInvalidContext for a context that is not a JSON object within
// the size limit (or given for a saga that is not failed),
// ErrInvalidReason for a reason that is too long, ErrConflict when the saga
// is neither failed nor parked (a resolved saga is finished for good), is
// being looked at by the executor right now, or is not declared in this
// build, ErrNotOwned when another member runs it and an error wrapping
// storage.ErrNotFound for an unknown ID.
func (e *Engine) RetryWith(ctx context.Context, id string, opts RetryOptions) error {
	if err := checkReason(opts.Reason, false); err != nil {
		return err
	}
	pos, name, err := e.locate(ctx, id)
	if err != nil {
		return err
	}
	if err := e.checkOwned(pos); err != nil {
		return err
	}
	e.opMu.Lock() // one operator action at a time: two retries never both enqueue
	defer e.opMu.Unlock()
	if _, running := e.takeOut(sagaRef{pos, name}); running != nil {
		return fmt.Errorf("%w: %s is being resumed right now; try again", ErrConflict, id)
	}
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return err
	}
	entry := e.entry(storage.ActionRetry, opts.Audit)
	switch rec.Status {
	case storage.StatusFailed:
		if len(opts.Steps) > 0 {
			return fmt.Errorf("%w: %s is failed: a step mapping applies to parked sagas only", ErrInvalidMapping, id)
		}
		return e.retryFailedWith(rec, opts.Context, entry)
	case storage.StatusParked:
		if opts.Context != nil {
			return fmt.Errorf("%w: %s is parked: an edited context applies to failed sagas only", ErrInvalidContext, id)
		}
		storage.AppendHistory(rec, entry)
		return e.retryParked(rec, opts)
	case storage.StatusResolved:
		return fmt.Errorf("%w: %s was resolved by hand%s; a resolved saga is finished for good", ErrConflict, id, resolvedBy(rec))
	default:
		return fmt.Errorf("%w: %s is %s; only failed and parked sagas can be retried", ErrConflict, id, rec.Status)
	}
}

// retryParked moves a parked saga onto the current declaration.
func (e *Engine) retryParked(rec *storage.Saga, opts RetryOptions) error {
	vs := e.routes.versions[rec.Name]
	if len(vs) == 0 {
		return fmt.Errorf("%w: %w: saga %q is not declared in this build, so %s cannot be retried here: deploy a build that declares it, or cancel it",
			ErrConflict, ErrNotRegistered, rec.Name, rec.ID())
	}
	cur := vs[0]
	steps, err := remap(rec, cur.saga, opts.Steps)
	if err != nil {
		return err
	}
	from := rec.Park.From
	rec.Steps, rec.Definition, rec.Park, rec.Status = steps, cur.fp, nil, from
	switch from {
	case storage.StatusExecuting:
		all := true
		for _, st := range rec.Steps {
			all = all && st.Status == storage.StepCompleted
		}
		if all {
			rec.Status = storage.StatusCompleted
		}
	case storage.StatusCompensating:
		if !needsCompensation(cur.saga, rec) {
			rec.Status = storage.StatusRolledBack
		}
	}
	if !e.persist(rec) {
		return errors.New("engine: retry not recorded (store closed)")
	}
	if !rec.Status.Terminal() {
		e.enqueue(rec)
	}
	return nil
}
