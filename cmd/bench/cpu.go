package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuSnap is the CPU time used so far by a member, by the broker and by
// the whole machine: a phase's pair says where the two cores went (the
// member, the broker, and the rest: the harness and anything else on the
// machine) and what one event or saga cost each process.
type cpuSnap struct {
	member, broker time.Duration
	busy, total    time.Duration // the machine: busy (not idle or iowait) and all
	ok             bool
}

// clockTick is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTick = 100

// procCPU reads a process's user and system time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis are fixed: utime and stime are the 12th and 13th.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+st) * time.Second / clockTick, true
}

// machineCPU reads the machine's busy and total CPU time from /proc/stat
// (busy: neither idle, waiting for I/O nor stolen by the hypervisor).
func machineCPU() (busy, total time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, false
	}
	var all, idle int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		if i >= 8 { // guest time is counted in user time already
			break
		}
		all += n
		if i == 3 || i == 4 || i == 7 { // idle, iowait, steal (another VM ran)
			idle += n
		}
	}
	return time.Duration(all-idle) * time.Second / clockTick, time.Duration(all) * time.Second / clockTick, true
}

func (d *driver) cpuNow(member int) cpuSnap {
	var c cpuSnap
	var ok1, ok2, ok3 bool
	c.member, ok1 = procCPU(member)
	c.broker, ok2 = procCPU(d.brokerPID)
	c.busy, c.total, ok3 = machineCPU()
	c.ok = ok1 && ok2 && ok3
	return c
}

// to describes the CPU used between c and later, per item (event or saga)
// of n.
func (c cpuSnap) to(later cpuSnap, n int, item string) string {
	if !c.ok || !later.ok || n <= 0 || later.total <= c.total {
		return "CPU: no figures"
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	m, b, busy := later.member-c.member, later.broker-c.broker, later.busy-c.busy
	return fmt.Sprintf("CPU: member %.2f s (%.1f µs per %s), broker %.2f s (%.1f µs), the machine %.0f%% busy (%.1f µs per %s in all)",
		m.Seconds(), per(m), item, b.Seconds(), per(b), 100*float64(busy)/float64(later.total-c.total), per(busy), item)
}
