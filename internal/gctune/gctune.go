// Package gctune sets the Go garbage collector for a sagaz service process.
//
// A member allocates fast (each transition of each saga encodes a record,
// and bbolt copies the pages it touches) while its live heap stays small,
// so with Go's default GOGC of 100 the collector runs every few dozen
// megabytes. The service runs with GOGC=200 unless the environment sets
// GOGC; where a soft memory limit is set (GOMEMLIMIT, docs/operations.md)
// it still bounds the heap, and the collector works harder near it.
package gctune

import "runtime/debug"

// Percent is the GOGC a service process runs with when the environment
// does not set GOGC.
const Percent = 200

// Apply sets the collector's GOGC to Percent unless getenv("GOGC") is set,
// and reports whether it did.
func Apply(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(Percent)
	return true
}
