package engine_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
)

func TestMaskContext(t *testing.T) {
	s := &engine.Saga{Name: "pay", Sensitive: []string{"card.number", "items.secret", "token", "absent.field"}}
	in := `{"amount":12.50,"card":{"number":"4111","brand":"visa"},"items":[{"secret":1,"sku":"a"},{"sku":"b"}],"token":{"deep":true},"big":12345678901234567890}`
	var got map[string]any
	if err := json.Unmarshal(s.MaskContext([]byte(in)), &got); err != nil {
		t.Fatal(err)
	}
	card := got["card"].(map[string]any)
	items := got["items"].([]any)
	if card["number"] != engine.Masked || card["brand"] != "visa" || got["token"] != engine.Masked ||
		items[0].(map[string]any)["secret"] != engine.Masked || items[0].(map[string]any)["sku"] != "a" {
		t.Fatalf("masked context: %v", got)
	}
	if _, added := items[1].(map[string]any)["secret"]; added {
		t.Fatalf("a missing field was added: %v", items[1])
	}
	if out := string(s.MaskContext([]byte(in))); !strings.Contains(out, `"amount":12.50`) || !strings.Contains(out, "12345678901234567890") {
		t.Fatalf("numbers changed: %s", out)
	}
	if out := s.MaskContext([]byte("not json")); out != nil {
		t.Fatalf("a context that is not JSON was returned: %q", out)
	}
	plain := &engine.Saga{Name: "plain"}
	if out := plain.MaskContext([]byte(in)); string(out) != in {
		t.Fatalf("a saga without sensitive fields changed its context: %s", out)
	}
}

func TestSensitiveKeyAndValidation(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "pay", Sensitive: []string{"customer"}, Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("payments", engine.PassThrough, engine.WithKey(engine.KeyField("customer.email"))),
			engine.Kafka("refunds", engine.PassThrough, engine.WithKey(engine.KeyField("refund_id")))}})
	routes, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	s := routes.Saga("pay")
	if !s.SensitiveKey("kafka:payments") || s.SensitiveKey("kafka:refunds") || s.SensitiveKey("kafka:other") {
		t.Fatal("SensitiveKey: want true only for the trigger keyed by a field under a sensitive path")
	}
	bad := engine.NewRegistry()
	bad.Register(engine.Saga{Name: "x", Sensitive: []string{"a..b", ""}, Steps: []engine.Step{{Name: "s", Action: ok}},
		Triggers: []engine.Trigger{engine.Kafka("t", engine.PassThrough)}})
	_, err = bad.Routes()
	if err == nil || !strings.Contains(err.Error(), `sensitive field "a..b"`) || !strings.Contains(err.Error(), `sensitive field ""`) {
		t.Fatalf("invalid sensitive paths: %v", err)
	}
}
