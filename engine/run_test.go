package engine_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
)

func TestRunTypedAccessors(t *testing.T) {
	const data = `{"amount": 42, "whole": 42.0, "exp": 1e3, "price": 12.5, "big": 12345678901234567890,
		"text": "42", "yes": true, "no": false, "none": null, "obj": {"a": 1}, "list": [1]}`
	r := engine.NewRun(data)
	ints := map[string]int64{"amount": 42, "whole": 42, "exp": 1000}
	for k, want := range ints {
		if got, err := r.Int(k); err != nil || got != want {
			t.Errorf("Int(%q) = %d, %v; want %d", k, got, err, want)
		}
	}
	for _, k := range []string{"price", "big", "text", "yes", "obj", "list"} {
		if got, err := r.Int(k); !errors.Is(err, engine.ErrFieldType) || got != 0 {
			t.Errorf("Int(%q) = %d, %v; want ErrFieldType", k, got, err)
		}
	}
	floats := map[string]float64{"amount": 42, "price": 12.5, "big": 12345678901234567890}
	for k, want := range floats {
		if got, err := r.Float(k); err != nil || got != want {
			t.Errorf("Float(%q) = %v, %v; want %v", k, got, err, want)
		}
	}
	for _, k := range []string{"text", "yes", "obj"} {
		if _, err := r.Float(k); !errors.Is(err, engine.ErrFieldType) {
			t.Errorf("Float(%q): %v, want ErrFieldType", k, err)
		}
	}
	if b, err := r.Bool("yes"); err != nil || !b {
		t.Errorf("Bool(yes) = %v, %v", b, err)
	}
	if b, err := r.Bool("no"); err != nil || b {
		t.Errorf("Bool(no) = %v, %v", b, err)
	}
	if _, err := r.Bool("text"); !errors.Is(err, engine.ErrFieldType) {
		t.Errorf("Bool(text): %v, want ErrFieldType", err)
	}
	for _, k := range []string{"missing", "none"} {
		if _, err := r.Int(k); !errors.Is(err, engine.ErrNoField) {
			t.Errorf("Int(%q): %v, want ErrNoField", k, err)
		}
		if _, err := r.Float(k); !errors.Is(err, engine.ErrNoField) {
			t.Errorf("Float(%q): %v, want ErrNoField", k, err)
		}
		if _, err := r.Bool(k); !errors.Is(err, engine.ErrNoField) {
			t.Errorf("Bool(%q): %v, want ErrNoField", k, err)
		}
	}
	// The error names the field, what was wanted and what was found.
	_, err := r.Int("price")
	var fe *engine.FieldError
	if !errors.As(err, &fe) || fe.Key != "price" || !strings.Contains(err.Error(), `"price"`) ||
		!strings.Contains(err.Error(), "integer") || !strings.Contains(err.Error(), "12.5") {
		t.Errorf("Int(price) error = %v", err)
	}
	if _, err := r.Int("text"); err == nil || !strings.Contains(err.Error(), `the string "42"`) {
		t.Errorf("Int(text) error = %v", err)
	}
	// The string accessor keeps a number's exact text.
	if s := r.String("big"); s != "12345678901234567890" {
		t.Errorf("String(big) = %q", s)
	}
	// A json.Number is not a float64: the assertion that silently gave 0.
	if _, ok := r.Get("amount").(float64); ok {
		t.Error("numbers decoded as float64; the documented policy is json.Number")
	}
	if _, ok := r.Get("amount").(json.Number); !ok {
		t.Errorf("amount is %T, want json.Number", r.Get("amount"))
	}
}

func TestRunAccessorsSeeValuesSetInTheStep(t *testing.T) {
	r := engine.NewRun(`{}`)
	r.Set("n", 7)
	r.Set("u", uint64(1<<63))
	r.Set("f", 2.5)
	r.Set("whole", 3.0)
	r.Set("ok", true)
	if n, err := r.Int("n"); err != nil || n != 7 {
		t.Errorf("Int(n) = %d, %v", n, err)
	}
	if n, err := r.Int("whole"); err != nil || n != 3 {
		t.Errorf("Int(whole) = %d, %v", n, err)
	}
	if _, err := r.Int("u"); !errors.Is(err, engine.ErrFieldType) {
		t.Errorf("Int(u) beyond int64: %v", err)
	}
	if _, err := r.Int("f"); !errors.Is(err, engine.ErrFieldType) {
		t.Errorf("Int(f): %v", err)
	}
	if f, err := r.Float("n"); err != nil || f != 7 {
		t.Errorf("Float(n) = %v, %v", f, err)
	}
	if b, err := r.Bool("ok"); err != nil || !b {
		t.Errorf("Bool(ok) = %v, %v", b, err)
	}
}

func TestRunDecode(t *testing.T) {
	r := engine.NewRun(`{"order_id": "o-1", "amount": 12.5, "qty": 3, "paid": true}`)
	r.Set("note", "set in this step")
	var into struct {
		OrderID string  `json:"order_id"`
		Amount  float64 `json:"amount"`
		Qty     int     `json:"qty"`
		Paid    bool    `json:"paid"`
		Note    string  `json:"note"`
	}
	if err := r.Decode(&into); err != nil {
		t.Fatal(err)
	}
	if into.OrderID != "o-1" || into.Amount != 12.5 || into.Qty != 3 || !into.Paid || into.Note != "set in this step" {
		t.Errorf("decoded %+v", into)
	}
	var wrong struct {
		Amount int `json:"amount"`
	}
	if err := r.Decode(&wrong); err == nil || !strings.Contains(err.Error(), "amount") {
		t.Errorf("decoding 12.5 into an int: %v, want an error naming the field", err)
	}
	var notPtr struct{}
	if err := r.Decode(notPtr); err == nil {
		t.Error("decoding into a non-pointer succeeded")
	}
}
