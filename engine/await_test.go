package engine_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// keysOwner plays the owner of the keys topic's partition 0: it records the
// registrations and signals given to it, one batch each, as the consumer
// does.
type keysOwner struct {
	t     *testing.T
	h     *harness
	clock *fakeClock
	off   int64
}

func (k *keysOwner) record(recs ...*engine.OutRecord) {
	k.t.Helper()
	var b engine.Batch
	for _, r := range recs {
		ev := &engine.Event{Source: engine.SourceKafka, Topic: "keys", Partition: 0, Offset: k.off, Key: r.Key, Value: r.Value, Headers: r.Headers,
			Timestamp: k.clock.Now()}
		k.off++
		k.h.eng.PrepareStart(&b, ev)
	}
	b.Offsets = []storage.Offset{{Topic: "keys", Partition: 0, Next: k.off}}
	if len(b.Rejects) > 0 {
		k.t.Fatalf("rejected: %v", b.Rejects[0].Err)
	}
	if _, err := k.h.eng.Record(context.Background(), &b); err != nil {
		k.t.Fatal(err)
	}
}

// signal is the keys-topic record a member forwards for an event of an
// awaited topic.
func (k *keysOwner) signal(topic, value string, at time.Time) *engine.OutRecord {
	k.t.Helper()
	var b engine.Batch
	k.h.eng.PrepareSignals(&b, &engine.Event{Source: engine.SourceKafka, Topic: topic, Partition: 3, Offset: k.off + 1000, Value: []byte(value), Timestamp: at})
	if len(b.Signals) != 1 {
		k.t.Fatalf("event %s gave %d signals", value, len(b.Signals))
	}
	s := b.Signals[0]
	return &engine.OutRecord{Topic: "keys", Partition: -1, Key: s.Key(), Value: s.Payload, Headers: s.Headers()}
}

func paymentSaga() *engine.Registry {
	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "paid", Await: &engine.Await{Topic: "payments", Field: "order_id", Value: engine.ContextValue("order_id"), Into: "payment"},
			Timeout: time.Hour, Retry: engine.RetryPolicy{MaxAttempts: 1}},
	))
	return reg
}

func resumes(rs []*engine.OutRecord) []*engine.OutRecord {
	var out []*engine.OutRecord
	for _, r := range rs {
		if r.Topic != "keys" {
			out = append(out, r)
		}
	}
	return out
}

// An await step registers with the keys partition that owns its
// correlation; a matching event — there before the wait or after it —
// resumes it through its reply partition with the event in its context.
func TestAwaitMatchesEventsBeforeAndAfterTheWait(t *testing.T) {
	clock := newFakeClock()
	snd := &fakeSender{}
	h := start(t, paymentSaga(), "", withSender(snd), withClock(clock))
	keys := &keysOwner{t: t, h: h, clock: clock}

	// o-1 waits, then its event comes.
	id1 := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1"}`)[0].ID
	reg1 := waitSent(t, snd, 1)[0]
	if reg1.Topic != "keys" || string(reg1.Key) != string(engine.CorrelationKey("payments", "order_id", "o-1")) {
		t.Fatalf("registration: %+v", reg1)
	}
	if w := h.get(id1).Wait; w == nil || w.Kind != storage.WaitEvent || w.Topic != "payments" || w.Field != "order_id" || w.Value != "o-1" {
		t.Fatalf("wait: %+v", w)
	}
	keys.record(reg1)
	clock.Advance(time.Second)
	keys.record(keys.signal("payments", `{"order_id":"o-1","amount":5}`, clock.Now()))
	res := resumes(waitSent(t, snd, 2))
	if len(res) != 1 || res[0].Topic != "replies-~keys" || res[0].Partition != 0 {
		t.Fatalf("resumes: %+v", res)
	}
	if got := deliver(h, reply(t, res[0], engine.OutcomeOK, string(res[0].Value))); got != engine.Applied {
		t.Fatalf("resume: %s", got)
	}
	s := h.get(id1)
	var ctx map[string]map[string]any
	_ = json.Unmarshal(s.Context, &ctx)
	if s.Status != storage.StatusCompleted || ctx["payment"]["amount"] != 5.0 {
		t.Fatalf("saga %s context %s", s.Status, s.Context)
	}

	// o-2's event comes before o-2 waits (after it started): kept, it matches.
	id2 := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-2"}`)[0].ID
	reg2 := waitSent(t, snd, 3)[2]
	clock.Advance(time.Second)
	keys.record(keys.signal("payments", `{"order_id":"o-2"}`, clock.Now()))
	if n := len(resumes(snd.records())); n != 1 {
		t.Fatalf("a signal with no registration resumed something: %d", n)
	}
	keys.record(reg2)
	res = resumes(waitSent(t, snd, 4))
	if len(res) != 2 || header(res[1], engine.HeaderSagaID) != id2 {
		t.Fatalf("the kept event did not match the late registration: %+v", res)
	}
	deliver(h, reply(t, res[1], engine.OutcomeOK, string(res[1].Value)))
	if s := h.get(id2); s.Status != storage.StatusCompleted {
		t.Fatalf("o-2: %s", s.Status)
	}

	// An event older than the saga never resumes it (o-3); nor one kept
	// longer than the signal window (o-4).
	keys.record(keys.signal("payments", `{"order_id":"o-3"}`, clock.Now().Add(-time.Minute)))
	h.fire(engine.SourceKafka, "orders", `{"order_id":"o-3"}`)
	keys.record(waitSent(t, snd, 5)[4])
	keys.record(keys.signal("payments", `{"order_id":"o-4"}`, clock.Now()))
	clock.Advance(engine.DefaultSignalWindow + time.Second)
	h.fire(engine.SourceKafka, "orders", `{"order_id":"o-4"}`)
	keys.record(waitSent(t, snd, 6)[5])
	if n := len(resumes(snd.records())); n != 2 {
		t.Fatalf("an old or expired event resumed a saga: %d resumes", n)
	}
}

