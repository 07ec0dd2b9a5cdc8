//go:build linux

package storage

import (
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
