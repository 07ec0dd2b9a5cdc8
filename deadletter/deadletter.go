// Package deadletter reads the dead-letter topic and replays dead letters to
// the topics they came from.
//
// A dead letter is a record the consumer could not turn into a saga (see the
// consumer package's Header constants): it keeps the original key, value and
// headers and adds sagaz.dlq.* headers (reason, error, saga, trigger, group)
// and sagaz.original.* headers (topic, partition, offset, timestamp).
//
// Every call uses short-lived franz-go clients over Config.Client and is
// bounded: List reads at most Config.MaxScan records, Replay at most
// MaxReplay dead letters, each within Config.Timeout.
package deadletter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
)

// HeaderReplayOf marks a replayed record: "<dead-letter topic>/<partition>/<offset>"
// of the dead letter it was made from.
const HeaderReplayOf = "sagaz.replay.of"

// MaxReplay is the most dead letters one Replay call takes.
const MaxReplay = 1000

// Config configures a Reader.
type Config struct {
	// Client holds the connection options (seed brokers, TLS, SASL, client
	// id). Required.
	Client []kgo.Opt
	// Topic is the dead-letter topic. Required.
	Topic string
	// MaxScan bounds the records one List call reads (default 5000).
	MaxScan int
	// Timeout bounds one List or Replay call (default 15s).
	Timeout time.Duration
	// PreviewBytes bounds the value preview of a listed dead letter
	// (default 1024); keys and header values get a quarter of it.
	PreviewBytes int
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Client) == 0 {
		errs = append(errs, errors.New("deadletter: Client options are required (at least the seed brokers)"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("deadletter: Topic is required"))
	}
	if c.MaxScan < 0 || c.Timeout < 0 || c.PreviewBytes < 0 {
		errs = append(errs, errors.New("deadletter: MaxScan, Timeout and PreviewBytes must not be negative"))
	}
	return errors.Join(errs...)
}

// Reader lists and replays the dead letters of one topic.
type Reader struct {
	cfg Config
}

// New returns a Reader. It connects to nothing until it is used.
func New(cfg Config) (*Reader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxScan == 0 {
		cfg.MaxScan = 5000
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.PreviewBytes == 0 {
		cfg.PreviewBytes = 1024
	}
	return &Reader{cfg: cfg}, nil
}

// Topic is the dead-letter topic.
func (r *Reader) Topic() string { return r.cfg.Topic }

// Letter is one dead letter as listed.
type Letter struct {
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
	// Reason is the sagaz.dlq.reason header: decode, transform_error,
	// transform_panic, missing_key, bad_context, oversized, no_route.
	Reason  string `json:"reason"`
	Error   string `json:"error,omitempty"`
	Saga    string `json:"saga,omitempty"`
	Trigger string `json:"trigger,omitempty"`
	Group   string `json:"group,omitempty"`
	// Original is where the record was before it was dead-lettered.
	Original Original `json:"original"`
	// Key and Value are previews (invalid UTF-8 replaced), cut at
	// PreviewBytes; ValueBytes is the value's full size.
	Key            string `json:"key"`
	Value          string `json:"value"`
	ValueBytes     int    `json:"value_bytes"`
	ValueTruncated bool   `json:"value_truncated,omitempty"`
	// ValueDropped: the value was too large for the dead-letter topic and
	// was left out; such a dead letter cannot be replayed.
	ValueDropped bool `json:"value_dropped,omitempty"`
	// Headers are the original record's own headers (not sagaz.dlq.* or
	// sagaz.original.*).
	Headers []Header `json:"headers"`
}

// Original is the position of a dead letter's record before it was
// dead-lettered.
type Original struct {
	Topic     string    `json:"topic"`
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp,omitzero"`
}

// Header is one record header, its value as text (a preview).
type Header struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Coord names a dead letter: its partition and offset in the dead-letter
// topic.
type Coord struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

func (c Coord) String() string { return fmt.Sprintf("%d/%d", c.Partition, c.Offset) }

// ParseCoord reads "<partition>/<offset>" (or "<partition>:<offset>").
func ParseCoord(s string) (Coord, error) {
	i := strings.IndexAny(s, "/:")
	if i > 0 {
		p, perr := strconv.ParseInt(s[:i], 10, 32)
		o, oerr := strconv.ParseInt(s[i+1:], 10, 64)
		if perr == nil && oerr == nil && p >= 0 && o >= 0 {
			return Coord{Partition: int32(p), Offset: o}, nil
		}
	}
	return Coord{}, fmt.Errorf("%w: dead letter %q: want <partition>/<offset>, e.g. 0/42", ErrInvalidQuery, s)
}

// isAdded reports whether a header was added by dead-lettering (so it is
// not one of the original record's own).
func isAdded(key string) bool {
	return strings.HasPrefix(key, "sagaz.dlq.") || strings.HasPrefix(key, "sagaz.original.")
}

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// preview returns b as valid UTF-8, cut at n bytes, and whether it was cut.
func preview(b []byte, n int) (string, bool) {
	cut := len(b) > n
	if cut {
		b = b[:n]
		for i := 0; i < utf8.UTFMax-1 && len(b) > 0; i++ { // do not split a rune
			if r, size := utf8.DecodeLastRune(b); r != utf8.RuneError || size != 1 {
				break
			}
			b = b[:len(b)-1]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), cut
}

func (r *Reader) letter(rec *kgo.Record, mask func(saga string, value []byte) []byte) Letter {
	l := Letter{Partition: rec.Partition, Offset: rec.Offset, Timestamp: rec.Timestamp.UTC(),
		Reason: header(rec, consumer.HeaderReason), Error: header(rec, consumer.HeaderError), Saga: header(rec, consumer.HeaderSaga),
		Trigger: header(rec, consumer.HeaderTrigger), Group: header(rec, consumer.HeaderGroup),
		ValueBytes: len(rec.Value), ValueDropped: header(rec, consumer.HeaderValueDropped) == "true", Headers: []Header{}}
	l.Original.Topic = header(rec, consumer.HeaderOrigTopic)
	if p, err := strconv.ParseInt(header(rec, consumer.HeaderOrigPartition), 10, 32); err == nil {
		l.Original.Partition = int32(p)
	}
	if o, err := strconv.ParseInt(header(rec, consumer.HeaderOrigOffset), 10, 64); err == nil {
		l.Original.Offset = o
	}
	if ms, err := strconv.ParseInt(header(rec, consumer.HeaderOrigTimestamp), 10, 64); err == nil {
		l.Original.Timestamp = time.UnixMilli(ms).UTC()
	}
	small := max(r.cfg.PreviewBytes/4, 16)
	l.Key, _ = preview(rec.Key, small)
	value := rec.Value
	if mask != nil && len(value) > 0 {
		value = mask(l.Saga, value)
	}
	l.Value, l.ValueTruncated = preview(value, r.cfg.PreviewBytes)
	for _, h := range rec.Headers {
		if !isAdded(h.Key) {
			v, _ := preview(h.Value, small)
			l.Headers = append(l.Headers, Header{Key: h.Key, Value: v})
		}
	}
	return l
}
