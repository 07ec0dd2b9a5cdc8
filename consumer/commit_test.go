package consumer_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// Step 4 of the commit protocol does not hold the pipeline: while offset
// commits hang, events produced meanwhile are still recorded and their
// sagas run (order sagas are keyed, so each also takes the hop through the
// keys topic, which needs further polls and batches). Once the commits
// answer, everything durable is committed, and every order has one saga.
// A pipeline that waits for each commit's answer records one batch per
// client request timeout (about 10 s) while commits hang, and this test
// fails.
func TestHangingCommitDoesNotHoldRecording(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, topic))
	seeds := c.ListenAddrs()
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	var commits atomic.Int32
	c.ControlKey(int16(kmsg.OffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		commits.Add(1)
		c.SleepControl(func() { <-release }) // every commit hangs until the test releases them
		return nil, nil, false
	})
	// Heartbeats share the hung commit's connection: a session longer than
	// the test keeps the member in its group meanwhile.
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.SessionTimeout = 45 * time.Second })
	cl := kafkatest.Client(t, seeds)
	produceOrders(t, cl, 0, 10, nil)
	kafkatest.WaitFor(t, 30*time.Second, "the first offset commit to hang", func() bool { return commits.Load() >= 1 })
	produceOrders(t, cl, 10, 10, nil)
	kafkatest.WaitFor(t, 15*time.Second, "20 sagas to finish while the commits hang", func() bool { return m.Finished.Load() >= 20 })
	if n := commits.Load(); n > 2 {
		t.Fatalf("%d commits reached the broker while the first one hung: the pipeline sends one at a time (a second only if the client gave up on the first)", n)
	}
	releaseOnce.Do(func() { close(release) })
	waitCommittedAtEnd(t, seeds)
	want := map[string]storage.Status{}
	for i := range 20 {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
}

// The dead-letter topic deleted and recreated, as operators do to empty it:
// while it is missing, the partition holding a dead letter waits (nothing
// is skipped) and readiness names it stalled; once the topic is back, the
// dead letter is produced there, the partition goes on and every order
// behind the poison record gets its saga. Without the producer's purge the
// client keeps the deleted topic's id and fails for ever.
func TestDeadLetterTopicDeletedAndRecreated(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, topic))
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) {
		cfg.StallTimeout = time.Second
		cfg.DeadLetterAttempts = 1 // each attempt waits up to 15 s for the missing topic
	})
	cl := kafkatest.Client(t, seeds)
	first := &kgo.Record{Topic: topic, Key: []byte("p1"), Value: []byte("not json")}
	kafkatest.Produce(t, cl, first)
	kafkatest.WaitFor(t, 30*time.Second, "the first dead letter", func() bool { return len(kafkatest.ReadAll(t, seeds, dlq)) == 1 })

	adm := kadm.NewClient(cl)
	if _, err := adm.DeleteTopic(context.Background(), dlq); err != nil {
		t.Fatal(err)
	}
	second := &kgo.Record{Topic: topic, Key: []byte("p2"), Value: []byte("not json either")}
	kafkatest.Produce(t, cl, second)
	produceOrders(t, cl, 0, 5, nil)
	kafkatest.WaitFor(t, 60*time.Second, "readiness to name the stalled partition", func() bool {
		return holds(m, health.Stalled, topic+"/0")
	})
	if got := kafkatest.Committed(t, seeds, group, topic)[0]; got > second.Offset {
		t.Fatalf("offset %d committed past the poison record at %d whose dead letter is not written: it was skipped", got, second.Offset)
	}
	deleted := time.Now()
	if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, dlq); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the five orders behind the dead letter", func() bool { return m.Finished.Load() == 5 })
	waitCommittedAtEnd(t, seeds)
	t.Logf("committed past the poison record %s after the topic was deleted", time.Since(deleted))
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready again", func() bool { return m.Ready() == nil })
	got := kafkatest.ReadAll(t, seeds, dlq)
	if len(got) != 1 || string(got[0].Value) != string(second.Value) {
		t.Fatalf("recreated dead-letter topic holds %d records, want the second poison record once", len(got))
	}
}

// A lost group session: the coordinator forgets the member (a heartbeat
// answered UNKNOWN_MEMBER_ID) and refuses it for a while (every JoinGroup
// fails). The member does not say it is ready while it owns nothing: its
// readiness names the lost partitions ("joining"); events produced
// meanwhile wait in Kafka; once the coordinator takes it back, the member
// is ready again and every order has its saga.
func TestLostGroupSessionIsReportedAndRecovered(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, topic))
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.StallTimeout = time.Second })
	cl := kafkatest.Client(t, seeds)
	produceOrders(t, cl, 0, 10, nil)
	kafkatest.WaitFor(t, 30*time.Second, "the first 10 sagas", func() bool { return m.Finished.Load() == 10 })
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })

	joins := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.JoinGroup}, Group: group, TopLevel: true, Err: kerr.UnknownServerError, Count: -1})
	heartbeat := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Heartbeat}, Group: group, TopLevel: true, Err: kerr.UnknownMemberID})
	kafkatest.WaitFor(t, 30*time.Second, "readiness to name the lost session", func() bool {
		return holds(m, health.Joining, "partitions lost")
	})
	produceOrders(t, cl, 10, 10, nil)
	time.Sleep(2 * time.Second) // longer than the stall timeout: still not ready, nothing recorded
	if err := m.Ready(); err == nil {
		t.Fatal("ready while the group refuses the member")
	}
	if n := m.Finished.Load(); n != 10 {
		t.Fatalf("%d sagas finished while the member owned no partition, want 10", n)
	}
	if heartbeat.Hits() == 0 || joins.Hits() == 0 {
		t.Fatalf("faults fired: heartbeat %d, join %d", heartbeat.Hits(), joins.Hits())
	}
	joins.Remove()
	kafkatest.WaitFor(t, 60*time.Second, "the 10 orders produced meanwhile", func() bool { return m.Finished.Load() == 20 })
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready again", func() bool { return m.Ready() == nil })
	waitCommittedAtEnd(t, seeds)
	want := map[string]storage.Status{}
	for i := range 20 {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
}
