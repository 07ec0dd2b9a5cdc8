package declarative

import (
	"crypto/sha256"
	"encoding/hex"
	"io"

	"github.com/sagaz-go/sagaz/engine"
)

// Fingerprint identifies the shape of a saga declaration: its steps, in
// order, by name, and which of them have a compensation. Two declarations
// with the same fingerprint run a recorded saga the same way step by step
// (the engine matches recorded sagas to declarations by step names and
// order); anything else in a step (URL, body, retry policy) may differ.
// It works for compiled sagas as well as loaded ones:
// "sha256:" and 16 hex digits.
func Fingerprint(s *engine.Saga) string {
	h := sha256.New()
	io.WriteString(h, "sagaz-steps/1\n")
	for _, st := range s.Steps {
		io.WriteString(h, st.Name)
		if st.Compensate != nil {
			io.WriteString(h, "\x00compensated\n")
		} else {
			io.WriteString(h, "\x00\n")
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}
