package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// procCPU counts this process's CPU time: spinning until it shows 100 ms
// ends (within seconds, however loaded the machine), and the machine's busy
// time grows by at least as much and never exceeds its total.
func TestProcCPUCountsThisProcess(t *testing.T) {
	before, ok := procCPU(os.Getpid()) // the harness runs on Linux, as the service does
	if !ok {
		t.Fatal("procCPU read nothing from /proc for this process")
	}
	busy0, total0, ok := machineCPU()
	if !ok || busy0 > total0 {
		t.Fatalf("machineCPU = %v, %v, %v", busy0, total0, ok)
	}
	start, x := time.Now(), 0
	for {
		for range 1 << 20 {
			x++
		}
		if after, _ := procCPU(os.Getpid()); after-before >= 100*time.Millisecond {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("spun %s, procCPU counted less than 100 ms (%d)", time.Since(start), x)
		}
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
