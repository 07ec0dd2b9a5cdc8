package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// allSources: a kafka trigger, a webhook and a cron schedule.
func allSources() *engine.Routes {
	reg := newRegistry(
		engine.Saga{Name: "hook", Steps: []engine.Step{{Name: "s", Action: func(context.Context, *engine.Run) error { return nil }}},
			Triggers: []engine.Trigger{engine.Webhook("payments", engine.PassThrough)}},
		engine.Saga{Name: "tick", Steps: []engine.Step{{Name: "s", Action: func(context.Context, *engine.Run) error { return nil }}},
			Triggers: []engine.Trigger{engine.Cron("@hourly")}},
	)
	rs, err := reg.Routes()
	if err != nil {
		panic(err)
	}
	return rs
}

func TestRequiredTopicsNameEveryTopicTheMemberUses(t *testing.T) {
	specs := consumer.RequiredTopics(allSources(), consumer.Config{Group: "g", TopicPartitions: 4}, true)
	var got []string
	for _, s := range specs {
		got = append(got, s.Role+" "+s.Name)
		if s.Role == consumer.RoleChangelog {
			if s.Configs["cleanup.policy"] != "compact" || s.Configs["segment.ms"] != "3600000" || s.Configs["min.cleanable.dirty.ratio"] != "0.25" ||
				s.Source == "" || s.Name != consumer.ChangelogTopic("g", s.Source) {
				t.Errorf("changelog spec %+v", s)
			}
		} else if s.Partitions != 4 && s.Role != consumer.RoleMembers {
			t.Errorf("%s: %d partitions, want 4", s.Name, s.Partitions)
		}
	}
	want := "trigger orders.created, events sagaz.events, cron sagaz.cron, keys g-keys, dead-letter sagaz.dlq, members g-members, " +
		"changelog g-changelog-orders.created, changelog g-changelog-sagaz.events, changelog g-changelog-sagaz.cron, changelog g-changelog-g-keys"
	if strings.Join(got, ", ") != want {
		t.Fatalf("topics:\n got %s\nwant %s", strings.Join(got, ", "), want)
	}
	if specs := consumer.RequiredTopics(allSources(), consumer.Config{}, false); len(specs) != 5 {
		t.Errorf("without changelogs: %v", specs)
	}
}

func TestEnsureTopicsCreatesAllOrNamesAllMissing(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic)) // a source created by someone else, with 3 partitions
	opts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	specs := consumer.RequiredTopics(allSources(), consumer.Config{Group: "g", TopicPartitions: 2}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Creation off: one error names every missing topic (not one per start).
	_, err := consumer.EnsureTopics(ctx, opts, specs, false, -1, slog.New(slog.DiscardHandler))
	if !errors.Is(err, consumer.ErrMissingTopics) {
		t.Fatalf("EnsureTopics without creation = %v", err)
	}
	_, list, _ := strings.Cut(err.Error(), "topics missing: ")
	list, _, _ = strings.Cut(list, " (")
	named := map[string]bool{}
	for _, n := range strings.Split(list, ", ") {
		named[n] = true
	}
	for _, s := range specs {
		if named[s.Name] == (s.Name == topic) {
			t.Errorf("error %q: names %s = %v, want %v (it exists: %v)", err, s.Name, named[s.Name], s.Name != topic, s.Name == topic)
		}
	}
	if len(named) != len(specs)-1 {
		t.Errorf("error names %d topics, want %d", len(named), len(specs)-1)
	}

	states, err := consumer.EnsureTopics(ctx, opts, specs, true, -1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(kafkatest.Client(t, c.ListenAddrs()))
	details, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		want := int32(2)
		switch s.Source {
		case topic:
			want = 3 // a changelog follows its source's partition count
		case "":
			if s.Name == topic {
				want = 3
			}
			if s.Role == consumer.RoleMembers {
				want = 1 // one partition: every member reads every entry
			}
		}
		if got := int32(len(details[s.Name].Partitions)); got != want || s.Have != want {
			t.Errorf("%s: %d partitions (reported %d), want %d", s.Name, got, s.Have, want)
		}
		if s.Created == (s.Name == topic) {
			t.Errorf("%s: created = %v", s.Name, s.Created)
		}
	}
	// Idempotent: a second run creates nothing.
	states, err = consumer.EnsureTopics(ctx, opts, specs, true, -1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		if s.Created {
			t.Errorf("%s created twice", s.Name)
		}
	}
	// Configs reach the broker: changelogs are compacted.
	rc, err := adm.DescribeTopicConfigs(ctx, consumer.ChangelogTopic("g", topic))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rc.On(consumer.ChangelogTopic("g", topic), nil)
	if err != nil {
		t.Fatal(err)
	}
	compact := false
	for _, kv := range cfg.Configs {
		compact = compact || kv.Key == "cleanup.policy" && kv.MaybeValue() == "compact"
	}
	if !compact {
		t.Errorf("changelog configs %v, want cleanup.policy=compact", cfg.Configs)
	}
}

