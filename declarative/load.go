package declarative

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Definition is one saga loaded from a YAML file: what was declared (for
// display) and the engine.Saga that runs it.
type Definition struct {
	// Name is the saga's name.
	Name string
	// Description is the optional free text of the file.
	Description string
	// File, Line and Column locate the saga's document.
	File         string
	Line, Column int
	// Triggers describe the triggers in words (for `sagaz sagas show`).
	Triggers []string
	// Steps describe the steps (for `sagaz sagas show`).
	Steps []StepInfo
	// Fingerprint identifies the definition's shape: its steps and
	// compensations by name and order (see Fingerprint).
	Fingerprint string
	// Previous are the fingerprints of the earlier versions of its steps
	// the file lists under previous: (engine.Saga.Previous).
	Previous []string

	saga engine.Saga
}

// Saga returns the declaration to register with an engine.Registry.
func (d *Definition) Saga() engine.Saga { return d.saga }

// StepInfo describes a step of a loaded definition.
type StepInfo struct {
	Name         string
	Action       CallInfo
	Compensation *CallInfo // nil: none
}

// CallInfo describes an action or a compensation.
type CallInfo struct {
	Kind    string // "http", "command", "await" or "sleep"
	Timeout time.Duration
	Retry   engine.RetryPolicy
	// HTTP calls.
	Method string
	URL    string // as written (templates unevaluated)
	Expect []int  // nil: any 2xx
	Save   []string
	// Commands and awaits.
	Topic   string
	Key     string // a command's key as written ("": the saga's ID)
	Payload bool   // a command declares its payload (false: the context)
	Field   string // an await's correlation field
	Value   string // an await's value as written
	Into    string // the context field an awaited event is stored under
	// Sleeps.
	Sleep time.Duration
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// Load reads saga definitions from path: a YAML file, or a directory whose
// *.yaml and *.yml files (not its subdirectories, not hidden files) are
// read in name order. A file may hold several sagas as YAML documents
// separated by "---". Everything is checked and every expression compiled
// now; the error lists every problem found (errors.Join of *Error, each
// with file:line:column), and then no definition is returned.
func Load(path string) ([]*Definition, error) {
	files, err := sagaFiles(path)
	if err != nil {
		return nil, err
	}
	ev, err := newEnvs()
	if err != nil {
		return nil, fmt.Errorf("declarative: expression environment: %w", err)
	}
	vars := varsFromEnv()
	var defs []*Definition
	var errs []error
	byName := map[string]*Definition{}
	clients := map[string]*http.Client{} // shared by calls with the same transport settings
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrInvalid, err))
			continue
		}
		p := &parser{file: f, envs: ev, clients: clients}
		ds := p.file1(src, vars)
		for _, d := range ds {
			if d.Name == "" {
				continue
			}
			if prev, dup := byName[d.Name]; dup {
				p.errAt(d.Line, d.Column, "name", nil, "saga %q is already defined at %s:%d:%d (saga names must be unique)", d.Name, prev.File, prev.Line, prev.Column)
				continue
			}
			byName[d.Name] = d
		}
		if len(p.errs) > 0 {
			sort.SliceStable(p.errs, func(i, j int) bool {
				a, b := p.errs[i].(*Error), p.errs[j].(*Error)
				return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
			})
			errs = append(errs, p.errs...)
			continue
		}
		if len(ds) == 0 {
			errs = append(errs, &Error{File: f, Line: 1, Column: 1, Msg: "no saga in this file (want a mapping with name, triggers and steps)"})
		}
		defs = append(defs, ds...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return defs, nil
}

// Register loads the sagas at path (see Load) and registers them into
// reg, next to the sagas already there. A name that reg already holds is
// an error located at the saga's document (see CheckNames).
func Register(reg *engine.Registry, path string) error {
	defs, err := Load(path)
	if err != nil {
		return err
	}
	if err := CheckNames(reg, defs); err != nil {
		return err
	}
	for _, d := range defs {
		reg.Register(d.saga)
	}
	return nil
}

