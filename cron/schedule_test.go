package cron_test

import (
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/cron"
)

func must(t *testing.T, spec string) cron.Schedule {
	t.Helper()
	s, err := cron.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func utc(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

func TestHourlyAcrossBothDSTChanges(t *testing.T) {
	s := must(t, "CRON_TZ=Europe/Berlin 0 * * * *")
	for _, start := range []time.Time{utc(2026, 3, 28, 20, 0), utc(2026, 10, 24, 20, 0)} {
		ticks := cron.Ticks(s, start, start.Add(12*time.Hour), 100)
		if len(ticks) != 12 {
			t.Fatalf("from %s: %d hourly ticks in 12 hours, want 12: %v", start, len(ticks), ticks)
		}
		for i, tk := range ticks {
			if want := start.Add(time.Duration(i+1) * time.Hour); !tk.Equal(want) {
				t.Errorf("tick %d at %s, want %s (each real hour once)", i, tk.UTC(), want)
			}
		}
	}
}

func TestDailyInTheDSTGapAndOverlap(t *testing.T) {
	s := must(t, "CRON_TZ=Europe/Berlin 30 2 * * *")
	// Spring forward 2026-03-29: 02:30 does not exist; it fires when the
	// clocks jump (01:00 UTC = 03:00 CEST), once.
	got := cron.Ticks(s, utc(2026, 3, 27, 12, 0), utc(2026, 3, 31, 12, 0), 10)
	want := []time.Time{utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)}
	equal(t, "spring forward", got, want)
	// Fall back 2026-10-25: 02:30 happens twice; it fires at the first.
	got = cron.Ticks(s, utc(2026, 10, 23, 12, 0), utc(2026, 10, 27, 12, 0), 10)
	want = []time.Time{utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)}
	equal(t, "fall back", got, want)
}

func TestQuarterHoursAcrossTheGap(t *testing.T) {
	s := must(t, "CRON_TZ=Europe/Berlin */15 * * * *")
	got := cron.Ticks(s, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0), 100)
	// 00:15..00:45 UTC (01:15..01:45 CET), then 02:00..02:45 CET do not exist
	// and fire once with 03:00 CEST at 01:00 UTC, then every 15 minutes.
	want := []time.Time{utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1, 0),
		utc(2026, 3, 29, 1, 15), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 1, 45), utc(2026, 3, 29, 2, 0)}
	equal(t, "quarter hours", got, want)
}

func TestDayOfMonthOrDayOfWeek(t *testing.T) {
	// Both restricted: cron fires when either matches (robfig semantics):
	// the 13th, and every Friday.
	s := must(t, "0 0 13 * FRI")
	got := cron.Ticks(s, utc(2026, 11, 30, 0, 0), utc(2026, 12, 31, 0, 0), 10)
	want := []time.Time{utc(2026, 12, 4, 0, 0), utc(2026, 12, 11, 0, 0), utc(2026, 12, 13, 0, 0), utc(2026, 12, 18, 0, 0), utc(2026, 12, 25, 0, 0)}
	equal(t, "dom or dow", got, want)
	// One of them a star: both must hold.
	s = must(t, "0 0 * * FRI")
	if got := cron.Ticks(s, utc(2026, 11, 30, 0, 0), utc(2026, 12, 31, 0, 0), 10); len(got) != 4 {
		t.Errorf("Fridays of December 2026: %v", got)
	}
}

func TestFebruary29(t *testing.T) {
	s := must(t, "0 12 29 2 *")
	got := cron.Ticks(s, utc(2026, 1, 1, 0, 0), utc(2036, 12, 31, 0, 0), 10)
	want := []time.Time{utc(2028, 2, 29, 12, 0), utc(2032, 2, 29, 12, 0), utc(2036, 2, 29, 12, 0)}
	equal(t, "Feb 29", got, want)
}

func TestEveryAndSeconds(t *testing.T) {
	s := must(t, "@every 30s")
	if got := cron.Ticks(s, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 2), 10); len(got) != 4 {
		t.Errorf("@every 30s: %v", got)
	}
	s = must(t, "*/20 * * * * *") // with a seconds field
	if got := cron.Ticks(s, utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 1), 10); len(got) != 3 {
		t.Errorf("every 20 seconds: %v", got)
	}
	if _, err := cron.Parse("61 * * * *"); err == nil {
		t.Error("an invalid spec parsed")
	}
}

func equal(t *testing.T, what string, got, want []time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d ticks %v, want %v", what, len(got), got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("%s: tick %d at %s, want %s", what, i, got[i].UTC(), want[i])
		}
	}
}

func BenchmarkNextEverySecond(b *testing.B) {
	s, _ := cron.Parse("CRON_TZ=Europe/Berlin * * * * * *")
	t := utc(2026, 5, 1, 0, 0)
	for range b.N {
		t = s.Next(t)
	}
}
