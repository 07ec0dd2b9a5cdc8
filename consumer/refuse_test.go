package consumer_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	bolt "go.etcd.io/bbolt"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// A mixed-version group: partition 1's changelog holds a saga record of a
// newer record format (a newer release wrote it). The member refuses that
// partition — it does not restore past the record, run its sagas, fetch or
// commit it — says so on /readyz (incompatible, naming it) and in
// sagaz_partitions_refused, and goes on with the other partitions: it
// neither crashes nor wedges. When the partition is revoked the refusal
// ends with it.
func TestNewerRecordsRefuseOnlyTheirPartition(t *testing.T) {
	const plain = "plain.events"
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, plain))
	seeds := c.ListenAddrs()
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "plain", Steps: []engine.Step{{Name: "only", Action: func(context.Context, *engine.Run) error { return nil }}},
		Triggers: []engine.Trigger{engine.Kafka(plain, engine.PassThrough)}})

	// What a newer release left in partition 1's changelog.
	createTopic(t, seeds, consumer.ChangelogTopic(group, plain), 3, nil)
	s := &storage.Saga{Name: "plain", Trigger: "kafka:" + plain, Status: storage.StatusExecuting, Source: storage.Position{Topic: plain, Partition: 1}, Version: 3}
	newer := storage.EncodeSaga(nil, s)
	newer[0] = 3 // a record format this release does not read
	cl := manual(t, seeds)
	kafkatest.Produce(t, cl, &kgo.Record{Topic: consumer.ChangelogTopic(group, plain), Partition: 1, Key: storage.ChangeKey(s), Value: newer})
	var recs []*kgo.Record
	for i := range 30 {
		recs = append(recs, &kgo.Record{Topic: plain, Partition: int32(i % 3), Value: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	kafkatest.Produce(t, cl, recs...)

	m := startMember(t, seeds, "", reg, nil)
	kafkatest.WaitFor(t, 60*time.Second, "partitions 0 and 2 to be committed to their end", func() bool {
		end, got := kafkatest.EndOffsets(t, seeds, plain), kafkatest.Committed(t, seeds, group, plain)
		return got[0] == end[0] && got[2] == end[2]
	})
	kafkatest.WaitFor(t, 30*time.Second, "their 20 sagas to finish", func() bool { return m.Finished.Load() == 20 })
	if got := kafkatest.Committed(t, seeds, group, plain)[1]; got > 0 {
		t.Fatalf("the refused partition was committed to %d", got)
	}
	for _, g := range sagasIn(t, m.Store) {
		if g.Source.Partition == 1 {
			t.Fatalf("a saga of the refused partition was recorded: %s", g.ID())
		}
	}
	if !m.Health.Holds(health.Incompatible) || m.Ready() == nil || !strings.Contains(m.Ready().Error(), plain+"/1") {
		t.Fatalf("readiness: %v, want the incompatible condition naming %s/1", m.Ready(), plain)
	}
	if got := testutil.ToFloat64(m.Metrics.Refused); got != 1 {
		t.Fatalf("sagaz_partitions_refused = %v, want 1", got)
	}
	if refused := m.Consumer.Refused(); len(refused) != 1 || !strings.Contains(refused[storage.Partition{Topic: plain, Partition: 1}], "record version 3") {
		t.Fatalf("refused %v", refused)
	}

	// The member leaves: its refusal ends with the partition, and the
	// member that gets the partition refuses it in turn.
	m2 := startMember(t, seeds, "", reg, nil)
	m.Stop()
	if len(m.Consumer.Refused()) != 0 || m.Health.Holds(health.Incompatible) || testutil.ToFloat64(m.Metrics.Refused) != 0 {
		t.Fatalf("after leaving: refused %v, incompatible %v", m.Consumer.Refused(), m.Health.Holds(health.Incompatible))
	}
	kafkatest.WaitFor(t, 60*time.Second, "the second member to refuse partition 1", func() bool {
		_, ok := m2.Consumer.Refused()[storage.Partition{Topic: plain, Partition: 1}]
		return ok && m2.Health.Holds(health.Incompatible)
	})
	kafkatest.WaitFor(t, 30*time.Second, "partitions 0 and 2 to be owned there", func() bool { return len(m2.Engine.Owned()) >= 2 })

	// The store side: an unfinished saga of partition 2 in the second
	// member's store was written by a newer release (a rollback onto its
	// data directory). At the next start the member refuses partition 2 as
	// well, and still runs partition 0.
	m2.Stop()
	st, err := storage.OpenBolt(filepath.Join(m2.Dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	later := &storage.Saga{Name: "plain", Trigger: "kafka:" + plain, Source: storage.Position{Topic: plain, Partition: 2, Offset: 1 << 20}, Context: []byte(`{}`)}
	if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{later}}); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	db, err := bolt.Open(filepath.Join(m2.Dir, "sagaz.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("parts")).Bucket([]byte(plain + "/2")).Bucket([]byte("s"))
		k := storage.ChangeKey(later)
		v := append([]byte(nil), b.Get(k)...)
		v[0] = 3
		return b.Put(k, v)
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	kafkatest.Produce(t, cl, &kgo.Record{Topic: plain, Partition: 0, Value: []byte(`{"n":"after"}`)})
	m3 := startMember(t, seeds, m2.Dir, reg, nil)
	kafkatest.WaitFor(t, 60*time.Second, "partitions 1 and 2 refused, partition 0 consumed to its end", func() bool {
		refused := m3.Consumer.Refused()
		end, got := kafkatest.EndOffsets(t, seeds, plain), kafkatest.Committed(t, seeds, group, plain)
		return len(refused) == 2 && strings.Contains(refused[storage.Partition{Topic: plain, Partition: 2}], "the local store") && got[0] == end[0]
	})
	if m3.Engine.Owns(later.Source) {
		t.Fatal("the refused partition's sagas run here")
	}
}
