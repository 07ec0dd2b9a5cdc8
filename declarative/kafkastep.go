package declarative

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sagaz-go/sagaz/engine"
)

// Steps that talk over Kafka (engine.Command, engine.Await, engine.Sleep):
//
//	action:
//	  command: {topic, key, payload}   # produce a command, wait for the reply
//	  await: {topic, field, value, into} # wait for an event
//	  sleep: 10s                        # wait a duration
//
// Topics are fixed names (they are created or checked at start-up); key,
// payload and value are templates over the saga's context, as an HTTP
// step's url and body.

var (
	commandKeys = []string{"topic", "key", "payload"}
	awaitKeys   = []string{"topic", "field", "value", "into"}
)

// evalTimeout bounds one evaluation of a command's or an await's templates
// (the engine gives them no context).
const evalTimeout = 10 * time.Second

// commandCall is a compiled command (an action or a compensation).
type commandCall struct {
	topic   string
	key     template // nil: the saga's ID
	keySrc  string
	payload template // nil: the saga's context as JSON
	vars    map[string]string
}

// kafkaTopic reads a fixed topic name.
func (p *parser) kafkaTopic(f *fields, want string) (string, bool) {
	tn := f.required("topic", want)
	if tn == nil {
		return "", false
	}
	t, ok := f.str("topic", "a topic name")
	if !ok {
		return "", false
	}
	if strings.Contains(t, "${{") {
		p.errorf(tn, f.sub("topic"), "%q: a topic is a fixed name of [A-Za-z0-9._-] (topics are created or checked at start-up), not a template", t)
		return "", false
	}
	if err := validTopic(t); err != nil {
		p.errorf(tn, f.sub("topic"), "%v", err)
		return "", false
	}
	return t, true
}

// commandCall parses a command block.
func (p *parser) commandCall(n *yaml.Node, path string, vars map[string]string, ci *CallInfo) *commandCall {
	f, ok := p.mapping(n, path, commandKeys, nil)
	if !ok {
		return nil
	}
	nerr := len(p.errs)
	c := &commandCall{vars: vars}
	c.topic, _ = p.kafkaTopic(f, "the topic the command is produced to, e.g. accounts.commands")
	if kn := f.get("key"); kn != nil {
		c.key = p.stringTemplate(kn, f.sub("key"), scopeStep)
		c.keySrc = kn.Value
	}
	if pn := f.get("payload"); pn != nil {
		c.payload = p.template(pn, f.sub("payload"), scopeStep)
	}
	ci.Topic, ci.Key = c.topic, c.keySrc
	ci.Payload = f.has("payload")
	if len(p.errs) > nerr {
		return nil
	}
	return c
}

// vars are the variables of the command's templates (those of an HTTP
// step's url and body).
func (c *commandCall) evalVars(r *engine.Run, step string, compensation bool) map[string]any {
	saga := map[string]any{"id": r.ID, "name": r.Saga, "step": r.Step, "attempt": int64(r.Attempt),
		"compensating": r.Compensating, "idempotency_key": IdempotencyKey(r.ID, step, compensation)}
	return map[string]any{"context": toCEL(r.Data()), "saga": saga, "env": c.vars}
}

// keyOf evaluates the record key ("" without a key template).
func (c *commandCall) keyOf(ctx context.Context, vars map[string]any) (string, error) {
	if c.key == nil {
		return "", nil
	}
	v, err := c.key.eval(ctx, vars)
	if err != nil {
		return "", fmt.Errorf("key: %w", err)
	}
	k := text(v)
	if k == "" || v == nil {
		return "", fmt.Errorf("key: %q gives an empty key (want a non-empty string, e.g. an account)", c.keySrc)
	}
	return k, nil
}

