package declarative

import (
	"errors"
	"fmt"
)

// Errors of the package. Test them with errors.Is / errors.As.
var (
	// ErrInvalid: a saga file does not load. Load returns the *Error
	// values joined (errors.Join), each naming file:line:column; every one
	// matches ErrInvalid.
	ErrInvalid = errors.New("declarative: invalid saga file")
	// ErrNotSupported: the file uses a feature that is not built yet.
	//
	// Deprecated: every step kind (http, command, await, sleep) is
	// supported now; Load no longer returns it.
	ErrNotSupported = errors.New("not supported yet")
	// ErrDestinationRefused: an HTTP step's destination is not allowed by
	// the saga's allow_hosts, or is a link-local or cloud-metadata address
	// that allow_hosts does not list.
	ErrDestinationRefused = errors.New("destination refused")
	// ErrResponseTooLarge: an HTTP step's response body is larger than its
	// max_response_bytes.
	ErrResponseTooLarge = errors.New("response too large")
	// ErrRedirectRefused: an HTTP step got a redirect and follow_redirects
	// is off.
	ErrRedirectRefused = errors.New("redirect refused")
	// ErrUnexpectedStatus: an HTTP step's response status is not one it
	// expects.
	ErrUnexpectedStatus = errors.New("unexpected status")
)

// Error is one problem found while loading a saga file, at a position in
// it. Path names the offending element ("steps[1].action.http.url").
type Error struct {
	File   string
	Line   int
	Column int
	Path   string
	Msg    string
	Err    error // the underlying error, if any
}

func (e *Error) Error() string {
	pos := fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	if e.Path == "" {
		return pos + ": " + e.Msg
	}
	return pos + ": " + e.Path + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes every *Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }
