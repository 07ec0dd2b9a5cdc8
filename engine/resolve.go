package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Resolution of failed sagas, and the history of operator actions. Every
// action an operator takes on a saga — retry (RetryWith, park.go), retry
// with an edited context, resolve, cancel — is recorded in the saga's
// history (storage.Saga.History) in the same store write as its effect, so
// the history says exactly what happened to the saga and who did it.

// Audit says who acts on a saga and why. It is recorded in the saga's
// history (storage.HistoryEntry).
type Audit struct {
	// Reason is what the operator says: required by Resolve, optional
	// otherwise; at most storage.MaxReasonBytes.
	Reason string
	// By names who acts (the API's authenticated caller; "" when unknown).
	By string
}

// retryFailedWith retries a failed saga (RetryWith), its context replaced
// first when edit is set, with entry recorded in its history.
func (e *Engine) retryFailedWith(rec *storage.Saga, edit json.RawMessage, entry storage.HistoryEntry) error {
	if edit == nil {
		storage.AppendHistory(rec, entry)
		return e.retryFailed(rec)
	}
	edited, err := e.editContext(e.routes.Saga(rec.Name), rec.Context, edit)
	if err != nil {
		return err
	}
	entry.Action, entry.PreviousContext = storage.ActionRetryWithContext, rec.Context
	rec.Context = edited
	storage.AppendHistory(rec, entry)
	if !forward(rec) {
		return e.retryFailed(rec)
	}
	if !e.persist(rec) {
		return errors.New("engine: retry not recorded (store closed)")
	}
	e.enqueue(rec)
	return nil
}

// forward puts a saga that failed while compensating for a failed step
// back on its way forward (see RetryWith); false when no step failed.
func forward(rec *storage.Saga) bool {
	failed := false
	for _, st := range rec.Steps {
		failed = failed || st.Status == storage.StepFailed
	}
	if !failed {
		return false
	}
	for i := range rec.Steps {
		switch st := &rec.Steps[i]; st.Status {
		case storage.StepCompensationFailed: // its effect stands
			st.Status, st.CompError, st.CompEndedAt = storage.StepCompleted, "", time.Time{}
		case storage.StepCompensated, storage.StepFailed: // runs again (Attempts keep counting)
			*st = storage.Step{Name: st.Name, Status: storage.StepPending, Attempts: st.Attempts}
		}
	}
	rec.Status, rec.Error = storage.StatusExecuting, ""
	return true
}

// Resolve marks a failed saga resolved by hand: an operator dealt with it
// outside the saga. It gets the terminal status resolved (it no longer
// counts as failed), and the reason — required — goes into its history. It
// returns an error wrapping ErrInvalidReason without a reason (or with one
// that is too long), ErrConflict unless the saga is failed, ErrNotOwned
// when another member runs it and an error wrapping storage.ErrNotFound for
// an unknown ID.
func (e *Engine) Resolve(ctx context.Context, id string, a Audit) error {
	if err := checkReason(a.Reason, true); err != nil {
		return err
	}
	pos, _, err := e.locate(ctx, id)
	if err != nil {
		return err
	}
	if err := e.checkOwned(pos); err != nil {
		return err
	}
	e.opMu.Lock()
	defer e.opMu.Unlock()
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return err
	}
	switch rec.Status {
	case storage.StatusFailed:
	case storage.StatusResolved:
		return fmt.Errorf("%w: %s is already resolved%s", ErrConflict, id, resolvedBy(rec))
	default:
		return fmt.Errorf("%w: %s is %s; only failed sagas can be resolved", ErrConflict, id, rec.Status)
	}
	rec.Status = storage.StatusResolved
	storage.AppendHistory(rec, e.entry(storage.ActionResolve, a))
	if !e.persist(rec) {
		return errors.New("engine: resolution not recorded (store closed)")
	}
	return nil
}

// resolvedBy describes a resolved saga's last resolution for an error.
func resolvedBy(rec *storage.Saga) string {
	for i := len(rec.History) - 1; i >= 0; i-- {
		if h := rec.History[i]; h.Action == storage.ActionResolve {
			s := " at " + h.At.Format(time.RFC3339)
			if h.By != "" {
				s += " by " + h.By
			}
			return s + ": " + h.Reason
		}
	}
	return ""
}

