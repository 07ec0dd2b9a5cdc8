package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// procCPU counts this process's CPU time: 200 ms of spinning shows as at
// least 100 ms (the counters tick every 10 ms), and the machine's busy time
// never exceeds its total.
func TestProcCPUCountsThisProcess(t *testing.T) {
	before, ok := procCPU(os.Getpid())
	if !ok {
		t.Skip("no /proc on this system")
	}
	busy0, total0, ok := machineCPU()
	if !ok || busy0 > total0 {
		t.Fatalf("machineCPU = %v, %v, %v", busy0, total0, ok)
	}
	x := 0
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	after, _ := procCPU(os.Getpid())
	if got := after - before; got < 100*time.Millisecond {
		t.Errorf("spun 200 ms, procCPU counted %s (%d)", got, x)
	}
	busy1, total1, _ := machineCPU()
	if busy1-busy0 < 100*time.Millisecond || busy1-busy0 > total1-total0 {
		t.Errorf("machine busy %s of %s across the spin", busy1-busy0, total1-total0)
	}
	if _, ok := procCPU(-1); ok {
		t.Error("procCPU of no process reported a time")
	}
}

func TestCPUSnapTo(t *testing.T) {
	a := cpuSnap{member: time.Second, broker: time.Second, busy: 10 * time.Second, total: 20 * time.Second, ok: true}
	b := cpuSnap{member: 3 * time.Second, broker: 1500 * time.Millisecond, busy: 13 * time.Second, total: 24 * time.Second, ok: true}
	got := a.to(b, 100_000, "saga")
	for _, want := range []string{"member 2.00 s (20.0 µs per saga)", "broker 0.50 s (5.0 µs)", "75% busy", "(30.0 µs per saga in all)"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if got := a.to(cpuSnap{}, 1, "saga"); got != "CPU: no figures" {
		t.Errorf("without figures: %q", got)
	}
}
