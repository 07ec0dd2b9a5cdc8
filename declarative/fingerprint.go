package declarative

import "github.com/sagaz-go/sagaz/engine"

// Fingerprint identifies the shape of a saga declaration: its steps, in
// order, by name, and which of them have a compensation. It is
// engine.Fingerprint, which the executor records with every saga it runs
// and matches recorded sagas by (see engine.Saga.Previous); compiled and
// YAML sagas share it.
func Fingerprint(s *engine.Saga) string { return engine.Fingerprint(s) }
