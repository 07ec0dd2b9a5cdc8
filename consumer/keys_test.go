package consumer_test

import (
	"fmt"
	"net/http"
	"strings"
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