// CheckNames reports, located at their documents, the definitions whose
// name reg already holds (a compiled saga, say). It changes nothing, so
// `sagaz validate` can check against the binary's sagas.
func CheckNames(reg *engine.Registry, defs []*Definition) error {
	routes, err := reg.Routes()
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range defs {
		if routes.Saga(d.Name) != nil {
			errs = append(errs, &Error{File: d.File, Line: d.Line, Column: d.Column, Path: "name",
				Msg: fmt.Sprintf("saga %q is already declared (compiled into the binary); choose another name", d.Name)})
		}
	}
	return errors.Join(errs...)
}

// sagaFiles lists the files to read.
func sagaFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		full := filepath.Join(path, n)
		if st, err := os.Stat(full); err != nil || st.IsDir() { // follows symlinks (Kubernetes ConfigMaps)
			continue
		}
		out = append(out, full)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no *.yaml or *.yml file in directory %s", ErrInvalid, path)
	}
	return out, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// file1 parses every document of one file.
func (p *parser) file1(src []byte, vars map[string]string) []*Definition {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var out []*Definition
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if err == io.EOF {
			return out
		}
		if err != nil {
			line, msg := 1, err.Error()
			if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
				line, _ = strconv.Atoi(m[1])
				msg = m[2]
			}
			p.errAt(line, 1, "", nil, "not valid YAML: %s", msg)
			return out
		}
		if len(doc.Content) == 0 || isNull(resolve(doc.Content[0])) {
			continue // an empty document
		}
		if d := p.saga(doc.Content[0], vars); d != nil {
			out = append(out, d) // also an invalid one, for the duplicate name check
		}
	}
}

var (
	sagaKeys    = []string{"name", "description", "triggers", "context", "http", "steps", "previous"}
	prevKeys    = []string{"description", "steps"}
	triggerKeys = []string{"kafka", "cron", "webhook", "manual", "name", "idempotency_key", "when", "context",
		"max_concurrent", "rate_limit", "catch_up", "catch_up_window", "overlap", "jitter"}
	httpDefaultKeys = []string{"allow_hosts", "tls", "max_response_bytes", "follow_redirects", "headers"}
	callKeys        = []string{"http", "command", "await", "sleep", "retry", "timeout"}
	httpKeys        = append([]string{"method", "url", "body", "expect", "retry_on", "save"}, httpDefaultKeys...)
	retryKeys       = []string{"max_attempts", "initial_delay", "max_delay", "multiplier", "jitter"}
	tlsKeys         = []string{"ca_file", "cert_file", "key_file", "insecure_skip_verify"}
	methods         = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)

// httpSettings are the transport settings of a call: the saga's http
// block, overridden per call.
type httpSettings struct {
	allow       []string
	allowSet    bool
	allowNode   *yaml.Node
	tls         *tls.Config
	tlsKey      string
	maxResponse int64
	follow      bool
	headers     []header
}

