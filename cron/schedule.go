// Package cron turns schedules into ticks published to Kafka: each tick is a
// synthetic event on the cron topic, so it reaches its saga
// through the consumer like any record, de-duplicated by schedule and
// scheduled time. Only the member that owns a schedule's partition of the
// cron topic publishes it.
package cron

import (
	"time"

	robfig "github.com/robfig/cron/v3"

	"github.com/sagaz-go/sagaz/engine"
)

// Schedule computes fire times. Next returns the first fire time strictly
// after t.
type Schedule interface {
	Next(t time.Time) time.Time
}

// Parse parses a schedule with the engine's parser (five fields, optional
// seconds, descriptors, CRON_TZ= or TZ= prefix) and makes it safe across
// daylight-saving changes:
//
//   - a wall time that does not happen (clocks go forward) fires once, at the
//     instant the clocks jump (several skipped wall times merge into it);
//   - a wall time that happens twice (clocks go back) fires once, at its
//     first occurrence, when the schedule names its hours ("30 2 * * *");
//     a schedule that runs every hour ("0 * * * *") fires in both, so it
//     still fires once per real hour (Vixie cron's rule).
//
// robfig/cron alone skips the day for a time in the gap and fires twice in
// the overlap. "@every" schedules are intervals of absolute time and are
// used as they are.
func Parse(spec string) (Schedule, error) {
	s, err := engine.CronParser.Parse(spec)
	if err != nil {
		return nil, err
	}
	ss, ok := s.(*robfig.SpecSchedule)
	if !ok {
		return s, nil
	}
	wall := *ss
	loc := ss.Location
	wall.Location = time.UTC // evaluate the fields on wall clocks, without DST
	const allHours = 1<<24 - 1
	return &dstSafe{plain: ss, wall: &wall, loc: loc, everyHour: ss.Hour&allHours == allHours}, nil
}

type dstSafe struct {
	plain     *robfig.SpecSchedule // the spec as robfig reads it
	wall      *robfig.SpecSchedule // the spec on wall clocks (as UTC values)
	loc       *time.Location
	everyHour bool // fires in both occurrences of a repeated hour
}

// wallOf returns t's wall clock in loc as a UTC value.
func (d *dstSafe) wallOf(t time.Time) time.Time {
	l := t.In(d.loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// resolve turns a wall clock (as a UTC value) into the instants it fires
// at in loc, earliest first: one, both occurrences of a repeated wall time
// for an every-hour schedule (else the first), or the jump instant for a
// wall time in a gap.
func (d *dstSafe) resolve(w time.Time) []time.Time {
	_, before := w.Add(-14 * time.Hour).In(d.loc).Zone() // offsets around w
	_, after := w.Add(14 * time.Hour).In(d.loc).Zone()
	var found []time.Time
	for _, off := range []int{before, after} {
		i := w.Add(-time.Duration(off) * time.Second)
		if d.wallOf(i).Equal(w) && (len(found) == 0 || !found[0].Equal(i)) {
			found = append(found, i)
		}
	}
	if len(found) == 2 {
		if found[1].Before(found[0]) {
			found[0], found[1] = found[1], found[0]
		}
		if !d.everyHour {
			found = found[:1]
		}
	}
	if len(found) > 0 {
		return found
	}
	// A gap: the first instant whose wall clock is at or past w.
	lo := w.Add(-time.Duration(max(before, after)) * time.Second)
	hi := w.Add(-time.Duration(min(before, after)) * time.Second)
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if d.wallOf(mid).Before(w) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return []time.Time{hi.Truncate(time.Second)}
}

func (d *dstSafe) Next(t time.Time) time.Time {
	// No clock change between t and robfig's answer: robfig is right.
	if n := d.plain.Next(t); !n.IsZero() {
		_, o1 := t.Add(-3 * time.Hour).In(d.loc).Zone()
		_, o2 := n.Add(3 * time.Hour).In(d.loc).Zone()
		if o1 == o2 && d.sameOffsetBetween(t.Add(-3*time.Hour), n.Add(3*time.Hour), o1) {
			return n
		}
	}
	// Around a clock change a wall clock resolves to an instant up to the
	// size of the change (at most 2 hours anywhere) away from its naive
	// reading: look 3 hours either side.
	w := d.wallOf(t).Add(-3 * time.Hour)
	var best time.Time
	for range 100_000 {
		w = d.wall.Next(w)
		if w.IsZero() {
			break
		}
		for _, i := range d.resolve(w) {
			if i.After(t) && (best.IsZero() || i.Before(best)) {
				best = i
			}
		}
		if !best.IsZero() && w.Sub(d.wallOf(best)) > 3*time.Hour {
			break // nothing earlier can follow
		}
	}
	if best.IsZero() {
		return best
	}
	return best.In(d.loc)
}

// sameOffsetBetween reports whether loc keeps offset off from a to b
// (checked at the zone's transitions, found by the hour).
func (d *dstSafe) sameOffsetBetween(a, b time.Time, off int) bool {
	if b.Sub(a) > 48*time.Hour {
		return false // long gaps (monthly, yearly schedules): take the careful path
	}
	for t := a; t.Before(b); t = t.Add(time.Hour) {
		if _, o := t.In(d.loc).Zone(); o != off {
			return false
		}
	}
	return true
}

// Ticks lists the fire times in (from, to], at most limit of them.
func Ticks(s Schedule, from, to time.Time, limit int) []time.Time {
	var out []time.Time
	for t := s.Next(from); !t.IsZero() && !t.After(to) && len(out) < limit; t = s.Next(t) {
		out = append(out, t)
	}
	return out
}
