package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// fakeSender acknowledges what the engine produces (or fails the first
// Fail sends), keeps it, and hands each record to OnSend.
type fakeSender struct {
	mu     sync.Mutex
	sent   []*engine.OutRecord
	fail   int
	onSend func(*engine.OutRecord)
}

func (s *fakeSender) Send(r *engine.OutRecord, done func(error)) {
	s.mu.Lock()
	if s.fail > 0 {
		s.fail--
		s.mu.Unlock()
		go done(errors.New("broker down"))
		return
	}
	s.sent = append(s.sent, r)
	f := s.onSend
	s.mu.Unlock()
	done(nil)
	if f != nil {
		f(r)
	}
}

func (s *fakeSender) records() []*engine.OutRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*engine.OutRecord(nil), s.sent...)
}

func (s *fakeSender) setOnSend(f func(*engine.OutRecord)) {
	s.mu.Lock()
	s.onSend = f
	s.mu.Unlock()
}

func header(r *engine.OutRecord, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// reply answers a command as a participant would.
func reply(t *testing.T, cmd *engine.OutRecord, outcome engine.ReplyOutcome, payload string) *engine.Reply {
	t.Helper()
	hs := append(append([]engine.Header(nil), cmd.Headers...), engine.Header{Key: engine.HeaderOutcome, Value: []byte(outcome)})
	if outcome != engine.OutcomeOK {
		hs = append(hs, engine.Header{Key: engine.HeaderError, Value: []byte("no funds")})
	}
	r, err := engine.ParseReply(hs, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func withSender(s engine.Sender) opt {
	return func(c *engine.Config) {
		c.Sender = s
		c.ReplyTopic = func(topic string) string { return "replies-" + topic }
		c.KeysTopic = "keys"
	}
}

func cmd(topic string) *engine.Command {
	return &engine.Command{Topic: topic, Key: func(r *engine.Run) string { return r.String("from") }}
}

func transferSaga(timeout time.Duration, retry engine.RetryPolicy) engine.Saga {
	return orderSaga("transfer",
		engine.Step{Name: "debit", Command: cmd("accounts"), CompensateCommand: cmd("accounts"), Timeout: timeout, Retry: retry},
		engine.Step{Name: "credit", Command: cmd("accounts"), Timeout: timeout, Retry: retry},
	)
}

// deliver hands a reply to the engine and returns what became of it.
func deliver(h *harness, r *engine.Reply) engine.Handled {
	got := make(chan engine.Handled, 1)
	h.eng.DeliverReply(r, func(x engine.Handled) { got <- x })
	select {
	case x := <-got:
		return x
	case <-time.After(10 * time.Second):
		h.t.Fatal("delivery not handled within 10s")
		return ""
	}
}

// waitSent waits until n records were produced and returns them.
func waitSent(t *testing.T, s *fakeSender, n int) []*engine.OutRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rs := s.records(); len(rs) >= n {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records produced, want %d", len(s.records()), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A command step records its wait with the command in the outbox, produces
// the command with headers naming saga, step, kind, attempt and reply
// partition, and returns its goroutine; the reply resumes it and its value
// joins the context. Nothing runs while it waits.
func TestCommandStepRoundTrip(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
	snd := &fakeSender{}
	h := start(t, reg, "", withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"alice","to":"bob","amount":10}`)[0].ID
	debit := waitSent(t, snd, 1)[0]
	h.idle()
	if q, r := h.eng.Stats(); q != 0 || r != 0 {
		t.Fatalf("a waiting saga holds %d queued, %d running", q, r)
	}
	s := h.get(id)
	if s.Status != storage.StatusExecuting || s.Wait == nil || s.Wait.Kind != storage.WaitCommand || s.Wait.Step != 0 || s.Wait.Attempt != 1 ||
		s.Wait.Deadline.Sub(s.Wait.Since) != time.Minute || s.Wait.Topic != "accounts" {
		t.Fatalf("waiting saga: %s %+v", s.Status, s.Wait)
	}
	if debit.Topic != "accounts" || string(debit.Key) != "alice" || debit.Partition != -1 || header(debit, engine.HeaderSagaID) != id ||
		header(debit, engine.HeaderStep) != "debit" || header(debit, engine.HeaderKind) != engine.KindAction || header(debit, engine.HeaderAttempt) != "1" ||
		header(debit, engine.HeaderReplyTopic) != "replies-~keys" || header(debit, engine.HeaderReplyPartition) != "0" {
		t.Fatalf("command: %+v", debit)
	}
	if got := deliver(h, reply(t, debit, engine.OutcomeOK, `{"debit_id":"d-1"}`)); got != engine.Applied {
		t.Fatalf("reply: %s", got)
	}
	credit := waitSent(t, snd, 2)[1]
	if header(credit, engine.HeaderStep) != "credit" {
		t.Fatalf("second command: %+v", credit)
	}
	if got := deliver(h, reply(t, credit, engine.OutcomeOK, `{"credit_id":"c-1"}`)); got != engine.Applied {
		t.Fatalf("reply: %s", got)
	}
	h.idle()
	s = h.get(id)
	var ctx map[string]any
	_ = json.Unmarshal(s.Context, &ctx)
	if s.Status != storage.StatusCompleted || s.Wait != nil || ctx["debit_id"] != "d-1" || ctx["credit_id"] != "c-1" || ctx["from"] != "alice" {
		t.Fatalf("saga %s wait %+v context %s", s.Status, s.Wait, s.Context)
	}
	// The outbox is empty once Kafka has the commands.
	kafkatestWait(t, "the outbox to empty", func() bool { return outbox(t, h, s.Source.TopicPartition()) == 0 })
}

func kafkatestWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func outbox(t *testing.T, h *harness, p storage.Partition) int {
	t.Helper()
	n := 0
	if err := h.store.ScanMeta(context.Background(), p, "\x00out/", func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// A reply that comes while the saga's goroutine is still recording the wait
// (here: delivered from inside Send) is applied once the goroutine ends.
func TestReplyBeforeTheGoroutineEnds(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
	snd := &fakeSender{}
	var h *harness
	var mu sync.Mutex
	var handled []engine.Handled
	snd.onSend = func(r *engine.OutRecord) {
		h.eng.DeliverReply(reply(t, r, engine.OutcomeOK, `{}`), func(x engine.Handled) { mu.Lock(); handled = append(handled, x); mu.Unlock() })
	}
	h = start(t, reg, "", withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	kafkatestWait(t, "the saga to complete", func() bool { return h.get(id).Status == storage.StatusCompleted })
	// A reply's done is called once its write is recorded: the second may
	// come just after the completed saga is readable.
	kafkatestWait(t, "both replies handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(handled) >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(handled, []engine.Handled{engine.Applied, engine.Applied}) {
		t.Fatalf("replies handled: %v", handled)
	}
}

// A refusal fails the step for good: the completed debit is compensated by
// its command; a failed (retryable) reply retries after the back-off, a
// durable wait.
func TestRefusalCompensatesWithACommand(t *testing.T) {
	clock := newFakeClock()
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{MaxAttempts: 3, InitialDelay: 10 * time.Millisecond, Multiplier: 1}))
	snd := &fakeSender{}
	h := start(t, reg, "", withSender(snd), withClock(clock))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	deliver(h, reply(t, waitSent(t, snd, 1)[0], engine.OutcomeOK, `{}`))
	credit := waitSent(t, snd, 2)[1]
	if got := deliver(h, reply(t, credit, engine.OutcomeFailed, `{}`)); got != engine.Applied {
		t.Fatalf("failed reply: %s", got)
	}
	h.idle()
	s := h.get(id)
	if s.Wait == nil || s.Wait.Kind != storage.WaitRetry || s.Wait.Attempt != 1 || s.Steps[1].Error != "failed: no funds" {
		t.Fatalf("after a failed reply: %+v step %+v", s.Wait, s.Steps[1])
	}
	clock.Advance(10 * time.Millisecond)
	credit2 := waitSent(t, snd, 3)[2]
	if header(credit2, engine.HeaderAttempt) != "2" || header(credit2, engine.HeaderStep) != "credit" {
		t.Fatalf("retry: %+v", credit2)
	}
	if got := deliver(h, reply(t, credit2, engine.OutcomeRefused, `{}`)); got != engine.Applied {
		t.Fatalf("refusal: %s", got)
	}
	refund := waitSent(t, snd, 4)[3]
	if header(refund, engine.HeaderKind) != engine.KindCompensation || header(refund, engine.HeaderStep) != "debit" || header(refund, engine.HeaderAttempt) != "1" {
		t.Fatalf("compensation command: %+v", refund)
	}
	deliver(h, reply(t, refund, engine.OutcomeOK, `{"refund_id":"r"}`))
	s = h.finish(clock, id)
	if s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepCompensated || s.Steps[1].Status != storage.StepFailed ||
		!strings.Contains(s.Error, `step "credit" failed after 2 attempt(s): refused: no funds`) {
		t.Fatalf("saga %s %q steps %+v", s.Status, s.Error, s.Steps)
	}
}

// A deadline passing fails the attempt; a command that times out for good
// may have run, so its step is compensated (uncertain); a reply to the
// attempt that timed out is late, one to a saga that moved on a duplicate.
func TestTimeoutsRetryThenCompensateTheUncertainStep(t *testing.T) {
	clock := newFakeClock()
	reg := engine.NewRegistry()
	reg.Register(transferSaga(5*time.Second, engine.RetryPolicy{MaxAttempts: 2, InitialDelay: 100 * time.Millisecond, Multiplier: 1}))
	snd := &fakeSender{}
	h := start(t, reg, "", withSender(snd), withClock(clock))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	first := waitSent(t, snd, 1)[0]
	h.idle()
	clock.Advance(5 * time.Second) // attempt 1 times out
	kafkatestWait(t, "the retry wait", func() bool { w := h.get(id).Wait; return w != nil && w.Kind == storage.WaitRetry })
	if got := deliver(h, reply(t, first, engine.OutcomeOK, `{}`)); got != engine.Handled(engine.IgnoreLate) {
		t.Fatalf("reply to the timed-out attempt: %s, want late", got)
	}
	clock.Advance(100 * time.Millisecond)
	second := waitSent(t, snd, 2)[1]
	h.idle()
	clock.Advance(5 * time.Second) // attempt 2 times out: for good
	refund := waitSent(t, snd, 3)[2]
	if header(refund, engine.HeaderKind) != engine.KindCompensation || header(refund, engine.HeaderStep) != "debit" {
		t.Fatalf("the uncertain debit is not compensated: %+v", refund)
	}
	s := h.get(id)
	if !slices.Equal(s.Uncertain, []int{0}) || s.Steps[0].Status != storage.StepFailed || !strings.Contains(s.Steps[0].Error, "timed out") {
		t.Fatalf("uncertain %v step %+v", s.Uncertain, s.Steps[0])
	}
	if got := deliver(h, reply(t, second, engine.OutcomeOK, `{}`)); got != engine.Handled(engine.IgnoreLate) {
		t.Fatalf("reply to the attempt that timed out for good: %s, want late", got)
	}
	if got := deliver(h, reply(t, refund, engine.OutcomeOK, `{}`)); got != engine.Applied {
		t.Fatalf("refund reply: %s", got)
	}
	if got := deliver(h, reply(t, refund, engine.OutcomeOK, `{}`)); got != engine.Handled(engine.IgnoreDuplicate) {
		t.Fatalf("the same reply twice: %s, want duplicate", got)
	}
	s = h.finish(clock, id)
	if s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepCompensated || len(s.Uncertain) != 0 {
		t.Fatalf("saga %s steps %+v uncertain %v", s.Status, s.Steps, s.Uncertain)
	}
}

// CheckReply sorts replies before delivery: unknown sagas, late and
// duplicate replies; malformed ones do not parse.
func TestCheckReply(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
	snd := &fakeSender{}
	h := start(t, reg, "", withSender(snd))
	h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)
	debit := waitSent(t, snd, 1)[0]
	h.idle()
	ctx := context.Background()
	p := storage.Partition{Topic: "~keys"}
	r := reply(t, debit, engine.OutcomeOK, `{}`)
	if why, err := h.eng.CheckReply(ctx, p, r); why != "" || err != nil {
		t.Fatalf("a reply the saga waits for: %q %v", why, err)
	}
	ghost := *r
	ghost.Pos.Offset = 999
	if why, _ := h.eng.CheckReply(ctx, p, &ghost); why != engine.IgnoreUnknown {
		t.Fatalf("unknown saga: %q", why)
	}
	if why, _ := h.eng.CheckReply(ctx, storage.Partition{Topic: "other"}, r); why != engine.IgnoreUnknown {
		t.Fatalf("reply for another partition's saga: %q", why)
	}
	other := *r
	other.Step = "credit"
	if why, _ := h.eng.CheckReply(ctx, p, &other); why != engine.IgnoreDuplicate {
		t.Fatalf("reply for a step not waiting: %q", why)
	}
	for _, drop := range []string{engine.HeaderSagaRef, engine.HeaderKind, engine.HeaderAttempt, engine.HeaderStep, engine.HeaderOutcome} {
		var hs []engine.Header
		for _, x := range append(debit.Headers, engine.Header{Key: engine.HeaderOutcome, Value: []byte("ok")}) {
			if x.Key != drop {
				hs = append(hs, x)
			}
		}
		if _, err := engine.ParseReply(hs, nil); err == nil {
			t.Errorf("a reply without %s parsed", drop)
		}
	}
}

// A long back-off of a function step is a durable wait (no goroutine);
// after a restart the timer still fires and the step goes on with the next
// attempt.
func TestDurableBackoffSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	var mu sync.Mutex
	var attempts []int
	flaky := func(_ context.Context, r *engine.Run) error {
		mu.Lock()
		attempts = append(attempts, r.Attempt)
		mu.Unlock()
		if r.Attempt < 2 {
			return errors.New("not yet")
		}
		return nil
	}
	reg := func() *engine.Registry {
		reg := engine.NewRegistry()
		reg.Register(orderSaga("order", engine.Step{Name: "a", Action: flaky, Retry: engine.RetryPolicy{MaxAttempts: 3, InitialDelay: time.Minute}}))
		return reg
	}
	h := start(t, reg(), dir, withClock(clock))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	s := h.get(id)
	if s.Wait == nil || s.Wait.Kind != storage.WaitRetry || s.Wait.Attempt != 1 || s.Steps[0].Error != "not yet" {
		t.Fatalf("after a failed attempt: %+v %+v", s.Wait, s.Steps[0])
	}
	if q, r := h.eng.Stats(); q+r != 0 {
		t.Fatalf("a saga in back-off holds %d queued, %d running", q, r)
	}
	h.stop()
	clock.Advance(2 * time.Minute) // falls due while the engine is down
	h = start(t, reg(), dir, withClock(clock))
	s = h.finish(clock, id)
	mu.Lock()
	defer mu.Unlock()
	if s.Status != storage.StatusCompleted || !slices.Equal(attempts, []int{1, 2}) || s.Steps[0].Attempts != 2 {
		t.Fatalf("saga %s attempts %v step %+v", s.Status, attempts, s.Steps[0])
	}
}

// A sleep step waits durably, across a restart.
func TestSleepStep(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	reg := func() *engine.Registry {
		reg := engine.NewRegistry()
		reg.Register(orderSaga("order", engine.Step{Name: "nap", Sleep: time.Hour}, engine.Step{Name: "after", Action: ok}))
		return reg
	}
	h := start(t, reg(), dir, withClock(clock))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o"}`)[0].ID
	h.idle()
	if w := h.get(id).Wait; w == nil || w.Kind != storage.WaitSleep || w.Deadline.Sub(w.Since) != time.Hour {
		t.Fatalf("sleeping: %+v", w)
	}
	clock.Advance(30 * time.Minute)
	h.idle()
	if s := h.get(id); s.Status != storage.StatusExecuting {
		t.Fatalf("woke early: %s", s.Status)
	}
	h.stop()
	h = start(t, reg(), dir, withClock(clock))
	if s := h.get(id); s.Status != storage.StatusExecuting || s.Wait == nil {
		t.Fatalf("after restart: %s %+v", s.Status, s.Wait)
	}
	clock.Advance(30 * time.Minute)
	if s := h.finish(clock, id); s.Status != storage.StatusCompleted || s.Steps[0].Status != storage.StepCompleted {
		t.Fatalf("saga %s steps %+v", s.Status, s.Steps)
	}
}

// A command whose produce fails stays in the outbox and is produced again;
// an outbox entry left over at a restart is produced by the next run; a
// reply delivered after the restart resumes the saga.
func TestOutboxIsProducedAtLeastOnce(t *testing.T) {
	dir := t.TempDir()
	reg := func() *engine.Registry {
		reg := engine.NewRegistry()
		reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
		return reg
	}
	snd := &fakeSender{fail: 2}
	h := start(t, reg(), dir, withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	debit := waitSent(t, snd, 1)[0] // after two failed produces
	p := h.get(id).Source.TopicPartition()
	kafkatestWait(t, "the outbox to empty", func() bool { return outbox(t, h, p) == 0 })
	h.stop()
	// The entry of a command whose ack was not recorded is produced again.
	st, err := storage.OpenBolt(h.dir+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutMeta(context.Background(), p, "\x00out/c/x", engine.EncodeOut(debit)); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	snd2 := &fakeSender{}
	h = start(t, reg(), dir, withSender(snd2))
	again := waitSent(t, snd2, 1)[0]
	if header(again, engine.HeaderSagaID) != id || header(again, engine.HeaderAttempt) != "1" {
		t.Fatalf("produced again: %+v", again)
	}
	if got := deliver(h, reply(t, debit, engine.OutcomeOK, `{}`)); got != engine.Applied {
		t.Fatalf("reply after restart: %s", got)
	}
	if s := h.get(id); s.Steps[0].Status != storage.StepCompleted {
		t.Fatalf("step after the reply: %+v", s.Steps[0])
	}
}

// Cancelling a saga that waits for a command's reply compensates the step
// whose command is out (it may run).
func TestCancelWhileWaiting(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
	snd := &fakeSender{}
	h := start(t, reg, "", withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	debit := waitSent(t, snd, 1)[0]
	h.idle()
	if err := h.eng.Cancel(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	refund := waitSent(t, snd, 2)[1]
	if header(refund, engine.HeaderKind) != engine.KindCompensation {
		t.Fatalf("after cancel: %+v", refund)
	}
	if got := deliver(h, reply(t, debit, engine.OutcomeOK, `{}`)); got != engine.Handled(engine.IgnoreLate) {
		t.Fatalf("the debit's reply after the cancel: %s, want late (an attempt given up on)", got)
	}
	if err := h.eng.Cancel(context.Background(), id); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("cancel of a compensating saga: %v", err)
	}
	deliver(h, reply(t, refund, engine.OutcomeOK, `{}`))
	h.idle()
	if s := h.get(id); s.Status != storage.StatusRolledBack || s.Error != "cancelled" {
		t.Fatalf("saga %s %q", s.Status, s.Error)
	}
}

// Without a Sender a command step fails for good, saying why.
func TestCommandStepWithoutTransport(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
	h := start(t, reg, "")
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1"}`)[0].ID
	h.idle()
	if s := h.get(id); s.Status != storage.StatusRolledBack || !strings.Contains(s.Error, "no Kafka transport") {
		t.Fatalf("saga %s %q", s.Status, s.Error)
	}
}

// Steps must declare what they do and how long to wait.
func TestKafkaStepValidation(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("bad",
		engine.Step{Name: "none"},
		engine.Step{Name: "both", Action: ok, Command: cmd("c"), Timeout: time.Second},
		engine.Step{Name: "cmd-no-timeout", Command: cmd("c")},
		engine.Step{Name: "await-no-value", Await: &engine.Await{Topic: "p", Field: "id"}, Timeout: time.Second},
		engine.Step{Name: "bad-topic", Command: cmd("a b"), Timeout: time.Second},
		engine.Step{Name: "comp-both", Action: ok, Compensate: ok, CompensateCommand: cmd("c"), Timeout: time.Second},
	))
	_, err := reg.Routes()
	for _, want := range []string{`"none" has no action`, `"both" sets more than one`, `"cmd-no-timeout": a command needs a Timeout`,
		`"await-no-value" await: no Value`, `"bad-topic" command: topic "a b"`, `"comp-both" sets both Compensate and CompensateCommand`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

// A step that waits is part of a definition's shape: a function step and a
// command step of one name are different definitions; a compensation by
// command is a compensation.
func TestFingerprintOfStepsThatWait(t *testing.T) {
	fn := engine.Saga{Steps: []engine.Step{{Name: "debit", Action: ok, Compensate: ok}}}
	cmdStep := engine.Saga{Steps: []engine.Step{{Name: "debit", Command: cmd("c"), CompensateCommand: cmd("c")}}}
	sleep := engine.Saga{Steps: []engine.Step{{Name: "debit", Sleep: time.Second}}}
	if engine.Fingerprint(&fn) == engine.Fingerprint(&cmdStep) || engine.Fingerprint(&cmdStep) == engine.Fingerprint(&sleep) {
		t.Fatal("a step's kind is not in the fingerprint")
	}
	bare := engine.Saga{Steps: []engine.Step{{Name: "debit", Command: cmd("c")}}}
	if engine.Fingerprint(&bare) == engine.Fingerprint(&cmdStep) {
		t.Fatal("a compensation by command is not in the fingerprint")
	}
}

// A command that timed out may have run even when the step is retried: if
// the saga is cancelled during the back-off, or a later attempt is refused,
// the step is compensated all the same.
func TestTimedOutAttemptStaysUncertainThroughTheRetry(t *testing.T) {
	retry := engine.RetryPolicy{MaxAttempts: 2, InitialDelay: time.Minute, Multiplier: 1}
	for _, end := range []string{"cancel during the back-off", "later attempt refused"} {
		t.Run(end, func(t *testing.T) {
			clock := newFakeClock()
			reg := engine.NewRegistry()
			reg.Register(transferSaga(5*time.Second, retry))
			snd := &fakeSender{}
			h := start(t, reg, "", withSender(snd), withClock(clock))
			id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
			waitSent(t, snd, 1)
			h.idle()
			clock.Advance(5 * time.Second) // attempt 1 times out: it may have run
			kafkatestWait(t, "the retry wait", func() bool { w := h.get(id).Wait; return w != nil && w.Kind == storage.WaitRetry })
			sent := 1
			if end == "cancel during the back-off" {
				if err := h.eng.Cancel(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			} else {
				clock.Advance(time.Minute)
				second := waitSent(t, snd, 2)[1]
				sent = 2
				if got := deliver(h, reply(t, second, engine.OutcomeRefused, `{}`)); got != engine.Applied {
					t.Fatalf("refusal of attempt 2: %s", got)
				}
			}
			refund := waitSent(t, snd, sent+1)[sent]
			if header(refund, engine.HeaderKind) != engine.KindCompensation || header(refund, engine.HeaderStep) != "debit" {
				t.Fatalf("the debit whose first command timed out is not compensated: %+v", refund)
			}
			deliver(h, reply(t, refund, engine.OutcomeOK, `{}`))
			s := h.finish(clock, id)
			if s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepCompensated {
				t.Fatalf("saga %s steps %+v", s.Status, s.Steps)
			}
		})
	}
}

// An ok reply says the command ran: when its value cannot join the context
// (not a JSON object), the step fails and what it did is compensated.
func TestOKReplyThatCannotBeMergedIsCompensated(t *testing.T) {
	for _, payload := range []string{`[1,2]`, `null`, `"done"`} {
		t.Run(payload, func(t *testing.T) {
			clock := newFakeClock()
			reg := engine.NewRegistry()
			reg.Register(transferSaga(time.Minute, engine.RetryPolicy{MaxAttempts: 1}))
			snd := &fakeSender{}
			h := start(t, reg, "", withSender(snd), withClock(clock))
			id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
			debit := waitSent(t, snd, 1)[0]
			h.idle()
			if got := deliver(h, reply(t, debit, engine.OutcomeOK, payload)); got != engine.Applied {
				t.Fatalf("reply: %s", got)
			}
			refund := waitSent(t, snd, 2)[1]
			if header(refund, engine.HeaderKind) != engine.KindCompensation || header(refund, engine.HeaderStep) != "debit" {
				t.Fatalf("the debit is not compensated: %+v", refund)
			}
			s := h.get(id)
			if !strings.Contains(s.Steps[0].Error, "not a JSON object") || strings.Contains(s.Steps[0].Error, "event value") {
				t.Errorf("step error %q: want what is wrong with the reply, said once", s.Steps[0].Error)
			}
			// The compensation's own reply, whatever its value, compensates.
			if got := deliver(h, reply(t, refund, engine.OutcomeOK, payload)); got != engine.Applied {
				t.Fatalf("refund reply: %s", got)
			}
			if s := h.finish(clock, id); s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepCompensated {
				t.Fatalf("saga %s steps %+v", s.Status, s.Steps)
			}
		})
	}
}

// A reply whose saga id header names another saga than its ref is not
// applied to the saga the ref names.
func TestReplyWithAnotherSagasIDIsUnknown(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{MaxAttempts: 1}))
	snd := &fakeSender{}
	h := start(t, reg, "", withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	debit := waitSent(t, snd, 1)[0]
	h.idle()
	r := reply(t, debit, engine.OutcomeOK, `{}`)
	r.SagaID = "transfer:key:someone-else"
	why, err := h.eng.CheckReply(context.Background(), h.get(id).Source.TopicPartition(), r)
	if err != nil || why != engine.IgnoreUnknown {
		t.Fatalf("CheckReply = %q, %v; want unknown", why, err)
	}
}
