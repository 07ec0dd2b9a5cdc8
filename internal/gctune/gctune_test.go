package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApplySetsPercentUnlessTheEnvironmentDoes(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)

	if !Apply(func(string) string { return "" }) {
		t.Fatal("Apply did nothing with GOGC unset")
	}
	if got := debug.SetGCPercent(100); got != Percent {
		t.Fatalf("GOGC after Apply = %d, want %d", got, Percent)
	}

	env := func(k string) string {
		if k == "GOGC" {
			return "50"
		}
		return ""
	}
	debug.SetGCPercent(50)
	if Apply(env) {
		t.Fatal("Apply changed the collector although GOGC is set")
	}
	if got := debug.SetGCPercent(100); got != 50 {
		t.Fatalf("GOGC after Apply with GOGC=50 set = %d, want 50", got)
	}
}
