package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// Deliveries: what resumes a waiting saga. A reply (or an await step's
// event), a due timer and a cancel are delivered to the engine; only the
// saga's executor applies them (one goroutine per saga at a time: the
// claim in Engine.active), so a delivery never races the goroutine that is
// recording the wait. A delivery for a saga that runs waits in its inbox;
// the goroutine, as it ends, queues the saga again.

type deliveryKind uint8

const (
	deliverReply  deliveryKind = iota + 1 // a reply or an event for the wait
	deliverTimer                          // the wait's deadline may have passed
	deliverCancel                         // an operator cancelled the saga
	deliverRun                            // nothing to apply: run the saga again (it was queued while it ran)
)

// Handled says what became of a delivered reply: Applied (its transition
// is durable), one of the Ignore* reasons, or Dropped (not handled: the
// partition was given up or the engine stopped; the next owner reads the
// reply again).
type Handled string

// What became of a delivery.
const (
	Applied Handled = "applied"
	Dropped Handled = "dropped"
)

type delivery struct {
	kind  deliveryKind
	reply *Reply
	done  func(Handled)
	entry *storage.HistoryEntry // a cancel's, for the saga's history
}

func (d delivery) finish(h Handled) {
	if d.done != nil {
		d.done(h)
	}
}

// DeliverReply hands a reply (or the resume of an await step) to the saga
// it is for. done, if set, is called once: with Applied once the transition
// it caused is durable, with an Ignore* reason when the saga does not wait
// for it, with Dropped when it was not handled (the partition was given up,
// the engine stopped).
func (e *Engine) DeliverReply(r *Reply, done func(Handled)) {
	e.deliver(r.Pos, r.Name, delivery{kind: deliverReply, reply: r, done: done})
}

func (e *Engine) deliver(pos storage.Position, name string, d delivery) {
	ref := sagaRef{pos, name}
	e.mu.Lock()
	if e.partOf(pos) == nil || e.state == stateStopping {
		e.mu.Unlock()
		d.finish(Dropped)
		return
	}
	if d.kind == deliverTimer {
		for _, x := range e.inbox[ref] {
			if x.kind == deliverTimer { // one is enough
				e.mu.Unlock()
				d.finish(Handled(IgnoreDuplicate))
				return
			}
		}
	}
	e.inbox[ref] = append(e.inbox[ref], d)
	e.wakeSagaLocked(ref)
	e.dispatchLocked()
	e.mu.Unlock()
}

// wakeSagaLocked queues the saga on the resumes lane, unless it runs (its
// goroutine queues it again as it ends) or is queued there already.
func (e *Engine) wakeSagaLocked(ref sagaRef) {
	if _, running := e.active[ref]; running || e.waking[ref] {
		return
	}
	e.waking[ref] = true
	if !e.busy {
		e.idle, e.busy = make(chan struct{}), true
	}
	e.resumes.queue.push(queued{pos: ref.pos, name: ref.name, status: storage.StatusExecuting})
	e.queued++
}

// claimLocked reports whether the saga at ref may be dispatched: not while
// it runs (a run delivery then makes its goroutine queue it again as it
// ends: one goroutine per saga at a time).
func (e *Engine) claimLocked(ref sagaRef) bool {
	delete(e.waking, ref)
	if _, running := e.active[ref]; running {
		e.inbox[ref] = append(e.inbox[ref], delivery{kind: deliverRun})
		return false
	}
	return true
}

func (e *Engine) takeInbox(ref sagaRef) []delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	ds := e.inbox[ref]
	delete(e.inbox, ref)
	return ds
}

// dropDeliveriesLocked forgets the deliveries and wake-ups of partition p
// (given up); it returns them so the caller finishes them unlocked.
func (e *Engine) dropDeliveriesLocked(p storage.Partition) []delivery {
	var out []delivery
	for ref, ds := range e.inbox {
		if ref.pos.TopicPartition() == p {
			out = append(out, ds...)
			delete(e.inbox, ref)
		}
	}
	for ref := range e.waking {
		if ref.pos.TopicPartition() == p {
			delete(e.waking, ref)
		}
	}
	return out
}