func TestKnownLabelValuesExistBeforeTheFirstIncrement(t *testing.T) {
	m := consumer.NewMetrics(nil)
	if n := testutil.CollectAndCount(m.DeadLetters); n != len(consumer.DeadLetterReasons) {
		t.Errorf("%d dead-letter series, want one per reason (%d)", n, len(consumer.DeadLetterReasons))
	}
	if n := testutil.CollectAndCount(m.Rebalances); n != 3 {
		t.Errorf("%d rebalance series, want 3", n)
	}
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kopts := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}
	cl, err := consumer.NewChangelog("sagaz", kopts, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	eng, err := engine.New(engine.Config{Store: st, Registry: newRegistry(), Logger: slog.New(slog.DiscardHandler), Changelog: cl})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := consumer.New(eng, st, consumer.Config{Client: kopts, Metrics: m}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		count int
		got   int
	}{
		{"sagas started{saga}", 1, testutil.CollectAndCount(m.SagasStarted)},
		{"deduplicated{saga}", 1, testutil.CollectAndCount(m.Deduplicated)},
		{"records consumed{topic}", 3, testutil.CollectAndCount(m.RecordsConsumed)}, // orders.created, the events topic (order.requested), the keys topic
	} {
		if c.got != c.count {
			t.Errorf("%s: %d series, want %d", c.name, c.got, c.count)
		}
	}
	if v := testutil.ToFloat64(m.SagasStarted.WithLabelValues("order")); v != 0 {
		t.Errorf("sagas started{order} = %v before anything started", v)
	}
}

// Sagas with command and await steps need more: a replies topic per topic
// their sagas live in (a keyed trigger's live in the keys topic), created
// with that topic's partition count; the command topics; the awaited
// topics (consumed, with their changelogs) and the keys topic.
func TestRequiredTopicsOfKafkaSteps(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "ask",
		Steps:    []engine.Step{{Name: "c", Command: &engine.Command{Topic: "cmds"}, Timeout: time.Second}},
		Triggers: []engine.Trigger{engine.Kafka("plain", engine.PassThrough)}})
	reg.Register(engine.Saga{Name: "wait",
		Steps:    []engine.Step{{Name: "w", Await: &engine.Await{Topic: "payments", Field: "id", Value: engine.ContextValue("id")}, Timeout: time.Second}},
		Triggers: []engine.Trigger{engine.Kafka("keyed", engine.PassThrough, engine.WithKey(engine.KeyField("id")))}})
	rs, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	specs := consumer.RequiredTopics(rs, consumer.Config{Group: "g", TopicPartitions: 6}, true)
	roles := map[string]string{}
	for _, s := range specs {
		roles[s.Name] = s.Role + "/" + s.Source
	}
	for name, want := range map[string]string{
		"plain": "trigger/", "keyed": "trigger/", "payments": "awaited/", "g-keys": "keys/", "cmds": "commands/",
		"g-replies-plain": "replies/plain", "g-replies-g-keys": "replies/g-keys", "g-changelog-payments": "changelog/payments",
	} {
		if roles[name] != want {
			t.Errorf("%s: %q, want %q (all: %v)", name, roles[name], want, roles)
		}
	}
	if _, ok := roles["g-replies-keyed"]; ok {
		t.Error("a keyed trigger's topic holds no saga: it needs no replies topic")
	}
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, "plain"))
	states, err := consumer.EnsureTopics(context.Background(), []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, specs, true, -1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		if s.Name == "g-replies-plain" && s.Have != 4 {
			t.Errorf("replies of a 4-partition topic created with %d partitions", s.Have)
		}
	}
}
