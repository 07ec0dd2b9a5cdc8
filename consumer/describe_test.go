package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
)

// Describe names both members, marks the one asked, and gives every
// partition a lag that reaches 0 once the records are consumed.
func TestDescribeGroup(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(4, topic))
	seeds := c.ListenAddrs()
	a := startMember(t, seeds, "", newRegistry(), nil)
	startMember(t, seeds, "", newRegistry(), nil)
	produceOrders(t, kafkatest.Client(t, seeds), 0, 20, nil)
	var info consumer.GroupInfo
	kafkatest.WaitFor(t, 30*time.Second, "two members with 4 partitions of "+topic+" between them and no lag", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if info, err = a.Consumer.Describe(ctx); err != nil || len(info.Members) != 2 {
			return false
		}
		parts, lagged := 0, 0
		for _, m := range info.Members {
			for _, p := range m.Partitions {
				if p.Topic == topic {
					parts++
				}
			}
		}
		for _, l := range info.Lag {
			if l.Topic == topic && l.Lag != 0 {
				lagged++
			}
		}
		return parts == 4 && lagged == 0
	})
	selves := 0
	for _, m := range info.Members {
		if m.Self {
			selves++
		}
	}
	var end int64
	for _, l := range info.Lag {
		if l.Topic == topic {
			end += l.End
			if l.MemberID == "" {
				t.Fatalf("partition %d has no member: %+v", l.Partition, l)
			}
		}
	}
	if selves != 1 || info.Group != group || info.State != "Stable" || end != 20 {
		t.Fatalf("group info: %+v", info)
	}
}
