package declarative

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"
	"gopkg.in/yaml.v3"
)

// The expression language is CEL (https://cel.dev), compiled at load time.
// Where an expression runs decides which variables it sees:
//
//	triggers (when, context):  event, meta, env
//	steps (url, headers, body; a command's key and payload; an await's value): context, saga, env
//	save (after a response):   context, saga, env, response
//
// No function reads files, the environment at run time, the clock, or
// starts processes: an expression sees only these variables.

// costLimit bounds the work of one evaluation (CEL's cost units; a
// comprehension over a large list is what reaches it).
const costLimit = 1_000_000

// VarPrefix is the prefix of the environment variables expressions see as
// env.NAME: SAGAZ_VAR_PAYMENTS_URL is env.PAYMENTS_URL. Other environment
// variables are not visible. They are read when the files are loaded.
const VarPrefix = "SAGAZ_VAR_"

type scope int

const (
	scopeTrigger scope = iota
	scopeStep
	scopeSave
)

func (s scope) vars() string {
	switch s {
	case scopeTrigger:
		return "event, meta, env"
	case scopeStep:
		return "context, saga, env"
	}
	return "context, saga, env, response"
}

// envs holds one CEL environment per scope.
type envs [3]*cel.Env

func newEnvs() (*envs, error) {
	strMap := cel.MapType(cel.StringType, cel.StringType)
	dynMap := cel.MapType(cel.StringType, cel.DynType)
	common := []cel.EnvOption{
		cel.Variable("env", strMap),
		ext.Strings(), ext.Encoders(), ext.Math(), ext.Lists(), cel.OptionalTypes(),
		cel.Function("pathEscape", cel.Overload("pathEscape_string", []*cel.Type{cel.StringType}, cel.StringType,
			cel.UnaryBinding(func(v ref.Val) ref.Val { return types.String(url.PathEscape(string(v.(types.String)))) }))),
		cel.Function("queryEscape", cel.Overload("queryEscape_string", []*cel.Type{cel.StringType}, cel.StringType,
			cel.UnaryBinding(func(v ref.Val) ref.Val { return types.String(url.QueryEscape(string(v.(types.String)))) }))),
	}
	var out envs
	var err error
	with := func(extra ...cel.EnvOption) (*cel.Env, error) {
		return cel.NewEnv(append(append([]cel.EnvOption(nil), common...), extra...)...)
	}
	if out[scopeTrigger], err = with(cel.Variable("event", dynMap), cel.Variable("meta", dynMap)); err != nil {
		return nil, err
	}
	if out[scopeStep], err = with(cel.Variable("context", dynMap), cel.Variable("saga", dynMap)); err != nil {
		return nil, err
	}
	if out[scopeSave], err = with(cel.Variable("context", dynMap), cel.Variable("saga", dynMap), cel.Variable("response", dynMap)); err != nil {
		return nil, err
	}
	return &out, nil
}

// expr is a compiled expression.
type expr struct {
	src string
	prg cel.Program
}

// compile compiles src for a scope; the error says where in src it fails.
// wantBool asks for a condition.
func (e *envs) compile(sc scope, src string, wantBool bool) (*expr, int, error) {
	ast, iss := e[sc].Compile(src)
	if iss != nil && iss.Err() != nil {
		first := iss.Errors()[0]
		var msgs []string
		for _, x := range iss.Errors() {
			msgs = append(msgs, x.Message)
		}
		msg := strings.Join(msgs, "; ")
		if strings.Contains(msg, "undeclared reference") {
			msg += " (variables here: " + sc.vars() + ")"
		}
		return nil, first.Location.Column(), fmt.Errorf("expression %q: %s", strings.TrimSpace(src), msg)
	}
	if wantBool && !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, 0, fmt.Errorf("expression %q gives %s, want a condition (a bool)", strings.TrimSpace(src), ast.OutputType())
	}
	prg, err := e[sc].Program(ast, cel.CostLimit(costLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, 0, fmt.Errorf("expression %q: %v", src, err)
	}
	return &expr{src: strings.TrimSpace(src), prg: prg}, 0, nil
}

func (x *expr) eval(ctx context.Context, vars map[string]any) (any, error) {
	out, _, err := x.prg.ContextEval(ctx, vars)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", x.src, err)
	}
	v, err := fromCEL(out)
	if err != nil {
		return nil, fmt.Errorf("expression %q: %w", x.src, err)
	}
	return v, nil
}

func (x *expr) cond(ctx context.Context, vars map[string]any) (bool, error) {
	v, err := x.eval(ctx, vars)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("expression %q gave %T, want a bool", x.src, v)
	}
	return b, nil
}

