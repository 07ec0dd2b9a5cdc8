package engine

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"

	"github.com/sagaz-go/sagaz/storage"
)

// The queue's entries must stay pointer-free: that is what keeps a long
// backlog out of the garbage collector's marking.
func TestLaneEntryHasNoPointers(t *testing.T) {
	var walk func(reflect.Type) bool
	walk = func(ty reflect.Type) bool {
		switch ty.Kind() {
		case reflect.Pointer, reflect.String, reflect.Slice, reflect.Map, reflect.Chan,
			reflect.Func, reflect.Interface, reflect.UnsafePointer:
			return true
		case reflect.Array:
			return walk(ty.Elem())
		case reflect.Struct:
			for i := range ty.NumField() {
				if walk(ty.Field(i).Type) {
					return true
				}
			}
		}
		return false
	}
	if walk(reflect.TypeFor[laneEntry]()) {
		t.Fatal("laneEntry holds a pointer: a queued saga would be scanned by every GC cycle")
	}
	if n := unsafe.Sizeof(laneEntry{}); n != 24 {
		t.Fatalf("laneEntry is %d bytes; docs/architecture.md says 24", n)
	}
}

// laneQueue answers as a plain slice of queued values would, over random
// pushes, pops, removals and drops.
func TestLaneQueueIsAFIFOOfQueued(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	topics := []string{"orders", "orders-keys", "~manual"}
	names := []string{"checkout", "refund"}
	var q laneQueue
	var ref []queued
	var off int64
	newQueued := func() queued {
		off++
		x := queued{
			pos:    storage.Position{Topic: topics[rng.IntN(len(topics))], Partition: int32(rng.IntN(4)), Offset: off},
			name:   names[rng.IntN(len(names))],
			status: storage.Status(rng.IntN(3)),
		}
		if rng.IntN(3) == 0 {
			x.rec = &storage.Saga{Name: x.name, Source: x.pos}
		}
		if rng.IntN(4) == 0 {
			x.concKey = fmt.Sprint("k", rng.IntN(5))
		}
		return x
	}
	check := func(step int) {
		t.Helper()
		if q.len() != len(ref) {
			t.Fatalf("step %d: len %d, want %d", step, q.len(), len(ref))
		}
		for i, want := range ref {
			if got := q.at(q.head + i); got != want {
				t.Fatalf("step %d: entry %d is %+v, want %+v", step, i, got, want)
			}
			if got := q.concKeyAt(q.head + i); got != want.concKey {
				t.Fatalf("step %d: entry %d has concurrency key %q, want %q", step, i, got, want.concKey)
			}
		}
		used, want := 0, 0
		for _, s := range q.slots {
			if s != (laneSlot{}) {
				used++
			}
		}
		for _, x := range ref {
			if x.rec != nil || x.concKey != "" {
				want++
			}
		}
		if used != want || used+len(q.free) != len(q.slots) {
			t.Fatalf("step %d: %d slots used (want %d: a saga that left must not keep its record) and %d free of %d",
				step, used, want, len(q.free), len(q.slots))
		}
	}
	for step := range 4000 {
		switch r := rng.IntN(100); {
		case r < 55 || len(ref) == 0 && r < 90:
			for range 1 + rng.IntN(3000)*rng.IntN(2) {
				x := newQueued()
				q.push(x)
				ref = append(ref, x)
			}
		case r < 80:
			if len(ref) == 0 {
				continue
			}
			if rng.IntN(20) == 0 { // a long run of pops: the queue compacts past its head
				for n := rng.IntN(len(ref)); n > 0; n-- {
					if got := q.pop(); got != ref[0] {
						t.Fatalf("step %d: pop %+v, want %+v", step, got, ref[0])
					}
					ref = ref[1:]
				}
				check(step)
				continue
			}
			if got := q.peek(); got != ref[0] {
				t.Fatalf("step %d: peek %+v, want %+v", step, got, ref[0])
			}
			if got := q.pop(); got != ref[0] {
				t.Fatalf("step %d: pop %+v, want %+v", step, got, ref[0])
			}
			ref = ref[1:]
		case r < 95:
			if len(ref) == 0 {
				continue
			}
			i := rng.IntN(min(len(ref), 64))
			if got := q.removeAt(q.head + i); got != ref[i] {
				t.Fatalf("step %d: removeAt %d gave %+v, want %+v", step, i, got, ref[i])
			}
			ref = append(ref[:i:i], ref[i+1:]...)
		default:
			p := int32(rng.IntN(4))
			want := 0
			kept := ref[:0:0]
			for _, x := range ref {
				if x.pos.Partition == p {
					want++
				} else {
					kept = append(kept, x)
				}
			}
			if n := q.drop(func(x queued) bool { return x.pos.Partition == p }); n != want {
				t.Fatalf("step %d: drop took %d, want %d", step, n, want)
			}
			ref = kept
		}
		if step%97 == 0 || len(ref) < 3 {
			check(step)
		}
	}
	check(-1)
	for len(ref) > 0 {
		if got := q.pop(); got != ref[0] {
			t.Fatalf("draining: pop %+v, want %+v", got, ref[0])
		}
		ref = ref[1:]
	}
	if len(q.slots) != 0 || len(q.entries) != 0 {
		t.Fatalf("an empty queue keeps %d entries and %d slots", len(q.entries), len(q.slots))
	}
}
