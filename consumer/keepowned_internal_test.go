package consumer

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A commit issued before a rebalance and sent after it carries only the
// partitions this member still owns when it is sent; with none left it is
// not sent at all.
func TestKeepOwnedDropsPartitionsGivenUp(t *testing.T) {
	c := &Consumer{owned: map[string]map[int32]bool{"orders": {0: true, 2: true}}}
	req := kmsg.NewPtrOffsetCommitRequest()
	for _, tp := range []struct {
		topic string
		parts []int32
	}{{"orders", []int32{0, 1, 2}}, {"gone", []int32{0}}} {
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = tp.topic
		for _, p := range tp.parts {
			rp := kmsg.NewOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset = p, 10
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	if err := c.keepOwned(req); err != nil {
		t.Fatal(err)
	}
	if len(req.Topics) != 1 || req.Topics[0].Topic != "orders" || len(req.Topics[0].Partitions) != 2 ||
		req.Topics[0].Partitions[0].Partition != 0 || req.Topics[0].Partitions[1].Partition != 2 {
		t.Fatalf("commit after the filter: %+v, want orders 0 and 2 only", req.Topics)
	}
	c.owned = map[string]map[int32]bool{}
	if err := c.keepOwned(req); !errors.Is(err, errNoneOwned) {
		t.Fatalf("nothing owned: %v, want errNoneOwned (the commit is not sent)", err)
	}
}
