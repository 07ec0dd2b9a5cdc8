package integration

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

// On Apache Kafka the changelog is really compacted (kfake compacts late,
// so there a restore reads every transition): once closed segments are
// cleaned, a member restoring the group's sagas into an empty data
// directory reads about one changelog record per saga (plus what the last
// segments, still open, hold), where about four were written. The changelog
// topics' segments roll every 200 ms here instead of every hour (the
// config sagaz creates them with), so the test need not wait an hour for
// the log cleaner; everything else is as sagaz creates it.
func TestRestoreReadsAboutOneRecordPerSagaOnKafka(t *testing.T) {
	needKafka(t)
	topic, group := unique("it-compact"), unique("it-group")
	createTopic(t, topic, 3)
	reg := orderOn(topic)
	dlq := unique("it-dlq")
	cfg := func(c *consumer.Config) { c.DeadLetterTopic = dlq }
	a := sagaztest.Start(t, brokers, group, "", reg, cfg)
	kafkatest.WaitFor(t, 60*time.Second, "member a to be ready", func() bool { return a.Consumer.Ready() })
	changelogs := []string{consumer.ChangelogTopic(group, topic), consumer.ChangelogTopic(group, a.Consumer.KeysTopic())}
	adm := kadm.NewClient(kafkatest.Client(t, brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rolled, dirty := "200", "0.01"
	resps, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Name: "segment.ms", Value: &rolled}, {Name: "min.cleanable.dirty.ratio", Value: &dirty},
	}, changelogs...)
	if err == nil {
		for _, r := range resps {
			if r.Err != nil {
				err = r.Err
			}
		}
	}
	if err != nil {
		t.Fatalf("alter changelog configs: %v", err)
	}

	// Orders in waves, so each wave's changelog records land in segments
	// that the next wave's records roll closed.
	const waves, per = 10, 120
	want := map[string]storage.Status{}
	for w := range waves {
		lines, ws := orderLines("r", w*per, per, nil)
		kcatProduce(t, topic, lines)
		for k, v := range ws {
			want[k] = v
		}
		kafkatest.WaitFor(t, 60*time.Second, "wave "+strconv.Itoa(w)+" to finish", func() bool { return a.Finished.Load() >= int64((w+1)*per) })
		time.Sleep(300 * time.Millisecond)
	}
	waitCommitted(t, group, topic)
	sagas := len(want)
	kafkatest.WaitFor(t, 120*time.Second, "the log cleaner to compact the changelogs", func() bool {
		return changelogRecords(t, changelogs) <= 2*sagas
	})
	left := changelogRecords(t, changelogs)
	var written int64
	for _, cl := range changelogs {
		for _, o := range kafkatest.EndOffsets(t, brokers, cl) {
			written += o
		}
	}
	a.Stop()

	b := sagaztest.Start(t, brokers, group, "", reg, cfg) // an empty data directory
	kafkatest.WaitFor(t, 60*time.Second, "member b to restore and be ready", func() bool { return b.Consumer.Ready() })
	restored := counterValue(b.Metrics.RestoredRecords)
	t.Logf("%d sagas; %d changelog records written, %d left after compaction; member b restored %.0f records (%.2f per saga)",
		sagas, written, left, restored, restored/float64(sagas))
	if restored > 2*float64(sagas) { // about one per saga, plus the last waves' records in segments still open
		t.Errorf("restored %.0f changelog records for %d sagas: the compacted changelog should hold about one per saga", restored, sagas)
	}
	if restored < float64(sagas) {
		t.Errorf("restored %.0f changelog records for %d sagas: fewer records than sagas", restored, sagas)
	}
	checkOrders(t, want, sagaztest.Sagas(t, b.Store))
}

// changelogRecords counts the records the topics hold now (a compacted
// log has gaps in its offsets: read it to the end offsets as they are).
func changelogRecords(t *testing.T, topics []string) int {
	t.Helper()
	n := 0
	for _, topic := range topics {
		end := kafkatest.EndOffsets(t, brokers, topic)
		left := map[int32]int64{}
		for p, o := range end {
			if o > 0 {
				left[p] = o
			}
		}
		if len(left) == 0 {
			continue
		}
		cl := kafkatest.Client(t, brokers, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for len(left) > 0 {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				cancel()
				t.Fatalf("read %s: %v", topic, ctx.Err())
			}
			fs.EachRecord(func(r *kgo.Record) {
				n++
				if r.Offset+1 >= left[r.Partition] {
					delete(left, r.Partition)
				}
			})
		}
		cancel()
		cl.Close()
	}
	return n
}
