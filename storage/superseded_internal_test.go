package storage

import (
	"math/rand"
	"slices"
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

// supersededInBatch decides as its four-map predecessor did
// (supersededInBatchByMaps, kept below as the reference) on random
// batches: dense and far-apart offsets, several names per offset, sagas
// whose records carry different idempotency keys or none, shared keys,
// tombstones, unsound versions, damaged and misplaced records.
func TestSupersededDecidesAsTheMapsDid(t *testing.T) {
	at := time.Unix(1700000000, 0).UTC()
	p := Partition{Topic: "orders", Partition: 0}
	names, idems := []string{"a", "b", "c"}, []string{"", "x", "y"}
	for seed := int64(0); seed < 20000; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		spread := []int64{1, 3, 1 << 20}[rnd.Intn(3)]
		offsets := 1 + rnd.Intn(4)
		var changes []Change
		for range 2 + rnd.Intn(14) {
			s := &Saga{Name: names[rnd.Intn(len(names))], Trigger: "kafka:orders", Status: StatusExecuting,
				Source:         Position{Topic: "orders", Partition: 0, Offset: int64(rnd.Intn(offsets)) * spread},
				IdempotencyKey: idems[rnd.Intn(len(idems))], Steps: []Step{{Name: "a"}},
				CreatedAt: at, UpdatedAt: at, Version: uint64(rnd.Intn(5))}
			switch rnd.Intn(12) {
			case 0:
				changes = append(changes, Change{Key: ChangeKey(s)})
			case 1:
				v := EncodeSaga(nil, s)
				v[len(v)-1] ^= 1 // damaged
				changes = append(changes, Change{Key: ChangeKey(s), Value: v})
			case 2:
				s.Source.Partition = 1 // misplaced
				changes = append(changes, Change{Key: ChangeKey(s), Value: EncodeSaga(nil, s)})
			default:
				changes = append(changes, Change{Key: ChangeKey(s), Value: EncodeSaga(nil, s)})
			}
		}
		if want, got := supersededInBatchByMaps(p, changes), supersededInBatch(p, changes); !slices.Equal(want, got) {
			t.Fatalf("seed %d: skipped %v, the maps skipped %v", seed, got, want)
		}
	}
}

// supersededInBatchByMaps is supersededInBatch as it was before it used
// one index (four string-keyed maps): the reference the test above holds
// it to.
func supersededInBatchByMaps(p Partition, changes []Change) []bool {
	out := make([]bool, len(changes))
	type head struct {
		version uint64 // 0: not sound (versions start at 1), never skipped
		key     string // the saga's idempotency key with its name (idemKey); "" if none
	}
	heads := make([]head, len(changes))
	keyOf := map[string]string{}  // saga -> its name and idempotency key
	holder := map[string]string{} // name and idempotency key -> the first saga seen with it
	shared := map[string]bool{}   // name and idempotency key carried by two sagas of the batch
	for i, c := range changes {
		if c.Value == nil || !isSagaKey(c.Key) {
			continue
		}
		h, ok := recordHead(c.Value)
		if !ok || string(h.topic) != p.Topic || h.partition != int64(p.Partition) || !h.isKey(c.Key) {
			continue
		}
		heads[i].version = h.version
		if len(h.idem) == 0 {
			continue
		}
		ik, seen := keyOf[string(c.Key)]
		if !seen {
			ik = string(idemKey(string(h.name), string(h.idem)))
			keyOf[string(c.Key)] = ik
			if first, taken := holder[ik]; !taken {
				holder[ik] = string(c.Key)
			} else if first != string(c.Key) {
				shared[ik] = true
			}
		}
		heads[i].key = ik
	}
	type after struct {
		version uint64
		tombs   int // tombstones after the record
	}
	later := map[string]after{} // saga -> its highest version after this point
	tombs := 0
	for i := len(changes) - 1; i >= 0; i-- {
		c := changes[i]
		if !isSagaKey(c.Key) {
			continue
		}
		if c.Value == nil {
			tombs++
			continue
		}
		v := heads[i].version
		if v == 0 {
			continue
		}
		a, seen := later[string(c.Key)]
		if seen && a.version > v && a.tombs == tombs && !shared[heads[i].key] {
			out[i] = true
			continue
		}
		if !seen || a.version < v || a.tombs != tombs {
			later[string(c.Key)] = after{version: max(v, a.version), tombs: tombs}
		}
	}
	return out
}
