package consumer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/logx"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

const (
	topic = sagas.OrderTopic
	group = "sagaz-test"
	dlq   = "sagaz.dlq"
)

type testMember = sagaztest.Member

func startMember(t testing.TB, seeds []string, dir string, reg *engine.Registry, mut func(*consumer.Config)) *testMember {
	t.Helper()
	return sagaztest.Start(t, seeds, group, dir, reg, mut)
}

func sagasIn(t testing.TB, st storage.Store) []*storage.Saga { return sagaztest.Sagas(t, st) }

func newRegistry(extra ...engine.Saga) *engine.Registry {
	reg := engine.NewRegistry()
	reg.Register(sagas.Order)
	for _, s := range extra {
		reg.Register(s)
	}
	return reg
}

func orderRecord(id string, extra string) *kgo.Record {
	v := fmt.Sprintf(`{"order_id":%q,"amount":12.5%s}`, id, extra)
	return &kgo.Record{Topic: topic, Key: []byte(id), Value: []byte(v)}
}

func produceOrders(t *testing.T, cl *kgo.Client, from, n int, extra func(i int) string) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		e := ""
		if extra != nil {
			e = extra(i)
		}
		recs = append(recs, orderRecord("o-"+strconv.Itoa(i), e))
		if len(recs) == 5000 {
			kafkatest.Produce(t, cl, recs...)
			recs = recs[:0]
		}
	}
	if len(recs) > 0 {
		kafkatest.Produce(t, cl, recs...)
	}
}

func sumEnd(m map[int32]int64) int64 {
	var n int64
	for _, o := range m {
		n += o
	}
	return n
}

func waitCommittedAtEnd(t *testing.T, seeds []string) {
	t.Helper()
	kafkatest.WaitSettled(t, seeds, group, topic, 60*time.Second)
}

func checkOneSagaPerOrder(t *testing.T, want map[string]storage.Status, all []*storage.Saga) {
	t.Helper()
	sagaztest.CheckOrders(t, "order", want, all, false)
}

func TestFiftyThousandEventsSixPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("50,000 events; skipped with -short")
	}
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic))
	seeds := c.ListenAddrs()
	const n = 50000
	produceOrders(t, kafkatest.Client(t, seeds), 0, n, nil)
	m := startMember(t, seeds, "", newRegistry(), nil)
	// Alone it takes under a minute with -race; beside other packages'
	// tests on two cores it once took over two. What it must not do is stop.
	kafkatest.WaitProgress(t, 30*time.Second, 8*time.Minute, "50,000 sagas finishing", n, m.Finished.Load)
	waitCommittedAtEnd(t, seeds)
	if got := sumEnd(kafkatest.EndOffsets(t, seeds, topic)); got != n {
		t.Fatalf("log holds %d records", got)
	}
	m.Stop()
	st, err := storage.OpenBolt(filepath.Join(m.Dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := map[string]storage.Status{}
	for i := range n {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	checkOneSagaPerOrder(t, want, sagasIn(t, st))
	if m.Finished.Load() != n {
		t.Fatalf("%d sagas finished, want %d", m.Finished.Load(), n)
	}
}

func TestFailAtCompensatesInReverseOrder(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	produceOrders(t, kafkatest.Client(t, seeds), 0, 30, func(i int) string {
		return []string{"", `,"fail_at":"charge"`, `,"fail_at":"ship"`}[i%3]
	})
	m := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 30*time.Second, "30 sagas to finish", func() bool { return m.Finished.Load() >= 30 })
	waitCommittedAtEnd(t, seeds)
	for _, s := range sagasIn(t, m.Store) {
		i, _ := strconv.Atoi(strings.TrimPrefix(s.IdempotencyKey, "o-"))
		reserve, charge, ship := s.Steps[0], s.Steps[1], s.Steps[2]
		switch i % 3 {
		case 0:
			if s.Status != storage.StatusCompleted {
				t.Errorf("%s: %s", s.ID(), s.Status)
			}
		case 1:
			if s.Status != storage.StatusRolledBack || reserve.Status != storage.StepCompensated || charge.Status != storage.StepFailed || ship.Status != storage.StepPending {
				t.Errorf("fail_at charge %s: %s %+v", s.ID(), s.Status, s.Steps)
			}
		case 2:
			if s.Status != storage.StatusRolledBack || reserve.Status != storage.StepCompensated || charge.Status != storage.StepCompensated || ship.Status != storage.StepFailed {
				t.Errorf("fail_at ship %s: %s %+v", s.ID(), s.Status, s.Steps)
			}
			if charge.CompEndedAt.After(reserve.CompEndedAt) {
				t.Errorf("%s: charge compensated at %v after reserve at %v: not reverse order", s.ID(), charge.CompEndedAt, reserve.CompEndedAt)
			}
		}
	}
}

// boom panics on events carrying "panic": true and ignores the rest.
var boom = engine.Saga{Name: "boom", Steps: []engine.Step{{Name: "s", Action: func(context.Context, *engine.Run) error { return nil }}},
	Triggers: []engine.Trigger{engine.Kafka(topic, func(ev *engine.Event) (map[string]any, error) {
		m, err := ev.JSON()
		if err != nil || m["panic"] != true {
			return nil, engine.ErrIgnore
		}
		panic("transformer bug")
	})}}

type poison struct {
	rec    *kgo.Record
	reason string
	saga   string
}

func poisonRecords() []poison {
	big := `{"order_id":"big","pad":"` + strings.Repeat("x", 3000) + `"}`
	return []poison{
		{&kgo.Record{Topic: topic, Key: []byte("p1"), Value: []byte("not json")}, "decode", "order"},
		{&kgo.Record{Topic: topic, Key: []byte("p2"), Value: []byte("")}, "decode", "order"},
		{&kgo.Record{Topic: topic, Key: []byte("p3"), Value: []byte(`{"amount":1}`)}, "missing_key", "order"},
		{&kgo.Record{Topic: topic, Key: []byte("p4"), Value: []byte(`{"order_id":""}`)}, "missing_key", "order"},
		{&kgo.Record{Topic: topic, Key: []byte("p5"), Value: []byte(`{"order_id":"p5","fail_at":"nowhere"}`)}, "transform_error", "order"},
		{&kgo.Record{Topic: topic, Key: []byte("p6"), Value: []byte(`{"order_id":"p6","panic":true}`)}, "transform_panic", "boom"},
		{&kgo.Record{Topic: topic, Key: []byte("p7"), Value: []byte(big), Headers: []kgo.RecordHeader{{Key: "trace", Value: []byte("t-7")}}}, "oversized", ""},
	}
}

// checkDeadLetters asserts the dead-letter topic holds exactly the poison
// records (by original position), with their headers.
func checkDeadLetters(t *testing.T, seeds []string, poisons []poison) {
	t.Helper()
	got := kafkatest.ReadAll(t, seeds, dlq)
	if len(got) != len(poisons) {
		for _, r := range got {
			t.Logf("dead letter: key %s reason %s", r.Key, header(r, consumer.HeaderReason))
		}
		t.Fatalf("dead-letter topic holds %d records, want %d", len(got), len(poisons))
	}
	byKey := map[string]*kgo.Record{}
	for _, r := range got {
		byKey[string(r.Key)] = r
	}
	for _, p := range poisons {
		r := byKey[string(p.rec.Key)]
		if r == nil {
			t.Fatalf("poison %s missing from the dead-letter topic", p.rec.Key)
		}
		checks := map[string]string{
			consumer.HeaderReason:        p.reason,
			consumer.HeaderSaga:          p.saga,
			consumer.HeaderOrigTopic:     topic,
			consumer.HeaderOrigPartition: strconv.Itoa(int(p.rec.Partition)),
			consumer.HeaderOrigOffset:    strconv.FormatInt(p.rec.Offset, 10),
			consumer.HeaderGroup:         group,
		}
		for k, v := range checks {
			if h := header(r, k); h != v {
				t.Errorf("poison %s: header %s = %q, want %q", p.rec.Key, k, h, v)
			}
		}
		if header(r, consumer.HeaderError) == "" {
			t.Errorf("poison %s: no error text", p.rec.Key)
		}
		if string(r.Value) != string(p.rec.Value) {
			t.Errorf("poison %s: value not kept", p.rec.Key)
		}
		for _, h := range p.rec.Headers {
			if header(r, h.Key) != string(h.Value) {
				t.Errorf("poison %s: original header %s lost", p.rec.Key, h.Key)
			}
		}
	}
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// producePoisonMixed produces n valid orders with the poison records spread
// among them; it fills in each poison record's partition and offset.
func producePoisonMixed(t *testing.T, cl *kgo.Client, n int, poisons []poison) map[string]storage.Status {
	t.Helper()
	want := map[string]storage.Status{}
	step := n / (len(poisons) + 1)
	pi := 0
	for i := range n {
		kafkatest.Produce(t, cl, orderRecord("o-"+strconv.Itoa(i), ""))
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
		if pi < len(poisons) && i%step == step-1 {
			kafkatest.Produce(t, cl, poisons[pi].rec) // fills Partition and Offset
			pi++
		}
	}
	for ; pi < len(poisons); pi++ {
		kafkatest.Produce(t, cl, poisons[pi].rec)
	}
	// The panicking saga's record also starts an order saga.
	want["p6"] = storage.StatusCompleted
	return want
}

func TestPoisonRecordsGoToDeadLetterTopic(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	poisons := poisonRecords()
	want := producePoisonMixed(t, kafkatest.Client(t, seeds), 200, poisons)
	logs := &jsonLines{}
	m := sagaztest.StartWith(t, seeds, group, "", newRegistry(boom), func(cfg *member.Config) {
		cfg.Consumer.MaxEventBytes = 2000
		cfg.Logger = logx.New(logs, "json", slog.LevelInfo)
	})
	kafkatest.WaitFor(t, 30*time.Second, "sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	checkDeadLetters(t, seeds, poisons)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
	if got := testutil.ToFloat64(m.Metrics.DeadLetters.WithLabelValues("decode")); got != 2 {
		t.Errorf("dead letters (decode) metric = %v, want 2", got)
	}
	// Every dead letter is logged at warn with its reason and origin.
	lines := logs.withMsg(t, "record dead-lettered")
	if len(lines) != len(poisons) {
		t.Fatalf("%d dead-letter log lines, want %d", len(lines), len(poisons))
	}
	for _, p := range poisons {
		found := false
		for _, l := range lines {
			found = found || l["level"] == "WARN" && l["reason"] == p.reason && l["topic"] == topic &&
				l["partition"] == float64(p.rec.Partition) && l["offset"] == float64(p.rec.Offset) && l["error"] != "" && l["saga"] == p.saga
		}
		if !found {
			t.Errorf("no dead-letter log line for poison %s (%s at %d/%d): %v", p.rec.Key, p.reason, p.rec.Partition, p.rec.Offset, lines)
		}
	}
	// The batch storage transactions were timed.
	if n := histogramCount(t, m.Metrics.StoreLatency); n == 0 {
		t.Error("sagaz_batch_record_seconds observed nothing")
	}
}

// jsonLines collects JSON log lines.
type jsonLines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *jsonLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *jsonLines) withMsg(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("not a JSON line: %q", s)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestKafkaFaultsLoseNothingDuplicateNothing(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	poisons := poisonRecords()[:3]
	want := producePoisonMixed(t, kafkatest.Client(t, seeds), 300, poisons)
	delete(want, "p6")

	commits := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: 4})
	dlqProduce := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: dlq, Err: kerr.UnknownServerError, Count: 3})
	fetches := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topic, Err: kerr.UnknownServerError, Count: 20})
	m := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 60*time.Second, "sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	for name, h := range map[string]*kfake.FaultHandle{"commit": commits, "dead-letter produce": dlqProduce, "fetch": fetches} {
		if h.Hits() == 0 {
			t.Errorf("the %s fault never fired: the test proves nothing about it", name)
		}
	}
	checkDeadLetters(t, seeds, poisons)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
}

