package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Headers of commands and replies. A command carries the saga, the step,
// the kind of attempt (action or compensation), the attempt and where to
// reply; a reply carries the same saga, step, kind and attempt headers
// back, with its outcome.
const (
	HeaderSagaID         = "sagaz.saga.id"         // the saga's ID (as the API shows it)
	HeaderSagaRef        = "sagaz.saga.ref"        // where the saga lives: <topic>:<partition>:<offset>:<saga>
	HeaderStep           = "sagaz.step"            // the step's name
	HeaderKind           = "sagaz.kind"            // KindAction or KindCompensation
	HeaderAttempt        = "sagaz.attempt"         // the attempt (from 1)
	HeaderReplyTopic     = "sagaz.reply.topic"     // the topic to reply to
	HeaderReplyPartition = "sagaz.reply.partition" // the partition to reply to
	HeaderDeadline       = "sagaz.deadline"        // RFC 3339: the saga stops waiting for this attempt then
	HeaderOutcome        = "sagaz.outcome"         // a reply's outcome: OutcomeOK, OutcomeFailed, OutcomeRefused
	HeaderError          = "sagaz.error"           // a failed or refused reply's reason
	HeaderEvent          = "sagaz.event"           // on an await step's resume: the event's <topic>:<partition>:<offset>
)

// Kinds of attempts (HeaderKind).
const (
	KindAction       = "action"
	KindCompensation = "compensation"
)

// ReplyOutcome is what a reply says of its command.
type ReplyOutcome string

// Reply outcomes.
const (
	OutcomeOK      ReplyOutcome = "ok"      // done; the value is merged into the saga's context
	OutcomeFailed  ReplyOutcome = "failed"  // not done, may work later: retried by the step's policy
	OutcomeRefused ReplyOutcome = "refused" // not done, never will be: the step (or compensation) fails for good
)

// Reply is a participant's answer to a command, or the resume of an await
// step by its event.
type Reply struct {
	SagaID string
	// Pos and Name say where the saga lives (HeaderSagaRef).
	Pos          storage.Position
	Name         string
	Step         string
	Compensation bool
	Attempt      uint32
	Outcome      ReplyOutcome
	Error        string
	// Payload is the reply's value: a JSON object merged into the context
	// (OutcomeOK), or the event an await step waited for.
	Payload []byte
	// Event is set on the resume of an await step: the matching event's
	// position.
	Event string
}

// Reasons a reply is ignored (the consumer counts them).
const (
	IgnoreMalformed = "malformed" // headers missing or unreadable
	IgnoreUnknown   = "unknown"   // no such saga in this partition
	IgnoreLate      = "late"      // for an attempt the saga gave up on (it timed out, or the saga was cancelled or moved on while it was out)
	IgnoreDuplicate = "duplicate" // for an attempt whose reply was applied already, or one the saga never made
)

// ParseReply reads a reply record. The error says what is wrong with it.
func ParseReply(headers []Header, value []byte) (*Reply, error) {
	h := func(k string) string {
		for _, x := range headers {
			if x.Key == k {
				return string(x.Value)
			}
		}
		return ""
	}
	r := &Reply{SagaID: h(HeaderSagaID), Step: h(HeaderStep), Outcome: ReplyOutcome(h(HeaderOutcome)), Error: h(HeaderError), Payload: value, Event: h(HeaderEvent)}
	pos, name, err := storage.ParseID(h(HeaderSagaRef))
	if err != nil {
		return nil, fmt.Errorf("reply: header %s: %w", HeaderSagaRef, err)
	}
	r.Pos, r.Name = pos, name
	switch k := h(HeaderKind); k {
	case KindAction:
	case KindCompensation:
		r.Compensation = true
	default:
		return nil, fmt.Errorf("reply: header %s is %q, want %s or %s", HeaderKind, k, KindAction, KindCompensation)
	}
	a, err := strconv.ParseUint(h(HeaderAttempt), 10, 32)
	if err != nil || a == 0 {
		return nil, fmt.Errorf("reply: header %s is %q, want an attempt number from 1", HeaderAttempt, h(HeaderAttempt))
	}
	r.Attempt = uint32(a)
	if r.Step == "" {
		return nil, fmt.Errorf("reply: no %s header", HeaderStep)
	}
	switch r.Outcome {
	case OutcomeOK, OutcomeFailed, OutcomeRefused:
	default:
		return nil, fmt.Errorf("reply: header %s is %q, want ok, failed or refused", HeaderOutcome, r.Outcome)
	}
	return r, nil
}

