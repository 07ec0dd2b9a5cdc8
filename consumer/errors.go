package consumer

import "errors"

// Errors of the consumer.
var (
	// ErrMissingTopics: trigger topics do not exist and topic creation is off.
	ErrMissingTopics = errors.New("consumer: topics missing")
	// ErrConfig: the configuration is invalid.
	ErrConfig = errors.New("consumer: invalid configuration")
)

// errStore marks a batch the store did not record.
var errStore = errors.New("recording the batch in the store failed")
