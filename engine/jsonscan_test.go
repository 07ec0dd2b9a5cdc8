package engine

import (
	"testing"
)

// The scan must answer exactly as decoding does: isObject as decodeObject,
// and a scanned key as Key.value on a decoded event (whenever the scan
// answers at all).
func checkScanAgrees(t *testing.T, v []byte, field string) {
	t.Helper()
	_, derr := decodeObject(v)
	if got := isObject(v); got != (derr == nil) {
		t.Fatalf("isObject(%q) = %v, decodeObject error = %v", v, got, derr)
	}
	if derr != nil || field == "" {
		return
	}
	k := KeyField(field)
	want, werr := k.value("s", &Event{Value: v})
	got, gerr := k.valueOf("s", &Event{Value: v}, true)
	if got != want || (gerr == nil) != (werr == nil) {
		t.Fatalf("field %q of %q: scanned %q (%v), decoded %q (%v)", field, v, got, gerr, want, werr)
	}
	if s, ok := scanField(v, field); ok && s != "" && s != want {
		t.Fatalf("scanField(%q, %q) = %q, decoded %q", v, field, s, want)
	}
}

func TestScanAgreesWithDecode(t *testing.T) {
	for _, c := range []struct{ v, field string }{
		{`{"id":"o-1"}`, "id"},
		{` {"id" : "o-1" , "amount":12.5}`, "amount"},
		{`{"id":"a","id":"b"}`, "id"},                // the last wins, as in a map
		{`{"i\u0064":"esc"}`, "id"},                  // escaped name
		{`{"id":"a\"b\\c\u00e9"}`, "id"},             // escaped value
		{`{"id":1e400}`, "id"},                       // number text kept
		{`{"id":-0.5}`, "id"},                        //
		{`{"id":true}`, "id"},                        //
		{`{"id":null}`, "id"},                        // slow path: missing
		{`{"id":""}`, "id"},                          // slow path: empty
		{`{"id":{"x":1}}`, "id"},                     // slow path: an object
		{`{"a":{"b":{"c":"deep"}},"a2":1}`, "a.b.c"}, // nested
		{`{"a":[{"b":"x"}],"b":"y"}`, "b"},           // arrays skipped
		{`{"s":"}{,:\"]","id":"after"}`, "id"},       // brackets in strings
		{`{"a":{"id":"inner"},"id":"outer"}`, "id"},  // only the top level
		{`{"a":{"b":1}}`, "a.b.c"},                   // through a number
		{`{}`, "id"},                                 //
		{`[]`, "id"}, {`null`, "id"}, {`"s"`, "id"}, {``, "id"}, {`{"id":"x"} {}`, "id"},
		{"{\"id\":\"\xff\"}", "id"}, {`{"id":"x",}`, "id"}, {"\t{\"id\":\"ws\"}\n", "id"},
	} {
		checkScanAgrees(t, []byte(c.v), c.field)
	}
}

func FuzzScanAgreesWithDecode(f *testing.F) {
	for _, s := range []string{`{"id":"o-1","n":{"id":2}}`, `{"id":"a","id":"b"}`, `{"i\u0064":"\u00e9"}`, `{"a":{"b":[1,{"c":"}"}]}}`} {
		f.Add([]byte(s), "id")
		f.Add([]byte(s), "a.b")
	}
	f.Fuzz(func(t *testing.T, v []byte, field string) {
		checkScanAgrees(t, v, field)
	})
}

func TestIsPassThrough(t *testing.T) {
	if !isPassThrough(PassThrough) || isPassThrough(nil) ||
		isPassThrough(func(ev *Event) (map[string]any, error) { return ev.JSON() }) {
		t.Fatal("isPassThrough must recognise PassThrough alone")
	}
}
