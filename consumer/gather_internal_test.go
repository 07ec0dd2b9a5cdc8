package consumer

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/storage"
)

// fetchOf is one poll's fetch of topic "orders": partition → offsets.
func fetchOf(parts map[int32][]int64) kgo.Fetch {
	t := kgo.FetchTopic{Topic: "orders"}
	for p, offs := range parts {
		fp := kgo.FetchPartition{Partition: p}
		for _, o := range offs {
			fp.Records = append(fp.Records, &kgo.Record{Topic: "orders", Partition: p, Offset: o})
		}
		t.Partitions = append(t.Partitions, fp)
	}
	return kgo.Fetch{Topics: []kgo.FetchTopic{t}}
}

// A batch that gathered several polls of a partition is fetched again from
// the partition's first record in the batch, whichever poll holds it: set
// back to a later poll's first record, the records before it would be
// skipped (never recorded, their offsets committed with the next batch).
func TestFirstRecordsOfABatchOfSeveralPolls(t *testing.T) {
	b := &batch{fetches: kgo.Fetches{
		fetchOf(map[int32][]int64{0: {10, 11}, 1: {5}}),
		fetchOf(map[int32][]int64{0: {12, 13}, 2: {7, 8}}),
		fetchOf(map[int32][]int64{1: {6}, 2: {}}),
	}}
	// Polls are not always in offset order across batches: a rewound
	// partition is fetched again below what an earlier batch held.
	older := &batch{fetches: kgo.Fetches{fetchOf(map[int32][]int64{2: {9}, 0: {3}})}}

	all := firstRecords([]*batch{b}, func(storage.Partition) bool { return true })
	for p, want := range map[int32]int64{0: 10, 1: 5, 2: 7} {
		if got, ok := all["orders"][p]; !ok || got.Offset != want || got.Epoch != -1 {
			t.Errorf("partition %d: fetched again from %+v, want offset %d", p, got, want)
		}
	}
	some := firstRecords([]*batch{older, b}, func(p storage.Partition) bool { return p.Partition != 1 })
	if len(some["orders"]) != 2 || some["orders"][0].Offset != 3 || some["orders"][2].Offset != 7 {
		t.Errorf("partitions 0 and 2 of two batches: %+v, want 0 from 3 and 2 from 7", some["orders"])
	}
}
