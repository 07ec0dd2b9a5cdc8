package engine

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Event outcomes. A webhook call or a manual event is answered (202) before
// it is consumed, so the answer links to what it did: when the member that
// owns the event's partition consumes it, it records, in the same
// transaction as the batch, one meta record per event ("ev/<offset>") that
// says, per trigger the event reached, the saga it started or joined, or
// why it started none. GET /api/events/{topic}:{partition}:{offset} reads
// it. Outcome records expire with the sagas (the retention).

// RouteOutcome is what an event did for one trigger.
type RouteOutcome struct {
	Saga    string `json:"saga"`
	Trigger string `json:"trigger"`
	// Outcome: "saga" (SagaID names it: started by this event, or an
	// existing one of the same key), "ignored" (the transformer said so),
	// or "dead_letter" (Reason and Error say why).
	Outcome string `json:"outcome"`
	SagaID  string `json:"saga_id,omitempty"`
	Reason  Reason `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
}

// EventOutcome is an event's outcome record.
type EventOutcome struct {
	At     time.Time      `json:"consumed_at"`
	Routes []RouteOutcome `json:"routes"`
}

// OutcomeKey is the meta key of the outcome of the event at offset.
func OutcomeKey(offset int64) string { return "ev/" + fmt.Sprintf("%016x", offset) }

// OutcomePrefix starts every outcome's meta key.
const OutcomePrefix = "ev/"

// EncodeOutcome encodes an outcome record: its time (8 bytes, Unix ns, so
// expiry reads no JSON), then JSON.
func EncodeOutcome(o EventOutcome) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(o.At.UnixNano()))
	j, _ := json.Marshal(o)
	return append(b, j...)
}

// DecodeOutcome decodes an outcome record.
func DecodeOutcome(b []byte) (EventOutcome, error) {
	var o EventOutcome
	if len(b) < 8 {
		return o, fmt.Errorf("outcome record of %d bytes", len(b))
	}
	err := json.Unmarshal(b[8:], &o)
	return o, err
}

// OutcomeTime reads an outcome record's time without decoding it.
func OutcomeTime(b []byte) (time.Time, bool) {
	if len(b) < 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b))), true
}

// ParseEventID parses "<topic>:<partition>:<offset>".
func ParseEventID(id string) (storage.Position, error) {
	topic, p, o, ok := splitPosition([]byte(id))
	if !ok {
		return storage.Position{}, fmt.Errorf("event id %q: want <topic>:<partition>:<offset>", id)
	}
	return storage.Position{Topic: string(topic), Partition: p, Offset: o}, nil
}

// EventID names an event by its position.
func EventID(p storage.Position) string {
	return p.Topic + ":" + strconv.FormatInt(int64(p.Partition), 10) + ":" + strconv.FormatInt(p.Offset, 10)
}

// recordsOutcome reports whether the outcome of ev is recorded: webhook
// calls and manual events consumed from the events topic (a cron tick's
// saga is named by its schedule's state).
func recordsOutcome(ev *Event, synthetic bool) bool {
	return synthetic && (ev.Source == SourceWebhook || ev.Source == SourceManual)
}