// saga parses one saga document.
func (p *parser) saga(n *yaml.Node, vars map[string]string) *Definition {
	f, ok := p.mapping(n, "", sagaKeys, nil)
	if !ok {
		return nil
	}
	nerr := len(p.errs)
	d := &Definition{File: p.file, Line: n.Line, Column: n.Column}
	if nn := f.required("name", "the saga's name: 1-200 characters of [A-Za-z0-9._-]"); nn != nil {
		if name, ok := f.str("name", "a saga name"); ok {
			if !nameRE.MatchString(name) {
				p.errorf(nn, "name", "%q is not a saga name: want 1-200 characters of [A-Za-z0-9._-]", name)
			}
			d.Name = name
		}
	}
	d.Description, _ = f.str("description", "text")

	var sagaCtx template
	if c := f.get("context"); c != nil {
		sagaCtx = p.contextTemplate(c, "context")
	}
	defaults := httpSettings{maxResponse: DefaultMaxResponseBytes}
	if h := f.get("http"); h != nil {
		if hf, ok := p.mapping(h, "http", httpDefaultKeys, nil); ok {
			p.httpSettings(hf, &defaults)
		}
	}

	var triggers []engine.Trigger
	if tn := f.required("triggers", "a list of triggers (kafka, cron, webhook or manual)"); tn != nil {
		items, ok := f.list("triggers", "triggers")
		if ok && len(items) == 0 {
			p.errorf(tn, "triggers", "empty list, want at least one trigger (kafka, cron, webhook or manual)")
		}
		for i, it := range items {
			if t, desc, ok := p.trigger(it, index("triggers", i), sagaCtx, vars); ok {
				triggers = append(triggers, t)
				d.Triggers = append(d.Triggers, desc)
			}
		}
	}

	steps, infos := p.steps(f, "steps", &defaults, vars)
	d.Steps = infos
	// Earlier versions of the steps that sagas in flight may have started
	// with (engine.Saga.Previous): each a mapping with its steps.
	var previous []engine.Saga
	if pn := f.get("previous"); pn != nil {
		items, _ := f.list("previous", "earlier versions of the steps, each {steps: [...]}")
		for i, it := range items {
			pf, ok := p.mapping(it, index("previous", i), prevKeys, nil)
			if !ok {
				continue
			}
			ps, _ := p.steps(pf, index("previous", i)+".steps", &defaults, vars)
			previous = append(previous, engine.Saga{Steps: ps})
		}
	}
	if len(p.errs) > nerr {
		return d // invalid: only its name and position count (errors are recorded)
	}
	d.saga = engine.Saga{Name: d.Name, Steps: steps, Triggers: triggers, Previous: previous}
	d.Fingerprint = Fingerprint(&d.saga)
	for i := range previous {
		d.Previous = append(d.Previous, Fingerprint(&previous[i]))
	}
	// The engine's own checks, as a safety net: anything it rejects that
	// the checks above let through is reported at the saga's name.
	scratch := engine.NewRegistry()
	scratch.Register(d.saga)
	if _, err := scratch.Routes(); err != nil {
		at := n
		if nn := f.get("name"); nn != nil {
			at = nn
		}
		p.errorf(at, "name", "the engine rejects this saga: %v", err)
	}
	return d
}

// steps parses the list of steps under key (path is where it is, for
// errors): each step's engine form and description.
func (p *parser) steps(f *fields, key string, defaults *httpSettings, vars map[string]string) ([]engine.Step, []StepInfo) {
	var steps []engine.Step
	var infos []StepInfo
	path := key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		key = key[i+1:]
	}
	sn := f.required(key, "a list of steps, each with a name and an action")
	if sn == nil {
		return nil, nil
	}
	items, ok := f.list(key, "steps")
	if ok && len(items) == 0 {
		p.errorf(sn, path, "empty list, want at least one step")
	}
	seen := map[string]int{}
	for i, it := range items {
		st, info, ok := p.step(it, index(path, i), defaults, vars)
		if line, dup := seen[st.Name]; dup && st.Name != "" {
			p.errorf(it, index(path, i)+".name", "step %q is declared twice (first at line %d)", st.Name, line)
			continue
		}
		seen[st.Name] = it.Line
		if !ok {
			continue
		}
		steps = append(steps, st)
		infos = append(infos, info)
	}
	return steps, infos
}

// contextTemplate compiles a context: a mapping of values, expressions over
// the event allowed.
func (p *parser) contextTemplate(n *yaml.Node, path string) template {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "got %s, want a mapping of context fields (constants or ${{ expressions }} over event and meta)", kind(n))
		return nil
	}
	return p.template(n, path, scopeTrigger)
}

