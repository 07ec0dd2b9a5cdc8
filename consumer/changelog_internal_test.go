package consumer

import (
	"fmt"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
)

// A key's latest value wins, tombstones are taken first, records carry
// the appended keys, and a take of many appends costs about one allocation
// per append (its key in the map), not a few per record.
func TestChangelogTakeAllocatesLittle(t *testing.T) {
	c := &Changelog{group: "g", parts: map[storage.Partition]*clPart{}}
	p := storage.Partition{Topic: "orders", Partition: 3}
	c.add(p, []byte("a"), []byte("a1"))
	c.add(p, []byte("b"), []byte("b1"))
	c.add(p, []byte("a"), []byte("a2"))
	c.add(p, []byte("c"), nil)
	recs := c.takePendingLocked(p, nil)
	if len(recs) != 3 {
		t.Fatalf("%d records taken, want 3", len(recs))
	}
	if r := recs[0].rec; string(r.Key) != "c" || r.Value != nil {
		t.Fatalf("first record %s=%q, want the tombstone of c", r.Key, r.Value)
	}
	got := map[string]string{}
	for _, pr := range recs {
		r := pr.rec
		if pr.p != p || r.Topic != "g-changelog-orders" || r.Partition != 3 {
			t.Fatalf("record of %v to %s/%d", pr.p, r.Topic, r.Partition)
		}
		got[string(r.Key)] = string(r.Value)
	}
	if got["a"] != "a2" || got["b"] != "b1" {
		t.Fatalf("taken %v, want a=a2 and b=b1", got)
	}
	if c.part(p).appended != 3 || len(c.part(p).pending) != 0 {
		t.Fatalf("appended %d, %d still pending", c.part(p).appended, len(c.part(p).pending))
	}

	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "saga-%d", i)
	}
	value := []byte("record")
	n := testing.AllocsPerRun(20, func() {
		for _, k := range keys {
			c.add(p, k, value)
		}
		c.takePendingLocked(p, nil)
	})
	if n > 1050 { // a key string per append; the map, the record slab, the slice of taken records as it grows
		t.Errorf("%.0f allocations to append and take 1,000 records, want at most 1,050", n)
	}
}

// BenchmarkChangelogAppendTake appends 1,000 transitions of 1,000 sagas to
// one partition's changelog and takes them for a flush, as a batch does.
func BenchmarkChangelogAppendTake(b *testing.B) {
	c := &Changelog{group: "g", parts: map[storage.Partition]*clPart{}}
	p := storage.Partition{Topic: "orders", Partition: 3}
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "saga-%d", i)
	}
	value := make([]byte, 200)
	b.ReportAllocs()
	for b.Loop() {
		for _, k := range keys {
			c.add(p, k, value)
		}
		if recs := c.takePendingLocked(p, nil); len(recs) != len(keys) {
			b.Fatalf("%d records taken, want %d", len(recs), len(keys))
		}
	}
}
