package integration

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
)

// Against Apache Kafka: a record with a ~700 KB key and a value that is
// not JSON (its dead letter is larger than the dead-letter topic takes) and
// an idempotency key over bbolt's limit stop nothing but themselves; the
// dead letter is trimmed and says so; every other order completes and the
// offsets reach the log end.
func TestOversizedKeyStopsNothingButItself(t *testing.T) {
	needKafka(t)
	topic, group, dlq := unique("it-oversized"), unique("it-group"), unique("it-dlq")
	createTopic(t, topic, 2)
	small := "20000"
	adm := kadm.NewClient(kafkatest.Client(t, brokers))
	if resp, err := adm.CreateTopic(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &small}, dlq); err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", dlq, err, resp.Err)
	}
	lines, want := orderLines("o", 0, 100, nil)
	kcatProduce(t, topic, lines[:50])
	cl := kafkatest.Client(t, brokers, kgo.ProducerBatchMaxBytes(2<<20))
	kafkatest.Produce(t, cl,
		&kgo.Record{Topic: topic, Key: []byte(strings.Repeat("K", 700<<10)), Value: []byte("not json")},
		&kgo.Record{Topic: topic, Key: []byte("long"), Value: []byte(`{"order_id":"` + strings.Repeat("k", 40<<10) + `"}`)})
	kcatProduce(t, topic, lines[50:])
	m := sagaztest.Start(t, brokers, group, "", orderOn(topic), func(c *consumer.Config) { c.DeadLetterTopic = dlq })
	kafkatest.WaitFor(t, 90*time.Second, "100 sagas to finish", func() bool { return m.Finished.Load() >= 100 })
	waitCommitted(t, group, topic)
	checkOrders(t, want, sagaztest.Sagas(t, m.Store))
	got := kcatRead(t, dlq)
	reasons := map[string]int{}
	for _, r := range got {
		reasons[r.Headers[consumer.HeaderReason]]++
		if r.Headers[consumer.HeaderReason] == "decode" &&
			(r.Headers[consumer.HeaderKeyHashed] != "true" || r.Headers[consumer.HeaderValueDropped] != "true" || len(r.Key) != 64) {
			t.Errorf("the oversized dead letter is not trimmed as it says: key %d bytes, headers %v", len(r.Key), r.Headers)
		}
	}
	if len(got) != 2 || reasons["decode"] != 1 || reasons["invalid_key"] != 1 {
		t.Fatalf("dead letters by reason: %v (%d records)", reasons, len(got))
	}
}

// Against Apache Kafka: while the broker is down the member says so on
// /readyz (and keeps its data); once the broker is back it is ready again
// and every order ends once.
func TestBrokerOutageIsReportedWhileItLasts(t *testing.T) {
	needKafka(t)
	stop, resume := os.Getenv("SAGAZ_KAFKA_STOP_CMD"), os.Getenv("SAGAZ_KAFKA_RESUME_CMD")
	if stop == "" || resume == "" {
		t.Skip("SAGAZ_KAFKA_STOP_CMD / SAGAZ_KAFKA_RESUME_CMD are unset: the broker is not ours to stop (make test-integration sets them)")
	}
	topic, group := unique("it-outage"), unique("it-group")
	createTopic(t, topic, 2)
	lines, want := orderLines("out", 0, 200, nil)
	kcatProduce(t, topic, lines[:100])
	m := sagaztest.StartWith(t, brokers, group, "", orderOn(topic), func(c *member.Config) {
		c.Consumer.DeadLetterTopic = unique("it-dlq")
		c.Consumer.ProbeInterval = 200 * time.Millisecond
	})
	kafkatest.WaitFor(t, 60*time.Second, "100 sagas and readiness", func() bool { return m.Finished.Load() >= 100 && m.Ready() == nil })
	run := func(cmd string) {
		if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
	}
	run(stop)
	resumed := false
	defer func() {
		if !resumed {
			run(resume) // the next tests need the broker
		}
	}()
	kafkatest.WaitFor(t, 60*time.Second, "readiness to say the brokers are gone", func() bool {
		var nr *health.NotReady
		if !errors.As(m.Ready(), &nr) {
			return false
		}
		for _, c := range nr.Conditions {
			if c.Name == health.Brokers {
				return true
			}
		}
		return false
	})
	run(resume)
	resumed = true
	kafkatest.WaitFor(t, 120*time.Second, "readiness after the outage", func() bool { return m.Ready() == nil })
	kcatProduce(t, topic, lines[100:])
	kafkatest.WaitFor(t, 120*time.Second, "200 sagas", func() bool { return m.Finished.Load() >= 200 })
	waitCommitted(t, group, topic)
	checkOrders(t, want, sagaztest.Sagas(t, m.Store))
}
