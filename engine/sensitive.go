package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Masked replaces the value of a sensitive field wherever the API shows a
// saga's context.
const Masked = "***"

// MaskContext returns the saga's context (JSON) with every field named by
// s.Sensitive replaced by the string Masked. A path is dotted ("card.number"):
// objects are entered by field name and arrays are entered element by
// element, so "items.card" masks the card of every item. Fields that are
// absent are left alone. The context is returned as given when the saga
// declares no sensitive field; a context that is not JSON is not returned
// at all (nil), since nothing in it could be masked reliably.
func (s *Saga) MaskContext(ctx []byte) []byte {
	if len(s.Sensitive) == 0 {
		return ctx
	}
	dec := json.NewDecoder(bytes.NewReader(ctx))
	dec.UseNumber() // numbers keep their text
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	for _, p := range s.Sensitive {
		v = maskPath(v, strings.Split(p, "."))
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return out
}

func maskPath(v any, path []string) any {
	switch x := v.(type) {
	case map[string]any:
		child, ok := x[path[0]]
		if !ok {
			return v
		}
		if len(path) == 1 {
			x[path[0]] = Masked
		} else {
			x[path[0]] = maskPath(child, path[1:])
		}
	case []any:
		for i := range x {
			x[i] = maskPath(x[i], path)
		}
	}
	return v
}

// SensitiveKey reports whether the idempotency key of the saga's trigger
// triggerID (as recorded with each saga, e.g. "kafka:orders.created") is
// taken from a sensitive field, so that the key must be masked too.
func (s *Saga) SensitiveKey(triggerID string) bool {
	for i := range s.Triggers {
		t := &s.Triggers[i]
		if t.ID() != triggerID || t.key.field == "" {
			continue
		}
		for _, p := range s.Sensitive {
			if t.key.field == p || strings.HasPrefix(t.key.field, p+".") {
				return true
			}
		}
	}
	return false
}

// validSensitivePath reports whether p is a dotted path without empty parts.
func validSensitivePath(p string) bool {
	if p == "" {
		return false
	}
	for _, part := range strings.Split(p, ".") {
		if part == "" {
			return false
		}
	}
	return true
}

// HashKey is how a sensitive idempotency key is kept: its SHA-256, so the
// store, the changelog and the saga's ID (named by its key) never hold the
// value itself, and de-duplication works the same.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// StoredKey is the idempotency key as the saga started by this route
// keeps it: the key, or HashKey of it when it comes from a field the saga
// marks sensitive.
func (r *Route) StoredKey(key string) string {
	if key != "" && r.Saga.SensitiveKey(r.Trigger.ID()) {
		return HashKey(key)
	}
	return key
}