// resume applies what was delivered to the saga, in order. It returns
// stepOK when the saga goes on from rec (its wait is over, or it had none),
// stepWaiting when it still waits, stepAbandoned when a transition could
// not be recorded.
func (e *Engine) resume(decl *Saga, rec *storage.Saga, run *Run, ref sagaRef) stepResult {
	ds := e.takeInbox(ref)
	res := stepOK
	if rec.Wait != nil {
		res = stepWaiting
	}
	for i, d := range ds {
		if d.kind == deliverRun {
			continue
		}
		if res != stepWaiting {
			d.finish(Handled(IgnoreDuplicate))
			continue
		}
		r, h := e.apply(decl, rec, run, d)
		if r == stepAbandoned {
			for _, rest := range ds[i:] {
				rest.finish(Dropped)
			}
			return stepAbandoned
		}
		d.finish(h)
		res = r
	}
	if res == stepFailed {
		res = stepOK // failed for good: go on compensating (rec says so)
	}
	return res
}

// apply applies one delivery to a waiting saga.
func (e *Engine) apply(decl *Saga, rec *storage.Saga, run *Run, d delivery) (stepResult, Handled) {
	w := rec.Wait
	switch d.kind {
	case deliverCancel:
		if rec.Status != storage.StatusExecuting || w.Compensating {
			return stepWaiting, Handled(IgnoreDuplicate)
		}
		switch st := &rec.Steps[w.Step]; {
		case w.Kind == storage.WaitCommand: // the command is out: it may run, so it is compensated
			st.Status, st.EndedAt, st.Error = storage.StepFailed, e.now(), "cancelled while its command was out"
			addUncertain(rec, w.Step)
		case slices.Contains(rec.Uncertain, w.Step): // an earlier attempt's command timed out: it may have run
			st.Status, st.EndedAt = storage.StepFailed, e.now()
			st.Error = "cancelled while waiting to retry after a command that timed out (" + st.Error + ")"
		}
		rec.Wait = nil
		rec.Status, rec.Error = storage.StatusCompensating, "cancelled"
		if d.entry != nil {
			storage.AppendHistory(rec, *d.entry)
		}
		if !needsCompensation(decl, rec) {
			rec.Status = storage.StatusRolledBack
		}
		return e.recorded2(e.persist(rec), stepOK)
	case deliverTimer:
		if w.Deadline.IsZero() || e.now().Before(w.Deadline) {
			return stepWaiting, Handled(IgnoreDuplicate) // the wait moved on
		}
		switch w.Kind {
		case storage.WaitSleep:
			st := &rec.Steps[w.Step]
			st.Status, st.EndedAt, st.Error = storage.StepCompleted, e.now(), ""
			rec.Wait = nil
			if w.Step == len(decl.Steps)-1 {
				rec.Status = storage.StatusCompleted
			}
			return e.recorded2(e.persist(rec), stepOK)
		case storage.WaitRetry:
			// The back-off is over: the next attempt records itself.
			rec.Wait = nil
			run.retry = retryFrom{step: w.Step, comp: w.Compensating, next: int(w.Attempt) + 1, set: true}
			return stepOK, Applied
		}
		sd := &decl.Steps[w.Step]
		what := "reply"
		if w.Kind == storage.WaitEvent {
			what = "event"
		}
		err := timeoutError(what, sd.Timeout)
		return e.failWaiting(decl, rec, run, w, err, false, w.Kind == storage.WaitCommand && !w.Compensating)
	case deliverReply:
		r := d.reply
		if reason := replyMatch(decl, rec, r); reason != "" {
			return stepWaiting, Handled(reason)
		}
		switch r.Outcome {
		case OutcomeOK:
			return e.succeedWaiting(decl, rec, run, w, r)
		case OutcomeRefused:
			return e.failWaiting(decl, rec, run, w, fmt.Errorf("refused: %s", orNone(r.Error)), true, false)
		default:
			return e.failWaiting(decl, rec, run, w, fmt.Errorf("failed: %s", orNone(r.Error)), false, false)
		}
	}
	return stepWaiting, Handled(IgnoreDuplicate)
}