// An await step that sees no event before its deadline fails.
func TestAwaitTimesOut(t *testing.T) {
	clock := newFakeClock()
	snd := &fakeSender{}
	h := start(t, paymentSaga(), "", withSender(snd), withClock(clock))
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-1"}`)[0].ID
	waitSent(t, snd, 1)
	s := h.finish(clock, id)
	if s.Status != storage.StatusRolledBack || s.Steps[0].Status != storage.StepFailed || len(s.Uncertain) != 0 {
		t.Fatalf("saga %s steps %+v uncertain %v", s.Status, s.Steps, s.Uncertain)
	}
}

// A live registration takes an event that arrives while it waits even when
// the event's timestamp is earlier than the saga's (producers' clocks
// differ); an await whose value in the context is an object fails at once
// with a clear error instead of waiting for a value no event can carry.
func TestAwaitLiveRegistrationAndObjectValues(t *testing.T) {
	clock := newFakeClock()
	snd := &fakeSender{}
	h := start(t, paymentSaga(), "", withSender(snd), withClock(clock))
	keys := &keysOwner{t: t, h: h, clock: clock}
	id := h.fire(engine.SourceKafka, "orders", `{"order_id":"o-9"}`)[0].ID
	keys.record(waitSent(t, snd, 1)[0])
	clock.Advance(time.Second)
	keys.record(keys.signal("payments", `{"order_id":"o-9"}`, clock.Now().Add(-5*time.Second))) // stamped before the saga's event
	res := resumes(waitSent(t, snd, 2))
	if len(res) != 1 || header(res[0], engine.HeaderSagaID) != id {
		t.Fatalf("the event that came while the saga waited did not resume it: %+v", res)
	}

	reg := engine.NewRegistry()
	reg.Register(orderSaga("order",
		engine.Step{Name: "paid", Await: &engine.Await{Topic: "payments", Field: "order_id", Value: engine.ContextValue("ref")},
			Timeout: time.Hour, Retry: engine.RetryPolicy{MaxAttempts: 1}},
	))
	h2 := start(t, reg, "", withSender(&fakeSender{}), withClock(clock))
	bad := h2.fire(engine.SourceKafka, "orders", `{"order_id":"o-10","ref":{"a":1}}`)[0].ID
	kafkatestWait(t, "the await with an object value to fail", func() bool { return h2.get(bad).Status.Terminal() })
	if s := h2.get(bad); !strings.Contains(s.Error, `"ref"`) || !strings.Contains(s.Error, "want a string, number or boolean") {
		t.Fatalf("saga %s error %q", s.Status, s.Error)
	}
}

// Registrations and signals of a keys partition taken out of a batch (its
// records are fetched again) are not recorded with it; the other
// partitions' are.
func TestDropAwaitsLeavesOnlyTheDroppedPartitions(t *testing.T) {
	clock := newFakeClock()
	h := start(t, paymentSaga(), "", withClock(clock))
	k := &keysOwner{t: t, h: h, clock: clock}
	var b engine.Batch
	for p, value := range []string{`{"order_id":"o-1"}`, `{"order_id":"o-2"}`} {
		r := k.signal("payments", value, clock.Now())
		h.eng.PrepareStart(&b, &engine.Event{Source: engine.SourceKafka, Topic: "keys", Partition: int32(p), Offset: 0,
			Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: clock.Now()})
	}
	b.DropAwaits(func(p storage.Partition) bool { return p.Partition == 0 })
	b.Offsets = []storage.Offset{{Topic: "keys", Partition: 1, Next: 1}}
	if _, err := h.eng.Record(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	for p, want := range []int{0, 1} {
		n := 0
		if err := h.store.ScanMeta(context.Background(), storage.Partition{Topic: "keys", Partition: int32(p)}, "\x00sig/", func(string, []byte) error {
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("keys/%d holds %d signals, want %d", p, n, want)
		}
	}
}
