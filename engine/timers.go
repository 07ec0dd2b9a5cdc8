package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// The timer loop: one goroutine per engine fires the due timers of the
// partitions it owns. Timers live in the store (each waiting saga's
// deadline, indexed per partition, following the partition through the
// changelog); in memory the loop keeps, per partition, when to look next
// and where it stopped. A due timer is a delivery: the saga is queued and
// its executor decides (a deadline that moved meanwhile is ignored).

const (
	timerBatch     = 1000
	maxFiring      = 10000            // deliveries outstanding per partition before the loop looks further
	timerRescan    = time.Second      // a pass from the start of a partition's due timers, at most this often
	awaitSweepEach = time.Minute      // expired registrations and signals are dropped this often
	regGrace       = time.Minute      // a registration is kept this long after its deadline
	timerIdleCheck = 30 * time.Second // the loop wakes at least this often
)

type timerPart struct {
	next   time.Time // when to look again (zero: nothing known)
	cursor []byte    // the last timer fired; the next look starts after it
	firing int       // timers delivered and not handled yet
	rescan time.Time // earliest time of the next pass from the start
}

// timerWatch starts watching p's timers (an acquired partition, a local
// one, or any partition of a library engine).
func (e *Engine) timerWatch(p storage.Partition) {
	e.tmu.Lock()
	if _, ok := e.tparts[p]; !ok {
		e.tparts[p] = &timerPart{next: e.clock.Now()} // look at once: timers may have fallen due while no one owned it
	}
	e.tmu.Unlock()
	e.wakeTimers()
}

// timerForget stops watching p.
func (e *Engine) timerForget(p storage.Partition) {
	e.tmu.Lock()
	delete(e.tparts, p)
	e.tmu.Unlock()
}

// noteTimer is told of a wait recorded with a deadline.
func (e *Engine) noteTimer(p storage.Partition, due time.Time) {
	if due.IsZero() {
		return
	}
	e.tmu.Lock()
	tp := e.tparts[p]
	if tp == nil {
		if e.parted && !isLocal(p.Topic) {
			e.tmu.Unlock()
			return // not ours (given up meanwhile)
		}
		tp = &timerPart{}
		e.tparts[p] = tp
	}
	if tp.cursor != nil && len(tp.cursor) >= 8 && bytes.Compare(tsKey(due), tp.cursor[:8]) <= 0 {
		tp.cursor = nil // behind the fire cursor: look from the start
	}
	earlier := tp.next.IsZero() || due.Before(tp.next)
	if earlier {
		tp.next = due
	}
	e.tmu.Unlock()
	if earlier {
		e.wakeTimers()
	}
}

func tsKey(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())^1<<63)
}

func (e *Engine) wakeTimers() {
	select {
	case e.twake <- struct{}{}:
	default:
	}
}

// timerLoop fires due timers until ctx ends.
func (e *Engine) timerLoop(ctx context.Context) {
	sweep := e.clock.Now().Add(awaitSweepEach)
	for ctx.Err() == nil {
		now := e.clock.Now()
		var due []storage.Partition
		wait := timerIdleCheck
		e.tmu.Lock()
		for p, tp := range e.tparts {
			switch {
			case tp.next.IsZero():
			case !tp.next.After(now) && tp.firing < maxFiring:
				due = append(due, p)
			case tp.next.After(now):
				wait = min(wait, tp.next.Sub(now))
			}
		}
		e.tmu.Unlock()
		for _, p := range due {
			e.fireTimers(ctx, p, now)
		}
		if !now.Before(sweep) {
			e.sweepAwaits(ctx, now)
			sweep = now.Add(awaitSweepEach)
		}
		if len(due) > 0 {
			continue // look again: more may be due
		}
		wait = max(min(wait, max(sweep.Sub(now), 0)), time.Millisecond)
		t := make(chan struct{})
		stop := e.clock.AfterFunc(wait, func() { close(t) })
		if !e.clock.Now().Before(now.Add(wait)) {
			// The time reached the deadline while the timer was being set (a
			// clock moved on by a test, or a stalled goroutine): the timer,
			// counted from later, would fire late or, on a fake clock, never.
			stop()
			continue
		}
		select {
		case <-ctx.Done():
		case <-e.twake:
		case <-t:
		}
		stop()
	}
}

// fireTimers delivers p's timers due at now, from where the last look
// stopped.
func (e *Engine) fireTimers(ctx context.Context, p storage.Partition, now time.Time) {
	e.tmu.Lock()
	tp := e.tparts[p]
	if tp == nil {
		e.tmu.Unlock()
		return
	}
	cursor, from := tp.cursor, tp.cursor == nil
	if from && now.Before(tp.rescan) {
		tp.next = tp.rescan
		e.tmu.Unlock()
		return
	}
	e.tmu.Unlock()
	page, err := e.store.Timers(ctx, p, now, cursor, timerBatch)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Error("reading due timers failed; retrying", "partition", p.String(), "err", err)
		}
		e.tmu.Lock()
		if tp := e.tparts[p]; tp != nil {
			tp.next = now.Add(time.Second)
		}
		e.tmu.Unlock()
		return
	}
	e.tmu.Lock()
	tp = e.tparts[p]
	if tp == nil {
		e.tmu.Unlock()
		return
	}
	tp.firing += len(page.Due)
	if len(page.Due) > 0 {
		tp.cursor = page.Due[len(page.Due)-1].Key
	}
	switch {
	case len(page.Due) >= timerBatch:
		tp.next = now // more are due
	case from:
		tp.next, tp.rescan = page.Next, now.Add(timerRescan)
	default:
		// The end of what is due behind the cursor: next time, a pass from
		// the start (timers whose handling failed, or that were added
		// behind the cursor), at most once per timerRescan.
		tp.cursor, tp.rescan = nil, now.Add(timerRescan)
		tp.next = tp.rescan
		if !page.Next.IsZero() && page.Next.Before(tp.next) {
			tp.next = page.Next
		}
	}
	e.tmu.Unlock()
	for _, tm := range page.Due {
		e.deliver(tm.Pos, tm.Name, delivery{kind: deliverTimer, done: func(Handled) {
			e.tmu.Lock()
			wake := false
			if tp := e.tparts[p]; tp != nil {
				tp.firing--
				wake = tp.firing == maxFiring-1 || tp.firing == 0
			}
			e.tmu.Unlock()
			if wake {
				e.wakeTimers()
			}
		}})
	}
	if len(page.Due) > 0 {
		e.log.Debug("timers due", "partition", p.String(), "count", len(page.Due))
	}
}
