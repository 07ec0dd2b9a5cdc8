package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

// orderOn is the demo order saga, consuming topic instead of orders.created
// (each test gets its own topic on the shared broker).
func orderOn(topic string) *engine.Registry {
	s := sagas.Order
	orders := sagas.Order.Triggers[0]
	s.Triggers = []engine.Trigger{engine.Kafka(topic, orders.Transform(), engine.WithKey(orders.Key()), engine.WithMaxConcurrent(orders.MaxConcurrent()))}
	reg := engine.NewRegistry()
	reg.Register(s)
	return reg
}

func createTopic(t *testing.T, topic string, partitions int32) {
	t.Helper()
	cl := kafkatest.Client(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
}

func orderLines(prefix string, from, n int, extra func(i int) string) ([]string, map[string]storage.Status) {
	var lines []string
	want := map[string]storage.Status{}
	for i := from; i < from+n; i++ {
		id := prefix + "-" + strconv.Itoa(i)
		e, w := "", storage.StatusCompleted
		if extra != nil {
			if e = extra(i); strings.Contains(e, "fail_at") {
				w = storage.StatusRolledBack
			}
		}
		lines = append(lines, fmt.Sprintf(`%s|{"order_id":%q,"amount":%d%s}`, id, id, i, e))
		want[id] = w
	}
	return lines, want
}

// checkOrders asserts each wanted order has exactly one saga with the
// wanted status; sagas of other orders (earlier runs) are ignored.
func checkOrders(t *testing.T, want map[string]storage.Status, all []*storage.Saga) {
	t.Helper()
	sagaztest.CheckOrders(t, "order", want, all, true)
}

// waitCommitted waits until group has committed everything of topic and,
// after it, of its keys topic: a keyed saga is recorded by the keys
// partition that owns its key after the event's own offset is committed
// (the commit does not wait for it), so a test that counts sagas waits
// for both.
func waitCommitted(t *testing.T, group, topic string) {
	t.Helper()
	kafkatest.WaitSettled(t, brokers, group, topic, 90*time.Second)
}

func TestKcatOrdersCompleteAndOffsetsAreCommitted(t *testing.T) {
	needKafka(t)
	topic, group := unique("it-orders"), unique("it-group")
	createTopic(t, topic, 3)
	lines, want := orderLines("k", 0, 300, func(i int) string {
		return map[int]string{3: `,"fail_at":"charge"`, 7: `,"fail_at":"ship"`}[i%10]
	})
	kcatProduce(t, topic, lines)
	m := sagaztest.Start(t, brokers, group, "", orderOn(topic), func(c *consumer.Config) { c.DeadLetterTopic = unique("it-dlq") })
	kafkatest.WaitFor(t, 60*time.Second, "300 sagas to finish", func() bool { return m.Finished.Load() >= 300 })
	waitCommitted(t, group, topic)
	checkOrders(t, want, sagaztest.Sagas(t, m.Store))
}

func TestPoisonRecordsReadBackWithKcat(t *testing.T) {
	needKafka(t)
	topic, group, dlq := unique("it-poison"), unique("it-group"), unique("it-dlq")
	createTopic(t, topic, 2)
	lines, want := orderLines("p", 0, 50, nil)
	kcatProduce(t, topic, lines[:25])
	poison := map[string]string{"bad-json": "decode", "no-key": "missing_key", "bad-fail": "transform_error"}
	kcatProduce(t, topic, []string{`bad-json|{not json`, `no-key|{"amount":1}`, `bad-fail|{"order_id":"x","fail_at":"moon"}`}, "trace=abc-123")
	kcatProduce(t, topic, lines[25:])
	m := sagaztest.Start(t, brokers, group, "", orderOn(topic), func(c *consumer.Config) { c.DeadLetterTopic = dlq })
	kafkatest.WaitFor(t, 60*time.Second, "50 sagas to finish", func() bool { return m.Finished.Load() >= 50 })
	waitCommitted(t, group, topic)
	checkOrders(t, want, sagaztest.Sagas(t, m.Store))

	src := map[string]kcatRecord{}
	for _, r := range kcatRead(t, topic) {
		src[r.Key] = r
	}
	got := kcatRead(t, dlq)
	if len(got) != len(poison) {
		t.Fatalf("dead-letter topic holds %d records, want %d: %+v", len(got), len(poison), got)
	}
	for _, r := range got {
		reason, ok := poison[r.Key]
		if !ok {
			t.Fatalf("unexpected dead letter %q", r.Key)
		}
		orig := src[r.Key]
		for k, v := range map[string]string{
			consumer.HeaderReason: reason, consumer.HeaderOrigTopic: topic, consumer.HeaderOrigPartition: orig.Partition,
			consumer.HeaderOrigOffset: orig.Offset, consumer.HeaderGroup: group, consumer.HeaderSaga: "order", "trace": "abc-123",
		} {
			if r.Headers[k] != v {
				t.Errorf("dead letter %s: header %s = %q, want %q", r.Key, k, r.Headers[k], v)
			}
		}
		if r.Value != orig.Value || r.Headers[consumer.HeaderError] == "" {
			t.Errorf("dead letter %s: value %q (want %q), error %q", r.Key, r.Value, orig.Value, r.Headers[consumer.HeaderError])
		}
	}
}

// TestBinarySIGKILLedMidStream kills the built binary three times while
// kcat streams orders into orders.created, and checks one saga per order.
func TestBinarySIGKILLedMidStream(t *testing.T) {
	needKafka(t)
	bin := sagaztest.BuildBinary(t, "../cmd/consumer")
	group, prefix, dir := unique("it-bin"), unique("b"), t.TempDir()
	args := []string{"--brokers", strings.Join(brokers, ","), "--data-dir", dir, "--group", group, "--group-instance-id", group + "-1",
		"--dead-letter-topic", unique("it-dlq"), "--session-timeout", "10s", "--shutdown-timeout", "5s"}
	const chunks, per = 20, 150
	streamed := make(chan map[string]storage.Status, 1)
	go func() {
		all := map[string]storage.Status{}
		for c := range chunks {
			lines, want := orderLines(prefix, c*per, per, func(i int) string {
				if i%9 == 4 {
					return `,"fail_at":"charge"`
				}
				return ""
			})
			kcatProduce(t, sagas.OrderTopic, lines)
			for k, v := range want {
				all[k] = v
			}
			time.Sleep(150 * time.Millisecond) // pace the stream over a few seconds
		}
		streamed <- all
	}()
	for range 3 {
		p := sagaztest.StartBinary(t, bin, dir, args...)
		kafkatest.WaitFor(t, 60*time.Second, "the member to own partitions", func() bool { return p.Metric("sagaz_partitions_owned") > 0 })
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond) // a random moment to kill at
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
		_ = p.Wait()
	}
	want := <-streamed
	p := sagaztest.StartBinary(t, bin, dir, args...)
	waitCommitted(t, group, sagas.OrderTopic)
	kafkatest.WaitFor(t, 60*time.Second, "every saga to finish", func() bool {
		// Ready first: committed offsets at the end say nothing about a
		// member that has not yet taken its partitions (and their sagas
		// recorded, but not run, by the member killed before it).
		return p.Metric("sagaz_ready") == 1 && p.Metric("sagaz_sagas_pending") == 0 && p.Metric("sagaz_sagas_executing") == 0
	})
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkOrders(t, want, sagaztest.Sagas(t, st))
}

