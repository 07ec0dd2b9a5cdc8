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
	var act, comp *half
	if an := f.required("action", "what the step does: a mapping with http, command, await or sleep (and optional retry, timeout)"); an != nil {
		act = p.call(an, f.sub("action"), defaults, vars, engine.DefaultRetry, st.Name, false)
	}
	if cn := f.get("compensation"); cn != nil {
		comp = p.call(cn, f.sub("compensation"), defaults, vars, engine.DefaultCompensateRetry, st.Name, true)
		if act != nil && act.kind == kindSleep {
			p.errorf(f.keys["compensation"], f.sub("compensation"), "a sleep step has nothing to compensate: remove its compensation")
		}
	}
	if act != nil && comp != nil {
		p.shareTimeout(act, comp)
	}
	if act != nil {
		switch act.kind {
		case kindHTTP:
			st.Action = act.http.stepFunc(st.Name, false)
		case kindCommand:
			st.Command, st.Timeout = act.cmd.engineCommand(st.Name, false), act.timeout
		case kindAwait:
			st.Await, st.Timeout = act.await, act.timeout
		case kindSleep:
			st.Sleep = act.sleep
		}
		if act.kind != kindSleep {
			st.Retry = act.retry
		}
		info.Action = act.info
	}
	if comp != nil {
		switch comp.kind {
		case kindHTTP:
			st.Compensate = comp.http.stepFunc(st.Name, true)
		case kindCommand:
			st.CompensateCommand, st.Timeout = comp.cmd.engineCommand(st.Name, true), comp.timeout
		}
		st.CompensateRetry = comp.retry
		ci := comp.info
		info.Compensation = &ci
	}
	return st, info, len(p.errs) == nerr && act != nil && (comp != nil || f.get("compensation") == nil)
}

// Step kinds.
const (
	kindHTTP    = "http"
	kindCommand = "command"
	kindAwait   = "await"
	kindSleep   = "sleep"
)

var stepKinds = []string{kindHTTP, kindCommand, kindAwait, kindSleep}

// half is a parsed action or compensation.
type half struct {
	kind        string
	http        *httpCall
	cmd         *commandCall
	await       *engine.Await
	sleep       time.Duration
	retry       engine.RetryPolicy
	timeout     time.Duration
	timeoutNode *yaml.Node // nil: the default timeout
	node        *yaml.Node
	path        string
	info        CallInfo
}

// waits reports whether the half waits on Kafka for as long as the
// step's engine Timeout.
func (h *half) waits() bool { return h.kind == kindCommand || h.kind == kindAwait }

// shareTimeout reconciles the timeouts of a step's action and
// compensation: the engine has one Timeout per step, which bounds a
// command's (or an await's) wait and every attempt of an HTTP call of the
// same step. Two that wait share it (one given is taken by both); an HTTP
// call's timeout must not be longer than it.
func (p *parser) shareTimeout(act, comp *half) {
	switch {
	case act.waits() && comp.waits():
		switch {
		case act.timeoutNode != nil && comp.timeoutNode != nil && act.timeout != comp.timeout:
			p.errorf(comp.timeoutNode, join(comp.path, "timeout"), "%s differs from the action's timeout (%s): a step's command compensation waits as long as its action (one timeout per step); give both the same timeout, or give it once", comp.timeout, act.timeout)
		case act.timeoutNode == nil && comp.timeoutNode != nil:
			act.timeout = comp.timeout
		default:
			comp.timeout = act.timeout
		}
		act.info.Timeout, comp.info.Timeout = act.timeout, comp.timeout
	case act.waits() && comp.kind == kindHTTP:
		p.boundHTTP(comp, act, "action")
	case comp.waits() && act.kind == kindHTTP:
		p.boundHTTP(act, comp, "compensation")
	}
}

func (p *parser) boundHTTP(h, w *half, other string) {
	if h.timeout <= w.timeout {
		return
	}
	if h.timeoutNode != nil {
		p.errorf(h.timeoutNode, join(h.path, "timeout"), "%s is longer than the %s's timeout (%s): the step's one timeout bounds its http call too; want at most %s", h.timeout, other, w.timeout, w.timeout)
		return
	}
	h.timeout, h.info.Timeout = w.timeout, w.timeout
	if h.http != nil {
		h.http.timeout = w.timeout
	}
}

// call parses an action or a compensation.
func (p *parser) call(n *yaml.Node, path string, defaults *httpSettings, vars map[string]string, defRetry engine.RetryPolicy, step string, compensation bool) *half {
	f, ok := p.mapping(n, path, callKeys, nil)
	if !ok {
		return nil
	}
	nerr := len(p.errs)
	what := "an action"
	if compensation {
		what = "a compensation"
	}
	h := &half{node: f.node, path: path, retry: defRetry}
	for _, k := range f.order {
		if !slices.Contains(stepKinds, k) {
			continue
		}
		if h.kind != "" {
			p.errorf(f.keys[k], f.sub(k), "%s has one kind, and this one already has %s (want one of http, command, await or sleep)", what, h.kind)
			continue
		}
		h.kind = k
	}
	if h.kind == "" {
		// A kind key that was rejected, or an unknown key (kafka:), is
		// reported already.
		if !slices.ContainsFunc(stepKinds, func(k string) bool { _, ok := f.keys[k]; return ok }) && len(f.keys) == len(f.order) {
			want := "http, command, await or sleep"
			if compensation {
				want = "http or command"
			}
			p.errorf(f.node, path, "missing the step kind: want %s", want)
		}
		return nil
	}
	if compensation && (h.kind == kindAwait || h.kind == kindSleep) {
		p.errorf(f.keys[h.kind], f.sub(h.kind), "a compensation is an http call or a command, not %s (await and sleep are actions only)", h.kind)
		return nil
	}
	if rn := f.get("retry"); rn != nil {
		if h.kind == kindSleep {
			p.errorf(f.keys["retry"], f.sub("retry"), "a sleep step has no retry policy (it cannot fail)")
		} else {
			h.retry = p.retry(rn, f.sub("retry"), defRetry)
		}
	}
	h.timeout = DefaultTimeout
	switch {
	case h.kind == kindSleep:
		if tn := f.keys["timeout"]; tn != nil {
			p.errorf(tn, f.sub("timeout"), "a sleep step has no timeout: it waits for its sleep duration")
		}
		h.timeout = 0
	case h.kind == kindAwait && f.get("timeout") == nil:
		f.required("timeout", "how long to wait for the event, e.g. 10m or 24h")
	}
	if h.kind != kindSleep {
		if d, ok := f.duration("timeout", time.Millisecond); ok {
			h.timeout, h.timeoutNode = d, f.get("timeout")
		}
	}
	h.info = CallInfo{Kind: h.kind, Timeout: h.timeout, Retry: h.retry}
	switch h.kind {
	case kindHTTP:
		if hn := f.get("http"); hn != nil {
			h.http = p.httpCall(hn, f.sub("http"), defaults, vars, h.timeout, &h.info)
		}
	case kindCommand:
		if cn := f.get("command"); cn != nil {
			h.cmd = p.commandCall(cn, f.sub("command"), vars, &h.info)
		}
	case kindAwait:
		if an := f.get("await"); an != nil {
			h.await = p.awaitCall(an, f.sub("await"), step, vars, &h.info)
		}
	case kindSleep:
		if d, ok := f.duration("sleep", time.Millisecond); ok {
			h.sleep, h.info.Sleep = d, d
		}
	}
	if len(p.errs) > nerr || (h.http == nil && h.cmd == nil && h.await == nil && h.sleep == 0) {
		return nil
	}
	return h
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
