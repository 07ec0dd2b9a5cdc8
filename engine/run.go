package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"

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
}

// Logger returns a logger that carries the saga ID.
func (r *Run) Logger() *slog.Logger {
	if r.logger == nil {
		r.logger = r.base.With("saga_id", r.ID)
	}
	return r.logger
}

// Data returns the saga's data (decoded from JSON; numbers are
// json.Number). Changes to the returned map are recorded when the step
// succeeds.
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

// String returns a value of the saga's data as a string ("" if absent).
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