func TestDeadLetterOutageRewindsInsteadOfSkipping(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, topic))
	seeds := c.ListenAddrs()
	poisons := poisonRecords()[:1]
	want := producePoisonMixed(t, kafkatest.Client(t, seeds), 20, poisons)
	delete(want, "p6")
	// Longer than one batch's retries: the batch must be rewound and retried.
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: dlq, Err: kerr.UnknownServerError, Count: 12})
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.DeadLetterAttempts = 3 })
	kafkatest.WaitFor(t, 90*time.Second, "sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	if h.Hits() < 12 || testutil.ToFloat64(m.Metrics.BatchErrors) == 0 {
		t.Fatalf("fault hits %d, batch errors %v: the outage was not long enough to test a rewind", h.Hits(), testutil.ToFloat64(m.Metrics.BatchErrors))
	}
	checkDeadLetters(t, seeds, poisons)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
}

func TestMembersLeavingAndJoiningLoseNothing(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic))
	seeds := c.ListenAddrs()
	cl := kafkatest.Client(t, seeds)
	reg := newRegistry()
	const n = 6000
	a := startMember(t, seeds, "", reg, nil)
	produceOrders(t, cl, 0, 2000, nil)
	kafkatest.WaitFor(t, 30*time.Second, "member a to start sagas", func() bool { return a.Finished.Load() > 100 })
	b := startMember(t, seeds, "", reg, nil)
	produceOrders(t, cl, 2000, 2000, nil)
	kafkatest.WaitFor(t, 30*time.Second, "member b to get partitions", func() bool { return testutil.ToFloat64(b.Metrics.Partitions) > 0 })
	a.Stop() // a leaves mid-stream
	cm := startMember(t, seeds, "", reg, nil)
	produceOrders(t, cl, 4000, 2000, nil)
	waitCommittedAtEnd(t, seeds)
	// a comes back on its old data directory: partitions move again.
	a2 := startMember(t, seeds, a.Dir, reg, nil)
	kafkatest.WaitFor(t, 60*time.Second, "every saga to finish", func() bool { return terminalOrders(t, b, cm, a2) == n })
	var all []*storage.Saga
	for _, m := range []*testMember{b, cm, a2} {
		all = append(all, sagasIn(t, m.Store)...)
	}
	want := map[string]storage.Status{}
	for i := range n {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	checkOneSagaPerOrder(t, want, all)
}

