package declarative_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/participant"
	"github.com/sagaz-go/sagaz/storage"
)

// stockSaga is a YAML saga with every step that talks over Kafka: a command
// with a command compensation, a sleep, an await, and a command the
// participant may refuse.
const stockSaga = `name: stock
triggers:
  - kafka: yk.orders
    idempotency_key: order_id
context:
  order_id: ${{ event.order_id }}
  amount: ${{ event.amount }}
  refuse: ${{ event.?refuse.orValue(false) }}
steps:
  - name: reserve
    action:
      command:
        topic: yk.stock
        key: stock-${{ context.order_id }}
        payload: {op: reserve, order: "${{ context.order_id }}", amount: "${{ context.amount }}", attempt: "${{ saga.attempt }}"}
      timeout: 20s
    compensation:
      command:
        topic: yk.stock
        key: stock-${{ context.order_id }}
        payload: {op: release, order: "${{ context.order_id }}", reservation: "${{ context.reservation.id }}"}
  - name: pause
    action:
      sleep: 400ms
  - name: paid
    action:
      await: {topic: yk.payments, field: order_id, value: "${{ context.order_id }}", into: payment}
      timeout: 1m
  - name: ship
    action:
      command:
        topic: yk.stock
        key: stock-${{ context.order_id }}
        payload: {op: ship, order: "${{ context.order_id }}", refuse: "${{ context.refuse }}"}
      timeout: 20s
      retry: {max_attempts: 1}
`

// stockService is the participant of stockSaga: it records the commands it
// runs and answers them.
type stockService struct {
	mu   sync.Mutex
	seen []stockCommand
}

type stockCommand struct {
	Key, Step    string
	Compensation bool
	Body         map[string]any
}

func (s *stockService) handle(_ context.Context, c *participant.Command) ([]byte, error) {
	var body map[string]any
	if err := json.Unmarshal(c.Value, &body); err != nil {
		return nil, participant.Refuse(fmt.Errorf("not JSON: %s", c.Value))
	}
	s.mu.Lock()
	s.seen = append(s.seen, stockCommand{Key: string(c.Key), Step: c.Step, Compensation: c.Compensation, Body: body})
	s.mu.Unlock()
	switch body["op"] {
	case "reserve":
		return json.Marshal(map[string]any{"reservation": map[string]any{"id": "r-" + body["order"].(string), "amount": body["amount"]}})
	case "release":
		return json.Marshal(map[string]any{"released": body["reservation"]})
	case "ship":
		if body["refuse"] == true {
			return nil, participant.Refuse(errors.New("nothing to ship with"))
		}
		return []byte(`{"shipped":true}`), nil
	}
	return nil, participant.Refuse(fmt.Errorf("unknown op %v", body["op"]))
}

func (s *stockService) commands() []stockCommand {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stockCommand(nil), s.seen...)
}

