package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

// A command topic deleted and recreated: while it is missing the saga's
// command stays in the outbox and, once producing it has failed for the
// stall timeout, the member is not ready ("outbox", naming the topic); once
// the topic is back the command is produced (the producer re-learns the
// topic) and the member is ready again.
func TestCommandTopicDeletedAndRecreated(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, sagas.TransferTopic, sagas.AccountsTopic))
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", xfer(time.Minute, 1), func(cfg *consumer.Config) { cfg.StallTimeout = time.Second })
	stop := startParticipant(t, seeds, "p1")
	produceTransfers(t, seeds, []transfer{{id: "t-1", from: "a", to: "b", amount: 5, want: storage.StatusCompleted}})
	kafkatest.WaitFor(t, 60*time.Second, "the first transfer", func() bool { return m.Finished.Load() == 1 })
	stop()
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })

	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	if _, err := adm.DeleteTopic(context.Background(), sagas.AccountsTopic); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	produceTransfers(t, seeds, []transfer{{id: "t-2", from: "a", to: "b", amount: 7, want: storage.StatusCompleted}})
	kafkatest.WaitFor(t, 60*time.Second, "readiness to name the failing outbox", func() bool {
		return holds(m, health.Outbox, "producing commands to "+sagas.AccountsTopic+" fails since")
	})
	t.Logf("outbox condition after %s", time.Since(deleted))
	if _, err := adm.CreateTopic(context.Background(), 2, 1, nil, sagas.AccountsTopic); err != nil {
		t.Fatal(err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "the command to be produced to the recreated topic", func() bool {
		ends := kafkatest.EndOffsets(t, seeds, sagas.AccountsTopic)
		return ends[0]+ends[1] > 0
	})
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready again", func() bool { return m.Ready() == nil })
	t.Logf("produced and ready after %s", time.Since(deleted))
}