// commandHeaders are the headers of a command (or an await registration)
// for attempt a of step sd.
func commandHeaders(rec *storage.Saga, sd *Step, comp bool, a uint32, replyTopic string, deadline time.Time) []Header {
	kind := KindAction
	if comp {
		kind = KindCompensation
	}
	return []Header{
		{Key: HeaderSagaID, Value: []byte(rec.ID())},
		{Key: HeaderSagaRef, Value: []byte(storage.FormatID(rec.Source, rec.Name))},
		{Key: HeaderStep, Value: []byte(sd.Name)},
		{Key: HeaderKind, Value: []byte(kind)},
		{Key: HeaderAttempt, Value: []byte(strconv.FormatUint(uint64(a), 10))},
		{Key: HeaderReplyTopic, Value: []byte(replyTopic)},
		{Key: HeaderReplyPartition, Value: []byte(strconv.FormatInt(int64(rec.Source.Partition), 10))},
		{Key: HeaderDeadline, Value: []byte(deadline.UTC().Format(time.RFC3339Nano))},
	}
}

// replyMatch says whether a saga waits for r ("") or why r is ignored.
func replyMatch(decl *Saga, s *storage.Saga, r *Reply) string {
	w := s.Wait
	if w == nil || s.Status.Terminal() || decl == nil || w.Step >= len(decl.Steps) || decl.Steps[w.Step].Name != r.Step || w.Compensating != r.Compensation {
		return pastAttempt(s, r)
	}
	want := storage.WaitCommand
	if r.Event != "" {
		want = storage.WaitEvent
	}
	switch {
	case w.Kind == want && w.Attempt == r.Attempt:
		return ""
	case (w.Kind == want || w.Kind == storage.WaitRetry) && r.Attempt < w.Attempt || w.Kind == storage.WaitRetry && r.Attempt == w.Attempt:
		return IgnoreLate
	}
	return IgnoreDuplicate
}

// pastAttempt classifies a reply the saga does not wait for: late when it
// answers an attempt the saga made and gave up on (it timed out, or the
// saga moved on without it), a duplicate otherwise (the attempt's reply
// was applied already, or the saga never made that attempt).
func pastAttempt(s *storage.Saga, r *Reply) string {
	i := slices.IndexFunc(s.Steps, func(st storage.Step) bool { return st.Name == r.Step })
	if i < 0 || r.Attempt == 0 {
		return IgnoreDuplicate
	}
	st := &s.Steps[i]
	made, applied := st.Attempts, st.Status == storage.StepCompleted
	if r.Compensation {
		made, applied = st.CompAttempts, st.Status == storage.StepCompensated
	}
	switch {
	case r.Attempt > made:
		return IgnoreDuplicate
	case applied && r.Attempt == made:
		return IgnoreDuplicate
	}
	return IgnoreLate
}

// CheckReply says whether a saga of partition p waits for r: "" when it
// does (deliver it with DeliverReply), else why it is ignored (Ignore*).
// The executor checks again when it applies the reply.
func (e *Engine) CheckReply(ctx context.Context, p storage.Partition, r *Reply) (string, error) {
	if r.Pos.TopicPartition() != p {
		return IgnoreUnknown, nil
	}
	s, err := e.store.Get(ctx, storage.FormatID(r.Pos, r.Name))
	if errors.Is(err, storage.ErrNotFound) {
		return IgnoreUnknown, nil
	}
	if err != nil {
		return "", err
	}
	if r.SagaID != "" && r.SagaID != s.ID() { // the headers disagree on which saga it is for
		return IgnoreUnknown, nil
	}
	return replyMatch(e.routes.Saga(s.Name), s, r), nil
}
