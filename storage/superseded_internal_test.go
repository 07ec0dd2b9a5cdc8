package storage

import (
	"bytes"
	"context"
	"math/rand"
	"path/filepath"
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
	return restoreLikeChangesAt(0, n, window, 0, nil)
}

// restoreLikeChangesAt is restoreLikeChanges from offset base, each saga's
// last record up to jitter records later still (sagas finish out of the
// order they started in, as up to MaxInFlight of them run at once).
func restoreLikeChangesAt(base, n, window, jitter int, rnd *rand.Rand) []Change {
	at := time.Unix(1700000000, 0).UTC()
	rec := func(i int, version uint64, st Status) Change {
		off := base + i
		s := &Saga{Name: "bench", Trigger: "kafka:orders", Status: st,
			Source:         Position{Topic: "orders.keys", Partition: 0, Offset: int64(off)},
			IdempotencyKey: "order-" + strconv.Itoa(off), Context: []byte(`{"id":"order-` + strconv.Itoa(off) + `"}`),
			Steps:     []Step{{Name: "a"}, {Name: "b"}, {Name: "c"}},
			CreatedAt: at.Add(time.Duration(off) * time.Microsecond), UpdatedAt: at, Version: version}
		return Change{Key: ChangeKey(s), Value: EncodeSaga(nil, s)}
	}
	type timed struct {
		at int
		c  Change
	}
	var all []timed
	for i := range n {
		last := i + window
		if jitter > 0 {
			last += rnd.Intn(jitter)
		}
		all = append(all, timed{i, rec(i, 1, StatusPending)}, timed{i + window/2, rec(i, 2, StatusExecuting)}, timed{last, rec(i, 5, StatusCompleted)})
	}
	slices.SortStableFunc(all, func(a, b timed) int { return a.at - b.at })
	out := make([]Change, len(all))
	for i, t := range all {
		out[i] = t.c
	}
	return out
}

// BenchmarkApplyRestore is a restore's Store.Apply calls into a growing
// store: about 65,536 records each, of sagas that finished up to a
// thousand apart from the order they started in, with a next-offset record
// every 512 (go test -bench ApplyRestore
// ./storage; compare builds with benchstat).
func BenchmarkApplyRestore(b *testing.B) { benchApplyRestore(b, false) }

// BenchmarkUpdateDuringRestore is BenchmarkApplyRestore while another
// partition's saga is moved on again and again, as a member's live
// partitions are while it restores one it was given: how long such a
// transition waits for the store's single writer (wait-p99-ms,
// wait-max-ms), and what the restore keeps of its speed.
func BenchmarkUpdateDuringRestore(b *testing.B) { benchApplyRestore(b, true) }

func benchApplyRestore(b *testing.B, live bool) {
	s, err := OpenBolt(filepath.Join(b.TempDir(), "sagaz.db"), BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx, p := context.Background(), Partition{Topic: "orders.keys", Partition: 0}
	rnd, n, next := rand.New(rand.NewSource(1)), 65536/3, int64(0)
	var waits []time.Duration
	if live {
		other := &Saga{Name: "live", Trigger: "kafka:payments", Status: StatusPending,
			Source: Position{Topic: "payments", Partition: 3, Offset: 0}, Steps: []Step{{Name: "a"}}}
		if _, err := s.Start(ctx, StartBatch{Sagas: []*Saga{other}}); err != nil {
			b.Fatal(err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				other.Status = StatusExecuting
				other.Steps[0].Attempts++
				t0 := time.Now()
				if err := s.Update(ctx, other); err != nil {
					b.Error(err)
					return
				}
				waits = append(waits, time.Since(t0))
			}
		}()
		defer func() {
			if len(waits) > 0 {
				slices.Sort(waits)
				b.ReportMetric(float64(waits[len(waits)*99/100])/1e6, "wait-p99-ms")
				b.ReportMetric(float64(waits[len(waits)-1])/1e6, "wait-max-ms")
			}
		}()
		defer func() { close(stop); <-done }()
	}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var changes []Change
		for k, c := range restoreLikeChangesAt(i*n, n, 2000, 1000, rnd) {
			if k%512 == 511 { // the member mirrors its next offset with every batch
				changes = append(changes, Change{Key: NextOffsetKey, Value: EncodeNext(int64(i*n + k/3))})
			}
			changes = append(changes, c)
		}
		b.StartTimer()
		if _, err := s.Apply(ctx, p, changes, next+int64(len(changes))); err != nil {
			b.Fatal(err)
		}
		next += int64(len(changes))
	}
	b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "records/s")
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
		out, apart := supersededInBatch(p, changes)
		if !out[0] || out[len(out)-1] || !apart {
			b.Fatal("the first record (replaced) not skipped, or the last (final) skipped, or keys not apart")
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
		got, _ := supersededInBatch(p, changes)
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
		got, apart := supersededInBatch(p, changes)
		if want := supersededInBatchByMaps(p, changes); !slices.Equal(want, got) {
			t.Fatalf("seed %d: skipped %v, the maps skipped %v", seed, got, want)
		}
		if want := keysApartByDecoding(p, changes); apart != want {
			t.Fatalf("seed %d: keys apart %v, decoding the records says %v", seed, apart, want)
		}
	}
}

