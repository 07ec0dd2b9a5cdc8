package main

import (
	"math"
	"testing"
)

func TestHistogramQuantile(t *testing.T) {
	// 100 observations: 50 in (0,1], 40 in (1,2], 10 in (2,4].
	h := hist{bounds: []float64{1, 2, 4, math.Inf(1)}, counts: []float64{50, 90, 100, 100}}
	for _, c := range []struct{ q, want float64 }{{0.25, 0.5}, {0.5, 1}, {0.7, 1.5}, {0.95, 3}, {1, 4}} {
		if got := h.quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	before := hist{bounds: h.bounds, counts: []float64{50, 50, 50, 50}}
	if got := h.minus(before).quantile(0.5); math.Abs(got-1.625) > 1e-9 { // 40 in (1,2], 10 in (2,4]: rank 25 of 50
		t.Errorf("delta median = %v", got)
	}
	if !math.IsNaN((hist{bounds: h.bounds, counts: []float64{0, 0, 0, 0}}).quantile(0.5)) {
		t.Error("empty histogram must give NaN")
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"150MiB": 150 << 20, "2GiB": 2 << 30, "4096": 4096} {
		if got, err := parseBytes(s); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v", s, got, err)
		}
	}
	if _, err := parseBytes("lots"); err == nil {
		t.Error("parseBytes accepted garbage")
	}
}

func TestRatioRowJudgesAgainstTheRunsBaseline(t *testing.T) {
	r := ratioRow(Row{Figure: "ingest", Value: 150_000}, 1_000_000, ingestTarget)
	if r.Met == nil || !*r.Met || r.Ratio != "0.15" || r.Target != "≥ 0.1× baseline" {
		t.Fatalf("%+v", r)
	}
	r = ratioRow(Row{Figure: "completion", Value: 20_000}, 1_000_000, completionTarget)
	if r.Met == nil || *r.Met || r.Ratio != "0.020" {
		t.Fatalf("%+v", r)
	}
	if r := ratioRow(Row{Figure: "x", Value: 1}, 0, 0.1); r.Met != nil || r.Ratio != "" {
		t.Fatalf("judged without a baseline: %+v", r)
	}
}

func TestMedianRowsPicksEachFiguresMedianRatio(t *testing.T) {
	run := func(base, ingest, p99 float64) []Row {
		return []Row{
			ratioRow(Row{Figure: "ingest", Value: ingest, Unit: "events/s"}, base, ingestTarget),
			{Figure: "latency", Value: p99},
		}
	}
	// The median ratio is the second run's, though its value is the largest.
	got := medianRows([][]Row{run(1e6, 90_000, 30), run(3e6, 360_000, 10), run(2e6, 260_000, 20)})
	if len(got) != 2 || got[0].Value != 360_000 || got[0].Ratio != "0.12" || got[1].Value != 20 {
		t.Fatalf("%+v", got)
	}
	if got[0].Text != "360,000 events/s (median of 3 runs)" {
		t.Fatalf("text %q: want the median's value, saying it is a median", got[0].Text)
	}
	// The baseline's ratio is 1 in every run: its row is the median value's.
	base := func(v float64) []Row { return []Row{{Figure: "baseline", Value: v, Ratio: "1", ratio: 1}} }
	if got := medianRows([][]Row{base(1.2e6), base(1.9e6), base(1.5e6)}); got[0].Value != 1.5e6 {
		t.Fatalf("baseline of runs 1.2M, 1.9M, 1.5M reported as %v, want the median 1.5M", got[0].Value)
	}
}

// -random-ids gives every event of a phase its own id, in no order (the
// point of the flag); without it ids are prefix-i.
func TestEventIDs(t *testing.T) {
	d := &driver{}
	if got := d.eventID("c", 42); got != "c-42" {
		t.Fatalf("eventID = %q, want c-42", got)
	}
	d.randomIDs = true
	seen := map[string]bool{}
	ascending := 0
	prev := ""
	for i := range 100_000 {
		id := d.eventID("c", i)
		if seen[id] {
			t.Fatalf("random id %q repeated at %d", id, i)
		}
		seen[id] = true
		if id > prev {
			ascending++
		}
		prev = id
	}
	if ascending > 60_000 || ascending < 40_000 {
		t.Fatalf("%d of 100,000 random ids sort after the one before: not in random order", ascending)
	}
}
