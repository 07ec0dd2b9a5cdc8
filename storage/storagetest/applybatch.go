package storagetest

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// testApplyBatchIsApplyOneByOne: applying changelog records in one call
// leaves the store as applying them one call each does — whatever the
// order of versions, repeated and stale records, tombstones between
// records of a saga, and states already stored. (A store may skip a
// record that a later one of the same saga in the same call supersedes;
// this is what makes that safe.)
func testApplyBatchIsApplyOneByOne(t *testing.T, open Opener) {
	ctx := context.Background()
	p := storage.Partition{Topic: "t", Partition: 0}
	statuses := []storage.Status{storage.StatusPending, storage.StatusExecuting, storage.StatusCompleted, storage.StatusCompensating, storage.StatusFailed}
	for seed := int64(1); seed <= 30; seed++ {
		rnd := rand.New(rand.NewSource(seed))
		// Records of four sagas, in a random order with random versions.
		// Each has its own idempotency key: a changelog never holds two
		// live sagas with one key (the store it mirrors refuses the second).
		var changes []storage.Change
		record := func(off int64, version uint64) storage.Change {
			s := NewSaga("order", "t", 0, off, fmt.Sprintf("k%d", off))
			s.Version = version
			s.Status = statuses[rnd.Intn(len(statuses))]
			s.CreatedAt = time.Unix(1700000000+int64(version), 0).UTC()
			s.UpdatedAt = s.CreatedAt
			s.Steps[0].Status = storage.StepCompleted
			return storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)}
		}
		for range 40 {
			off := int64(rnd.Intn(4))
			switch rnd.Intn(10) {
			case 0:
				changes = append(changes, storage.Change{Key: storage.ChangeKey(NewSaga("order", "t", 0, off, ""))}) // tombstone
			case 1:
				changes = append(changes, storage.Change{Key: storage.NextOffsetKey, Value: storage.EncodeNext(int64(rnd.Intn(10)))})
			default:
				changes = append(changes, record(off, uint64(1+rnd.Intn(6))))
			}
		}
		// Some state stored before, the same in both stores.
		var before []storage.Change
		for off := range int64(4) {
			if rnd.Intn(2) == 0 {
				before = append(before, record(off, uint64(1+rnd.Intn(6))))
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
		for off := range int64(4) {
			id := storage.FormatID(storage.Position{Topic: "t", Partition: 0, Offset: off}, "order")
			a, errA := batch.Get(ctx, id)
			b, errB := single.Get(ctx, id)
			switch {
			case (errA == nil) != (errB == nil):
				t.Fatalf("seed %d: saga %s: one call: %v, one call each: %v", seed, id, errA, errB)
			case errA == nil && (a.Version != b.Version || a.Status != b.Status):
				t.Fatalf("seed %d: saga %s: one call v%d %s, one call each v%d %s", seed, id, a.Version, a.Status, b.Version, b.Status)
			}
		}
		for _, st := range statuses {
			pa, errA := batch.List(ctx, storage.Query{Status: st})
			pb, errB := single.List(ctx, storage.Query{Status: st})
			if errA != nil || errB != nil || len(pa.Sagas) != len(pb.Sagas) {
				t.Fatalf("seed %d: %s sagas listed: one call %d (%v), one call each %d (%v)", seed, st, len(pa.Sagas), errA, len(pb.Sagas), errB)
			}
		}
		na, _, _ := batch.NextOffset(ctx, p)
		nb, _, _ := single.NextOffset(ctx, p)
		if na != nb {
			t.Fatalf("seed %d: next offset: one call %d, one call each %d", seed, na, nb)
		}
		for k := range int64(4) { // which idempotency keys are taken, and by whom
			ra := start(t, batch, NewSaga("order", "t", 0, 100+k, fmt.Sprintf("k%d", k)))[0]
			rb := start(t, single, NewSaga("order", "t", 0, 100+k, fmt.Sprintf("k%d", k)))[0]
			if ra.Created != rb.Created || ra.ID != rb.ID {
				t.Fatalf("seed %d: key k%d: one call %+v, one call each %+v", seed, k, ra, rb)
			}
		}
		_ = batch.Close()
		_ = single.Close()
	}
}