// keysApartByDecoding is supersededInBatch's keysApart, by decoding every
// saga record: all sound and in place, no key carried by two sagas, no saga
// carrying two keys.
func keysApartByDecoding(p Partition, changes []Change) bool {
	keyOf, sagaOf := map[string]string{}, map[string]string{}
	for _, c := range changes {
		if c.Value == nil || !isSagaKey(c.Key) {
			continue
		}
		s, err := DecodeSaga(c.Value)
		if err != nil || s.Source.TopicPartition() != p || string(ChangeKey(s)) != string(c.Key) {
			return false
		}
		if s.IdempotencyKey == "" {
			continue
		}
		ik := string(idemKey(s.Name, s.IdempotencyKey))
		if k, ok := keyOf[string(c.Key)]; ok && k != ik {
			return false
		}
		if sk, ok := sagaOf[ik]; ok && sk != string(c.Key) {
			return false
		}
		keyOf[string(c.Key)], sagaOf[ik] = ik, string(c.Key)
	}
	return true
}

// supersededInBatchByMaps is supersededInBatch as it was before it used
// one index (four string-keyed maps): the reference the test above holds
// it to; since, like it, it skips no keyed record of a saga whose records
// carry another key or none (a review found the skip lost the first of
// two keys).
func supersededInBatchByMaps(p Partition, changes []Change) []bool {
	out := make([]bool, len(changes))
	type head struct {
		version uint64 // 0: not sound (versions start at 1), never skipped
		key     string // the saga's idempotency key with its name (idemKey); "" if none
	}
	heads := make([]head, len(changes))
	holder := map[string]string{}        // name and idempotency key -> the first saga seen with it
	shared := map[string]bool{}          // name and idempotency key carried by two sagas of the batch
	keys := map[string]map[string]bool{} // saga -> every key its records carry ("": none)
	for i, c := range changes {
		if c.Value == nil || !isSagaKey(c.Key) {
			continue
		}
		h, ok := recordHead(c.Value)
		if !ok || string(h.topic) != p.Topic || h.partition != int64(p.Partition) || !h.isKey(c.Key) {
			continue
		}
		heads[i].version = h.version
		if keys[string(c.Key)] == nil {
			keys[string(c.Key)] = map[string]bool{}
		}
		if len(h.idem) == 0 {
			keys[string(c.Key)][""] = true
			continue
		}
		ik := string(idemKey(string(h.name), string(h.idem)))
		keys[string(c.Key)][ik] = true
		if first, taken := holder[ik]; !taken {
			holder[ik] = string(c.Key)
		} else if first != string(c.Key) {
			shared[ik] = true
		}
		heads[i].key = ik
	}
	// A keyed record is skipped only when its saga carries that one key
	// in all its records (none without, no other) and no other saga carries
	// any key it does.
	oneKey := func(saga string) bool {
		for ik := range keys[saga] {
			if ik == "" || shared[ik] || len(keys[saga]) > 1 {
				return false
			}
		}
		return true
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
		if seen && a.version > v && a.tombs == tombs && (heads[i].key == "" || oneKey(string(c.Key))) {
			out[i] = true
			continue
		}
		if !seen || a.version < v || a.tombs != tombs {
			later[string(c.Key)] = after{version: max(v, a.version), tombs: tombs}
		}
	}
	return out
}

// inKeyOrder's order is a permutation of the records that leaves
// tombstones and meta records where they are, and between them writes the
// saga records by key (one saga's in their own order), then the
// next-offset records.
func TestInKeyOrder(t *testing.T) {
	for seed := int64(0); seed < 2000; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		ps := make([]applyRecord, 1+rnd.Intn(30))
		for i := range ps {
			switch rnd.Intn(8) {
			case 0:
				ps[i] = applyRecord{key: sagaKey(int64(rnd.Intn(5)), "a")} // a tombstone
			case 1:
				ps[i] = applyRecord{key: []byte(metaPrefix + "x"), isMeta: true}
			case 2:
				ps[i] = applyRecord{isNxt: true, next: int64(i)}
			default:
				ps[i] = applyRecord{key: sagaKey(int64(rnd.Intn(5)), []string{"a", "b"}[rnd.Intn(2)]), s: &Saga{Version: uint64(i)}}
			}
		}
		order := inKeyOrder(ps)
		for k, i := range slices.Sorted(slices.Values(order)) {
			if len(order) != len(ps) || int(i) != k {
				t.Fatalf("seed %d: %v is not a permutation of %d records", seed, order, len(ps))
			}
		}
		for at, i := range order {
			c, barrier := ps[i], ps[i].s == nil && !ps[i].isNxt
			if barrier && int(i) != at {
				t.Fatalf("seed %d: tombstone or meta record %d written at %d", seed, i, at)
			}
			if at == 0 || barrier {
				continue
			}
			prev := ps[order[at-1]]
			switch {
			case prev.s == nil && !prev.isNxt:
			case prev.isNxt && c.s != nil:
				t.Fatalf("seed %d: saga record %d written after the next-offset record %d of its stretch", seed, i, order[at-1])
			case prev.s != nil && c.s != nil && (bytes.Compare(prev.key, c.key) > 0 || bytes.Equal(prev.key, c.key) && prev.s.Version > c.s.Version):
				t.Fatalf("seed %d: saga record %d (%x) written after %d (%x)", seed, i, c.key, order[at-1], prev.key)
			}
		}
	}
}
