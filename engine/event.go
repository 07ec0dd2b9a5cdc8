package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Source is where an event comes from.
type Source string

// The four sources a trigger can name.
const (
	SourceKafka   Source = "kafka"   // a record on a Kafka topic
	SourceCron    Source = "cron"    // a schedule's tick
	SourceWebhook Source = "webhook" // an HTTP call to /webhooks/{name}
	SourceManual  Source = "manual"  // an event fired by hand (/api/fire, Fire)
)

// Valid reports whether s is one of the four sources.
func (s Source) Valid() bool {
	return s == SourceKafka || s == SourceCron || s == SourceWebhook || s == SourceManual
}

// Headers of synthetic events: webhook calls and manual events are produced
// to Kafka (the events topic) carrying their source and name, and reach the
// triggers through the consumer like any record (docs/architecture.md).
const (
	HeaderSource         = "sagaz.source"          // webhook, manual or cron
	HeaderName           = "sagaz.name"            // webhook name, event type or schedule
	HeaderEventID        = "sagaz.event_id"        // unique id given when the event was accepted
	HeaderIdempotencyKey = "sagaz.idempotency_key" // the caller's Idempotency-Key, for triggers that declare none
)

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Event is what a trigger's transformer sees. Every source is delivered the
// same way: a Kafka record, with the record's coordinates.
//
// An Event is not safe for concurrent use (JSON caches its result).
type Event struct {
	Source Source
	// Name is the webhook name, the manual event type or the schedule id;
	// empty for plain Kafka records.
	Name      string
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time

	decoded    bool
	fields     map[string]any
	fieldCount int
	decodeErr  error
}

// JSON decodes the value as a JSON object (numbers as json.Number, so keys
// and amounts keep their exact text). A value that is not valid UTF-8 does
// not decode (JSON text is UTF-8; decoding would replace the bad bytes and
// make different values equal). The result is cached and belongs to
// the event: do not modify it (use maps.Clone). A transformer may return it
// as is; the event's bytes are then stored as the saga's context. A value that is empty or not a JSON object gives a
// *DecodeError.
func (e *Event) JSON() (map[string]any, error) {
	if !e.decoded {
		e.decoded = true
		e.fields, e.decodeErr = decodeObject(e.Value)
		e.fieldCount = len(e.fields)
	}
	return e.fields, e.decodeErr
}

func decodeObject(v []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(v)) == 0 {
		return nil, &DecodeError{}
	}
	// JSON text is UTF-8 (RFC 8259). encoding/json would turn invalid bytes
	// into U+FFFD, so two different values (two order ids) could become one
	// key: refuse them instead.
	if !utf8.Valid(v) {
		return nil, &DecodeError{Err: errors.New("not valid UTF-8")}
	}
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, &DecodeError{Err: err}
	}
	if m == nil {
		return nil, &DecodeError{Err: errors.New("null")}
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, &DecodeError{Err: errors.New("trailing data after the object")}
	}
	return m, nil
}

// Header returns the value of the first header with the given key.
func (e *Event) Header(key string) ([]byte, bool) {
	for _, h := range e.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return nil, false
}

// Field returns a field of the JSON value; name may be a dotted path
// ("customer.id"). It returns false when the value does not decode or the
// field is absent.
func (e *Event) Field(name string) (any, bool) {
	m, err := e.JSON()
	if err != nil {
		return nil, false
	}
	return lookup(m, name)
}

func lookup(m map[string]any, path string) (any, bool) {
	var cur any = m
	for part := range strings.SplitSeq(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = obj[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func fieldNames(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