func orNone(s string) string {
	if s == "" {
		return "(no reason given)"
	}
	return s
}

// recorded2 turns persist's answer into apply's.
func (e *Engine) recorded2(ok bool, r stepResult) (stepResult, Handled) {
	if !ok {
		return stepAbandoned, Dropped
	}
	return r, Applied
}

// succeedWaiting records a reply (or event) that ends a wait well.
func (e *Engine) succeedWaiting(decl *Saga, rec *storage.Saga, run *Run, w *storage.Wait, r *Reply) (stepResult, Handled) {
	sd, st := &decl.Steps[w.Step], &rec.Steps[w.Step]
	run.Step, run.Compensating, run.Attempt = sd.Name, w.Compensating, int(w.Attempt)
	err := mergeReply(run, sd, w, r.Payload)
	var raw []byte
	if err == nil {
		raw, err = run.commit()
	}
	switch {
	case err == nil:
		rec.Context = raw
	case w.Kind == storage.WaitCommand && !w.Compensating:
		// The participant says the command ran, but its reply cannot join
		// the context (not a JSON object, or too large): the step fails for
		// good, and what it did is undone.
		run.discard()
		return e.failWaiting(decl, rec, run, w, err, true, true)
	case w.Kind == storage.WaitCommand:
		// The compensation ran: it is done, whatever its reply says.
		run.discard()
		run.Logger().Warn("a compensation's reply is not merged into the context", "step", sd.Name, "attempt", w.Attempt, "err", err)
	default:
		run.discard()
		return e.failWaiting(decl, rec, run, w, err, true, false)
	}
	rec.Wait = nil
	removeUncertain(rec, w.Step)
	if w.Compensating {
		st.Status, st.CompEndedAt, st.CompError = storage.StepCompensated, e.now(), ""
		if !needsCompensation(decl, rec) {
			rec.Status = storage.StatusRolledBack
		}
	} else {
		st.Status, st.EndedAt, st.Error = storage.StepCompleted, e.now(), ""
		if w.Step == len(decl.Steps)-1 {
			rec.Status = storage.StatusCompleted
		}
	}
	return e.recorded2(e.persist(rec), stepOK)
}

// mergeReply puts a reply's JSON object into the saga's context (at the
// top level), or an event under the await step's Into field.
func mergeReply(run *Run, sd *Step, w *storage.Wait, payload []byte) error {
	if w.Kind == storage.WaitEvent {
		into := sd.Name
		if sd.Await != nil && sd.Await.Into != "" {
			into = sd.Await.Into
		}
		var v any
		d := json.NewDecoder(bytes.NewReader(payload))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			v = string(payload)
		}
		run.Set(into, v)
		return nil
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil
	}
	m, err := decodeObject(payload)
	if err != nil {
		var de *DecodeError
		if errors.As(err, &de) && de.Err != nil {
			err = de.Err
		}
		return fmt.Errorf("the reply's value is not a JSON object (%w)", err)
	}
	for k, v := range m {
		run.Set(k, v)
	}
	return nil
}

// failWaiting records a failed attempt of a waiting step (a failure or
// refusal, a timeout): it is retried after its back-off (a durable wait),
// or the step (or compensation) fails for good. uncertain says the action
// may have run all the same (a timed-out command): if the step fails for
// good it is compensated.
func (e *Engine) failWaiting(decl *Saga, rec *storage.Saga, run *Run, w *storage.Wait, err error, permanent, uncertain bool) (stepResult, Handled) {
	r := e.failAttempt(decl, rec, run, w.Step, w.Compensating, w.Attempt, err, permanent, uncertain)
	return e.recorded2(r != stepAbandoned, r)
}

