package storage

import (
	"encoding/binary"
	"time"
	"unicode/utf8"
)

// A saga's history: what operators did to it (retries, context edits,
// resolutions, cancellations), kept in its record (extension 4, record.go)
// so that it moves with the saga through the changelog. It is bounded:
// AppendHistory keeps the last MaxHistoryEntries entries within
// MaxHistoryBytes.

// Action is what an operator did to a saga.
type Action string

// Operator actions recorded in a saga's history.
const (
	// ActionRetry: a failed saga resumed where it stopped.
	ActionRetry Action = "retry"
	// ActionRetryWithContext: a failed saga resumed with a context the
	// operator gave; the entry keeps the context it replaced.
	ActionRetryWithContext Action = "retry_with_context"
	// ActionResolve: a failed saga marked resolved by hand.
	ActionResolve Action = "resolve"
	// ActionCancel: a pending or executing saga cancelled.
	ActionCancel Action = "cancel"
)

// Bounds of a saga's history.
const (
	// MaxHistoryEntries is how many entries a saga keeps: the oldest go
	// first.
	MaxHistoryEntries = 50
	// MaxPreviousContextBytes bounds the replaced context an entry keeps
	// (its first bytes, cut at a UTF-8 boundary).
	MaxPreviousContextBytes = 32 << 10
	// MaxHistoryBytes bounds the encoded history of one saga (every saga
	// state must fit one changelog record, next to a context of up to
	// engine.DefaultMaxContextBytes): past it the oldest entries lose their
	// previous context first, then the oldest entries go.
	MaxHistoryBytes = 64 << 10
	// MaxReasonBytes bounds an entry's reason; MaxByBytes who it names.
	MaxReasonBytes = 1024
	MaxByBytes     = 256
)

// HistoryEntry is one operator action on a saga.
type HistoryEntry struct {
	At     time.Time `json:"at"`
	Action Action    `json:"action"`
	// Reason is what the operator said (required to resolve).
	Reason string `json:"reason,omitempty"`
	// By names who did it: the API's authenticated caller ("" when the API
	// takes no token).
	By string `json:"by,omitempty"`
	// PreviousContext is the context a retry_with_context replaced: all of
	// it, or its first MaxPreviousContextBytes (then not JSON in general),
	// or nothing once the history outgrew MaxHistoryBytes and dropped it.
	// PreviousContextSize is the size of the whole replaced context.
	PreviousContext     []byte `json:"-"`
	PreviousContextSize int    `json:"-"`
}

// PreviousContextTruncated reports whether the entry keeps less than the
// whole context it replaced.
func (h *HistoryEntry) PreviousContextTruncated() bool {
	return len(h.PreviousContext) < h.PreviousContextSize
}

// AppendHistory records an operator action in s's history, within the
// bounds: the reason and who did it are cut to MaxReasonBytes and
// MaxByBytes, the previous context to MaxPreviousContextBytes (its size
// kept in PreviousContextSize when not set); then the oldest entries past
// MaxHistoryEntries go, and while the history is over MaxHistoryBytes the
// oldest entries' previous contexts go, then the oldest entries (the new
// one always stays).
func AppendHistory(s *Saga, e HistoryEntry) {
	e.Reason = cutUTF8(e.Reason, MaxReasonBytes)
	e.By = cutUTF8(e.By, MaxByBytes)
	if e.PreviousContextSize < len(e.PreviousContext) {
		e.PreviousContextSize = len(e.PreviousContext)
	}
	if len(e.PreviousContext) > MaxPreviousContextBytes {
		e.PreviousContext = []byte(cutUTF8(string(e.PreviousContext), MaxPreviousContextBytes))
	} else {
		e.PreviousContext = append([]byte(nil), e.PreviousContext...)
	}
	h := append(append(make([]HistoryEntry, 0, len(s.History)+1), s.History...), e)
	if len(h) > MaxHistoryEntries {
		h = h[len(h)-MaxHistoryEntries:]
	}
	size := historySize(h)
	for i := 0; size > MaxHistoryBytes && i < len(h)-1; i++ {
		if n := len(h[i].PreviousContext); n > 0 {
			h[i].PreviousContext = nil
			size -= n
		}
	}
	for size > MaxHistoryBytes && len(h) > 1 {
		size -= entrySize(&h[0])
		h = h[1:]
	}
	s.History = h
}

// cutUTF8 returns at most n bytes of s, cut at a rune boundary.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// historySize is the size of h's encoding, near enough (each varint
// counted at its largest).
func historySize(h []HistoryEntry) int {
	n := 20
	for i := range h {
		n += entrySize(&h[i])
	}
	return n
}

func entrySize(e *HistoryEntry) int {
	return 10 + 10 + len(e.Action) + 10 + len(e.Reason) + 10 + len(e.By) + 10 + 10 + len(e.PreviousContext) + 10
}

// appendHistoryExt appends the value of extension 4: the record version a
// resolution was written with (0: the saga is not resolved), then the
// entries, each length-prefixed so that later releases may add fields at
// their end:
//
//	uvarint resolved-at version, uvarint entry count, then per entry:
//	bytes   varint at, str action, str reason, str by,
//	        uvarint previous context size, bytes previous context
func appendHistoryExt(dst []byte, s *Saga) []byte {
	var resolved uint64
	if s.Status == StatusResolved {
		resolved = s.Version
	}
	dst = binary.AppendUvarint(dst, resolved)
	dst = binary.AppendUvarint(dst, uint64(len(s.History)))
	var eb []byte
	for i := range s.History {
		e := &s.History[i]
		eb = appendTime(eb[:0], e.At)
		eb = appendStr(eb, string(e.Action))
		eb = appendStr(eb, e.Reason)
		eb = appendStr(eb, e.By)
		eb = binary.AppendUvarint(eb, uint64(e.PreviousContextSize))
		eb = binary.AppendUvarint(eb, uint64(len(e.PreviousContext)))
		eb = append(eb, e.PreviousContext...)
		dst = binary.AppendUvarint(dst, uint64(len(eb)))
		dst = append(dst, eb...)
	}
	return dst
}

// decodeHistoryExt decodes extension 4: the history and the record version
// the resolution was written with (0: none).
func decodeHistoryExt(val []byte) ([]HistoryEntry, uint64, error) {
	d := decoder{b: val}
	resolved := d.uvarint()
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each entry takes at least one byte
		d.fail("history entry count")
	}
	var h []HistoryEntry
	if d.err == nil && n > 0 {
		h = make([]HistoryEntry, 0, n)
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		ed := decoder{b: d.bytes()}
		e := HistoryEntry{At: ed.time(), Action: Action(ed.str()), Reason: ed.str(), By: ed.str()}
		size := ed.uvarint()
		if prev := ed.bytes(); len(prev) > 0 {
			e.PreviousContext = append([]byte(nil), prev...)
		}
		if size > 1<<40 || size < uint64(len(e.PreviousContext)) {
			ed.fail("history: previous context size")
		}
		e.PreviousContextSize = int(size)
		// Bytes left in the entry are fields of a later release.
		if ed.err != nil {
			d.fail("history entry")
		}
		h = append(h, e)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes in the history")
	}
	return h, resolved, d.err
}