// trigger parses one trigger.
func (p *parser) trigger(n *yaml.Node, path string, sagaCtx template, vars map[string]string) (engine.Trigger, string, bool) {
	f, ok := p.mapping(n, path, triggerKeys, nil)
	if !ok {
		return engine.Trigger{}, "", false
	}
	var src string
	for _, k := range f.order {
		if !slices.Contains([]string{"kafka", "cron", "webhook", "manual"}, k) {
			continue
		}
		if src != "" {
			p.errorf(f.keys[k], f.sub(k), "a trigger has one source, and this one already has %s", src)
			continue
		}
		src = k
	}
	if src == "" {
		p.errorf(n, path, "missing the trigger's source: want one of kafka (a topic), cron (a schedule), webhook (a name) or manual (an event type)")
		return engine.Trigger{}, "", false
	}
	target, _ := f.str(src, "a name")
	tn := f.get(src)
	nerr := len(p.errs)
	switch src {
	case "kafka":
		if err := validTopic(target); err != nil && tn != nil {
			p.errorf(tn, f.sub(src), "%v", err)
		}
	case "webhook":
		if tn != nil && !storage.ValidName(target) {
			p.errorf(tn, f.sub(src), "%q is not a webhook name: want 1-200 characters of [A-Za-z0-9._-]", target)
		}
	case "manual":
		if tn != nil && target == "" {
			p.errorf(tn, f.sub(src), "empty event type")
		}
	case "cron":
		if tn != nil {
			if _, err := engine.CronParser.Parse(target); err != nil {
				p.errorf(tn, f.sub(src), "schedule %q: %v (want five fields, six with seconds first, @daily, @every 30s, with an optional CRON_TZ= prefix)", target, err)
			}
		}
	}
	if src != "cron" {
		for _, k := range []string{"name", "catch_up", "catch_up_window", "overlap", "jitter"} {
			if kn := f.keys[k]; kn != nil {
				p.errorf(kn, f.sub(k), "only cron triggers have %s", k)
			}
		}
	} else if kn := f.keys["idempotency_key"]; kn != nil {
		p.errorf(kn, f.sub("idempotency_key"), "cron triggers have no idempotency key: each tick is keyed by schedule and time")
	}

	var when *expr
	if wn := f.get("when"); wn != nil {
		when = p.expression(wn, f.sub("when"), scopeTrigger, true)
	}
	ctxT := sagaCtx
	if c := f.get("context"); c != nil {
		ctxT = p.contextTemplate(c, f.sub("context"))
	}
	var limits []engine.LimitOption
	desc := []string{src + " " + target}
	var key engine.Key
	if k, ok := f.str("idempotency_key", "a field path such as order_id or customer.id"); ok {
		if !validFieldPath(k) {
			p.errorf(f.get("idempotency_key"), f.sub("idempotency_key"), "%q is not a field path: want names separated by dots, such as order_id or customer.id", k)
		}
		key = engine.KeyField(k)
		desc = append(desc, "idempotency_key="+k)
	}
	if mc, ok := f.integer("max_concurrent", 1, 1_000_000); ok {
		limits = append(limits, engine.WithMaxConcurrent(int(mc)))
		desc = append(desc, fmt.Sprintf("max_concurrent=%d", mc))
	}
	if rn := f.get("rate_limit"); rn != nil {
		if rf, ok := p.mapping(rn, f.sub("rate_limit"), []string{"per_second", "burst"}, nil); ok {
			ps, okp := rf.number("per_second", 0.001, 1e9)
			if rf.required("per_second", "starts per second, e.g. 10 or 0.5") == nil {
				okp = false
			}
			burst, okb := rf.integer("burst", 1, 1_000_000)
			if !okb {
				burst = 1
			}
			if okp {
				limits = append(limits, engine.WithRateLimit(ps, int(burst)))
				desc = append(desc, fmt.Sprintf("rate_limit=%g/s burst %d", ps, burst))
			}
		}
	}
	if when != nil {
		desc = append(desc, "when "+when.src)
	}
	if len(p.errs) > nerr {
		return engine.Trigger{}, "", false
	}
	transform := transformer(when, ctxT, vars)
	var t engine.Trigger
	switch src {
	case "kafka", "webhook", "manual":
		opts := []engine.Option{}
		if !key.IsZero() {
			opts = append(opts, engine.WithKey(key))
		}
		for _, l := range limits {
			opts = append(opts, l)
		}
		switch src {
		case "kafka":
			t = engine.Kafka(target, transform, opts...)
		case "webhook":
			t = engine.Webhook(target, transform, opts...)
		default:
			t = engine.Manual(target, transform, opts...)
		}
	case "cron":
		var pol engine.CronPolicy
		if s, ok := f.str("catch_up", "skip, latest or all"); ok {
			if !slices.Contains([]string{"skip", "latest", "all"}, s) {
				p.errorf(f.get("catch_up"), f.sub("catch_up"), "%q: want skip, latest or all", s)
			}
			pol.CatchUp = engine.CatchUp(s)
			desc = append(desc, "catch_up="+s)
		}
		if s, ok := f.str("overlap", "allow_all, skip or buffer_one"); ok {
			if !slices.Contains([]string{"allow_all", "skip", "buffer_one"}, s) {
				p.errorf(f.get("overlap"), f.sub("overlap"), "%q: want allow_all, skip or buffer_one", s)
			}
			pol.Overlap = engine.Overlap(s)
			desc = append(desc, "overlap="+s)
		}
		pol.CatchUpWindow, _ = f.duration("catch_up_window", time.Second)
		pol.Jitter, _ = f.duration("jitter", time.Millisecond)
		opts := []engine.CronOption{engine.WithCronPolicy(pol)}
		if name, ok := f.str("name", "a schedule name"); ok {
			if !storage.ValidName(name) {
				p.errorf(f.get("name"), f.sub("name"), "%q is not a schedule name: want 1-200 characters of [A-Za-z0-9._-]", name)
			}
			opts = append(opts, engine.WithName(name))
			desc[0] += " (schedule " + name + ")"
		}
		if when != nil || ctxT != nil {
			opts = append(opts, engine.WithTransform(transform))
		}
		for _, l := range limits {
			opts = append(opts, l)
		}
		t = engine.Cron(target, opts...)
	}
	if len(p.errs) > nerr {
		return engine.Trigger{}, "", false
	}
	return t, strings.Join(desc, "  "), true
}

