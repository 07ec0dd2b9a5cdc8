package storage

import "errors"

// Errors returned by stores. Callers test them with errors.Is.
var (
	// ErrNotFound: no saga has the requested ID.
	ErrNotFound = errors.New("storage: saga not found")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("storage: store closed")
	// ErrInvalidID: a saga ID is not "<topic>:<partition>:<offset>:<saga>".
	ErrInvalidID = errors.New("storage: invalid saga id")
	// ErrInvalidStatus: a status name is not one of the six statuses.
	ErrInvalidStatus = errors.New("storage: invalid status")
	// ErrInvalidSaga: a saga handed to the store is missing a field or has a
	// bad name, topic or status.
	ErrInvalidSaga = errors.New("storage: invalid saga")
	// ErrCorrupt: a stored record cannot be decoded, or its checksum does
	// not match its bytes (it was damaged after it was written).
	ErrCorrupt = errors.New("storage: corrupt record")
	// ErrNewerRecord: a record was written by a newer release in a format
	// this release does not read (see docs/upgrading.md).
	ErrNewerRecord = errors.New("storage: record written by a newer release")
	// ErrDamaged: the store's file is damaged (bbolt's page checks failed,
	// bbolt panicked, or a stored record's checksum does not match). The
	// store stops serving; OpenOrRecover moves the file aside.
	ErrDamaged = errors.New("storage: store damaged")
	// ErrNewerSchema: the store's file was written by a newer release, in
	// a schema this release does not read (see docs/upgrading.md).
	ErrNewerSchema = errors.New("storage: store written by a newer release")
	// ErrInvalidCursor: a list cursor was not produced by this store.
	ErrInvalidCursor = errors.New("storage: invalid cursor")
)
