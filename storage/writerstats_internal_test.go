package storage

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// A transaction that does not end (a hung fsync, a long restore call)
// shows in WriterStats.Busy while it runs, not only once it returns: a
// stuck writer must not look idle.
func TestWriterBusyCountsTheRunningTransaction(t *testing.T) {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "sagaz.db"), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.submit(context.Background(), func(*wtx) error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	first := b.WriterStats().Busy
	time.Sleep(20 * time.Millisecond)
	during := b.WriterStats().Busy
	if during-first < 20*time.Millisecond {
		t.Errorf("busy grew %v over 20ms of a running transaction, want at least 20ms", during-first)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if after := b.WriterStats(); after.Busy < during || after.Commits != 1 {
		t.Errorf("after the transaction: busy %v (was %v while it ran), commits %d; want busy not lower, one commit", after.Busy, during, after.Commits)
	}
}