// A YAML saga's command, await and sleep steps, end to end on kfake with
// a participant built with package participant, every topic created by the
// member (as in dev mode): commands carry the key and payload the
// templates build, the reply is merged into the context (and seen by the
// compensation's payload), the sleep resumes, the await receives the
// matching event under its into field, and a refused command compensates
// the reserve with the compensation command.
func TestYAMLKafkaStepsEndToEnd(t *testing.T) {
	path := write(t, t.TempDir(), "stock.yaml", stockSaga)
	defs, err := declarative.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := engine.NewRegistry()
	reg.Register(defs[0].Saga())
	c := kafkatest.NewCluster(t)
	seeds := c.ListenAddrs()
	m := sagaztest.Start(t, seeds, "yk", "", reg, nil)
	kafkatest.WaitFor(t, 60*time.Second, "the member to be ready", func() bool { return m.Ready() == nil && len(m.Engine.Owned()) > 0 })

	svc := &stockService{}
	p, err := participant.New(participant.Config{Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: "yk-stock", Topic: "yk.stock",
		CreateTopics: true, Logger: sagaztest.Logger()}, svc.handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("participant: %v", err)
		}
	})
	kafkatest.WaitFor(t, 60*time.Second, "the participant to join its group", func() bool { return p.Partitions() > 0 })

	cl := kafkatest.Client(t, seeds)
	kafkatest.Produce(t, cl,
		&kgo.Record{Topic: "yk.orders", Key: []byte("o-1"), Value: []byte(`{"order_id":"o-1","amount":5}`)},
		&kgo.Record{Topic: "yk.orders", Key: []byte("o-2"), Value: []byte(`{"order_id":"o-2","amount":7,"refuse":true}`)})
	get := func(order string) *storage.Saga {
		for _, s := range sagaztest.Sagas(t, m.Store) {
			if s.ID() == storage.FormatKeyedID("stock", order) {
				return s
			}
		}
		return nil
	}
	kafkatest.WaitFor(t, 60*time.Second, "both sagas to wait for their payment", func() bool {
		for _, o := range []string{"o-1", "o-2"} {
			if s := get(o); s == nil || s.Wait == nil || s.Wait.Kind != storage.WaitEvent {
				return false
			}
		}
		return true
	})
	if w := get("o-1").Wait; w.Topic != "yk.payments" || w.Field != "order_id" || w.Value != "o-1" {
		t.Errorf("o-1 waits for %+v, want yk.payments order_id=o-1", w)
	}
	kafkatest.Produce(t, cl,
		&kgo.Record{Topic: "yk.payments", Key: []byte("p-9"), Value: []byte(`{"order_id":"o-9","paid":1}`)},
		&kgo.Record{Topic: "yk.payments", Key: []byte("p-1"), Value: []byte(`{"order_id":"o-1","paid":5}`)},
		&kgo.Record{Topic: "yk.payments", Key: []byte("p-2"), Value: []byte(`{"order_id":"o-2","paid":7}`)})
	kafkatest.WaitFor(t, 60*time.Second, "both sagas to end", func() bool { return m.Finished.Load() >= 2 })

	ctxOf := func(s *storage.Saga) map[string]any {
		var v map[string]any
		if err := json.Unmarshal(s.Context, &v); err != nil {
			t.Fatalf("%s context: %v", s.ID(), err)
		}
		return v
	}
	ok, refused := get("o-1"), get("o-2")
	if ok.Status != storage.StatusCompleted {
		t.Fatalf("o-1: %s (%s), want completed", ok.Status, ok.Error)
	}
	c1 := ctxOf(ok)
	if r, _ := c1["reservation"].(map[string]any); r["id"] != "r-o-1" {
		t.Errorf("o-1: the reserve's reply is not in the context: %s", ok.Context)
	}
	if pay, _ := c1["payment"].(map[string]any); pay["paid"] != float64(5) || c1["shipped"] != true {
		t.Errorf("o-1: the awaited event (into payment) or the ship reply is not in the context: %s", ok.Context)
	}
	if pause := ok.Steps[1]; pause.Status != storage.StepCompleted || pause.EndedAt.Sub(pause.StartedAt) < 400*time.Millisecond {
		t.Errorf("o-1: the sleep step %+v did not wait 400ms", pause)
	}
	if refused.Status != storage.StatusRolledBack {
		t.Fatalf("o-2: %s (%s), want rolled_back", refused.Status, refused.Error)
	}
	if refused.Steps[0].Status != storage.StepCompensated {
		t.Errorf("o-2: the reserve was not compensated: %+v", refused.Steps)
	}
	var release []stockCommand
	for _, cmd := range svc.commands() {
		if cmd.Key != "stock-"+cmd.Body["order"].(string) {
			t.Errorf("command %+v: key %q, want stock-<order>", cmd, cmd.Key)
		}
		if cmd.Compensation {
			release = append(release, cmd)
		}
		if cmd.Step == "reserve" && !cmd.Compensation && (cmd.Body["attempt"] != float64(1) || cmd.Body["amount"] == nil) {
			t.Errorf("reserve command %v: want the amount and attempt 1 from the payload template", cmd.Body)
		}
	}
	if len(release) != 1 || release[0].Step != "reserve" || release[0].Body["op"] != "release" || release[0].Body["reservation"] != "r-o-2" {
		t.Errorf("compensation commands %+v, want one release of reservation r-o-2 (from the reserve's reply)", release)
	}
}

