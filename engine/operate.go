package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// locate returns where the saga named id lives: its position, from a
// position ID, or from the stored record of a keyed ID (an error wrapping
// storage.ErrNotFound when this member has no such saga).
func (e *Engine) locate(ctx context.Context, id string) (storage.Position, string, error) {
	ref, err := storage.ParseRef(id)
	if err != nil {
		return storage.Position{}, "", err
	}
	if !ref.Keyed {
		return ref.Pos, ref.Name, nil
	}
	s, err := e.store.Get(ctx, id)
	if err != nil {
		return storage.Position{}, "", err
	}
	return s.Source, s.Name, nil
}

// checkOwned returns ErrNotOwned when pos's partition runs elsewhere.
func (e *Engine) checkOwned(pos storage.Position) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.partOf(pos) == nil {
		return fmt.Errorf("%w: %s", ErrNotOwned, pos.TopicPartition())
	}
	return nil
}

// Cancel stops a pending or executing saga and compensates what it
// completed; it ends rolled_back (or failed if a compensation gives up).
// An executing saga finishes its current step first. A parked saga is
// compensated with the compensations of a definition that knows the steps
// it completed (see cancelParked). It returns ErrConflict for a finished
// saga (or a parked one no definition here can undo), ErrNotOwned when
// another member runs it, and an error wrapping storage.ErrNotFound for an
// unknown ID.
func (e *Engine) Cancel(ctx context.Context, id string) error {
	return e.CancelWith(ctx, id, Audit{})
}

// CancelWith is Cancel recording who cancels and why in the saga's history
// (a running saga records it when it stops, at its next step boundary).
func (e *Engine) CancelWith(ctx context.Context, id string, a Audit) error {
	if err := checkReason(a.Reason, false); err != nil {
		return err
	}
	pos, name, err := e.locate(ctx, id)
	if err != nil {
		return err
	}
	if err := e.checkOwned(pos); err != nil {
		return err
	}
	e.opMu.Lock()
	defer e.opMu.Unlock()
	entry := e.entry(storage.ActionCancel, a)
	ref := sagaRef{pos, name}
	rec, running := e.takeOut(ref)
	if running != nil {
		e.mu.Lock()
		if e.active[ref] == running { // else it has just left: the cancel has nothing to stop
			e.cancelNotes[running] = append(e.cancelNotes[running], entry)
			// If the run ends recording a wait, the cancel is applied when
			// it runs again for this (wait.go).
			e.inbox[ref] = append(e.inbox[ref], delivery{kind: deliverCancel, entry: &entry})
		}
		e.mu.Unlock()
		running.Store(true) // the executor compensates at the next step boundary
		return nil
	}
	if rec == nil {
		if rec, err = e.store.Get(ctx, id); err != nil {
			return err
		}
	}
	if rec.Status.Terminal() {
		return fmt.Errorf("%w: %s is %s", ErrConflict, id, rec.Status)
	}
	if rec.Wait != nil && rec.Status != storage.StatusParked { // it waits: its executor applies the cancel (one writer per saga)
		if rec.Status != storage.StatusExecuting {
			return fmt.Errorf("%w: %s is compensating already", ErrConflict, id)
		}
		e.mu.Lock()
		delete(e.waking, ref) // taken out of the resumes lane, if it was there
		e.mu.Unlock()
		e.deliver(pos, name, delivery{kind: deliverCancel, entry: &entry})
		return nil
	}
	storage.AppendHistory(rec, entry)
	v, reason := e.routes.bind(rec)
	if rec.Status == storage.StatusParked || reason != "" {
		if rec.Status != storage.StatusParked {
			rec.Park = &storage.Park{Reason: reason, Since: e.now(), From: rec.Status}
		}
		return e.cancelParked(rec)
	}
	if len(rec.Steps) == 0 {
		rec.Steps = PendingSteps(v.saga)
	}
	if rec.Definition == "" {
		rec.Definition = v.fp
	}
	rec.Error = "cancelled"
	rec.Status = storage.StatusCompensating
	if !needsCompensation(v.saga, rec) {
		rec.Status = storage.StatusRolledBack
	}
	if !e.persist(rec) {
		return errors.New("engine: cancel not recorded (store closed)")
	}
	if rec.Status == storage.StatusCompensating {
		e.enqueue(rec)
	}
	return nil
}

// Retry resumes a failed saga from where it stopped: a compensation that
// gave up is tried again (and the rest of the compensation after it). A
// parked saga is moved onto the current declaration, its steps mapped by
// name (RetryWith maps them otherwise). It returns ErrConflict unless the
// saga is failed or parked. It is RetryWith without options (see there for
// the history).
func (e *Engine) Retry(ctx context.Context, id string) error {
	return e.RetryWith(ctx, id, RetryOptions{})
}

// retryFailed puts a failed saga back to where it stopped.
func (e *Engine) retryFailed(rec *storage.Saga) error {
	cause := compensationCause(rec)
	rec.Status, rec.Error = storage.StatusExecuting, ""
	for i := range rec.Steps {
		if st := &rec.Steps[i]; st.Status == storage.StepCompensationFailed {
			// Records of older versions stamped compensated_at on a failure.
			st.Status, st.CompError, st.CompEndedAt = storage.StepCompleted, "", time.Time{}
			rec.Status = storage.StatusCompensating
		}
	}
	if rec.Status == storage.StatusExecuting {
		for _, st := range rec.Steps {
			if st.Status == storage.StepFailed || st.Status == storage.StepCompensated {
				rec.Status = storage.StatusCompensating // it had failed for good: finish undoing
			}
		}
	}
	if rec.Status == storage.StatusCompensating {
		rec.Error = cause // still compensating for the same reason
	}
	if !e.persist(rec) {
		return errors.New("engine: retry not recorded (store closed)")
	}
	e.enqueue(rec)
	return nil
}
