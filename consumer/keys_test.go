package consumer_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

// A declared key allows one saga per (saga, key value) in the whole group,
// whatever the record key, the partition, or the source: the same order id
// on six partitions under six record keys, on two members, and once more
// fired by hand through the API, starts one saga, named by its key.
func TestOneSagaPerKeyAcrossPartitionsMembersAndSources(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic))
	seeds := c.ListenAddrs()
	reg := newRegistry()
	a := sagaztest.StartWith(t, seeds, group, "", reg, func(c *member.Config) { c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{} })
	b := startMember(t, seeds, "", reg, nil)
	kafkatest.WaitFor(t, 30*time.Second, "both members ready", func() bool { return a.Ready() == nil && b.Ready() == nil })
	cl := manual(t, seeds)
	var recs []*kgo.Record
	for n := range 50 {
		id := fmt.Sprintf("dup-%d", n)
		for p := range int32(6) {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Key: []byte(fmt.Sprintf("rk-%d-%d", n, p)), Value: []byte(`{"order_id":"` + id + `"}`)})
		}
	}
	kafkatest.Produce(t, cl, recs...)
	for n := range 50 {
		resp, err := http.Post("http://"+a.HTTP.Addr()+"/api/fire", "application/json",
			strings.NewReader(fmt.Sprintf(`{"event_type":"order.requested","order_id":"dup-%d"}`, n)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("fire: %d", resp.StatusCode)
		}
	}
	dedup := func() float64 {
		return testutil.ToFloat64(a.Metrics.Deduplicated.WithLabelValues("order")) + testutil.ToFloat64(b.Metrics.Deduplicated.WithLabelValues("order"))
	}
	kafkatest.WaitFor(t, 60*time.Second, "the 300 duplicates matched", func() bool { return dedup() >= 300 })
	want := map[string]storage.Status{}
	for n := range 50 {
		want[fmt.Sprintf("dup-%d", n)] = storage.StatusCompleted
	}
	kafkatest.WaitFor(t, 60*time.Second, "50 sagas to complete", func() bool { return a.Finished.Load()+b.Finished.Load() >= 50 })
	all := append(sagasIn(t, a.Store), sagasIn(t, b.Store)...)
	checkOneSagaPerOrder(t, want, all)
	for _, s := range all {
		if s.ID() != storage.FormatKeyedID("order", s.IdempotencyKey) || s.Source.Topic != group+"-keys" ||
			s.Source.Partition != engine.KeyPartition("order", s.IdempotencyKey, 6) {
			t.Fatalf("saga %s lives in %s", s.ID(), s.Source.TopicPartition())
		}
	}
	if got := dedup(); got != 300 {
		t.Fatalf("%v events matched an existing saga, want 300", got)
	}
}

// Direct starts (docs/architecture.md, invariant 2) record a keyed start in
// the batch that produced it, at its record's offset. With another
// producer's starts (as another member forwards them) landing in the same
// keys partitions at the same time, some for the same keys, each key still
// starts exactly one saga, nothing is lost, and no event is counted twice.
func TestDirectStartsWithForeignStartsInterleaved(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(3, topic))
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", newRegistry(), nil)
	kafkatest.WaitFor(t, 30*time.Second, "the member ready", func() bool { return m.Ready() == nil })
	const n = 3000
	want := map[string]storage.Status{}
	for i := range n {
		want["o-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	foreign := func(key string, i int) *kgo.Record {
		s := &storage.Saga{Name: "order", Trigger: "kafka:" + topic, IdempotencyKey: key,
			Origin: storage.Position{Topic: "elsewhere", Partition: 0, Offset: int64(i)}}
		var hs []kgo.RecordHeader
		for _, h := range engine.StartHeaders(s) {
			hs = append(hs, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		return &kgo.Record{Topic: group + "-keys", Key: engine.StartKey("order", key), Headers: hs,
			Value: []byte(fmt.Sprintf(`{"order_id":%q,"amount":12.5}`, key))}
	}
	// Kafka's partitioner (murmur2) puts each foreign start where the key's
	// owner reads it, as a member's forwarded start.
	fcl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
	cl := kafkatest.Client(t, seeds)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // every other order again, and 500 orders only it starts
		defer wg.Done()
		var recs []*kgo.Record
		for i := 0; i < n; i += 2 {
			recs = append(recs, foreign("o-"+strconv.Itoa(i), i))
			if i%10 == 0 {
				recs = append(recs, foreign("f-"+strconv.Itoa(i/10), i))
			}
			if len(recs) >= 50 {
				kafkatest.Produce(t, fcl, recs...)
				recs = recs[:0]
				time.Sleep(2 * time.Millisecond)
			}
		}
		kafkatest.Produce(t, fcl, recs...)
	}()
	for from := 0; from < n; from += 100 {
		produceOrders(t, cl, from, 100, nil)
		time.Sleep(3 * time.Millisecond)
	}
	wg.Wait()
	for i := range n / 10 {
		want["f-"+strconv.Itoa(i)] = storage.StatusCompleted
	}
	kafkatest.WaitFor(t, 60*time.Second, "every order's saga to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	m.WaitIdle(30 * time.Second)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
	started := testutil.ToFloat64(m.Metrics.SagasStarted.WithLabelValues("order"))
	dedup := testutil.ToFloat64(m.Metrics.Deduplicated.WithLabelValues("order"))
	recorded := testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("recorded"))
	deferred := testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("deferred"))
	t.Logf("direct starts: %v recorded, %v deferred", recorded, deferred)
	if started != float64(len(want)) || dedup != float64(n/2) {
		t.Fatalf("%v sagas started, %v events matched one; want %d and %d", started, dedup, len(want), n/2)
	}
	// This member owns every keys partition, and forwarded n starts: each
	// recorded directly or deferred (how many of each depends on how the
	// starts interleaved).
	if recorded+deferred != n {
		t.Fatalf("direct starts: %v recorded, %v deferred; want %d in all", recorded, deferred, n)
	}
	// Once every keys partition is handled to its end, the next start lands
	// at its partition's next offset: it is recorded directly.
	produceOrders(t, cl, n, 10, nil)
	for i := range 10 {
		want["o-"+strconv.Itoa(n+i)] = storage.StatusCompleted
	}
	kafkatest.WaitFor(t, 60*time.Second, "the last orders' sagas to finish", func() bool { return m.Finished.Load() >= int64(len(want)) })
	waitCommittedAtEnd(t, seeds)
	m.WaitIdle(30 * time.Second)
	checkOneSagaPerOrder(t, want, sagasIn(t, m.Store))
	if got := testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("recorded")); got == recorded {
		t.Fatalf("none of the starts after a quiet keys topic was recorded directly (%v deferred in all)",
			testutil.ToFloat64(m.Metrics.DirectStarts.WithLabelValues("deferred")))
	}
}