// failAttempt records that attempt of step i (or its compensation) failed
// with err, and what comes next: stepWaiting (a retry after its back-off),
// stepFailed (the step failed for good: the saga compensates, or its
// compensation failed: the saga failed), stepAbandoned.
func (e *Engine) failAttempt(decl *Saga, rec *storage.Saga, run *Run, i int, comp bool, attempt uint32, err error, permanent, uncertain bool) stepResult {
	sd, st := &decl.Steps[i], &rec.Steps[i]
	rec.Wait = nil
	if !comp {
		pol := sd.Retry.orDefault(DefaultRetry)
		st.Error = err.Error()
		if uncertain && (sd.Compensate != nil || sd.CompensateCommand != nil) {
			// Kept until an attempt succeeds: if the step ends otherwise — a
			// later attempt refused, a cancel during the back-off — what
			// this attempt may have done is compensated.
			addUncertain(rec, i)
		}
		if !permanent && int(attempt) < pol.MaxAttempts {
			return e.waitRetry(rec, i, false, attempt, pol.Delay(int(attempt), rand.Float64()))
		}
		st.Status, st.EndedAt = storage.StepFailed, e.now()
		rec.Error = fmt.Sprintf("step %q failed after %d attempt(s): %v", sd.Name, attempt, err)
		rec.Status = storage.StatusCompensating
		if !needsCompensation(decl, rec) {
			rec.Status = storage.StatusRolledBack
		}
		run.Logger().Debug("step failed", "step", sd.Name, "attempt", attempt, "err", err)
	} else {
		pol := sd.CompensateRetry.orDefault(DefaultCompensateRetry)
		st.CompError = err.Error()
		if !permanent && int(attempt) < pol.MaxAttempts {
			return e.waitRetry(rec, i, true, attempt, pol.Delay(int(attempt), rand.Float64()))
		}
		st.Status, st.CompEndedAt = storage.StepCompensationFailed, time.Time{}
		cause := rec.Error
		rec.Status = storage.StatusFailed
		rec.Error = fmt.Sprintf("compensation of step %q failed after %d attempt(s): %v", sd.Name, attempt, err)
		if cause != "" {
			rec.Error += causeMarker + cause + ")"
		}
	}
	if !e.persist(rec) {
		return stepAbandoned
	}
	return stepFailed
}

// durableDelay reports whether a retry back-off of d is recorded as a
// durable wait rather than slept in the saga's goroutine.
func (e *Engine) durableDelay(d time.Duration) bool {
	return e.durable >= 0 && d >= e.durable
}

// waitRetry records that step i (or its compensation) waits d before the
// attempt after attempt.
func (e *Engine) waitRetry(rec *storage.Saga, i int, comp bool, attempt uint32, d time.Duration) stepResult {
	now := e.now()
	rec.Wait = &storage.Wait{Kind: storage.WaitRetry, Step: i, Attempt: attempt, Compensating: comp, Since: now, Deadline: now.Add(d)}
	return e.recordWait(rec, nil)
}

// retryFrom is where a durable back-off left a step: its next attempt.
type retryFrom struct {
	step int
	comp bool
	next int
	set  bool
}

// firstAttempt returns the number of the first attempt to run of step i
// (or its compensation): 1, or the one after a durable back-off.
func (r *Run) firstAttempt(i int, comp bool) int {
	if r.retry.set && r.retry.step == i && r.retry.comp == comp {
		n := r.retry.next
		r.retry = retryFrom{}
		return n
	}
	return 1
}

// recordWait records the saga waiting (with the outbox entry to produce, if
// any), then produces the entry and tells the timer loop of the deadline.
func (e *Engine) recordWait(rec *storage.Saga, out *pendingOut) stepResult {
	var meta []storage.Meta
	if out != nil {
		meta = []storage.Meta{{Partition: rec.Source.TopicPartition(), Key: out.key, Value: encodeOut(out.rec)}}
	}
	if !e.persistWith(rec, meta) {
		return stepAbandoned
	}
	if out != nil {
		e.send(rec.Source.TopicPartition(), out.key, out.rec)
	}
	e.noteTimer(rec.Source.TopicPartition(), rec.Wait.Deadline)
	return stepWaiting
}

type pendingOut struct {
	key string
	rec *OutRecord
}

