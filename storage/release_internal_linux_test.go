//go:build linux

package storage

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// The release loop drops the store's mapped pages as soon as the process
// has mapped releaseGrowth more of them, without waiting for
// ReleaseInterval (an hour here).
func TestReleaseWhenMappedMemoryGrows(t *testing.T) {
	old := releaseGrowth.Swap(4 << 20)
	defer releaseGrowth.Store(old)

	s, err := OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), BoltOptions{ReleaseInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	context8k := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 8<<10)...), `"}`...)
	for i := range 10 { // about 40 MB of records
		var batch StartBatch
		for j := range 500 {
			off := int64(i*500 + j)
			batch.Sagas = append(batch.Sagas, &Saga{Name: "order", Trigger: "kafka:t", Status: StatusPending,
				Source: Position{Topic: "t", Partition: 0, Offset: off}, IdempotencyKey: fmt.Sprint("k", off),
				Context: context8k, CreatedAt: time.Unix(0, off), UpdatedAt: time.Unix(0, off)})
		}
		if _, err := s.Start(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	before, ok := mappedResident()
	if !ok { // Linux always has it; without it the early release cannot work
		t.Fatal("/proc/self/statm is not readable: the release loop cannot see mapped pages grow")
	}
	n := 0 // maps every page of the store: about 40 MB more, released unless the trigger is broken
	if err := s.Scan(ctx, Statuses, func(*Saga) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 5000 {
		t.Fatalf("%d sagas read, want 5000", n)
	}
	time.Sleep(4 * releaseCheck)
	if after, _ := mappedResident(); after > before+20<<20 {
		t.Fatalf("mapped file-backed memory %d MB after reading the store (%d MB before): not released", after>>20, before>>20)
	}
}