func validFieldPath(s string) bool {
	if s == "" {
		return false
	}
	for part := range strings.SplitSeq(s, ".") {
		if part == "" {
			return false
		}
	}
	return true
}

// validTopic applies Kafka's topic name rules.
func validTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case len(t) > 249:
		return fmt.Errorf("topic %q is longer than 249 characters", t)
	case t == "." || t == "..":
		return fmt.Errorf("topic %q is not allowed", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic %q has %q: want [A-Za-z0-9._-]", t, c)
		}
	}
	return nil
}

// transformer builds a trigger's transformer: the when condition (false:
// no saga), then the context template (nil: the event as it is).
func transformer(when *expr, ctxT template, vars map[string]string) engine.Transformer {
	if when == nil && ctxT == nil {
		return engine.PassThrough
	}
	return func(ev *engine.Event) (map[string]any, error) {
		m, err := ev.JSON()
		if err != nil {
			return nil, err
		}
		in := map[string]any{"event": toCEL(m), "env": vars, "meta": map[string]any{
			"source": string(ev.Source), "name": ev.Name, "topic": ev.Topic, "partition": int64(ev.Partition),
			"offset": ev.Offset, "key": string(ev.Key), "timestamp": ev.Timestamp.UTC().Format(time.RFC3339Nano),
			"headers": eventHeaders(ev.Headers),
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if when != nil {
			ok, err := when.cond(ctx, in)
			if err != nil {
				return nil, fmt.Errorf("when: %w", err)
			}
			if !ok {
				return nil, engine.ErrIgnore
			}
		}
		if ctxT == nil {
			return m, nil
		}
		v, err := ctxT.eval(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("context: %w", err)
		}
		out, _ := v.(map[string]any)
		return out, nil
	}
}

func eventHeaders(hs []engine.Header) map[string]any {
	out := make(map[string]any, len(hs))
	for _, h := range hs {
		if _, ok := out[h.Key]; !ok {
			out[h.Key] = string(h.Value)
		}
	}
	return out
}

// httpSettings reads the transport settings of a mapping (the saga's http
// block, or a call) over base.
func (p *parser) httpSettings(f *fields, s *httpSettings) {
	if hosts, ok := f.list("allow_hosts", "host names, *.domains, IP addresses or CIDRs"); ok {
		s.allow, s.allowSet, s.allowNode = nil, true, f.get("allow_hosts")
		for i, h := range hosts {
			if h.Kind != yaml.ScalarNode || isNull(h) {
				p.errorf(h, index(f.sub("allow_hosts"), i), "got %s, want a host name, *.domain, an IP address or a CIDR", kind(h))
				continue
			}
			if _, errs := newHostPolicy([]string{h.Value}); len(errs) > 0 {
				p.errorf(h, index(f.sub("allow_hosts"), i), "%v", errs[0])
				continue
			}
			s.allow = append(s.allow, h.Value)
		}
		if len(hosts) == 0 {
			p.errorf(s.allowNode, f.sub("allow_hosts"), "empty list: leave allow_hosts out to allow every host but link-local and metadata addresses, or list the hosts")
		}
	}
	if n, ok := f.integer("max_response_bytes", 1, 1<<40); ok {
		s.maxResponse = n
	}
	if b, ok := f.boolean("follow_redirects"); ok {
		s.follow = b
	}
	if tn := f.get("tls"); tn != nil {
		if tf, ok := p.mapping(tn, f.sub("tls"), tlsKeys, nil); ok {
			s.tls, s.tlsKey = p.tlsConfig(tf)
		}
	}
	if hn := f.get("headers"); hn != nil {
		s.headers = p.headers(hn, f.sub("headers"), s.headers)
	}
}

// headers parses a headers mapping (free keys) into templates; later
// entries replace earlier ones with the same name.
func (p *parser) headers(n *yaml.Node, path string, base []header) []header {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errorf(n, path, "got %s, want a mapping of header names to values", kind(n))
		return base
	}
	out := append([]header(nil), base...)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || !validHeaderName(k.Value) {
			p.errorf(k, path, "%s is not a header name: want letters, digits and !#$%%&'*+-.^_`|~", kind(k))
			continue
		}
		if strings.EqualFold(k.Value, "Host") || strings.EqualFold(k.Value, "Content-Length") || strings.EqualFold(k.Value, "Transfer-Encoding") {
			p.errorf(k, join(path, k.Value), "%s is set by the HTTP client, not by the file", k.Value)
			continue
		}
		t := p.stringTemplate(v, join(path, k.Value), scopeStep)
		out = slices.DeleteFunc(out, func(h header) bool { return strings.EqualFold(h.name, k.Value) })
		out = append(out, header{name: k.Value, value: t})
	}
	return out
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// tlsConfig reads a tls block; files are read now (relative to the saga
// file's directory).
func (p *parser) tlsConfig(f *fields) (*tls.Config, string) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	key := ""
	rel := func(s string) string {
		if filepath.IsAbs(s) {
			return s
		}
		return filepath.Join(filepath.Dir(p.file), s)
	}
	if ca, ok := f.str("ca_file", "a PEM file of CA certificates"); ok {
		pem, err := os.ReadFile(rel(ca))
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			p.errorf(f.get("ca_file"), f.sub("ca_file"), "cannot read the CA file: %v", err)
		case !pool.AppendCertsFromPEM(pem):
			p.errorf(f.get("ca_file"), f.sub("ca_file"), "%s holds no PEM certificate", rel(ca))
		default:
			cfg.RootCAs = pool
		}
		key += "ca=" + rel(ca) + ";"
	}
	cert, okc := f.str("cert_file", "a PEM client certificate")
	keyf, okk := f.str("key_file", "a PEM client key")
	switch {
	case okc && okk:
		pair, err := tls.LoadX509KeyPair(rel(cert), rel(keyf))
		if err != nil {
			p.errorf(f.get("cert_file"), f.sub("cert_file"), "cannot load the client certificate: %v", err)
		} else {
			cfg.Certificates = []tls.Certificate{pair}
		}
		key += "cert=" + rel(cert) + ";key=" + rel(keyf) + ";"
	case okc:
		p.errorf(f.get("cert_file"), f.sub("cert_file"), "cert_file needs key_file")
	case okk:
		p.errorf(f.get("key_file"), f.sub("key_file"), "key_file needs cert_file")
	}
	if b, ok := f.boolean("insecure_skip_verify"); ok && b {
		cfg.InsecureSkipVerify = true
		key += "insecure;"
	}
	return cfg, key
}