// TestDescribeKafkaSteps: `sagaz sagas show NAME` says what each step
// sends or waits for.
func TestDescribeKafkaSteps(t *testing.T) {
	defs, err := declarative.Load(write(t, t.TempDir(), "stock.yaml", stockSaga))
	if err != nil {
		t.Fatal(err)
	}
	s := defs[0].Saga()
	var b strings.Builder
	if err := declarative.Describe(&b, &s, defs[0]); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"action:        command to yk.stock, key stock-${{ context.order_id }}, payload as declared  (the reply's JSON object merged into the context; 3 attempts",
		"timeout 20s)",
		"compensation:  command to yk.stock, key stock-${{ context.order_id }}, payload as declared",
		"2. pause\n       action:        sleep 400ms  (a durable timer)\n       compensation:  none",
		"action:        await an event on yk.payments with order_id = ${{ context.order_id }}, stored under payment  (3 attempts, backoff 100ms x2 up to 10s, jitter 0.2, timeout 1m0s)",
		"4. ship\n       action:        command to yk.stock",
	} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("describe lacks %q:\n%s", w, b.String())
		}
	}
	// A compiled saga's Kafka steps are described from the declaration.
	b.Reset()
	compiled := engine.Saga{Name: "c", Steps: []engine.Step{
		{Name: "x", Command: &engine.Command{Topic: "c.cmds"}, CompensateCommand: &engine.Command{Topic: "c.undo"}, Timeout: time.Second},
		{Name: "y", Await: &engine.Await{Topic: "c.events", Field: "id", Value: engine.ContextValue("id")}, Timeout: time.Minute},
		{Name: "z", Sleep: time.Second},
	}}
	if err := declarative.Describe(&b, &compiled, nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"action:        command to c.cmds  (", "compensation:  command to c.undo  (", "await an event on c.events by id, stored under y", "sleep 1s"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("describe of a compiled saga lacks %q:\n%s", w, b.String())
		}
	}
}

// An await whose value is an object (or a list) fails at once with a clear
// error: no event field equals it as text, so it would only time out.
func TestAwaitValueThatIsAnObjectFails(t *testing.T) {
	defs, err := declarative.Load(write(t, t.TempDir(), "w.yaml", `name: waits
triggers:
  - kafka: w.orders
context:
  ref: ${{ event.ref }}
steps:
  - name: paid
    action:
      await: {topic: w.payments, field: order_id, value: "${{ context.ref }}"}
      timeout: 1m
      retry: {max_attempts: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg := engine.NewRegistry()
	reg.Register(defs[0].Saga())
	eng, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler), Sender: discardSender{},
		ReplyTopic: func(topic string) string { return "replies-" + topic }, KeysTopic: "keys"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	<-eng.Ready()
	for _, ref := range []string{`{"a":1}`, `[1,2]`} {
		out, err := eng.Fire(context.Background(), engine.SourceKafka, engine.Event{Topic: "w.orders", Value: []byte(`{"ref":` + ref + `}`)})
		if err != nil || len(out) != 1 {
			t.Fatalf("fire: %v %v", out, err)
		}
		var s *storage.Saga
		kafkatest.WaitFor(t, 10*time.Second, "the saga to end", func() bool {
			s, err = st.Get(context.Background(), out[0].ID)
			return err == nil && s.Status.Terminal()
		})
		if !strings.Contains(s.Error, "want a string, number or boolean") {
			t.Errorf("ref %s: saga %s error %q", ref, s.Status, s.Error)
		}
	}
}

type discardSender struct{}

func (discardSender) Send(_ *engine.OutRecord, done func(error)) { done(nil) }
