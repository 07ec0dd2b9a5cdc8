package storagetest

import (
	"context"
	"fmt"
	"math/rand"
	"reflect"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// testApplyBatchIsApplyOneByOne: applying changelog records in one call
// leaves the store as applying them one call each does — whatever the
// order of versions, repeated and stale records, tombstones, next offsets,
// states already stored, statuses (parked and resolved included), waits
// and their timers, history, and idempotency keys that two sagas carry
// (a changelog can hold that: a saga expires and another takes its key in
// the same flush interval, whose records are produced in any order). A
// store may skip a record that a later one replaces; this is what makes
// that safe. It compares whole sagas, every status listing, the waiting
// count, timers, the next and changelog offsets and who holds each key.
// CreatedAt is the saga's own, as in real records (Start sets it once).
func testApplyBatchIsApplyOneByOne(t *testing.T, open Opener) {
	for _, shared := range []bool{false, true} {
		applyBatchIsApplyOneByOne(t, open, 150, shared, 1)
	}
	// Offsets far apart: a store may index a batch's sagas differently
	// when their offsets are not dense (Bolt does).
	applyBatchIsApplyOneByOne(t, open, 50, true, 1<<20)
}

func applyBatchIsApplyOneByOne(t *testing.T, open Opener, seeds int, sharedKeys bool, spread int64) {
	ctx := context.Background()
	p := storage.Partition{Topic: "t", Partition: 0}
	statuses := storage.Statuses
	for seed := int64(1); seed <= int64(seeds); seed++ {
		rnd := rand.New(rand.NewSource(seed))
		key := func(off int64) string {
			if sharedKeys {
				return fmt.Sprintf("k%d", off/spread%2)
			}
			return fmt.Sprintf("k%d", off/spread)
		}
		record := func(off int64, version uint64) storage.Change {
			s := NewSaga("order", "t", 0, off, key(off))
			s.Version = version
			SetStatus(s, storage.StatusExecuting)
			SetStatus(s, statuses[rnd.Intn(len(statuses))])
			s.CreatedAt = time.Unix(1700000000+off, 0).UTC()
			s.UpdatedAt = s.CreatedAt.Add(time.Duration(version) * time.Second)
			s.Steps[0].Status = storage.StepCompleted
			if rnd.Intn(2) == 0 {
				w := &storage.Wait{Kind: storage.WaitKind(1 + rnd.Intn(4)), Step: 1, Attempt: 1, Since: s.UpdatedAt}
				if rnd.Intn(2) == 0 {
					w.Deadline = s.UpdatedAt.Add(time.Duration(rnd.Intn(100)) * time.Second)
				}
				s.Wait = w
			}
			if rnd.Intn(3) == 0 {
				s.History = []storage.HistoryEntry{{At: s.UpdatedAt, Action: "retry", Reason: "r", By: "op"}}
			}
			return storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)}
		}
		var changes []storage.Change
		for range 40 {
			off := int64(rnd.Intn(4)) * spread
			switch rnd.Intn(10) {
			case 0:
				changes = append(changes, storage.Change{Key: storage.ChangeKey(NewSaga("order", "t", 0, off, ""))})
			case 1:
				changes = append(changes, storage.Change{Key: storage.NextOffsetKey, Value: storage.EncodeNext(int64(rnd.Intn(10)))})
			default:
				changes = append(changes, record(off, uint64(1+rnd.Intn(6))))
			}
		}
		var before []storage.Change
		for o := range int64(4) {
			if rnd.Intn(2) == 0 {
				before = append(before, record(o*spread, uint64(1+rnd.Intn(6))))
			}
		}
		batch, _ := mustOpen(t, open)
		single, _ := mustOpen(t, open)
		for _, s := range []storage.Store{batch, single} {
			if len(before) > 0 {
				if _, err := s.Apply(ctx, p, before, 1); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := batch.Apply(ctx, p, changes, int64(1+len(changes))); err != nil {
			t.Fatal(err)
		}
		for i, c := range changes {
			if _, err := single.Apply(ctx, p, []storage.Change{c}, int64(2+i)); err != nil {
				t.Fatal(err)
			}
		}
		for o := range int64(4) {
			id := storage.FormatID(storage.Position{Topic: "t", Partition: 0, Offset: o * spread}, "order")
			a, errA := batch.Get(ctx, id)
			b, errB := single.Get(ctx, id)
			if (errA == nil) != (errB == nil) || errA == nil && !reflect.DeepEqual(a, b) {
				t.Fatalf("shared keys %v, seed %d: saga %s: one call %+v (%v), one call each %+v (%v)", sharedKeys, seed, id, a, errA, b, errB)
			}
		}
		for _, st := range statuses {
			pa, errA := batch.List(ctx, storage.Query{Status: st})
			pb, errB := single.List(ctx, storage.Query{Status: st})
			if errA != nil || errB != nil || len(pa.Sagas) != len(pb.Sagas) {
				t.Fatalf("shared keys %v, seed %d: %s sagas listed: one call %d (%v), one call each %d (%v)", sharedKeys, seed, st, len(pa.Sagas), errA, len(pb.Sagas), errB)
			}
		}
		type cw interface {
			CountWaiting(context.Context, func(storage.Partition) bool) (int, error)
		}
		var wa, wb int
		if x, ok := batch.(cw); ok {
			wa, _ = x.CountWaiting(ctx, nil)
			wb, _ = single.(cw).CountWaiting(ctx, nil)
		}
		ta, _ := batch.Timers(ctx, p, time.Unix(1800000000, 0), nil, 100)
		tb, _ := single.Timers(ctx, p, time.Unix(1800000000, 0), nil, 100)
		ca, _ := batch.ChangelogNext(ctx, p)
		cb, _ := single.ChangelogNext(ctx, p)
		na, _, _ := batch.NextOffset(ctx, p)
		nb, _, _ := single.NextOffset(ctx, p)
		if wa != wb || !reflect.DeepEqual(ta, tb) || ca != cb || na != nb {
			t.Fatalf("shared keys %v, seed %d: waiting %d/%d timers %v/%v changelog next %d/%d next %d/%d", sharedKeys, seed, wa, wb, ta, tb, ca, cb, na, nb)
		}
		for k := range int64(4) {
			ra := start(t, batch, NewSaga("order", "t", 0, 100+k, fmt.Sprintf("k%d", k)))[0]
			rb := start(t, single, NewSaga("order", "t", 0, 100+k, fmt.Sprintf("k%d", k)))[0]
			if ra.Created != rb.Created || ra.ID != rb.ID {
				t.Fatalf("shared keys %v, seed %d: key k%d: one call %+v, one call each %+v", sharedKeys, seed, k, ra, rb)
			}
		}
		_ = batch.Close()
		_ = single.Close()
	}
}