// startWaiting starts an attempt of a step that waits (a command, an
// await, a sleep) or of a command compensation: the wait and the record to
// produce are recorded together, then the record is produced; the saga's
// goroutine returns (stepWaiting).
func (e *Engine) startWaiting(stop context.Context, decl *Saga, rec *storage.Saga, run *Run, i int, comp bool) stepResult {
	if stop.Err() != nil {
		return stepAbandoned
	}
	st, sd := &rec.Steps[i], &decl.Steps[i]
	now := e.now()
	run.Step, run.Compensating = sd.Name, comp
	if !comp && sd.Sleep > 0 {
		if st.StartedAt.IsZero() {
			st.StartedAt = now
		}
		st.Attempts = 1
		rec.Wait = &storage.Wait{Kind: storage.WaitSleep, Step: i, Attempt: 1, Since: now, Deadline: now.Add(sd.Sleep)}
		return e.recordWait(rec, nil)
	}
	var attempt uint32
	if comp {
		st.CompAttempts++
		attempt = st.CompAttempts
	} else {
		st.Attempts++
		attempt = st.Attempts
		if st.StartedAt.IsZero() {
			st.StartedAt = now
		}
	}
	run.Attempt = int(attempt)
	replyTopic := ""
	if e.replyTopic != nil {
		replyTopic = e.replyTopic(rec.Source.Topic)
	}
	deadline := now.Add(sd.Timeout)
	var (
		out *OutRecord
		w   *storage.Wait
		err error
	)
	switch {
	case e.sender == nil || replyTopic == "":
		err = Permanent(fmt.Errorf("%w (a saga of %s: command and await steps run in a group member, for sagas started through Kafka)", ErrNoTransport, rec.Source.Topic))
	case comp || sd.Command != nil:
		cmd := sd.Command
		if comp {
			cmd = sd.CompensateCommand
		}
		out, err = e.commandRecord(rec, run, sd, cmd, comp, attempt, replyTopic, deadline)
		w = &storage.Wait{Kind: storage.WaitCommand, Step: i, Attempt: attempt, Compensating: comp, Since: now, Deadline: deadline, Topic: cmd.Topic}
	default:
		out, w, err = e.awaitRecord(rec, run, sd, i, attempt, replyTopic, now, deadline)
	}
	if err != nil {
		e.logStepError(run, err)
		return e.failAttempt(decl, rec, run, i, comp, attempt, err, IsPermanent(err), false)
	}
	rec.Wait = w
	kind := "a"
	if comp {
		kind = "c"
	}
	key := metaOut + "c/" + storage.FormatID(rec.Source, rec.Name) + "/" + sd.Name + "/" + kind + strconv.FormatUint(uint64(attempt), 10)
	return e.recordWait(rec, &pendingOut{key: key, rec: out})
}

func (e *Engine) logStepError(run *Run, err error) {
	run.Logger().Debug("step attempt not made", "step", run.Step, "compensating", run.Compensating, "attempt", run.Attempt, "err", err)
}

// commandRecord builds attempt's command.
func (e *Engine) commandRecord(rec *storage.Saga, run *Run, sd *Step, cmd *Command, comp bool, attempt uint32, replyTopic string, deadline time.Time) (out *OutRecord, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
			run.Logger().Error("command key or payload panicked", "step", sd.Name, "panic", r)
		}
	}()
	key := []byte(rec.ID())
	if cmd.Key != nil {
		if k := cmd.Key(run); k != "" {
			key = []byte(k)
		}
	}
	value := rec.Context
	if cmd.Payload != nil {
		if value, err = cmd.Payload(run); err != nil {
			return nil, fmt.Errorf("command payload: %w", err)
		}
	}
	run.discard()
	return &OutRecord{Topic: cmd.Topic, Partition: -1, Key: key, Value: value, Headers: commandHeaders(rec, sd, comp, attempt, replyTopic, deadline)}, nil
}