// engineCommand returns the engine's declaration of the command. The key
// is evaluated twice (engine.Command.Key cannot fail): Payload, which the
// engine calls right after Key, fails the attempt for good when the key
// does not evaluate.
func (c *commandCall) engineCommand(step string, compensation bool) *engine.Command {
	cmd := &engine.Command{Topic: c.topic}
	if c.key != nil {
		cmd.Key = func(r *engine.Run) string {
			ctx, cancel := context.WithTimeout(context.Background(), evalTimeout)
			defer cancel()
			k, _ := c.keyOf(ctx, c.evalVars(r, step, compensation))
			return k
		}
	}
	cmd.Payload = func(r *engine.Run) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), evalTimeout)
		defer cancel()
		vars := c.evalVars(r, step, compensation)
		if _, err := c.keyOf(ctx, vars); err != nil {
			return nil, engine.Permanent(err)
		}
		if c.payload == nil {
			b, err := json.Marshal(r.Data())
			if err != nil {
				return nil, engine.Permanent(fmt.Errorf("payload: the context as JSON: %w", err))
			}
			return b, nil
		}
		v, err := c.payload.eval(ctx, vars)
		if err != nil {
			return nil, engine.Permanent(fmt.Errorf("payload: %w", err))
		}
		if s, ok := v.(string); ok {
			return []byte(s), nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, engine.Permanent(fmt.Errorf("payload: %w", err))
		}
		return b, nil
	}
	return cmd
}

// awaitCall parses an await block.
func (p *parser) awaitCall(n *yaml.Node, path, step string, vars map[string]string, ci *CallInfo) *engine.Await {
	f, ok := p.mapping(n, path, awaitKeys, nil)
	if !ok {
		return nil
	}
	nerr := len(p.errs)
	a := &engine.Await{Into: step}
	a.Topic, _ = p.kafkaTopic(f, "the topic of the events to wait for, e.g. payments.confirmed")
	if fn := f.required("field", "the event's top-level field to correlate on, e.g. order_id"); fn != nil {
		if s, ok := f.str("field", "a top-level field name of the event"); ok {
			if s == "" || strings.Contains(s, ".") {
				p.errorf(fn, f.sub("field"), "%q: want a top-level field name of the event, such as order_id (events are correlated on a top-level field)", s)
			}
			a.Field = s
		}
	}
	var value template
	var valueSrc string
	if vn := f.required("value", "the value the event's field must have, e.g. ${{ context.order_id }}"); vn != nil {
		value = p.stringTemplate(vn, f.sub("value"), scopeStep)
		valueSrc = vn.Value
		if value.constant() && vn.Value == "" {
			p.errorf(vn, f.sub("value"), "empty value, want the correlation value, e.g. ${{ context.order_id }}")
		}
	}
	if in := f.get("into"); in != nil {
		if s, ok := f.str("into", "a context field name"); ok {
			if s == "" {
				p.errorf(in, f.sub("into"), "empty field name, want the context field the event is stored under (default: the step's name)")
			}
			a.Into = s
		}
	}
	ci.Topic, ci.Field, ci.Value, ci.Into = a.Topic, a.Field, valueSrc, a.Into
	if len(p.errs) > nerr {
		return nil
	}
	a.Value = func(r *engine.Run) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), evalTimeout)
		defer cancel()
		saga := map[string]any{"id": r.ID, "name": r.Saga, "step": r.Step, "attempt": int64(r.Attempt),
			"compensating": r.Compensating, "idempotency_key": IdempotencyKey(r.ID, step, false)}
		v, err := value.eval(ctx, map[string]any{"context": toCEL(r.Data()), "saga": saga, "env": vars})
		if err != nil {
			return "", fmt.Errorf("value: %w", err)
		}
		switch v.(type) {
		case map[string]any, []any: // no event field equals it as text
			return "", fmt.Errorf("value: %q gives %s, want a string, number or boolean: %w", valueSrc, text(v), errEmptyValue)
		}
		if s := text(v); v != nil && s != "" {
			return s, nil
		}
		return "", fmt.Errorf("value: %q gives an empty value: %w", valueSrc, errEmptyValue)
	}
	return a
}

var errEmptyValue = errors.New("want a non-empty correlation value (a string, number or boolean)")
