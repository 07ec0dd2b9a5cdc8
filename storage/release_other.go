//go:build !linux

package storage

func (b *Bolt) releaseMapped() error { return nil }

func mappedResident() (int64, bool) { return 0, false }
