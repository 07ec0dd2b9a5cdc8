package httpapi

import "errors"

// Errors of webhook verification and of the API's configuration.
var (
	// ErrBadSignature: a webhook call whose signature is missing, malformed
	// or made with none of the configured secrets (401).
	ErrBadSignature = errors.New("bad signature")
	// ErrStaleTimestamp: a signed webhook call whose timestamp is outside
	// the tolerance (a replay, or a clock too far off) (401).
	ErrStaleTimestamp = errors.New("timestamp outside the tolerance")
	// ErrInvalidConfig: the API's security configuration cannot be used
	// (short or blank token, unknown scheme, malformed secret, a webhook
	// declared engine.Signed without a secret).
	ErrInvalidConfig = errors.New("invalid HTTP API configuration")
)