// entry is a history entry of an action taken now.
func (e *Engine) entry(action storage.Action, a Audit) storage.HistoryEntry {
	return storage.HistoryEntry{At: e.now(), Action: action, Reason: a.Reason, By: a.By}
}

// checkReason checks an operator's reason.
func checkReason(reason string, required bool) error {
	switch {
	case required && strings.TrimSpace(reason) == "":
		return fmt.Errorf("%w: a reason is required (say what was done about the saga)", ErrInvalidReason)
	case len(reason) > storage.MaxReasonBytes:
		return fmt.Errorf("%w: the reason has %d bytes; at most %d are accepted", ErrInvalidReason, len(reason), storage.MaxReasonBytes)
	}
	return nil
}

// takeCancelNotes records in rec's history the cancels of a running saga
// (by its run's cancel flag), as the executor acts on them.
func (e *Engine) takeCancelNotes(rec *storage.Saga, flag *atomic.Bool) {
	e.mu.Lock()
	notes := e.cancelNotes[flag]
	delete(e.cancelNotes, flag)
	e.mu.Unlock()
	for _, n := range notes {
		storage.AppendHistory(rec, n)
	}
}

// editContext checks an operator's new context for a saga whose context is
// old, and returns it as it will be recorded (compact; masked sensitive
// fields given back their recorded values).
func (e *Engine) editContext(decl *Saga, old, edit []byte) ([]byte, error) {
	edit = bytes.TrimSpace(edit)
	if len(edit) == 0 {
		return nil, fmt.Errorf("%w: the context is empty; want a JSON object (omit it to keep the saga's context)", ErrInvalidContext)
	}
	dec := json.NewDecoder(bytes.NewReader(edit))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: the context is not valid JSON: %v", ErrInvalidContext, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: the context has data after its JSON value; want one JSON object", ErrInvalidContext)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		what := "null"
		if v != nil {
			what = describe(v)
		}
		return nil, fmt.Errorf("%w: the context is %s; want a JSON object", ErrInvalidContext, what)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, edit); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidContext, err)
	}
	if decl != nil && len(decl.Sensitive) > 0 && bytes.Contains(edit, []byte(`"`+Masked+`"`)) {
		var prev any
		pd := json.NewDecoder(bytes.NewReader(old))
		pd.UseNumber()
		_ = pd.Decode(&prev) // a context that is not JSON keeps nothing
		changed := false
		for _, p := range decl.Sensitive {
			if err := unmaskPath(obj, prev, strings.Split(p, "."), p, &changed); err != nil {
				return nil, err
			}
		}
		if changed {
			b, err := json.Marshal(obj)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrInvalidContext, err)
			}
			out.Reset()
			out.Write(b)
		}
	}
	if out.Len() > e.maxCtx {
		return nil, fmt.Errorf("%w: the context has %d bytes, over the limit of %d (the engine's MaxContextBytes)", ErrInvalidContext, out.Len(), e.maxCtx)
	}
	return out.Bytes(), nil
}

// unmaskPath gives a sensitive field of the new context that holds Masked
// the value the old context has at the same place (what the API masked).
func unmaskPath(v, old any, path []string, full string, changed *bool) error {
	switch x := v.(type) {
	case map[string]any:
		child, ok := x[path[0]]
		if !ok {
			return nil
		}
		var oldChild any
		oldHas := false
		if om, ok := old.(map[string]any); ok {
			oldChild, oldHas = om[path[0]]
		}
		if len(path) > 1 {
			return unmaskPath(child, oldChild, path[1:], full, changed)
		}
		if s, ok := child.(string); !ok || s != Masked {
			return nil
		}
		if !oldHas {
			return fmt.Errorf("%w: the sensitive field %q is %q (masked), but the saga's context has no value there to keep; give the value", ErrInvalidContext, full, Masked)
		}
		x[path[0]], *changed = oldChild, true
	case []any:
		oa, _ := old.([]any)
		for i := range x {
			var o any
			if i < len(oa) {
				o = oa[i]
			}
			if err := unmaskPath(x[i], o, path, full, changed); err != nil {
				return err
			}
		}
	}
	return nil
}
