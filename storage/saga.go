package storage

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Status is the life-cycle state of a saga. The names are the external
// contract: pending, executing, completed, compensating,
// rolled_back, failed, parked, resolved.
type Status uint8

// Saga statuses. The zero value is not a valid status; in a Query it means
// "any status".
const (
	StatusPending Status = iota + 1
	StatusExecuting
	StatusCompleted
	StatusCompensating
	StatusRolledBack
	StatusFailed
	// StatusParked: no definition the member declares can run the saga
	// (it started with a definition this build does not have). It waits,
	// with the reason in Saga.Park, for a member that has the definition
	// or for an operator; it is not terminal.
	StatusParked
	// StatusResolved: a failed saga an operator marked resolved by hand,
	// with a reason (Saga.History). It is terminal and no longer counts as
	// failed. Its record carries the status byte of failed, with the
	// resolution in an extension (record.go), so that releases that do not
	// know it read the saga as failed.
	StatusResolved
)

// Statuses lists every valid status in life-cycle order (resolved after
// failed, which it comes from; parked last: a saga can be parked from
// pending, executing or compensating).
var Statuses = []Status{StatusPending, StatusExecuting, StatusCompleted, StatusCompensating, StatusRolledBack, StatusFailed, StatusResolved, StatusParked}

// NonTerminal lists the statuses a saga can still move on from; recovery
// resumes sagas in these (a parked saga resumes when its definition is
// found).
var NonTerminal = []Status{StatusPending, StatusExecuting, StatusCompensating, StatusParked}

var statusNames = [...]string{"", "pending", "executing", "completed", "compensating", "rolled_back", "failed", "parked", "resolved"}

