// Package cron turns schedules into ticks published to Kafka: each tick is a
// synthetic event on the cron topic (DESIGN §2), so it reaches its saga
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
//   - a wall time that happens twice (clocks go back) fires once, at its
//     first occurrence;
//   - a wall time that does not happen (clocks go forward) fires once, at the
//     instant the clocks jump (several skipped wall times merge into it).
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
	return &dstSafe{wall: &wall, loc: loc}, nil
}

type dstSafe struct {
	wall *robfig.SpecSchedule // the spec on wall clocks (as UTC values)
	loc  *time.Location
}

// wallOf returns t's wall clock in loc as a UTC value.
func (d *dstSafe) wallOf(t time.Time) time.Time {
	l := t.In(d.loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// resolve turns a wall clock (as a UTC value) into the instant it happens
// in loc: the earlier one when it happens twice, the jump instant when it
// does not happen.
func (d *dstSafe) resolve(w time.Time) time.Time {
	_, before := w.Add(-14 * time.Hour).In(d.loc).Zone() // offsets around w
	_, after := w.Add(14 * time.Hour).In(d.loc).Zone()
	var found []time.Time
	for _, off := range []int{before, after} {
		i := w.Add(-time.Duration(off) * time.Second)
		if d.wallOf(i).Equal(w) {
			found = append(found, i)
		}
	}
	switch {
	case len(found) == 2 && found[1].Before(found[0]):
		return found[1]
	case len(found) > 0:
		return found[0]
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
	return hi.Truncate(time.Second)
}

func (d *dstSafe) Next(t time.Time) time.Time {
	w := d.wallOf(t).Add(-26 * time.Hour) // wall clocks near a shift can resolve to instants after t
	for range 100_000 {
		w = d.wall.Next(w)
		if w.IsZero() {
			return time.Time{}
		}
		if i := d.resolve(w); i.After(t) {
			return i.In(d.loc)
		}
	}
	return time.Time{}
}

// Ticks lists the fire times in (from, to], at most limit of them.
func Ticks(s Schedule, from, to time.Time, limit int) []time.Time {
	var out []time.Time
	for t := s.Next(from); !t.IsZero() && !t.After(to) && len(out) < limit; t = s.Next(t) {
		out = append(out, t)
	}
	return out
}
