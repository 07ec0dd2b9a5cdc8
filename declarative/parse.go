package declarative

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// parser walks one file's YAML nodes, collecting every error with its
// position.
type parser struct {
	file    string
	envs    *envs
	errs    []error
	clients map[string]*http.Client
}

func (p *parser) errAt(line, col int, path string, err error, format string, a ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Column: col, Path: path, Msg: fmt.Sprintf(format, a...), Err: err})
}

func (p *parser) errorf(n *yaml.Node, path, format string, a ...any) {
	p.errAt(n.Line, n.Column, path, nil, format, a...)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// fields is a mapping node's entries, checked against the keys allowed.
type fields struct {
	p     *parser
	node  *yaml.Node
	path  string
	vals  map[string]*yaml.Node
	keys  map[string]*yaml.Node
	order []string
}

// notYet names keys that are recognised but not built yet, with why.
type notYet map[string]string

// mapping reads a mapping node. Unknown keys, duplicate keys and keys of
// features not built yet are errors. Merge keys (<<: *anchor) apply.
func (p *parser) mapping(n *yaml.Node, path string, allowed []string, later notYet) (*fields, bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "got %s, want a mapping with %s", kind(n), strings.Join(allowed, ", "))
		return nil, false
	}
	f := &fields{p: p, node: n, path: path, vals: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			merged = append(merged, resolve(v))
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, path, "a key must be a plain name, got %s", kind(k))
			continue
		}
		f.add(k, v, allowed, later, true)
	}
	for _, m := range merged { // explicit keys win over merged ones
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = nil
			for _, c := range m.Content {
				srcs = append(srcs, resolve(c))
			}
		}
		for _, src := range srcs {
			if src.Kind != yaml.MappingNode {
				p.errorf(src, path, "<< merges a mapping (or a list of mappings), got %s", kind(src))
				continue
			}
			for i := 0; i+1 < len(src.Content); i += 2 {
				f.add(src.Content[i], src.Content[i+1], allowed, later, false)
			}
		}
	}
	return f, true
}

func (f *fields) add(k, v *yaml.Node, allowed []string, later notYet, explicit bool) {
	name := k.Value
	if _, dup := f.vals[name]; dup {
		if explicit {
			f.p.errorf(k, join(f.path, name), "declared twice (first at line %d)", f.keys[name].Line)
		}
		return
	}
	if why, ok := later[name]; ok {
		f.p.errAt(k.Line, k.Column, join(f.path, name), ErrNotSupported, "%s steps are %s: %s", name, ErrNotSupported, why)
		f.vals[name], f.keys[name] = nil, k // known, but unusable
		return
	}
	if !slices.Contains(allowed, name) {
		f.p.errorf(k, join(f.path, name), "unknown field %q, want one of: %s", name, strings.Join(allowed, ", "))
		f.vals[name], f.keys[name] = nil, k
		return
	}
	f.vals[name], f.keys[name] = resolve(v), k
	f.order = append(f.order, name)
}

// get returns the value node of key (nil if absent or rejected).
func (f *fields) get(key string) *yaml.Node { return f.vals[key] }

func (f *fields) has(key string) bool { return f.vals[key] != nil }

// required reports a missing key at the mapping's position.
func (f *fields) required(key, want string) *yaml.Node {
	n := f.vals[key]
	if n == nil {
		if _, rejected := f.keys[key]; !rejected {
			f.p.errorf(f.node, f.path, "missing field %q (want %s)", key, want)
		}
	}
	return n
}

func (f *fields) sub(key string) string { return join(f.path, key) }

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// str reads a scalar as a string.
func (f *fields) str(key, want string) (string, bool) {
	n := f.get(key)
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || isNull(n) {
		f.p.errorf(n, f.sub(key), "got %s, want %s", kind(n), want)
		return "", false
	}
	return n.Value, true
}

// integer reads an integer within [lo, hi].
func (f *fields) integer(key string, lo, hi int64) (int64, bool) {
	n := f.get(key)
	if n == nil {
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || v < lo || v > hi {
		f.p.errorf(n, f.sub(key), "got %s, want an integer from %d to %d", kind(n), lo, hi)
		return 0, false
	}
	return v, true
}

// number reads a number within [lo, hi].
func (f *fields) number(key string, lo, hi float64) (float64, bool) {
	n := f.get(key)
	if n == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || err != nil || math.IsNaN(v) || v < lo || v > hi {
		f.p.errorf(n, f.sub(key), "got %s, want a number from %g to %g", kind(n), lo, hi)
		return 0, false
	}
	return v, true
}

func (f *fields) boolean(key string) (bool, bool) {
	n := f.get(key)
	if n == nil {
		return false, false
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		f.p.errorf(n, f.sub(key), "got %s, want true or false", kind(n))
		return false, false
	}
	var b bool
	_ = n.Decode(&b)
	return b, true
}

// duration reads a Go duration ("500ms", "10s", "1m30s"), at least min.
func (f *fields) duration(key string, min time.Duration) (time.Duration, bool) {
	n := f.get(key)
	if n == nil {
		return 0, false
	}
	d, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" || err != nil || d < min {
		f.p.errorf(n, f.sub(key), "got %s, want a duration of at least %s such as 500ms, 10s or 1m30s", kind(n), min)
		return 0, false
	}
	return d, true
}

