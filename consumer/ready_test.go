package consumer_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
)

// holds reports whether the member's readiness names the condition, with a
// reason containing want.
func holds(m *testMember, cond, want string) bool {
	var nr *health.NotReady
	if !errors.As(m.Ready(), &nr) {
		return false
	}
	for _, c := range nr.Conditions {
		if c.Name == cond && strings.Contains(c.Reason, want) {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A member started before its broker can be reached keeps trying: it is
// not ready and says "waiting for brokers"; once the broker is up it joins
// and works.
func TestStartBeforeTheBrokerWaitsAndSaysSo(t *testing.T) {
	port := freePort(t)
	seeds := []string{net.JoinHostPort("127.0.0.1", itoa(port))}
	m := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 30*time.Second, "readiness to say it waits for brokers", func() bool { return holds(m, health.Brokers, "waiting for brokers") })
	c := kafkatest.NewCluster(t, kfake.Ports(port), kfake.SeedTopics(2, topic))
	kafkatest.Produce(t, kafkatest.Client(t, c.ListenAddrs()), orderRecord("o-1", ""))
	kafkatest.WaitFor(t, 60*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	kafkatest.WaitFor(t, 30*time.Second, "the saga", func() bool { return m.Finished.Load() == 1 })
}

// With topic creation off, missing topics keep the member not ready, named
// in the reason; it starts once an operator creates them.
func TestMissingTopicsKeepTheMemberNotReadyUntilCreated(t *testing.T) {
	c := kafkatest.NewCluster(t)
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.CreateTopics = false })
	kafkatest.WaitFor(t, 30*time.Second, "readiness to name the missing topics", func() bool {
		return holds(m, health.Topics, "orders.created") && holds(m, health.Topics, "sagaz.dlq")
	})
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	if _, err := adm.CreateTopics(context.Background(), 2, 1, nil, topic, dlq, "sagaz.events", group+"-keys"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(context.Background(), 1, 1, map[string]*string{"cleanup.policy": ptr("compact")}, consumer.MembersTopic(group)); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopics(context.Background(), 2, 1, map[string]*string{"cleanup.policy": ptr("compact")},
		consumer.ChangelogTopic(group, topic), consumer.ChangelogTopic(group, "sagaz.events"), consumer.ChangelogTopic(group, group+"-keys")); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
}

// A partition that cannot make progress (its dead letter is refused) makes
// the member not ready after the stall timeout, naming the partition; it
// is ready again once the partition moves.
func TestStalledPartitionMakesTheMemberNotReady(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	tiny := "120"
	createTopic(t, seeds, dlq, 1, map[string]*string{"max.message.bytes": &tiny})
	cl := manual(t, seeds)
	kafkatest.Produce(t, cl, &kgo.Record{Topic: topic, Partition: 1, Key: []byte("bad"), Value: []byte("not json")},
		&kgo.Record{Topic: topic, Partition: 2, Key: []byte("o-1"), Value: []byte(`{"order_id":"o-1"}`)})
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) {
		cfg.DeadLetterAttempts, cfg.StallTimeout = 1, time.Second
	})
	kafkatest.WaitFor(t, 60*time.Second, "readiness to name the stalled partition", func() bool {
		return holds(m, health.Stalled, topic+"/1")
	})
	if holds(m, health.Stalled, topic+"/2") {
		t.Fatal("a partition that made progress is reported stalled")
	}
	big := "1000000"
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	if _, err := adm.AlterTopicConfigs(context.Background(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &big}}, dlq); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the member to be ready again", func() bool { return m.Ready() == nil })
}

// Brokers that stop answering make the member not ready ("brokers") while
// it lasts.
func TestBrokerOutageMakesTheMemberNotReady(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, topic))
	seeds := c.ListenAddrs()
	m := sagaztest.StartWith(t, seeds, group, "", newRegistry(), func(cfg *member.Config) { cfg.Consumer.ProbeInterval = 100 * time.Millisecond })
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets, kmsg.Metadata}, Count: -1})
	kafkatest.WaitFor(t, 30*time.Second, "readiness to say the brokers do not answer", func() bool { return holds(m, health.Brokers, "cannot reach") })
	h.Remove()
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready again", func() bool { return m.Ready() == nil })
}

func ptr(s string) *string { return &s }
func itoa(n int) string    { return strconv.Itoa(n) }

// A member is not ready before its consumer has joined, even for the
// instant between its engine's recovery (which clears "recovering") and
// the consumer's start: the "joining" condition is set when the member is
// built. A Docker health check once passed in that instant, before the
// member had any partition.
func TestNotReadyBeforeTheConsumerRuns(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, topic))
	m, err := member.New(context.Background(), member.Config{DataDir: t.TempDir(), Registry: newRegistry(), Logger: sagaztest.Logger(),
		Consumer: consumer.Config{Client: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Group: group, CreateTopics: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Health.Clear(health.Recovering) // the engine's recovery, done before the consumer runs
	var nr *health.NotReady
	if err := m.Ready(); !errors.As(err, &nr) || len(nr.Conditions) != 1 || nr.Conditions[0].Name != health.Joining {
		t.Fatalf("Ready() = %v before the consumer ran; want not ready, joining", err)
	}
}
