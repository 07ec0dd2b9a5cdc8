package storage

import (
	"strconv"
	"testing"
	"time"
)

// restoreLikeChanges is one Store.Apply call of a restore while a backlog
// drained: n keyed sagas of one partition, each written three times
// (started, executing, completed), a saga's later records about window
// records after its first (others' records in between), as a changelog
// holds them before compaction.
func restoreLikeChanges(n, window int) []Change {
	at := time.Unix(1700000000, 0).UTC()
	rec := func(i int, version uint64, st Status) Change {
		s := &Saga{Name: "bench", Trigger: "kafka:orders", Status: st,
			Source:         Position{Topic: "orders.keys", Partition: 0, Offset: int64(i)},
			IdempotencyKey: "order-" + strconv.Itoa(i), Context: []byte(`{"id":"order-` + strconv.Itoa(i) + `"}`),
			Steps:     []Step{{Name: "a"}, {Name: "b"}, {Name: "c"}},
			CreatedAt: at, UpdatedAt: at, Version: version}
		return Change{Key: ChangeKey(s), Value: EncodeSaga(nil, s)}
	}
	var out []Change
	for i := 0; i < n+window; i++ {
		if i < n {
			out = append(out, rec(i, 1, StatusPending))
		}
		if j := i - window/2; j >= 0 && j < n {
			out = append(out, rec(j, 2, StatusExecuting))
		}
		if j := i - window; j >= 0 && j < n {
			out = append(out, rec(j, 5, StatusCompleted))
		}
	}
	return out
}

// BenchmarkSupersededInBatch is the restore's pre-pass over one Apply call
// of 65,536 records (go test -bench SupersededInBatch ./storage; compare
// builds with benchstat).
func BenchmarkSupersededInBatch(b *testing.B) {
	changes := restoreLikeChanges(65536/3, 5000)
	p := Partition{Topic: "orders.keys", Partition: 0}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		out := supersededInBatch(p, changes)
		if !out[0] || out[len(out)-1] {
			b.Fatal("the first record (replaced) not skipped, or the last (final) skipped")
		}
	}
}

// Two sagas of one event (same offset, two names) are two sagas to the
// pre-pass, whether the batch's offsets are dense (a slice indexes them) or
// far apart (a map does): a later record of one never replaces the other's.
func TestSupersededKeepsTheSagasOfOneEventApart(t *testing.T) {
	at := time.Unix(1700000000, 0).UTC()
	rec := func(name string, off int64, version uint64) Change {
		s := &Saga{Name: name, Trigger: "kafka:orders", Status: StatusExecuting,
			Source: Position{Topic: "orders", Partition: 0, Offset: off}, Steps: []Step{{Name: "a"}},
			CreatedAt: at, UpdatedAt: at, Version: version}
		return Change{Key: ChangeKey(s), Value: EncodeSaga(nil, s)}
	}
	p := Partition{Topic: "orders", Partition: 0}
	for _, far := range []int64{7, 1 << 40} {
		changes := []Change{rec("a", 7, 1), rec("b", 7, 1), rec("c", far, 1), rec("a", 7, 2), rec("c", far, 2), rec("b", 7, 0)}
		got := supersededInBatch(p, changes)
		want := []bool{true, false, true, false, false, false} // b's 1 is not a's, and b's later 0 is lower; 0 is unsound (never skipped)
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("offsets 7 and %d: record %d skipped %v, want %v (all: %v)", far, i, got[i], want[i], got)
			}
		}
	}
}
