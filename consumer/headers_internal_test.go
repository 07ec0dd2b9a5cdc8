package consumer

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
)

// Events' headers come from shared chunks: each event gets exactly its
// record's headers, and appending to one event's leaves the next alone.
func TestHeaderSlabKeepsEachEventsHeaders(t *testing.T) {
	var s headerSlab
	var recs [][]kgo.RecordHeader
	var got [][]engine.Header
	for i := range 3000 { // past two chunks, with records of 0 to 4 headers
		var hs []kgo.RecordHeader
		for j := range i % 5 {
			hs = append(hs, kgo.RecordHeader{Key: fmt.Sprintf("k%d", j), Value: fmt.Appendf(nil, "v%d-%d", i, j)})
		}
		recs = append(recs, hs)
		got = append(got, s.headers(hs))
	}
	for i := range got {
		if i%5 == 0 && got[i] != nil {
			t.Fatalf("record %d has no headers, got %v", i, got[i])
		}
		got[i] = append(got[i], engine.Header{Key: "added"}) // must not overwrite record i+1's
	}
	for i, hs := range recs {
		if len(got[i]) != len(hs)+1 {
			t.Fatalf("record %d: %d headers, want %d", i, len(got[i])-1, len(hs))
		}
		for j, h := range hs {
			if got[i][j].Key != h.Key || string(got[i][j].Value) != string(h.Value) {
				t.Fatalf("record %d header %d = %s=%s, want %s=%s", i, j, got[i][j].Key, got[i][j].Value, h.Key, h.Value)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { s.headers(recs[4]) }); n > 0.01 {
		t.Errorf("%.2f allocations per record, want a chunk's share", n)
	}
}
