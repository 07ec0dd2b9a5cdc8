package engine

import "github.com/sagaz-go/sagaz/storage"

// laneQueue is a lane's FIFO of queued sagas, kept compact: a saga waiting
// in it costs one laneEntry (24 bytes, no pointers, so the garbage
// collector never scans the queue however long it grows: a backlog drained
// with a high HighWater, a recovery of many pending sagas). Its topic and
// saga name are interned per queue (refs); its record and concurrency-key
// value, when it has either, sit in a slot of their own (slots), reused
// once it leaves. Guarded by Engine.mu, as its lane.
type laneQueue struct {
	entries []laneEntry
	head    int

	refs    []laneRef
	refIdx  map[laneRef]uint32
	lastRef uint32

	slots []laneSlot
	free  []uint32 // indexes of unused slots
}

// laneEntry is one queued saga. It must hold no pointers
// (TestLaneEntryHasNoPointers).
type laneEntry struct {
	off    int64
	part   int32
	ref    uint32 // index of its topic and saga name in refs
	slot   uint32 // 1 + index of its record and concurrency key in slots; 0: neither
	status storage.Status
}

type laneRef struct{ topic, name string }

type laneSlot struct {
	rec     *storage.Saga
	concKey string
}

func (q *laneQueue) len() int { return len(q.entries) - q.head }

func (q *laneQueue) push(x queued) {
	e := laneEntry{off: x.pos.Offset, part: x.pos.Partition, ref: q.refOf(x.pos.Topic, x.name), status: x.status}
	if x.rec != nil || x.concKey != "" {
		s := laneSlot{rec: x.rec, concKey: x.concKey}
		if n := len(q.free); n > 0 {
			i := q.free[n-1]
			q.free = q.free[:n-1]
			q.slots[i] = s
			e.slot = i + 1
		} else {
			q.slots = append(q.slots, s)
			e.slot = uint32(len(q.slots))
		}
	}
	q.entries = append(q.entries, e)
}

// refOf returns the index of (topic, name) in refs, adding it when new. A
// lane's sagas share one or a few: the last one is tried first.
func (q *laneQueue) refOf(topic, name string) uint32 {
	if int(q.lastRef) < len(q.refs) {
		if r := q.refs[q.lastRef]; r.topic == topic && r.name == name {
			return q.lastRef
		}
	}
	k := laneRef{topic, name}
	i, ok := q.refIdx[k]
	if !ok {
		if q.refIdx == nil {
			q.refIdx = map[laneRef]uint32{}
		}
		i = uint32(len(q.refs))
		q.refs = append(q.refs, k)
		q.refIdx[k] = i
	}
	q.lastRef = i
	return i
}

// at returns the saga the i-th entry (counted from the start of entries,
// not from head) stands for.
func (q *laneQueue) at(i int) queued {
	e := q.entries[i]
	r := q.refs[e.ref]
	x := queued{pos: storage.Position{Topic: r.topic, Partition: e.part, Offset: e.off}, name: r.name, status: e.status}
	if e.slot != 0 {
		s := q.slots[e.slot-1]
		x.rec, x.concKey = s.rec, s.concKey
	}
	return x
}

// concKeyAt is at(i).concKey without building the rest.
func (q *laneQueue) concKeyAt(i int) string {
	if s := q.entries[i].slot; s != 0 {
		return q.slots[s-1].concKey
	}
	return ""
}

func (q *laneQueue) peek() queued { return q.at(q.head) }

func (q *laneQueue) pop() queued {
	x := q.at(q.head)
	q.release(q.entries[q.head])
	q.head++
	if q.head == len(q.entries) {
		q.reset()
	} else if q.head > 1024 && q.head*2 > len(q.entries) {
		n := copy(q.entries, q.entries[q.head:])
		q.entries, q.head = q.entries[:n], 0
	}
	return x
}

// removeAt takes the i-th entry (counted from the start of entries; at or
// past head) out of the queue and returns its saga.
func (q *laneQueue) removeAt(i int) queued {
	if i == q.head {
		return q.pop()
	}
	x := q.at(i)
	q.release(q.entries[i])
	q.entries = append(q.entries[:i], q.entries[i+1:]...)
	return x
}

// drop removes the queued sagas matching fn and returns how many.
func (q *laneQueue) drop(fn func(queued) bool) int {
	kept := q.entries[:0]
	n := 0
	for i := q.head; i < len(q.entries); i++ {
		if fn(q.at(i)) {
			q.release(q.entries[i])
			n++
			continue
		}
		kept = append(kept, q.entries[i])
	}
	q.entries, q.head = kept, 0
	if len(kept) == 0 {
		q.reset()
	}
	return n
}

// release frees e's slot, so that the record it kept can be collected.
func (q *laneQueue) release(e laneEntry) {
	if e.slot != 0 {
		q.slots[e.slot-1] = laneSlot{}
		q.free = append(q.free, e.slot-1)
	}
}

// reset empties the queue, keeping its arrays unless a backlog made them
// large.
func (q *laneQueue) reset() {
	const keepCap = 1 << 16
	q.entries, q.head = q.entries[:0], 0
	if cap(q.entries) > keepCap {
		q.entries = nil
	}
	clear(q.slots)
	q.slots, q.free = q.slots[:0], q.free[:0]
	if cap(q.slots) > keepCap {
		q.slots, q.free = nil, nil
	}
}
