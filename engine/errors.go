package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors of the engine. Test them with errors.Is / errors.As.
var (
	// ErrIgnore is returned by a Transformer to say "this event starts no
	// saga". Returning a nil context with a nil error means the same.
	ErrIgnore = errors.New("engine: event ignored")
	// ErrNoRoute: Fire found no trigger for the source and name given.
	ErrNoRoute = errors.New("engine: no trigger matches the event")
	// ErrInvalidSaga: a saga declaration is invalid (see Registry.Validate).
	ErrInvalidSaga = errors.New("engine: invalid saga declaration")
	// ErrNotRegistered: a stored saga names a saga this binary does not
	// declare, or was started with a definition it does not declare (the
	// saga is parked; see Saga.Previous).
	ErrNotRegistered = errors.New("engine: saga not registered")
	// ErrInvalidMapping: a step mapping given to RetryWith names a step the
	// saga did not record or the definition does not have, maps two steps
	// to one, or leaves a completed step without a place.
	ErrInvalidMapping = errors.New("engine: invalid step mapping")
	// ErrStopped: the engine has stopped.
	ErrStopped = errors.New("engine: stopped")
	// ErrNotOwned: the saga's partition is owned by another member of the
	// group; ask that member.
	ErrNotOwned = errors.New("engine: saga's partition is owned by another member")
	// ErrConflict: the saga is not in a status the operation applies to
	// (retry needs failed or parked, resolve failed; cancel needs pending,
	// executing or parked), or no definition of this build can carry out
	// the operation.
	ErrConflict = errors.New("engine: saga status does not allow this")
	// ErrInvalidContext: a context given to RetryWith is not a JSON object
	// within the context size limit (or the saga is not failed).
	ErrInvalidContext = errors.New("engine: invalid saga context")
	// ErrInvalidReason: an operator's reason is missing where it is
	// required (Resolve) or too long.
	ErrInvalidReason = errors.New("engine: invalid reason")
	// ErrNoField: Run.Int, Float or Bool found no value (or null) under the
	// key asked for.
	ErrNoField = errors.New("engine: saga data has no such field")
	// ErrFieldType: the saga data's value under the key is not of the type
	// asked for (Run.Int on 12.5 or "42", Run.Bool on "true", ...).
	ErrFieldType = errors.New("engine: saga data field has another type")
)

// FieldError is the error of a typed accessor of Run: which field, what
// was wanted and what was found. It wraps ErrNoField or ErrFieldType.
type FieldError struct {
	Key   string
	Want  string // "an integer", "a number", "a boolean"
	Value any    // the value found (ErrFieldType)
	Err   error
}

func (e *FieldError) Error() string {
	if errors.Is(e.Err, ErrNoField) {
		return fmt.Sprintf("saga data has no field %q", e.Key)
	}
	return fmt.Sprintf("saga data field %q: want %s, got %s", e.Key, e.Want, describe(e.Value))
}

func (e *FieldError) Unwrap() error { return e.Err }

// describe shows a value and its JSON type for an error message.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", x)
	case json.Number:
		return "the number " + x.String()
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("%v (%T)", v, v)
}

// DecodeError says the event's value is not a JSON object. Event.JSON
// returns it; transformers usually pass it on, which sends the event to the
// dead-letter topic with reason "decode".
type DecodeError struct {
	Err error // nil when the value is empty
}

func (e *DecodeError) Error() string {
	if e.Err == nil {
		return "event value is empty, want a JSON object"
	}
	return "event value is not a JSON object: " + e.Err.Error()
}

func (e *DecodeError) Unwrap() error { return e.Err }

// MissingKeyError says an event has no usable idempotency key: the declared
// field is missing or empty (Field, Fields), or the key function failed (Err).
type MissingKeyError struct {
	Saga   string
	Field  string
	Fields []string // the fields the event does have (top level)
	Err    error
}

func (e *MissingKeyError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("saga %q: idempotency key function: %v", e.Saga, e.Err)
	}
	return fmt.Sprintf("saga %q: idempotency key field %q is missing or empty in the event (event fields: [%s])",
		e.Saga, e.Field, strings.Join(e.Fields, ", "))
}

func (e *MissingKeyError) Unwrap() error { return e.Err }

// PanicError is a recovered panic of a transformer, step or compensation.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// permanent marks an error that must not be retried.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Permanent wraps err so that the step (or compensation) that returns it is
// not retried: it fails at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanent{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanent
	return errors.As(err, &p)
}
