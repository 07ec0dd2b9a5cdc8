//go:build linux

package storage

import (
	"bytes"
	"os"
	"strconv"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// releaseMapped drops this process's mappings of the database pages
// (madvise MADV_DONTNEED on bbolt's read-only, shared file mapping), so the
// process's resident memory follows the working set rather than the file
// size. The pages stay in the OS page cache and fault back in on access.
//
// The read transaction pins the mapping: bbolt remaps only while no read
// transaction is open, so the range is mapped for the whole call.
func (b *Bolt) releaseMapped() error {
	return b.db.View(func(tx *bolt.Tx) error {
		base, size := b.db.Info().Data, uintptr(tx.Size())
		if size == 0 {
			return nil
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, base, size, syscall.MADV_DONTNEED); errno != 0 {
			return errno
		}
		return nil
	})
}

// mappedResident returns the bytes of the process's resident memory that
// are backed by files (or shared memory): the third field of
// /proc/self/statm, in pages. It includes the binary's own pages, so only
// its growth between two calls says anything about the store.
func mappedResident() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}