// awaitRecord builds attempt's registration, for the keys-topic partition
// that owns the correlation.
func (e *Engine) awaitRecord(rec *storage.Saga, run *Run, sd *Step, i int, attempt uint32, replyTopic string, now, deadline time.Time) (out *OutRecord, w *storage.Wait, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanent(&PanicError{Value: r, Stack: debug.Stack()})
			run.Logger().Error("await value panicked", "step", sd.Name, "panic", r)
		}
	}()
	if e.keysTopic == "" {
		return nil, nil, Permanent(fmt.Errorf("%w (no keys topic to correlate events in)", ErrNoTransport))
	}
	a := sd.Await
	value, err := a.Value(run)
	run.discard()
	if err != nil {
		return nil, nil, Permanent(fmt.Errorf("await value: %w", err))
	}
	since := rec.EventTime
	if since.IsZero() {
		since = rec.CreatedAt
	}
	reg := registration{SagaID: rec.ID(), Ref: storage.FormatID(rec.Source, rec.Name), Step: sd.Name, Attempt: attempt,
		ReplyTopic: replyTopic, ReplyPartition: rec.Source.Partition, Since: since, Deadline: deadline}
	out = &OutRecord{Topic: e.keysTopic, Partition: -1, Key: CorrelationKey(a.Topic, a.Field, value), Value: reg.encode(),
		Headers: []Header{{Key: HeaderKeysKind, Value: []byte(keysAwait)}}}
	w = &storage.Wait{Kind: storage.WaitEvent, Step: i, Attempt: attempt, Since: now, Deadline: deadline, Topic: a.Topic, Field: a.Field, Value: value}
	return out, w, nil
}

func addUncertain(rec *storage.Saga, i int) {
	if !slices.Contains(rec.Uncertain, i) {
		rec.Uncertain = append(rec.Uncertain, i)
		slices.Sort(rec.Uncertain)
	}
}

func removeUncertain(rec *storage.Saga, i int) {
	if j := slices.Index(rec.Uncertain, i); j >= 0 {
		rec.Uncertain = slices.Delete(rec.Uncertain, j, j+1)
		if len(rec.Uncertain) == 0 {
			rec.Uncertain = nil
		}
	}
}

// compensable reports whether step i is to be compensated: its action
// completed, or may have run (uncertain), and it declares a compensation.
func compensable(decl *Saga, rec *storage.Saga, i int) bool {
	st, sd := &rec.Steps[i], &decl.Steps[i]
	if sd.Compensate == nil && sd.CompensateCommand == nil {
		return false
	}
	return st.Status == storage.StepCompleted || st.Status == storage.StepFailed && slices.Contains(rec.Uncertain, i)
}

// persistWith records the saga and meta records in one transaction
// (persist's retries and health reporting), then mirrors both.
func (e *Engine) persistWith(rec *storage.Saga, meta []storage.Meta) bool {
	if rec.Status.Terminal() {
		rec.Wait = nil
	}
	rec.UpdatedAt = e.now()
	wait := 50 * time.Millisecond
	for {
		var err error
		if len(meta) == 0 {
			err = e.store.Update(context.Background(), rec)
		} else {
			err = e.store.Write(context.Background(), storage.WriteBatch{Sagas: []*storage.Saga{rec}, Meta: meta})
		}
		if err == nil {
			if e.storeBad.CompareAndSwap(true, false) && e.health != nil {
				e.health.Clear(health.Store)
				e.log.Info("recording saga state works again")
			}
			e.recorded(rec)
			e.mirrorMeta(meta)
			if rec.Status.Terminal() {
				e.finishedLog(rec)
				if e.onFinish != nil {
					e.onFinish(rec)
				}
			}
			return true
		}
		if errors.Is(err, storage.ErrClosed) || errors.Is(err, storage.ErrNotFound) {
			e.log.Error("cannot record saga state", "saga_id", rec.ID(), "status", rec.Status, "err", err)
			return false
		}
		e.storeBad.Store(true)
		if e.health != nil {
			e.health.Set(health.Store, "recording saga state fails: "+err.Error())
		}
		if ok, quiet := e.errLog.Allow("persist"); ok {
			e.log.Error("recording saga state failed; retrying", "saga_id", rec.ID(), "status", rec.Status, "in", wait, "err", err, "similar_lines_suppressed", quiet)
		}
		if e.clock.Sleep(e.runCtx, wait) != nil {
			return false
		}
		wait = min(wait*2, 5*time.Second)
	}
}