func TestMemberLeavesAndJoinsWithoutLossOrDuplicate(t *testing.T) {
	needKafka(t)
	topic, group := unique("it-members"), unique("it-group")
	createTopic(t, topic, 6)
	reg := orderOn(topic)
	dlq := func(c *consumer.Config) { c.DeadLetterTopic = unique("it-dlq") }
	want := map[string]storage.Status{}
	produce := func(from int) {
		lines, w := orderLines("m", from, 1000, nil)
		kcatProduce(t, topic, lines)
		for k, v := range w {
			want[k] = v
		}
	}
	a := sagaztest.Start(t, brokers, group, "", reg, dlq)
	produce(0)
	kafkatest.WaitFor(t, 60*time.Second, "member a to work", func() bool { return a.Finished.Load() > 0 })
	b := sagaztest.Start(t, brokers, group, "", reg, dlq)
	kafkatest.WaitFor(t, 60*time.Second, "member b to get partitions", func() bool { return b.Consumer.Ready() && owned(b) > 0 })
	produce(1000)
	a.Stop()
	c := sagaztest.Start(t, brokers, group, "", reg, dlq)
	produce(2000)
	waitCommitted(t, group, topic)
	a2 := sagaztest.Start(t, brokers, group, a.Dir, reg, dlq) // a's unfinished sagas resume
	// a2's join moves partitions while the check runs: an engine is idle
	// between a partition's release by one member and its restore and
	// acquire by the next, so one idle moment of each member proves
	// nothing. Every order must end completed, exactly once, within the
	// bound: a saga lost or stuck never does.
	var last error
	deadline := time.Now().Add(90 * time.Second)
	for {
		var all []*storage.Saga
		for _, m := range []*sagaztest.Member{b, c, a2} {
			m.WaitIdle(60 * time.Second)
			all = append(all, sagaztest.Sagas(t, m.Store)...)
		}
		if last = sagaztest.OrdersMismatch("order", want, all, true); last == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90s: %v", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func owned(m *sagaztest.Member) float64 {
	return gaugeValue(m.Metrics.Partitions)
}

// TestBrokerRestartMidStream restarts the broker while the member consumes;
// the member reconnects and finishes with nothing lost or doubled.
func TestBrokerRestartMidStream(t *testing.T) {
	needKafka(t)
	restart := os.Getenv("SAGAZ_KAFKA_RESTART_CMD")
	if restart == "" {
		t.Skip("SAGAZ_KAFKA_RESTART_CMD is unset: the broker is not ours to restart (make test-integration sets it)")
	}
	topic, group := unique("it-restart"), unique("it-group")
	createTopic(t, topic, 3)
	m := sagaztest.Start(t, brokers, group, "", orderOn(topic), func(c *consumer.Config) { c.DeadLetterTopic = unique("it-dlq") })
	lines, want := orderLines("r", 0, 1000, nil)
	kcatProduce(t, topic, lines)
	kafkatest.WaitFor(t, 60*time.Second, "some sagas", func() bool { return m.Finished.Load() > 0 })
	cmd := exec.Command("sh", "-c", restart)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart broker: %v\n%s", err, out)
	}
	more, w2 := orderLines("r", 1000, 1000, nil)
	kcatProduce(t, topic, more)
	for k, v := range w2 {
		want[k] = v
	}
	kafkatest.WaitFor(t, 120*time.Second, "2000 sagas", func() bool { return m.Finished.Load() >= 2000 })
	waitCommitted(t, group, topic)
	checkOrders(t, want, sagaztest.Sagas(t, m.Store))
}