func TestBackpressureBoundsPendingSagas(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, topic))
	seeds := c.ListenAddrs()
	const n = 600
	produceOrders(t, kafkatest.Client(t, seeds), 0, n, func(int) string { return `,"sleep_ms":1` })
	slow := sagas.Order
	orders := sagas.Order.Triggers[0]
	slow.Triggers = []engine.Trigger{engine.Kafka(orders.Topic(), orders.Transform(), engine.WithKey(orders.Key()), engine.WithMaxConcurrent(4))}
	reg := engine.NewRegistry()
	reg.Register(slow)
	const high, batch = 50, 20
	m := startMember(t, seeds, "", reg, func(cfg *consumer.Config) { cfg.HighWater, cfg.LowWater, cfg.MaxPollRecords = high, 10, batch })
	var peak int
	var paused bool
	kafkatest.WaitFor(t, 60*time.Second, "all sagas to finish", func() bool {
		q, _ := m.Engine.Stats()
		peak = max(peak, q)
		paused = paused || testutil.ToFloat64(m.Metrics.Paused) == 1
		return m.Finished.Load() >= n
	})
	if !paused {
		t.Error("fetching was never paused")
	}
	// One batch may be in flight while the next is prepared.
	if peak > high+2*batch {
		t.Fatalf("pending sagas peaked at %d, above high-water %d + two batches of %d", peak, high, batch)
	}
}

// A member that recorded everything and committed nothing (every commit
// failed) restarts on its store: it fetches the records again from the
// committed offset — the changelog may not hold what the store recorded
// last (TestStoreAheadOfCommitsIsMirroredBeforeCommitting) — and starts
// nothing twice.
func TestStoreAheadOfCommitsStartsNothingTwice(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, topic))
	seeds := c.ListenAddrs()
	produceOrders(t, kafkatest.Client(t, seeds), 0, 100, nil)
	// Every commit fails: the process "dies" with everything recorded and
	// nothing committed.
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Err: kerr.UnknownServerError, Count: -1})
	reg := newRegistry()
	a := startMember(t, seeds, "", reg, nil)
	kafkatest.WaitFor(t, 30*time.Second, "100 sagas", func() bool { return a.Finished.Load() >= 100 })
	a.Stop()
	h.Remove()
	if got := kafkatest.Committed(t, seeds, group, topic); got[0] != 0 {
		t.Fatalf("committed %v although every commit failed", got)
	}
	b := startMember(t, seeds, a.Dir, reg, nil)
	waitCommittedAtEnd(t, seeds)
	if got := testutil.ToFloat64(b.Metrics.RecordsConsumed.WithLabelValues(topic)); got != 100 {
		t.Fatalf("restarted member fetched %v records again, want the 100 above the committed offset", got)
	}
	if got := testutil.ToFloat64(b.Metrics.SagasStarted.WithLabelValues("order")); got != 0 {
		t.Fatalf("restarted member started %v sagas again", got)
	}
	if n := len(sagasIn(t, b.Store)); n != 100 {
		t.Fatalf("%d sagas", n)
	}
	if b.Finished.Load() != 0 {
		t.Fatalf("%d sagas ran again", b.Finished.Load())
	}
}