// statuses reads one HTTP status or a list of them.
func (f *fields) statuses(key string) ([]int, bool) {
	n := f.get(key)
	if n == nil {
		return nil, false
	}
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = nil
		for _, c := range n.Content {
			items = append(items, resolve(c))
		}
		if len(items) == 0 {
			f.p.errorf(n, f.sub(key), "empty list, want HTTP statuses such as [200, 201]")
			return nil, false
		}
	}
	var out []int
	ok := true
	for i, it := range items {
		v, err := strconv.Atoi(it.Value)
		if it.Kind != yaml.ScalarNode || it.Tag != "!!int" || err != nil || v < 100 || v > 599 {
			p := f.sub(key)
			if n.Kind == yaml.SequenceNode {
				p = index(p, i)
			}
			f.p.errorf(it, p, "got %s, want an HTTP status from 100 to 599", kind(it))
			ok = false
			continue
		}
		out = append(out, v)
	}
	return out, ok
}

// list reads a sequence node.
func (f *fields) list(key, want string) ([]*yaml.Node, bool) {
	n := f.get(key)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		f.p.errorf(n, f.sub(key), "got %s, want a list of %s", kind(n), want)
		return nil, false
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out, true
}

// expression compiles a CEL expression (a condition when wantBool).
func (p *parser) expression(n *yaml.Node, path string, sc scope, wantBool bool) *expr {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errorf(n, path, "got %s, want a CEL expression", kind(n))
		return nil
	}
	x, col, err := p.envs.compile(sc, n.Value, wantBool)
	if err != nil {
		p.errAt(n.Line, column(n, col), path, nil, "%v", err)
		return nil
	}
	return x
}

// template compiles a YAML value whose strings may hold ${{ expression }}.
func (p *parser) template(n *yaml.Node, path string, sc scope) template {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		var t mapT
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				p.errorf(k, path, "a key must be a plain name, got %s", kind(k))
				continue
			}
			if line, dup := seen[k.Value]; dup {
				p.errorf(k, join(path, k.Value), "declared twice (first at line %d)", line)
				continue
			}
			seen[k.Value] = k.Line
			t.keys = append(t.keys, k.Value)
			t.vals = append(t.vals, p.template(v, join(path, k.Value), sc))
		}
		return t
	case yaml.SequenceNode:
		var t listT
		for i, c := range n.Content {
			t.items = append(t.items, p.template(c, index(path, i), sc))
		}
		return t
	case yaml.ScalarNode:
		if n.Tag != "!!str" {
			var v any
			if err := n.Decode(&v); err != nil {
				p.errorf(n, path, "%v", err)
				return constT{}
			}
			return constT{toCEL(v)}
		}
		return p.stringTemplate(n, path, sc)
	}
	p.errorf(n, path, "got %s, want a value", kind(n))
	return constT{}
}

// stringTemplate compiles a string with ${{ }} parts.
func (p *parser) stringTemplate(n *yaml.Node, path string, sc scope) template {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errorf(n, path, "got %s, want a string (${{ expression }} parts allowed)", kind(n))
		return constT{""}
	}
	segs, err := splitTemplate(n.Value)
	if err != nil {
		p.errorf(n, path, "%v", err)
		return constT{n.Value}
	}
	if len(segs) == 1 && segs[0].expr && strings.TrimSpace(n.Value) == n.Value && strings.HasPrefix(n.Value, "${{") && strings.HasSuffix(n.Value, "}}") {
		if x := p.compileAt(n, path, sc, segs[0]); x != nil {
			return exprT{x}
		}
		return constT{""}
	}
	var t concatT
	for _, s := range segs {
		if !s.expr {
			t.parts = append(t.parts, s.text)
			continue
		}
		if x := p.compileAt(n, path, sc, s); x != nil {
			t.parts = append(t.parts, x)
		}
	}
	if len(t.parts) == 1 {
		if s, ok := t.parts[0].(string); ok {
			return constT{s}
		}
	}
	if len(t.parts) == 0 {
		return constT{""}
	}
	return t
}

func (p *parser) compileAt(n *yaml.Node, path string, sc scope, s segment) *expr {
	x, col, err := p.envs.compile(sc, s.text, false)
	if err != nil {
		p.errAt(n.Line, column(n, s.offset+col), path, nil, "%v", err)
		return nil
	}
	return x
}
