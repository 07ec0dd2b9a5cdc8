package consumer_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
)

// gauge tracks how many steps run at once, in total and per customer,
// across every member of the test (they share this process).
type gauge struct {
	mu      sync.Mutex
	now     int
	peak    int
	per     map[string]int
	perPeak int
}

func (g *gauge) step(release <-chan struct{}) engine.StepFunc {
	return func(ctx context.Context, r *engine.Run) error {
		c := r.String("customer")
		g.mu.Lock()
		g.now++
		g.per[c]++
		g.peak, g.perPeak = max(g.peak, g.now), max(g.perPeak, g.per[c])
		g.mu.Unlock()
		select {
		case <-release:
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
		g.mu.Lock()
		g.now--
		g.per[c]--
		g.mu.Unlock()
		return nil
	}
}

// MaxConcurrent and a concurrency key hold for the whole group: two
// members, each running its share of MaxConcurrent (by the partitions it
// owns) and the per-customer limit exactly (a customer's sagas live in one
// partition).
func TestLimitsHoldForTheGroup(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, "limited"))
	seeds := c.ListenAddrs()
	g := &gauge{per: map[string]int{}}
	release := make(chan struct{})
	reg := func() *engine.Registry {
		r := engine.NewRegistry()
		r.Register(engine.Saga{Name: "limited", Steps: []engine.Step{{Name: "work", Action: g.step(release)}},
			Triggers: []engine.Trigger{engine.Kafka("limited", engine.PassThrough, engine.WithKey(engine.KeyField("id")),
				engine.WithMaxConcurrent(4), engine.WithConcurrencyKey(engine.KeyField("customer"), 1))}})
		return r
	}
	var finished atomic.Int64
	var ms []*sagaztest.Member
	for range 2 {
		ms = append(ms, sagaztest.StartWith(t, seeds, group, "", reg(), func(c *member.Config) {
			c.Consumer.TopicPartitions = 6
		}))
	}
	kafkatest.WaitFor(t, 60*time.Second, "both members own keys partitions", func() bool {
		for _, m := range ms {
			n := 0
			for _, p := range m.Engine.Owned() {
				if p.Topic == group+"-keys" {
					n++
				}
			}
			if m.Ready() != nil || n == 0 {
				return false
			}
		}
		return true
	})
	var recs []*kgo.Record
	const n = 120
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: "limited", Key: []byte(fmt.Sprint(i)),
			Value: []byte(fmt.Sprintf(`{"id":"%d","customer":"c-%d"}`, i, i%10))})
	}
	kafkatest.Produce(t, kafkatest.Client(t, seeds), recs...)
	kafkatest.WaitFor(t, 120*time.Second, "every saga to finish", func() bool {
		total := int64(0)
		for _, m := range ms {
			total += m.Finished.Load()
		}
		finished.Store(total)
		return total >= n
	})
	close(release)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.peak > 4 || g.perPeak > 1 {
		t.Fatalf("peaks: %d at once (MaxConcurrent 4 for the group), %d of one customer at once (limit 1)", g.peak, g.perPeak)
	}
	if g.peak < 2 {
		t.Fatalf("peak %d: the test did not run sagas side by side", g.peak)
	}
}
