package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"

	"github.com/sagaz-go/sagaz/storage"
)

// Run is what a step sees of its saga: identity, attempt, and the saga's
// data. Changes made with Set or through Data are recorded with the step's
// result when the step succeeds, and discarded when it fails.
//
// A Run is used by one step at a time; it is not safe for concurrent use.
type Run struct {
	// ID is the saga ID, stable across retries and restarts: use it as the
	// idempotency key of external calls.
	ID string
	// Saga is the saga's name; Step the current step's name.
	Saga string
	Step string
	// Attempt counts attempts of the current action or compensation from 1
	// (since the last restart).
	Attempt int
	// Compensating is true while a compensation runs.
	Compensating bool
	// Source is the position of the event that started the saga.
	Source storage.Position
	base   *slog.Logger
	logger *slog.Logger
	raw    []byte
	maxCtx int // the context's size limit (0: none)
	data   map[string]any
	dirty  bool
	retry  retryFrom // set when a durable back-off ended: the attempt to go on with
}

// Logger returns a logger that carries the saga ID.
func (r *Run) Logger() *slog.Logger {
	if r.logger == nil {
		r.logger = r.base.With("saga_id", r.ID)
	}
	return r.logger
}

// Data returns the saga's data (decoded from JSON; numbers are
// json.Number, see Int and Float). Changes to the returned map are recorded
// when the step succeeds.
func (r *Run) Data() map[string]any {
	r.decode()
	r.dirty = true
	return r.data
}

// Get returns one value of the saga's data.
func (r *Run) Get(key string) any {
	r.decode()
	return r.data[key]
}

// String returns a value of the saga's data as a string: "" if absent,
// a string as it is, any other value formatted with fmt.Sprint (a number
// keeps its JSON text). Use it for display and keys; use Int, Float, Bool
// or Decode when the type matters.
func (r *Run) String(key string) string {
	switch v := r.Get(key).(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// Number policy: saga data comes from JSON and is decoded with numbers as
// json.Number, so amounts and ids keep their exact text (no float64
// rounding of 12345678901234567890 or 0.1). A type assertion such as
// r.Get("amount").(float64) therefore fails (and, unchecked, gives 0): read
// numbers with Int or Float, which accept a json.Number, or a Go number set
// by an earlier Set in the same step, and return an error rather than a
// zero for anything else.

// Int returns a value of the saga's data as an int64. It accepts integral
// numbers only (42, 42.0, 1e3); a fraction (12.5), a number out of the
// int64 range, a string ("42") or any other type is an error wrapping
// ErrFieldType, and a missing key (or null) an error wrapping ErrNoField.
func (r *Run) Int(key string) (int64, error) {
	v, err := r.field(key)
	if err != nil {
		return 0, err
	}
	bad := func() (int64, error) { return 0, fieldTypeError(key, "an integer", v) }
	switch n := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return i, nil
		}
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil {
			return bad()
		}
		return intOf(f, bad)
	case int:
		return int64(n), nil
	case int8:
		return int64(n), nil
	case int16:
		return int64(n), nil
	case int32:
		return int64(n), nil
	case int64:
		return n, nil
	case uint:
		return uintOf(uint64(n), bad)
	case uint8:
		return int64(n), nil
	case uint16:
		return int64(n), nil
	case uint32:
		return int64(n), nil
	case uint64:
		return uintOf(n, bad)
	case float32:
		return intOf(float64(n), bad)
	case float64:
		return intOf(n, bad)
	}
	return bad()
}

func intOf(f float64, bad func() (int64, error)) (int64, error) {
	if f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 || math.IsNaN(f) {
		return bad()
	}
	return int64(f), nil
}

func uintOf(u uint64, bad func() (int64, error)) (int64, error) {
	if u > math.MaxInt64 {
		return bad()
	}
	return int64(u), nil
}

// Float returns a value of the saga's data as a float64: any number (a
// json.Number, or a Go number set earlier in the step). A string ("12.5")
// or any other type is an error wrapping ErrFieldType, a missing key (or
// null) an error wrapping ErrNoField. For money, prefer Int over minor units
// or Decode into a decimal type: float64 rounds.
func (r *Run) Float(key string) (float64, error) {
	v, err := r.field(key)
	if err != nil {
		return 0, err
	}
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		if err != nil {
			return 0, fieldTypeError(key, "a number", v)
		}
		return f, nil
	case int:
		return float64(n), nil
	case int8:
		return float64(n), nil
	case int16:
		return float64(n), nil
	case int32:
		return float64(n), nil
	case int64:
		return float64(n), nil
	case uint:
		return float64(n), nil
	case uint8:
		return float64(n), nil
	case uint16:
		return float64(n), nil
	case uint32:
		return float64(n), nil
	case uint64:
		return float64(n), nil
	case float32:
		return float64(n), nil
	case float64:
		return n, nil
	}
	return 0, fieldTypeError(key, "a number", v)
}

// Bool returns a value of the saga's data as a bool. Only JSON true and
// false qualify: a string ("true"), a number or any other type is an error
// wrapping ErrFieldType, a missing key (or null) an error wrapping
// ErrNoField.
func (r *Run) Bool(key string) (bool, error) {
	v, err := r.field(key)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fieldTypeError(key, "a boolean", v)
	}
	return b, nil
}

// Decode decodes the saga's data (with this step's changes so far) into
// into, a pointer to a struct or map, as encoding/json does: numbers go
// into whatever numeric type the field declares (a fraction into an int
// field is an error), json.Number or any keeps the text. A type mismatch
// is an error naming the field.
func (r *Run) Decode(into any) error {
	raw := r.raw
	if r.dirty {
		b, err := json.Marshal(r.data)
		if err != nil {
			return fmt.Errorf("saga data is not JSON-encodable: %w", err)
		}
		raw = b
	}
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("saga data does not decode into %T: %w", into, err)
	}
	return nil
}

// field returns the value under key, or an error wrapping ErrNoField when
// it is absent or null.
func (r *Run) field(key string) (any, error) {
	v := r.Get(key)
	if v == nil {
		return nil, &FieldError{Key: key, Err: ErrNoField}
	}
	return v, nil
}

func fieldTypeError(key, want string, v any) error {
	return &FieldError{Key: key, Want: want, Value: v, Err: ErrFieldType}
}

// Set changes one value of the saga's data.
func (r *Run) Set(key string, v any) {
	r.decode()
	r.data[key] = v
	r.dirty = true
}

func (r *Run) decode() {
	if r.data != nil {
		return
	}
	r.data = map[string]any{}
	if len(r.raw) > 0 {
		d := json.NewDecoder(bytes.NewReader(r.raw))
		d.UseNumber()
		_ = d.Decode(&r.data) // the engine wrote raw from a map; it decodes
	}
}

// commit returns the data to record after a successful step.
func (r *Run) commit() ([]byte, error) {
	if !r.dirty {
		return r.raw, nil
	}
	b, err := json.Marshal(r.data)
	if err != nil {
		return nil, fmt.Errorf("step %q left saga data that is not JSON-encodable: %w", r.Step, err)
	}
	if r.maxCtx > 0 && len(b) > r.maxCtx {
		return nil, fmt.Errorf("step %q left saga data of %d bytes, over the limit of %d", r.Step, len(b), r.maxCtx)
	}
	r.raw, r.dirty = b, false
	return b, nil
}

// discard forgets changes of a failed attempt.
func (r *Run) discard() {
	if r.dirty {
		r.data, r.dirty = nil, false
	}
}