// fromCEL turns a CEL value into plain Go (JSON-encodable) values.
func fromCEL(v ref.Val) (any, error) {
	switch x := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(x), nil
	case types.Int:
		return int64(x), nil
	case types.Uint:
		return uint64(x), nil
	case types.Double:
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("result %v is not a JSON number", f)
		}
		return f, nil
	case types.String:
		return string(x), nil
	case types.Bytes:
		if utf8.Valid(x) {
			return string(x), nil
		}
		return base64.StdEncoding.EncodeToString(x), nil
	case types.Timestamp:
		return x.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return x.Duration.String(), nil
	case *types.Err:
		return nil, x
	case *types.Optional:
		if !x.HasValue() {
			return nil, nil
		}
		return fromCEL(x.GetValue())
	case traits.Mapper:
		out := map[string]any{}
		it := x.Iterator()
		for it.HasNext() == types.True {
			k := it.Next()
			ks, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key %v is not a string (JSON objects have string keys)", k)
			}
			val, err := fromCEL(x.Get(k))
			if err != nil {
				return nil, err
			}
			out[string(ks)] = val
		}
		return out, nil
	case traits.Lister:
		n, ok := x.Size().(types.Int)
		if !ok {
			return nil, errors.New("list of unknown size")
		}
		out := make([]any, 0, n)
		for i := types.Int(0); i < n; i++ {
			val, err := fromCEL(x.Get(i))
			if err != nil {
				return nil, err
			}
			out = append(out, val)
		}
		return out, nil
	}
	return nil, fmt.Errorf("result of type %s cannot be used as JSON", v.Type().TypeName())
}

// toCEL copies JSON-decoded data for CEL: json.Number becomes int64 when
// it is an integer in range, float64 otherwise.
func toCEL(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = toCEL(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toCEL(e)
		}
		return out
	case int:
		return int64(x)
	}
	return v
}

// varsFromEnv returns the SAGAZ_VAR_* variables without their prefix.
func varsFromEnv() map[string]string {
	out := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if name, ok := strings.CutPrefix(k, VarPrefix); ok && name != "" {
			out[name] = v
		}
	}
	return out
}

// template is a YAML value whose strings may hold ${{ expression }}
// parts: a string that is exactly one ${{ }} takes the expression's value
// (any type); other strings interpolate the values as text.
type template interface {
	eval(ctx context.Context, vars map[string]any) (any, error)
	// constant reports whether the template has no expression.
	constant() bool
}

type constT struct{ v any }

func (c constT) eval(context.Context, map[string]any) (any, error) { return c.v, nil }
func (c constT) constant() bool                                    { return true }

type exprT struct{ x *expr }

func (t exprT) eval(ctx context.Context, vars map[string]any) (any, error) {
	return t.x.eval(ctx, vars)
}
func (t exprT) constant() bool { return false }

// concatT is a string with text and expressions.
type concatT struct {
	parts []any // string or *expr
}

func (t concatT) eval(ctx context.Context, vars map[string]any) (any, error) {
	var b strings.Builder
	for _, p := range t.parts {
		switch x := p.(type) {
		case string:
			b.WriteString(x)
		case *expr:
			v, err := x.eval(ctx, vars)
			if err != nil {
				return nil, err
			}
			b.WriteString(text(v))
		}
	}
	return b.String(), nil
}
func (t concatT) constant() bool { return false }

// text formats a value inside a string: strings as they are, anything
// else as JSON.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

type mapT struct {
	keys []string
	vals []template
}

func (t mapT) eval(ctx context.Context, vars map[string]any) (any, error) {
	out := make(map[string]any, len(t.keys))
	for i, k := range t.keys {
		v, err := t.vals[i].eval(ctx, vars)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

func (t mapT) constant() bool {
	for _, v := range t.vals {
		if !v.constant() {
			return false
		}
	}
	return true
}

type listT struct{ items []template }

func (t listT) eval(ctx context.Context, vars map[string]any) (any, error) {
	out := make([]any, len(t.items))
	for i, it := range t.items {
		v, err := it.eval(ctx, vars)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out[i] = v
	}
	return out, nil
}

func (t listT) constant() bool {
	for _, v := range t.items {
		if !v.constant() {
			return false
		}
	}
	return true
}

// segment is a piece of a string: text, or an expression's source with its
// offset in the string.
type segment struct {
	text   string
	expr   bool
	offset int
}

// splitTemplate cuts s into text and ${{ expression }} segments. "$${{"
// is a literal "${{".
func splitTemplate(s string) ([]segment, error) {
	var out []segment
	var lit strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${{") {
			lit.WriteString("${{")
			i += 4
			continue
		}
		if !strings.HasPrefix(s[i:], "${{") {
			lit.WriteByte(s[i])
			i++
			continue
		}
		end := strings.Index(s[i+3:], "}}")
		if end < 0 {
			return nil, fmt.Errorf("%q opens ${{ at offset %d without a closing }} (want ${{ expression }})", s, i)
		}
		src := s[i+3 : i+3+end]
		if strings.TrimSpace(src) == "" {
			return nil, fmt.Errorf("%q has an empty ${{ }}", s)
		}
		if lit.Len() > 0 {
			out = append(out, segment{text: lit.String()})
			lit.Reset()
		}
		out = append(out, segment{text: src, expr: true, offset: i + 3})
		i += 3 + end + 2
	}
	if lit.Len() > 0 {
		out = append(out, segment{text: lit.String()})
	}
	return out, nil
}

// column returns the YAML column of offset off in a single-line scalar
// node's value (best effort: escapes in double-quoted strings shift it).
func column(n *yaml.Node, off int) int {
	if strings.Contains(n.Value, "\n") {
		return n.Column
	}
	switch n.Style {
	case 0, yaml.TaggedStyle, yaml.SingleQuotedStyle, yaml.DoubleQuotedStyle:
		c := n.Column + off
		if n.Style == yaml.SingleQuotedStyle || n.Style == yaml.DoubleQuotedStyle {
			c++
		}
		return c
	}
	return n.Column
}
