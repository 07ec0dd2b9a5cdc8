package engine

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"unicode/utf8"
)

// The fast path of PassThrough triggers: a saga whose context is the event
// as it is needs only to know that the value is one JSON object (the
// context is the value's own bytes) and, with a field key, that field's
// value. Both come from scanning the bytes; decoding the whole object into
// a map (Event.JSON) would cost most of the time of recording a start.
// Whatever the scan cannot answer exactly as Event.JSON and Key.value
// would — a missing field, a key that is an object, null or empty —
// goes the slow way, which also writes the error.

var passThroughPC = reflect.ValueOf(PassThrough).Pointer()

// isPassThrough reports whether fn is PassThrough itself.
func isPassThrough(fn Transformer) bool {
	return fn != nil && reflect.ValueOf(fn).Pointer() == passThroughPC
}

// isObject reports whether v decodes as exactly one JSON object, as
// decodeObject would accept it: valid UTF-8, valid JSON, an object.
func isObject(v []byte) bool {
	t := bytes.TrimLeft(v, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && utf8.Valid(v) && json.Valid(v)
}

// scanField returns the key text of the field at path (dots separate
// nested objects) in the valid JSON object v — a string's value, a
// number's text, true or false — as Key.value reads it from Event.JSON:
// the last of repeated names wins. ok is false when the field is missing
// or holds anything else; the caller then takes the slow path.
func scanField(v []byte, path string) (s string, ok bool) {
	cur := v
	for {
		name, rest, nested := strings.Cut(path, ".")
		val, found := memberValue(cur, name)
		if !found {
			return "", false
		}
		if !nested {
			return keyText(val)
		}
		cur, path = val, rest
	}
}

// keyText turns a raw JSON value into key text, as Key.value does with
// the decoded value.
func keyText(val []byte) (string, bool) {
	switch {
	case len(val) == 0:
		return "", false
	case val[0] == '"':
		if bytes.IndexByte(val, '\\') < 0 {
			return string(val[1 : len(val)-1]), true
		}
		var s string
		if json.Unmarshal(val, &s) != nil {
			return "", false
		}
		return s, true
	case val[0] == '-' || val[0] >= '0' && val[0] <= '9':
		return string(val), true // json.Number keeps the text
	case string(val) == "true" || string(val) == "false":
		return string(val), true
	}
	return "", false
}

// memberValue returns the raw value of the last member called name in the
// JSON object obj (which must be valid JSON); found is false when obj is
// not an object or has no such member.
func memberValue(obj []byte, name string) (val []byte, found bool) {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil, false
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil, false
	}
	for i < len(obj) {
		kEnd := skipString(obj, i)
		key := obj[i:kEnd]
		i = skipSpace(obj, kEnd)
		i = skipSpace(obj, i+1) // ':'
		vEnd := skipValue(obj, i)
		if keyEquals(key, name) {
			val, found = obj[i:vEnd], true
		}
		i = skipSpace(obj, vEnd)
		if i >= len(obj) || obj[i] == '}' {
			break
		}
		i = skipSpace(obj, i+1) // ','
	}
	return val, found
}

// keyEquals compares a raw JSON string (with quotes) to name, unescaping
// only when the raw text has escapes.
func keyEquals(raw []byte, name string) bool {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == name
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] ('"').
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) && !(b[i] == ',' || b[i] == '}' || b[i] == ']' || b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
