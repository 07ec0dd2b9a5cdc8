package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// switchSender fails every produce until ok is set, counting the tries.
type switchSender struct {
	mu    sync.Mutex
	ok    bool
	tries int
	sent  []*engine.OutRecord
}

func (s *switchSender) Send(r *engine.OutRecord, done func(error)) {
	s.mu.Lock()
	s.tries++
	if !s.ok {
		s.mu.Unlock()
		go done(errors.New("UNKNOWN_TOPIC_ID: the topic was deleted"))
		return
	}
	s.sent = append(s.sent, r)
	s.mu.Unlock()
	done(nil)
}

func (s *switchSender) set(ok bool) { s.mu.Lock(); s.ok = ok; s.mu.Unlock() }

func (s *switchSender) records() []*engine.OutRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*engine.OutRecord(nil), s.sent...)
}

// While producing the outbox's records keeps failing for the stall
// timeout, the "outbox" condition holds, naming the topic and the error;
// it is cleared once they are produced.
func TestOutboxFailingSetsTheCondition(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
	snd := &switchSender{}
	conds := health.New(nil)
	h := start(t, reg, "", withSender(snd), func(c *engine.Config) { c.Health, c.OutboxStallTimeout = conds, 200*time.Millisecond })
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	kafkatestWait(t, "the outbox condition", func() bool {
		for _, c := range conds.List() {
			if c.Name == health.Outbox && strings.Contains(c.Reason, "producing commands to accounts fails since") && strings.Contains(c.Reason, "UNKNOWN_TOPIC_ID") {
				return true
			}
		}
		return false
	})
	snd.set(true)
	kafkatestWait(t, "the condition to clear", func() bool { return !conds.Holds(health.Outbox) })
	if rs := snd.records(); len(rs) != 1 || header(rs[0], engine.HeaderSagaID) != id {
		t.Fatalf("produced: %+v", rs)
	}
	kafkatestWait(t, "the outbox to empty", func() bool { return outbox(t, h, h.get(id).Source.TopicPartition()) == 0 })
}

// A command whose produce keeps failing is not produced once its saga no
// longer waits for it: the saga's attempts time out, its compensation
// gives up, the saga fails, and the entries are dropped from the outbox.
func TestOutboxDropsTheCommandsOfASagaThatMovedOn(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(transferSaga(300*time.Millisecond, engine.RetryPolicy{}))
	snd := &switchSender{}
	h := start(t, reg, "", withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	p := h.get(id).Source.TopicPartition()
	deadline := time.Now().Add(30 * time.Second)
	for !h.get(id).Status.Terminal() || outbox(t, h, p) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("saga %s, %d outbox entries left", h.get(id).Status, outbox(t, h, p))
		}
		time.Sleep(10 * time.Millisecond)
	}
	snd.set(true)
	if rs := snd.records(); len(rs) != 0 {
		t.Fatalf("records of a finished saga produced: %+v", rs)
	}
}

// At a restart, an outbox entry whose saga has moved on (here: the debit's,
// after its reply, while the saga waits for the credit) is dropped, not
// produced; the entry the saga waits for is produced.
func TestOutboxEntryOfAnAttemptNoLongerWaitedForIsDroppedAtRestart(t *testing.T) {
	dir := t.TempDir()
	reg := func() *engine.Registry {
		reg := engine.NewRegistry()
		reg.Register(transferSaga(time.Minute, engine.RetryPolicy{}))
		return reg
	}
	snd := &fakeSender{}
	h := start(t, reg(), dir, withSender(snd))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"t1","from":"a"}`)[0].ID
	debit := waitSent(t, snd, 1)[0]
	if got := deliver(h, reply(t, debit, engine.OutcomeOK, `{}`)); got != engine.Applied {
		t.Fatalf("debit reply: %s", got)
	}
	credit := waitSent(t, snd, 2)[1]
	p := h.get(id).Source.TopicPartition()
	kafkatestWait(t, "the outbox to empty", func() bool { return outbox(t, h, p) == 0 })
	h.stop()
	st, err := storage.OpenBolt(h.dir+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ref := header(debit, engine.HeaderSagaRef)
	for key, rec := range map[string]*engine.OutRecord{"debit/a1": debit, "credit/a1": credit, "debit/c1": debit} {
		if err := st.PutMeta(context.Background(), p, "\x00out/c/"+ref+"/"+key, engine.EncodeOut(rec)); err != nil {
			t.Fatal(err)
		}
	}
	_ = st.Close()
	snd2 := &fakeSender{}
	h = start(t, reg(), dir, withSender(snd2))
	kafkatestWait(t, "the outbox to empty", func() bool { return outbox(t, h, p) == 0 })
	rs := snd2.records()
	if len(rs) != 1 || header(rs[0], engine.HeaderStep) != "credit" {
		t.Fatalf("produced after the restart: %d records, want the credit only: %+v", len(rs), rs)
	}
}