// A consumer cannot be built over an engine that does not mirror into a
// changelog of its group: its offsets would be committed before the state
// of its sagas could follow the partition.
func TestConsumerRefusesAnEngineWithoutChangelog(t *testing.T) {
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	plain, err := engine.New(engine.Config{Store: st, Registry: newRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := consumer.New(plain, st, consumer.Config{Client: kopts}); !errors.Is(err, consumer.ErrConfig) {
		t.Fatalf("consumer over an engine without changelog: %v, want ErrConfig", err)
	}
	cl, err := consumer.NewChangelog("other-group", kopts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	mirrored, err := engine.New(engine.Config{Store: st, Registry: newRegistry(), Logger: slog.New(slog.DiscardHandler), Changelog: cl})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := consumer.New(mirrored, st, consumer.Config{Client: kopts, Group: "sagaz"}); !errors.Is(err, consumer.ErrConfig) {
		t.Fatalf("consumer of group sagaz over the changelog of another group: %v, want ErrConfig", err)
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		cfg  consumer.KafkaConfig
		want string
	}{
		{consumer.KafkaConfig{}, "no Kafka brokers"},
		{consumer.KafkaConfig{Brokers: []string{"nohost"}}, "host:port"},
		{consumer.KafkaConfig{Brokers: []string{"k:9092"}, SASLMechanism: "gssapi"}, "SASL mechanism"},
		{consumer.KafkaConfig{Brokers: []string{"k:9092"}, SASLMechanism: "plain"}, "needs a user and a password"},
		{consumer.KafkaConfig{Brokers: []string{"k:9092"}, TLSCertFile: "c.pem"}, "together"},
		{consumer.KafkaConfig{Brokers: []string{"k:9092"}, TLSCAFile: "/nonexistent.pem"}, "TLS CA file"},
	}
	for _, c := range cases {
		if _, err := c.cfg.Opts(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestSASLSCRAMAgainstBroker(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, topic), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "admin", "s3cret"))
	seeds := c.ListenAddrs()
	opts, err := consumer.KafkaConfig{Brokers: seeds, SASLMechanism: "scram-sha-256", SASLUser: "admin", SASLPassword: "s3cret", ClientID: "sagaz-test"}.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl := kafkatest.Client(t, seeds, opts...)
	kafkatest.Produce(t, cl, orderRecord("o-1", ""))
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.Client = opts })
	kafkatest.WaitFor(t, 30*time.Second, "the saga over SASL", func() bool { return m.Finished.Load() == 1 })

	bad, _ := consumer.KafkaConfig{Brokers: seeds, SASLMechanism: "scram-sha-256", SASLUser: "admin", SASLPassword: "wrong"}.Opts()
	cl2 := kafkatest.Client(t, seeds, bad...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := cl2.ProduceSync(ctx, orderRecord("o-2", "")).FirstErr(); err == nil {
		t.Fatal("a wrong SASL password was accepted")
	}
}

// A member stopped while batches are in flight finishes the batch in hand
// — its changelog records acknowledged, its offsets committed — before it
// leaves the group, so the next owner does not fetch it again: every
// partition's committed offset is where its store says it recorded up to.
// Here it is most likely paused by back-pressure when stopped, with
// nothing in flight.
func TestShutdownFinishesTheBatchInHand(t *testing.T) {
	stopWhileRecording(t, nil, "the batch in hand was not finished")
}

// With small batches and back-pressure away, shutdown comes with a batch
// being recorded and one being mirrored: both must be mirrored and
// committed before the member leaves.
func TestShutdownMidPipelineFinishesBothBatches(t *testing.T) {
	stopWhileRecording(t, func(cfg *consumer.Config) {
		cfg.MaxPollRecords, cfg.HighWater, cfg.LowWater = 300, 1000000, 500000
	}, "a batch in flight was not finished")
}

// stopWhileRecording stops a member (configured by configure) while it
// records a backlog of 20,000 orders and checks that every partition's
// committed offset is its store's next offset.
func stopWhileRecording(t *testing.T, configure func(*consumer.Config), unfinished string) {
	t.Helper()
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	produceOrders(t, kafkatest.Client(t, seeds), 0, 20000, nil)
	m := startMember(t, seeds, "", newRegistry(), configure)
	kafkatest.WaitFor(t, 60*time.Second, "sagas being recorded", func() bool {
		return testutil.ToFloat64(m.Metrics.SagasStarted.WithLabelValues("order")) > 3000
	})
	m.Stop()
	st, err := storage.OpenBolt(filepath.Join(m.Dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tp := range []string{topic, group + "-keys"} {
		for p, off := range kafkatest.Committed(t, seeds, group, tp) {
			next, _, err := st.NextOffset(context.Background(), storage.Partition{Topic: tp, Partition: p})
			if err != nil {
				t.Fatal(err)
			}
			if next != off {
				t.Errorf("%s/%d: committed %d, recorded up to %d: %s", tp, p, off, next, unfinished)
			}
		}
	}
}
