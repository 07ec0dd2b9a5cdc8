package consumer

import (
	"context"
	"testing"

	"github.com/sagaz-go/sagaz/storage"
)

// N's changelog records of orders/0 (10..19) were not
// acknowledged while N+1, behind it, was already recorded with orders/0's
// 20..24 (the store holds those sagas and next offset 25; their changelog
// records were appended during N's failing flush). The pipeline takes
// orders/0 out of N+1 and N+2 and fetches it again from 10. The first
// batch fetched again (M) need not hold all of 10..24 — a batch holds at
// most MaxPollRecords, and N and N+1 may each have held that many — and
// when M = 10..19 is mirrored, its acknowledged flush clears orders/0's
// re-append mark: the batch holding 20..24 then does not re-append N+1's
// sagas (Remirror runs only while owesReappend) and commits past them.
func TestReappendMarkSurvivesARefetchThatStopsShortOfTheRecordedBatch(t *testing.T) {
	p, _, n2, poll, firstFetched := lagSetup(t)
	recordedBehind(p, n2, poll)
	if failed := p.advance(); failed != nil {
		t.Fatal("N+1 was recorded")
	}
	p.settle(nil)
	if first := firstFetched(); first != 10 {
		t.Fatalf("orders/0 fetched again from %d, want 10", first)
	}
	// The first batch fetched again holds 10..19 only.
	m := &p.slots[0]
	m.fetches = poll(10, 20)
	m.work.Reset()
	m.work.Offsets = []storage.Offset{{Topic: "orders", Partition: 0, Next: 20}}
	m.res = nil
	if lag := p.c.mirror(context.Background(), m); len(lag) != 0 {
		t.Fatalf("M's flush failed: %v", lag)
	}
	if !p.c.owesReappend(orders0) {
		t.Error("orders/0's re-append mark was cleared by the batch holding 10..19, but 20..24 were recorded (by N+1) " +
			"and their changelog records never acknowledged: the batch holding 20..24 will not re-append them and commits past them")
	}
}
