package deadletter

import "errors"

// Errors of the dead-letter reader. Callers test them with errors.Is.
var (
	// ErrInvalidCursor: a cursor was not produced by List for this topic.
	ErrInvalidCursor = errors.New("deadletter: invalid cursor")
	// ErrInvalidQuery: a limit or a replay request out of range.
	ErrInvalidQuery = errors.New("deadletter: invalid request")
	// ErrKafka: the dead-letter topic could not be read or written.
	ErrKafka = errors.New("deadletter: kafka")
)
