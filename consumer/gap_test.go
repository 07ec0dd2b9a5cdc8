package consumer_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// A member that died after its store's fsync and before the changelog's
// acks restarts with sagas in its store, above the committed offset, that
// the changelog may not hold. Committing past them without mirroring them
// would strand them: were the partition to move before they ran, the next
// owner would neither restore nor fetch them. Here ten such sagas wait (one
// runs and blocks, MaxConcurrent 1, so the other nine make no transition
// of their own): once the offsets are committed, the changelog holds all
// ten.
func TestStoreAheadOfCommitsIsMirroredBeforeCommitting(t *testing.T) {
	const gapTopic = "gap.events"
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, gapTopic))
	seeds := c.ListenAddrs()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	trig := engine.Kafka(gapTopic, engine.PassThrough, engine.WithMaxConcurrent(1))
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "gap", Triggers: []engine.Trigger{trig}, Steps: []engine.Step{{Name: "wait",
		Action: func(ctx context.Context, _ *engine.Run) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}}}})

	const n = 10
	var recs []*kgo.Record
	var sagas []*storage.Saga
	for i := range n {
		v := []byte(`{"n":` + strconv.Itoa(i) + `}`)
		recs = append(recs, &kgo.Record{Topic: gapTopic, Value: v})
		sagas = append(sagas, &storage.Saga{Name: "gap", Trigger: trig.ID(), Source: storage.Position{Topic: gapTopic, Offset: int64(i)}, Context: v})
	}
	kafkatest.Produce(t, kafkatest.Client(t, seeds), recs...)
	// What the member had recorded when it died: the sagas and the next
	// offset in its store, nothing in the changelog, nothing committed.
	dir := t.TempDir()
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: sagas,
		Offsets: []storage.Offset{{Topic: gapTopic, Partition: 0, Next: n}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	m := startMember(t, seeds, dir, reg, nil)
	kafkatest.WaitCommittedAtEnd(t, seeds, group, gapTopic, 60*time.Second)
	got := map[int64]bool{}
	for _, r := range kafkatest.ReadAll(t, seeds, consumer.ChangelogTopic(group, gapTopic)) {
		if r.Value == nil || bytes.HasPrefix(r.Key, []byte{0xff}) {
			continue // tombstones, next offsets, meta records
		}
		s, err := storage.DecodeSaga(r.Value)
		if err != nil {
			continue
		}
		got[s.Source.Offset] = true
	}
	if len(got) != n {
		t.Fatalf("offsets committed with %d of the %d sagas recorded above them in the changelog", len(got), n)
	}
	if started := m.Finished.Load(); started != 0 {
		t.Fatalf("%d sagas finished: the blocking step did not hold them", started)
	}
}
