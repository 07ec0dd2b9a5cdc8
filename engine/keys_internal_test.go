package engine

import (
	"context"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/sagaz-go/sagaz/storage"
)

func TestSplitPosition(t *testing.T) {
	for _, c := range []struct {
		in        string
		topic     string
		partition int32
		offset    int64
		ok        bool
	}{
		{"orders:3:42", "orders", 3, 42, true},
		{"a.b-c_d:0:0", "a.b-c_d", 0, 0, true},
		{"t:2147483647:9223372036854775807", "t", 2147483647, 9223372036854775807, true},
		{"t:2147483648:0", "", 0, 0, false},          // partition past int32
		{"t:0:9223372036854775808", "", 0, 0, false}, // offset past int64
		{"t:-1:0", "", 0, 0, false},
		{"t:1:-5", "", 0, 0, false},
		{"t:+1:0", "", 0, 0, false},
		{":1:2", "", 0, 0, false},
		{"a:b:1:2", "", 0, 0, false},
		{"t:1:", "", 0, 0, false},
		{"t::1", "", 0, 0, false},
		{"t:1", "", 0, 0, false},
		{"t", "", 0, 0, false},
		{"", "", 0, 0, false},
		{"t:1:2x", "", 0, 0, false},
	} {
		topic, p, o, ok := splitPosition([]byte(c.in))
		if ok != c.ok || string(topic) != c.topic || p != c.partition || o != c.offset {
			t.Errorf("splitPosition(%q) = %q, %d, %d, %v; want %q, %d, %d, %v", c.in, topic, p, o, ok, c.topic, c.partition, c.offset, c.ok)
		}
		pos, err := ParseEventID(c.in)
		if (err == nil) != c.ok || c.ok && pos != (storage.Position{Topic: c.topic, Partition: c.partition, Offset: c.offset}) {
			t.Errorf("ParseEventID(%q) = %v, %v", c.in, pos, err)
		}
		if c.ok && EventID(pos) != c.in {
			t.Errorf("EventID(ParseEventID(%q)) = %q", c.in, EventID(pos))
		}
	}
}

func keysTestRoutes(t *testing.T) *Routes {
	t.Helper()
	reg := NewRegistry()
	reg.Register(Saga{
		Name:     "orders",
		Steps:    []Step{{Name: "a", Action: func(context.Context, *Run) error { return nil }}},
		Triggers: []Trigger{Kafka("orders.created", PassThrough, WithKey(KeyField("id")))},
	})
	rs, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// A start record's headers carry the saga to the keys partition: startOf
// reads back what StartHeaders wrote, with the declared strings (not a copy
// per record) where they are the same.
func TestStartHeadersRoundTrip(t *testing.T) {
	rs := keysTestRoutes(t)
	e := &Engine{routes: rs}
	rt := rs.All()[0]
	for _, conc := range []string{"", "customer-7"} {
		s := &storage.Saga{Name: "orders", Trigger: rt.TriggerID(), IdempotencyKey: "o-1",
			ConcurrencyKey: conc, Origin: storage.Position{Topic: "orders.created", Partition: 5, Offset: 1234567},
			EventTime: time.Unix(100, 0), Context: []byte(`{"id":"o-1"}`)}
		hs := StartHeaders(s)
		if want := 4 + min(len(conc), 1); len(hs) != want {
			t.Fatalf("%d headers, want %d", len(hs), want)
		}
		if got := string(hs[3].Value); got != "orders.created:5:1234567" {
			t.Fatalf("origin header %q", got)
		}
		for i := range hs { // each value is its own: appending to one leaves the next alone
			if cap(hs[i].Value) != len(hs[i].Value) {
				t.Fatalf("header %s: capacity %d past its length %d", hs[i].Key, cap(hs[i].Value), len(hs[i].Value))
			}
		}
		ev := &Event{Topic: "orders-keys", Partition: 2, Offset: 9, Timestamp: s.EventTime, Value: s.Context, Headers: hs}
		got, err := e.startOf(ev)
		if err != nil {
			t.Fatal(err)
		}
		want := storage.Saga{Name: "orders", Trigger: rt.TriggerID(), IdempotencyKey: "o-1", ConcurrencyKey: conc,
			Source: storage.Position{Topic: "orders-keys", Partition: 2, Offset: 9}, Origin: s.Origin,
			EventTime: s.EventTime}
		if string(got.Context) != string(s.Context) {
			t.Fatalf("context %q", got.Context)
		}
		got.Context = nil
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("startOf(StartHeaders(s)) = %+v, want %+v", *got, want)
		}
		if unsafe.StringData(got.Name) != unsafe.StringData(rt.Saga.Name) ||
			unsafe.StringData(got.Trigger) != unsafe.StringData(rt.TriggerID()) ||
			unsafe.StringData(got.Origin.Topic) != unsafe.StringData(rt.Trigger.target) {
			t.Fatal("startOf made its own copies of the declared saga, trigger and topic names")
		}
	}
	// A trigger or an origin topic this binary does not declare is kept as
	// the record says.
	s := &storage.Saga{Name: "orders", Trigger: "kafka:gone", IdempotencyKey: "k",
		Origin: storage.Position{Topic: "old.topic", Partition: 1, Offset: 2}}
	got, err := e.startOf(&Event{Topic: "orders-keys", Headers: StartHeaders(s)})
	if err != nil || got.Trigger != "kafka:gone" || got.Origin.Topic != "old.topic" {
		t.Fatalf("startOf = %+v, %v", got, err)
	}
}

// The hot path's allocations: a start record's headers in two, and a
// start read back in two (the saga and its idempotency key).
func TestStartRecordAllocations(t *testing.T) {
	rs := keysTestRoutes(t)
	e := &Engine{routes: rs}
	s := &storage.Saga{Name: "orders", Trigger: rs.All()[0].TriggerID(), IdempotencyKey: "o-1",
		Origin: storage.Position{Topic: "orders.created", Partition: 5, Offset: 1234567}}
	if n := testing.AllocsPerRun(100, func() { _ = StartHeaders(s) }); n > 2 {
		t.Errorf("StartHeaders: %.0f allocations, want at most 2", n)
	}
	ev := &Event{Topic: "orders-keys", Headers: StartHeaders(s)}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := e.startOf(ev); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("startOf: %.0f allocations, want at most 2", n)
	}
}
