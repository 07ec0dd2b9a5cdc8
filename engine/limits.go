package engine

import "golang.org/x/time/rate"

// Group-wide limits. A trigger's MaxConcurrent and RateLimit hold for the
// whole group, not per member: each member takes the share of the limit
// that matches the share it owns of the partitions where the trigger's
// sagas live (its "home" topic: the keys topic for a trigger with a
// declared key or concurrency key, the cron topic for a schedule, the
// events topic for an unkeyed webhook or manual trigger, the trigger's
// topic for an unkeyed Kafka trigger).
//
//	concurrency: floor(MaxConcurrent × owned / partitions), at least 1 while
//	             the member owns any of those partitions
//	rate:        RateLimit.PerSecond × owned / partitions,
//	             burst floor(Burst × owned / partitions), at least 1
//
// So the group never runs more than MaxConcurrent at once as long as
// MaxConcurrent is at least the number of members that own home
// partitions; below that, each such member still runs one (rounding up to
// one keeps every saga able to run). A library engine (no consumer group)
// applies the limits as declared.

// Topology is what the consumer tells the engine about the topics once it
// knows them: where keyed sagas start, the synthetic topics, and every
// topic's partition count.
type Topology struct {
	KeysTopic, EventsTopic, CronTopic string
	Partitions                        map[string]int32
}

// SetTopology tells the engine the group's topics, so that each member
// applies its share of the declared limits.
func (e *Engine) SetTopology(t Topology) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.topo = t
	for _, l := range e.order {
		l.home = e.homeTopic(l.trigger)
	}
	e.rescaleLocked()
}

// homeTopic is where the sagas of trigger t live (see above).
func (e *Engine) homeTopic(t *Trigger) string {
	if t == nil {
		return ""
	}
	switch {
	case t.source == SourceCron:
		return e.topo.CronTopic
	case !t.key.IsZero() || !t.concKey.IsZero():
		return e.topo.KeysTopic
	case t.source == SourceKafka:
		return t.target
	default:
		return e.topo.EventsTopic
	}
}

// rescaleLocked recomputes every lane's share of its limits from the
// partitions this member owns now. Called with e.mu held, after
// SetTopology, Acquire and Release.
func (e *Engine) rescaleLocked() {
	for _, l := range e.order {
		t := l.trigger
		if t == nil {
			continue
		}
		owned, total := 1, 1 // a library engine, or topics not known yet: as declared
		if n := e.topo.Partitions[l.home]; e.parted && n > 0 {
			owned, total = 0, int(n)
			for p := range e.parts {
				if p.Topic == l.home {
					owned++
				}
			}
		}
		l.limit = share(t.maxConc, owned, total)
		if l.rate != nil {
			r := t.rate.PerSecond * float64(owned) / float64(total)
			l.rate.SetLimit(rate.Limit(r))
			l.rate.SetBurst(share(max(t.rate.Burst, 1), owned, total))
		}
		l.perKey = t.concMax // exact: all sagas of one value live in one partition
	}
}

// share is floor(limit × owned / total), at least 1 while owned > 0; 0 (no
// limit) stays 0.
func share(limit, owned, total int) int {
	if limit <= 0 {
		return 0
	}
	if owned == 0 {
		return 1 // nothing of this lane runs here anyway
	}
	return max(1, limit*owned/total)
}

// keyBlocked reports whether a saga whose concurrency-key value is k may
// not start now because that value already has the trigger's limit of
// sagas executing here.
func (l *lane) keyBlocked(k string) bool {
	return l.perKey > 0 && k != "" && l.keyRunning[k] >= l.perKey
}

// popEligible takes the first queued saga that may start (the head, or
// the first one past heads held back by their concurrency key), or false.
// It looks at most maxScan entries past the head.
func (l *lane) popEligible() (queued, bool) {
	const maxScan = 4096
	if l.perKey == 0 {
		return l.pop(), true
	}
	q := &l.queue
	end := min(len(q.entries), q.head+maxScan)
	for i := q.head; i < end; i++ {
		if !l.keyBlocked(q.concKeyAt(i)) {
			return q.removeAt(i), true
		}
	}
	return queued{}, false
}

func (l *lane) keyStarted(q queued) {
	if q.concKey == "" || l.perKey == 0 {
		return
	}
	if l.keyRunning == nil {
		l.keyRunning = map[string]int{}
	}
	l.keyRunning[q.concKey]++
}

func (l *lane) keyEnded(k string) {
	if k == "" || l.keyRunning == nil {
		return
	}
	if l.keyRunning[k]--; l.keyRunning[k] <= 0 {
		delete(l.keyRunning, k)
	}
}

// hasEligible reports whether the lane holds a saga that may start now
// (see popEligible).
func (l *lane) hasEligible() bool {
	if l.perKey == 0 {
		return l.len() > 0
	}
	q := &l.queue
	end := min(len(q.entries), q.head+4096)
	for i := q.head; i < end; i++ {
		if !l.keyBlocked(q.concKeyAt(i)) {
			return true
		}
	}
	return false
}
