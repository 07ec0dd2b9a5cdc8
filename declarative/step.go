package declarative

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sagaz-go/sagaz/engine"
)

// step parses one step: a name, an action and an optional compensation.
func (p *parser) step(n *yaml.Node, path string, defaults *httpSettings, vars map[string]string) (engine.Step, StepInfo, bool) {
	f, ok := p.mapping(n, path, []string{"name", "action", "compensation"}, nil)
	if !ok {
		return engine.Step{}, StepInfo{}, false
	}
	nerr := len(p.errs)
	var st engine.Step
	if nn := f.required("name", "the step's name: 1-200 characters of [A-Za-z0-9._-]"); nn != nil {
		if name, ok := f.str("name", "a step name"); ok {
			if !nameRE.MatchString(name) {
				p.errorf(nn, f.sub("name"), "%q is not a step name: want 1-200 characters of [A-Za-z0-9._-]", name)
			}
			st.Name = name
		}
	}
	info := StepInfo{Name: st.Name}
	if an := f.required("action", "what the step does: a mapping with http (and optional retry, timeout)"); an != nil {
		if c, pol, ci, ok := p.call(an, f.sub("action"), defaults, vars, engine.DefaultRetry); ok {
			st.Action, st.Retry, info.Action = c.stepFunc(st.Name, false), pol, ci
		}
	}
	if cn := f.get("compensation"); cn != nil {
		if c, pol, ci, ok := p.call(cn, f.sub("compensation"), defaults, vars, engine.DefaultCompensateRetry); ok {
			st.Compensate, st.CompensateRetry, info.Compensation = c.stepFunc(st.Name, true), pol, &ci
		}
	}
	return st, info, len(p.errs) == nerr
}

// call parses an action or a compensation.
func (p *parser) call(n *yaml.Node, path string, defaults *httpSettings, vars map[string]string, defRetry engine.RetryPolicy) (*httpCall, engine.RetryPolicy, CallInfo, bool) {
	f, ok := p.mapping(n, path, callKeys, notYetSteps)
	if !ok {
		return nil, engine.RetryPolicy{}, CallInfo{}, false
	}
	nerr := len(p.errs)
	pol := defRetry
	if rn := f.get("retry"); rn != nil {
		pol = p.retry(rn, f.sub("retry"), defRetry)
	}
	timeout := DefaultTimeout
	if d, ok := f.duration("timeout", time.Millisecond); ok {
		timeout = d
	}
	var c *httpCall
	ci := CallInfo{Kind: "http", Timeout: timeout, Retry: pol}
	hn := f.get("http")
	if _, present := f.keys["http"]; !present {
		later := false
		for k := range notYetSteps {
			_, later = f.keys[k]
			if later {
				break
			}
		}
		if !later {
			p.errorf(f.node, path, "missing the step kind: want http (kafka, await and sleep are %s)", ErrNotSupported)
		}
	} else if hn != nil {
		c = p.httpCall(hn, f.sub("http"), defaults, vars, timeout, &ci)
	}
	if len(p.errs) > nerr || c == nil {
		return nil, pol, ci, false
	}
	return c, pol, ci, true
}

// retry reads a retry policy; fields left out keep the default's value.
func (p *parser) retry(n *yaml.Node, path string, def engine.RetryPolicy) engine.RetryPolicy {
	f, ok := p.mapping(n, path, retryKeys, nil)
	if !ok {
		return def
	}
	pol := def
	if v, ok := f.integer("max_attempts", 1, 1000); ok {
		pol.MaxAttempts = int(v)
	}
	if d, ok := f.duration("initial_delay", 0); ok {
		pol.InitialDelay = d
	}
	if d, ok := f.duration("max_delay", 0); ok {
		pol.MaxDelay = d
	}
	if v, ok := f.number("multiplier", 1, 100); ok {
		pol.Multiplier = v
	}
	if v, ok := f.number("jitter", 0, 1); ok {
		pol.Jitter = v
	}
	return pol
}

// httpCall parses an http block.
func (p *parser) httpCall(n *yaml.Node, path string, defaults *httpSettings, vars map[string]string, timeout time.Duration, ci *CallInfo) *httpCall {
	f, ok := p.mapping(n, path, httpKeys, nil)
	if !ok {
		return nil
	}
	nerr := len(p.errs)
	c := &httpCall{timeout: timeout, vars: vars}
	if mn := f.required("method", strings.Join(methods, ", ")); mn != nil {
		if m, ok := f.str("method", "an HTTP method"); ok {
			c.method = strings.ToUpper(m)
			if !slices.Contains(methods, c.method) || (m != c.method && m != strings.ToLower(m)) {
				p.errorf(mn, f.sub("method"), "%q: want one of %s (upper or lower case)", m, strings.Join(methods, ", "))
			}
		}
	}
	s := *defaults
	s.headers = append([]header(nil), defaults.headers...)
	p.httpSettings(f, &s)
	pol, _ := newHostPolicy(s.allow) // entries were checked by httpSettings
	c.policy, c.maxResponse, c.follow, c.headers = pol, s.maxResponse, s.follow, s.headers
	if un := f.required("url", "the URL to call, e.g. https://payments.internal/charges (${{ expressions }} allowed)"); un != nil {
		before := len(p.errs)
		c.url = p.stringTemplate(un, f.sub("url"), scopeStep)
		c.urlSrc = un.Value
		if len(p.errs) == before && c.url.constant() {
			u, err := url.Parse(un.Value)
			switch {
			case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
				p.errorf(un, f.sub("url"), "%q: want an absolute http:// or https:// URL", un.Value)
			default:
				if err := pol.checkHost(u.Hostname()); err != nil {
					p.errorf(un, f.sub("url"), "%v", err)
				}
			}
		}
	}
	if bn := f.get("body"); bn != nil {
		c.body = p.template(bn, f.sub("body"), scopeStep)
		if c.method == "GET" || c.method == "HEAD" {
			p.errorf(bn, f.sub("body"), "a %s request has no body", c.method)
		}
	}
	c.expect, _ = f.statuses("expect")
	c.retryOn, _ = f.statuses("retry_on")
	if sn := f.get("save"); sn != nil {
		c.save = p.saves(sn, f.sub("save"))
	}
	ci.Method, ci.URL, ci.Expect = c.method, c.urlSrc, c.expect
	for _, sv := range c.save {
		ci.Save = append(ci.Save, sv.key)
	}
	if len(p.errs) > nerr {
		return nil
	}
	key := fmt.Sprintf("%q|%s|%v", s.allow, s.tlsKey, s.follow)
	if s.allowSet {
		key = "restricted|" + key
	}
	if c.client = p.clients[key]; c.client == nil {
		c.client = newClient(pol, s.tls, s.follow)
		p.clients[key] = c.client
	}
	return c
}

// saves parses a save mapping: context field -> value (expressions see
// response).
func (p *parser) saves(n *yaml.Node, path string) []saveField {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "got %s, want a mapping of context fields to values such as ${{ response.body.id }}", kind(n))
		return nil
	}
	var out []saveField
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" || k.Tag == "!!merge" {
			p.errorf(k, path, "%s is not a context field name", kind(k))
			continue
		}
		if seen[k.Value] {
			p.errorf(k, join(path, k.Value), "declared twice")
			continue
		}
		seen[k.Value] = true
		out = append(out, saveField{key: k.Value, value: p.template(v, join(path, k.Value), scopeSave)})
	}
	return out
}