func (s Status) String() string {
	if s.Valid() {
		return statusNames[s]
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Valid reports whether s is one of the eight statuses.
func (s Status) Valid() bool { return s >= StatusPending && s <= StatusResolved }

// resumable reports whether a saga may be parked from s (and is recorded
// in s while parked).
func (s Status) resumable() bool {
	return s == StatusPending || s == StatusExecuting || s == StatusCompensating
}

// Terminal reports whether a saga in s is finished for good.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusRolledBack || s == StatusFailed || s == StatusResolved
}

// MarshalText implements encoding.TextMarshaler (JSON uses the name).
func (s Status) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("storage: invalid status %d", s)
	}
	return []byte(statusNames[s]), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Status) UnmarshalText(b []byte) error {
	v, err := ParseStatus(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseStatus turns a status name into a Status.
func ParseStatus(name string) (Status, error) {
	for i, n := range statusNames {
		if i > 0 && n == name {
			return Status(i), nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want one of pending, executing, completed, compensating, rolled_back, failed, parked, resolved)", ErrInvalidStatus, name)
}

// StepStatus is the state of one step of a saga.
type StepStatus uint8

// Step statuses.
const (
	StepPending            StepStatus = iota + 1 // not run yet (or interrupted before its result was recorded)
	StepCompleted                                // action succeeded
	StepFailed                                   // action gave up after its retries
	StepCompensated                              // compensation succeeded
	StepCompensationFailed                       // compensation gave up after its retries
)

var stepStatusNames = [...]string{"", "pending", "completed", "failed", "compensated", "compensation_failed"}

func (s StepStatus) String() string {
	if s >= StepPending && s <= StepCompensationFailed {
		return stepStatusNames[s]
	}
	return "step_status(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (s StepStatus) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *StepStatus) UnmarshalText(b []byte) error {
	for i, n := range stepStatusNames {
		if i > 0 && n == string(b) {
			*s = StepStatus(i)
			return nil
		}
	}
	return fmt.Errorf("storage: invalid step status %q", b)
}

// Position is where the event that started a saga sits: a Kafka
// topic-partition and offset. Every saga belongs to the partition of its
// source event; that is the unit of storage and of ownership.
type Position struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Partition identifies a topic-partition.
type Partition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

func (p Partition) String() string { return p.Topic + "/" + strconv.FormatInt(int64(p.Partition), 10) }

// Partition returns the topic-partition of the position.
func (p Position) TopicPartition() Partition { return Partition{p.Topic, p.Partition} }

// Step is the recorded state of one step of a saga.
type Step struct {
	Name      string     `json:"name"`
	Status    StepStatus `json:"status"`
	Attempts  uint32     `json:"attempts"`
	Error     string     `json:"error,omitempty"`
	StartedAt time.Time  `json:"started_at,omitzero"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
	// Compensation attempts, error and end time, once compensation ran.
	CompAttempts uint32    `json:"compensation_attempts,omitempty"`
	CompError    string    `json:"compensation_error,omitempty"`
	CompEndedAt  time.Time `json:"compensated_at,omitzero"`
}

// Saga is one recorded saga instance.
type Saga struct {
	// Name of the saga declaration (see engine.Saga).
	Name string `json:"saga"`
	// Trigger identifies the trigger that started it, e.g. "kafka:orders.created".
	Trigger string `json:"trigger"`
	Status  Status `json:"status"`
	// Source is the position of the event that started the saga. The saga
	// ID is derived from it and the saga name.
	Source         Position  `json:"source"`
	EventTime      time.Time `json:"event_time,omitzero"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	// Context is the saga's data as JSON: the transformer's output, as the
	// steps have since changed it.
	Context   []byte    `json:"-"`
	Steps     []Step    `json:"steps"`
	Error     string    `json:"error,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Version counts the writes of this saga (1 when started); the store
	// sets it. A changelog replay applies a record only over an older one.
	Version uint64 `json:"version"`
	// Origin, set for a keyed saga, is the position of the event that
	// started it; Source is then where the saga lives: the partition of the
	// keys topic that owns its idempotency key (see Saga.ID).
	Origin Position `json:"origin,omitzero"`
	// ConcurrencyKey is the value of the trigger's concurrency key (see
	// engine.WithConcurrencyKey): the saga counts against its limit.
	ConcurrencyKey string `json:"concurrency_key,omitempty"`
	// Definition is the fingerprint of the saga definition the saga runs
	// with (engine.Fingerprint), recorded when its first step starts; ""
	// before that, and for sagas recorded by releases that did not record
	// it (their step names say which definition they ran).
	Definition string `json:"definition,omitempty"`
	// Park says why a parked saga (Status StatusParked) waits; nil
	// otherwise.
	Park *Park `json:"parked,omitempty"`
	// History is what operators did to the saga (retries, context edits,
	// resolutions, cancellations), oldest first, bounded (AppendHistory).
	History []HistoryEntry `json:"history,omitempty"`
	// Wait, set while the saga waits for a reply, an event, a sleep or a
	// retry delay, says what for and until when (record extension 2).
	Wait *Wait `json:"wait,omitempty"`
	// Uncertain lists the steps (by index) whose action's outcome is not
	// known: a command that timed out for good, or was still out when the
	// saga was cancelled. They are compensated like completed steps
	// (record extension 3).
	Uncertain []int `json:"uncertain,omitempty"`
	// Extensions are fields of the record this release does not know (a
	// newer release wrote them); they are kept and written back unchanged.
	Extensions []Extension `json:"-"`

	// rec is the record the store just wrote for this state (Version
	// recVersion), so the changelog mirrors it without encoding it again
	// (TakeRecord); nil once taken.
	rec        []byte
	recVersion uint64
}

// TakeRecord returns the encoded record of s (EncodeSaga) and forgets it:
// the record the store wrote for this state if s is unchanged since (the
// store keeps it on s after a successful Start, Update or Write), else a
// fresh encoding. The engine hands it to the changelog right after the
// write, so a transition is encoded once. The caller must not modify it.
func TakeRecord(s *Saga) []byte {
	rec := s.rec
	s.rec = nil
	if rec != nil && s.recVersion == s.Version {
		return rec
	}
	return EncodeSaga(nil, s)
}

// DropRecord forgets the record the store kept on s (see TakeRecord), so
// it is not held while nothing will take it.
func DropRecord(s *Saga) { s.rec = nil }

// keepRecord notes that rec is the record written for s's current state.
func (s *Saga) keepRecord(rec []byte) { s.rec, s.recVersion = rec, s.Version }

// Park is why and since when a saga is parked, and the status it resumes
// in.
type Park struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// From is the status the saga was in when it was parked (pending,
	// executing or compensating): the status it resumes in, and the one
	// releases that do not know parking see.
	From Status `json:"from"`
}

// stored is the status byte a record of s carries: a parked saga is
// recorded in the status it was parked from (with the park in an
// extension), so that releases that do not know parking read it as that;
// a resolved saga is recorded as failed (with its resolution in an
// extension), so that releases that do not know resolved read it as failed.
func (s *Saga) stored() Status {
	if s.Status == StatusParked && s.Park != nil {
		return s.Park.From
	}
	if s.Status == StatusResolved {
		return StatusFailed
	}
	return s.Status
}

// Extension is a tagged field of a saga record (see record.go).
type Extension struct {
	Tag   uint64
	Value []byte
}

// ID returns the saga's identifier. A keyed saga (one with an idempotency
// key, started through the keys topic: Origin is set) is named by its saga
// and key: "<saga>:key:<escaped key>" (FormatKeyedID), so every event with
// that key names the same saga, wherever it came from. Any other saga is
// named by the position of its event: "<topic>:<partition>:<offset>:<saga>"
// (FormatID), so a re-delivered event maps to the same ID on every member.
func (s *Saga) ID() string {
	if s.Keyed() {
		return FormatKeyedID(s.Name, s.IdempotencyKey)
	}
	return FormatID(s.Source, s.Name)
}

// Keyed reports whether the saga is named by its idempotency key (it was
// started through the keys topic).
func (s *Saga) Keyed() bool { return s.Origin.Topic != "" && s.IdempotencyKey != "" }

// FormatKeyedID names a keyed saga: "<saga>:key:<key>", the key's bytes
// outside [A-Za-z0-9._~-] percent-encoded (so the ID is printable and has
// exactly three ':'-separated parts).
func FormatKeyedID(name, key string) string {
	var b strings.Builder
	b.Grow(len(name) + 5 + len(key))
	b.WriteString(name)
	b.WriteString(":key:")
	const hexd = "0123456789ABCDEF"
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// Ref is a parsed saga ID: a position (Pos, Name) or a key (Name, Key).
type Ref struct {
	Name  string
	Keyed bool
	Pos   Position // position IDs
	Key   string   // keyed IDs
}

// ParseRef parses either form of saga ID.
func ParseRef(id string) (Ref, error) {
	if name, esc, ok := strings.Cut(id, ":key:"); ok && ValidName(name) && !strings.Contains(esc, ":") {
		key, err := unescapeKey(esc)
		if err != nil || key == "" {
			return Ref{}, fmt.Errorf("%w: %q: bad key", ErrInvalidID, id)
		}
		return Ref{Name: name, Keyed: true, Key: key}, nil
	}
	pos, name, err := ParseID(id)
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %q (want <topic>:<partition>:<offset>:<saga> or <saga>:key:<key>)", ErrInvalidID, id)
	}
	return Ref{Name: name, Pos: pos}, nil
}

func unescapeKey(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("short escape")
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", err
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// Clone returns a deep copy of s.
func (s *Saga) Clone() *Saga {
	c := *s
	c.rec = nil // the clone is changed on its own; its record is encoded afresh
	c.Context = append([]byte(nil), s.Context...)
	c.Steps = append([]Step(nil), s.Steps...)
	c.Extensions = append([]Extension(nil), s.Extensions...)
	c.History = append([]HistoryEntry(nil), s.History...) // entries are never changed in place
	if s.Park != nil {
		p := *s.Park
		c.Park = &p
	}
	if s.Wait != nil {
		w := *s.Wait
		c.Wait = &w
	}
	c.Uncertain = append([]int(nil), s.Uncertain...)
	return &c
}

// FormatID builds a saga ID from the source position and the saga name.
func FormatID(pos Position, name string) string {
	var b strings.Builder
	b.Grow(len(pos.Topic) + len(name) + 24)
	b.WriteString(pos.Topic)
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(int64(pos.Partition), 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatInt(pos.Offset, 10))
	b.WriteByte(':')
	b.WriteString(name)
	return b.String()
}

// ParseID splits a saga ID into its source position and saga name.
func ParseID(id string) (Position, string, error) {
	parts := strings.Split(id, ":")
	if len(parts) != 4 || parts[0] == "" || parts[3] == "" {
		return Position{}, "", fmt.Errorf("%w: %q (want <topic>:<partition>:<offset>:<saga>)", ErrInvalidID, id)
	}
	p, err := strconv.ParseInt(parts[1], 10, 32)
	if err != nil || p < 0 {
		return Position{}, "", fmt.Errorf("%w: %q: bad partition", ErrInvalidID, id)
	}
	o, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil || o < 0 {
		return Position{}, "", fmt.Errorf("%w: %q: bad offset", ErrInvalidID, id)
	}
	return Position{Topic: parts[0], Partition: int32(p), Offset: o}, parts[3], nil
}

// ValidName reports whether s may be used as a saga name: 1 to 200
// characters from [A-Za-z0-9._-]. Topic names follow the same rule (and
// local topics may start with "~").
func ValidName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
