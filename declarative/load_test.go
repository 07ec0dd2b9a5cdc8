package declarative_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// minimal is a valid saga to build broken ones from.
const minimal = `name: s
triggers:
  - manual: go
steps:
  - name: a
    action:
      http:
        method: POST
        url: http://127.0.0.1:1/a
`

// kminimal is a valid saga with a command step.
const kminimal = `name: s
triggers:
  - manual: go
steps:
  - name: a
    action:
      command:
        topic: accounts.commands
        key: ${{ context.from }}
        payload: {op: debit}
`

// TestLoadErrorsArePositioned: every mistake is reported at its
// file:line:column with the element's path and what was expected.
func TestLoadErrorsArePositioned(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []string // "line:col: path: text"
	}{
		{"not yaml", "name: [a\n", []string{":1:1: not valid YAML: did not find expected ',' or ']'"}},
		{"not a mapping", "- a\n- b\n", []string{":1:1: got a list, want a mapping with name, description"}},
		{"missing everything", "description: x\n", []string{
			`:1:1: missing field "name"`, `:1:1: missing field "triggers"`, `:1:1: missing field "steps"`}},
		{"unknown top-level field", minimal + "colour: red\n", []string{`:10:1: colour: unknown field "colour", want one of: name, description, triggers, context, http, steps`}},
		{"bad saga name", strings.Replace(minimal, "name: s", "name: my saga", 1), []string{`:1:7: name: "my saga" is not a saga name: want 1-200 characters of [A-Za-z0-9._-]`}},
		{"name declared twice", minimal + "name: t\n", []string{`:10:1: name: declared twice (first at line 1)`}},
		{"no triggers", strings.Replace(minimal, "  - manual: go\n", "", 1) + "", []string{`:2:10: triggers: got nothing (null), want a list of triggers`}},
		{"empty steps", "name: s\ntriggers:\n  - manual: go\nsteps: []\n", []string{`:4:8: steps: empty list, want at least one step`}},
		{"trigger without source", strings.Replace(minimal, "  - manual: go", "  - max_concurrent: 3", 1), []string{
			`:3:5: triggers[0]: missing the trigger's source: want one of kafka (a topic), cron (a schedule), webhook (a name) or manual (an event type)`}},
		{"two sources", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    webhook: w", 1), []string{
			`:4:5: triggers[0].webhook: a trigger has one source, and this one already has manual`}},
		{"bad topic", strings.Replace(minimal, "  - manual: go", "  - kafka: orders created", 1), []string{
			`:3:12: triggers[0].kafka: topic "orders created" has ' ': want [A-Za-z0-9._-]`}},
		{"bad schedule", strings.Replace(minimal, "  - manual: go", "  - cron: '61 * * * *'", 1), []string{
			`:3:11: triggers[0].cron: schedule "61 * * * *": end of range (61) above maximum (59)`}},
		{"cron policy typo", strings.Replace(minimal, "  - manual: go", "  - cron: '@daily'\n    catch_up: some\n    overlap: queue", 1), []string{
			`:4:15: triggers[0].catch_up: "some": want skip, latest or all`, `:5:14: triggers[0].overlap: "queue": want allow_all, skip or buffer_one`}},
		{"cron with key", strings.Replace(minimal, "  - manual: go", "  - cron: '@daily'\n    idempotency_key: id", 1), []string{
			`:4:5: triggers[0].idempotency_key: cron triggers have no idempotency key`}},
		{"cron-only field elsewhere", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    jitter: 5s", 1), []string{
			`:4:5: triggers[0].jitter: only cron triggers have jitter`}},
		{"negative max_concurrent", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    max_concurrent: -1", 1), []string{
			`:4:21: triggers[0].max_concurrent: got "-1", want an integer from 1 to 1000000`}},
		{"rate limit without rate", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    rate_limit: {burst: 3}", 1), []string{
			`:4:17: triggers[0].rate_limit: missing field "per_second"`}},
		{"when is not a condition", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    when: event.amount + 1", 1), []string{
			`:4:11: triggers[0].when: expression "event.amount + 1"`}},
		{"when syntax error", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    when: event.amount >", 1), []string{
			`:4:25: triggers[0].when: expression "event.amount >": Syntax error`}},
		{"when is not a condition (typed)", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    when: '\"yes\"'", 1), []string{
			`triggers[0].when: expression "\"yes\"" gives string, want a condition (a bool)`}},
		{"context sees event, not response", minimal + "context:\n  id: ${{ response.id }}\n", []string{
			`:11:11: context.id: expression "response.id": undeclared reference to 'response'`, `(variables here: event, meta, env)`}},
		{"context not a mapping", minimal + "context: [a]\n", []string{`:10:10: context: got a list, want a mapping of context fields`}},
		{"unclosed template", minimal + "context:\n  id: ${{ event.id\n", []string{`:11:7: context.id: "${{ event.id" opens ${{ at offset 0 without a closing }}`}},
		{"step without name", strings.Replace(minimal, "  - name: a\n", "  - \n", 1), []string{
			`:6:5: steps[0]: missing field "name"`}},
		{"duplicate step", minimal + "  - name: a\n    action: {http: {method: GET, url: 'http://127.0.0.1:1/'}}\n", []string{
			`:10:5: steps[1].name: step "a" is declared twice (first at line 5)`}},
		{"kafka is not a step kind", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      kafka: {topic: x}\n", 1), []string{
			`:7:7: steps[0].action.kafka: unknown field "kafka", want one of: http, command, await, sleep, retry, timeout`}},
		{"await and sleep are not compensations", minimal + "    compensation:\n      await: {topic: x}\n  - name: b\n    action:\n      sleep: 5s\n    compensation:\n      sleep: 1s\n", []string{
			`:11:7: steps[0].compensation.await: a compensation is an http call or a command, not await (await and sleep are actions only)`,
			`:16:7: steps[1].compensation.sleep: a compensation is an http call or a command, not sleep`,
			`:15:5: steps[1].compensation: a sleep step has nothing to compensate: remove its compensation`}},
		{"action without kind", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      timeout: 5s\n", 1), []string{
			`:7:7: steps[0].action: missing the step kind: want http, command, await or sleep`}},
		{"bad method and url", strings.Replace(strings.Replace(minimal, "POST", "FETCH", 1), "http://127.0.0.1:1/a", "ftp://x/a", 1), []string{
			`:8:17: steps[0].action.http.method: "FETCH": want one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS`,
			`:9:14: steps[0].action.http.url: "ftp://x/a": want an absolute http:// or https:// URL`}},
		{"missing url", strings.Replace(minimal, "        url: http://127.0.0.1:1/a\n", "", 1), []string{
			`:8:9: steps[0].action.http: missing field "url"`}},
		{"unknown http field", minimal + "        verb: POST\n", []string{
			`:10:9: steps[0].action.http.verb: unknown field "verb"`}},
		{"bad statuses", minimal + "        expect: [200, 700]\n        retry_on: x\n", []string{
			`:10:23: steps[0].action.http.expect[1]: got "700", want an HTTP status from 100 to 599`,
			`:11:19: steps[0].action.http.retry_on: got "x", want an HTTP status`}},
		{"body of a GET", strings.Replace(minimal, "POST", "GET", 1) + "        body: {a: 1}\n", []string{
			`:10:15: steps[0].action.http.body: a GET request has no body`}},
		{"body expression error", minimal + "        body:\n          n: ${{ context.n * }}\n", []string{
			`:11:30: steps[0].action.http.body.n: expression "context.n *": Syntax error`}},
		{"request cannot see response", minimal + "        headers:\n          X-Id: ${{ response.body.id }}\n", []string{
			`:11:21: steps[0].action.http.headers.X-Id: expression "response.body.id": undeclared reference to 'response'`}},
		{"bad header name", minimal + "        headers:\n          'X Id': a\n", []string{
			`:11:11: steps[0].action.http.headers: "X Id" is not a header name`}},
		{"save typo", minimal + "        save:\n          id: ${{ respons.body.id }}\n", []string{
			`:11:19: steps[0].action.http.save.id: expression "respons.body.id": undeclared reference to 'respons' (did you mean 'response'?)`}},
		{"bad retry and timeout", minimal + "      retry:\n        max_attempts: 0\n        multiplier: 0.5\n        initial_delay: 1\n      timeout: soon\n", []string{
			`:11:23: steps[0].action.retry.max_attempts: got "0", want an integer from 1 to 1000`,
			`:12:21: steps[0].action.retry.multiplier: got "0.5", want a number from 1 to 100`,
			`:13:24: steps[0].action.retry.initial_delay: got "1", want a duration`,
			`:14:16: steps[0].action.timeout: got "soon", want a duration of at least 1ms`}},
		{"metadata address refused", strings.Replace(minimal, "http://127.0.0.1:1/a", "http://169.254.169.254/latest/meta-data", 1), []string{
			`:9:14: steps[0].action.http.url: destination refused: 169.254.169.254 is a link-local or cloud metadata address`}},
		{"metadata name refused", strings.Replace(minimal, "http://127.0.0.1:1/a", "http://metadata.google.internal/computeMetadata/v1/", 1), []string{
			`:9:14: steps[0].action.http.url: destination refused: metadata.google.internal is a cloud metadata host`}},
		{"host not in allow list", minimal + "http:\n  allow_hosts: [payments.internal]\n", []string{
			`:9:14: steps[0].action.http.url: destination refused: 127.0.0.1 is not in allow_hosts`}},
		{"bad allow_hosts entry", minimal + "http:\n  allow_hosts: ['https://x.example:443']\n", []string{
			`:11:17: http.allow_hosts[0]: "https://x.example:443": want a host name, *.domain, an IP address or a CIDR`}},
		{"missing CA file", minimal + "        tls: {ca_file: nope.pem}\n", []string{
			`:10:24: steps[0].action.http.tls.ca_file: cannot read the CA file`}},
		{"cert without key", minimal + "        tls: {cert_file: c.pem}\n", []string{
			`:10:26: steps[0].action.http.tls.cert_file: cert_file needs key_file`}},
		{"bad key path", strings.Replace(minimal, "  - manual: go", "  - manual: go\n    idempotency_key: a..b", 1), []string{
			`:4:22: triggers[0].idempotency_key: "a..b" is not a field path`}},
		// Steps that talk over Kafka.
		{"http and command", kminimal + "      http: {method: GET, url: 'http://127.0.0.1:1/'}\n", []string{
			`:11:7: steps[0].action.http: an action has one kind, and this one already has command (want one of http, command, await or sleep)`}},
		{"command without topic", strings.Replace(kminimal, "        topic: accounts.commands\n", "", 1), []string{
			`:8:9: steps[0].action.command: missing field "topic" (want the topic the command is produced to`}},
		{"bad command topic", strings.Replace(kminimal, "topic: accounts.commands", "topic: accounts commands", 1), []string{
			`:8:16: steps[0].action.command.topic: topic "accounts commands" has ' ': want [A-Za-z0-9._-]`}},
		{"templated topic", strings.Replace(kminimal, "topic: accounts.commands", "topic: acc.${{ context.x }}", 1), []string{
			`:8:16: steps[0].action.command.topic: "acc.${{ context.x }}": a topic is a fixed name`}},
		{"command key syntax error", strings.Replace(kminimal, "${{ context.from }}", "${{ context.from + }}", 1), []string{
			`:9:33: steps[0].action.command.key: expression "context.from +": Syntax error`}},
		{"command payload cannot see response", strings.Replace(kminimal, "payload: {op: debit}", "payload: {id: \"${{ response.id }}\"}", 1), []string{
			`:10:28: steps[0].action.command.payload.id: expression "response.id": undeclared reference to 'response' (variables here: context, saga, env)`}},
		{"unknown command field", kminimal + "        partition: 3\n", []string{
			`:11:9: steps[0].action.command.partition: unknown field "partition", want one of: topic, key, payload`}},
		{"bad command timeout", kminimal + "      timeout: 3\n", []string{
			`:11:16: steps[0].action.timeout: got "3", want a duration of at least 1ms such as 500ms, 10s or 1m30s`}},
		{"command timeouts differ", kminimal + "      timeout: 3s\n    compensation:\n      command: {topic: accounts.commands}\n      timeout: 5s\n", []string{
			`:14:16: steps[0].compensation.timeout: 5s differs from the action's timeout (3s): a step's command compensation waits as long as its action`}},
		{"http compensation outlasts the command", kminimal + "      timeout: 3s\n    compensation:\n      http: {method: POST, url: 'http://127.0.0.1:1/undo'}\n      timeout: 10s\n", []string{
			`:14:16: steps[0].compensation.timeout: 10s is longer than the action's timeout (3s): the step's one timeout bounds its http call too; want at most 3s`}},
		{"await missing its parts", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      await: {topic: payments}\n", 1), []string{
			`:7:7: steps[0].action: missing field "timeout" (want how long to wait for the event`,
			`:7:14: steps[0].action.await: missing field "field" (want the event's top-level field`,
			`:7:14: steps[0].action.await: missing field "value" (want the value the event's field must have`}},
		{"await on a nested field", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      await: {topic: payments, field: order.id, value: '${{ context.id }}', into: ''}\n      timeout: 1h\n", 1), []string{
			`:7:39: steps[0].action.await.field: "order.id": want a top-level field name of the event`,
			`:7:83: steps[0].action.await.into: empty field name`}},
		{"await value expression error", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      await: {topic: payments, field: id, value: '${{ event.id }}'}\n      timeout: 1h\n", 1), []string{
			`steps[0].action.await.value: expression "event.id": undeclared reference to 'event'`}},
		{"bad sleep", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      sleep: 5\n      timeout: 1s\n      retry: {max_attempts: 2}\n", 1), []string{
			`:7:14: steps[0].action.sleep: got "5", want a duration of at least 1ms`,
			`:8:7: steps[0].action.timeout: a sleep step has no timeout: it waits for its sleep duration`,
			`:9:7: steps[0].action.retry: a sleep step has no retry policy (it cannot fail)`}},
		{"sleep with a compensation", strings.Replace(minimal, "      http:\n        method: POST\n        url: http://127.0.0.1:1/a\n", "      sleep: 5s\n    compensation:\n      command: {topic: accounts.commands}\n", 1), []string{
			`:8:5: steps[0].compensation: a sleep step has nothing to compensate: remove its compensation`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, t.TempDir(), "t.yaml", tc.doc)
			defs, err := declarative.Load(path)
			if err == nil {
				t.Fatalf("loaded %d definitions, want an error", len(defs))
			}
			if defs != nil {
				t.Errorf("got definitions with the error")
			}
			if !errors.Is(err, declarative.ErrInvalid) {
				t.Errorf("error does not match ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			// every line names the file and a position
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Errorf("error line without file:line:column: %q", line)
				}
			}
		})
	}
}

// TestLoadCollectsEveryError: one run reports all problems of all files,
// in file order then position order.
func TestLoadCollectsEveryError(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", strings.Replace(strings.Replace(minimal, "POST", "FETCH", 1), "manual: go", "kafka: 'a b'", 1))
	write(t, dir, "b.yml", minimal) // same name as a.yaml's saga
	write(t, dir, "notes.txt", "not read")
	write(t, dir, ".hidden.yaml", "not read: [")
	_, err := declarative.Load(dir)
	if err == nil {
		t.Fatal("want errors")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"a.yaml:3:12: triggers[0].kafka", "a.yaml:8:17: steps[0].action.http.method", `b.yml:1:1: name: saga "s" is already defined at`}
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("error %d = %q, want it to contain %q", i, lines[i], w)
		}
	}
	var de *declarative.Error
	if !errors.As(err, &de) || de.Line != 3 || de.Column != 12 || de.Path != "triggers[0].kafka" {
		t.Errorf("errors.As *Error: %+v", de)
	}
}

func TestLoadEmptyInputs(t *testing.T) {
	dir := t.TempDir()
	if _, err := declarative.Load(dir); err == nil || !strings.Contains(err.Error(), "no *.yaml or *.yml file in directory") {
		t.Errorf("empty directory: %v", err)
	}
	if _, err := declarative.Load(filepath.Join(dir, "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	p := write(t, dir, "empty.yaml", "# nothing\n")
	if _, err := declarative.Load(p); err == nil || !strings.Contains(err.Error(), "empty.yaml:1:1: no saga in this file") {
		t.Errorf("empty file: %v", err)
	}
}

// TestLoadFullDefinition: every trigger kind and option reaches the
// engine's trigger as declared; several documents in one file.
func TestLoadFullDefinition(t *testing.T) {
	doc := `name: full
triggers:
  - kafka: orders.created
    idempotency_key: order.id
    max_concurrent: 7
    rate_limit: {per_second: 2.5, burst: 4}
  - cron: "CRON_TZ=Europe/Berlin 0 2 * * *"
    name: nightly
    catch_up: all
    catch_up_window: 6h
    overlap: skip
    jitter: 30s
  - webhook: shop
  - manual: full.go
http: &h
  allow_hosts: [127.0.0.1]
steps:
  - name: a
    action:
      http:
        method: post
        url: http://127.0.0.1:1/a
      retry: {max_attempts: 9}
    compensation:
      http:
        method: DELETE
        url: http://127.0.0.1:1/a
  - name: b
    action:
      http: {method: GET, url: "http://127.0.0.1:1/b"}
---
---
name: second
triggers: [{manual: second.go}]
steps:
  - name: only
    action:
      http: {method: GET, url: "http://127.0.0.1:1/b"}
`
	path := write(t, t.TempDir(), "full.yaml", doc)
	defs, err := declarative.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(defs) != 2 || defs[0].Name != "full" || defs[1].Name != "second" || defs[1].Line != 33 {
		t.Fatalf("definitions: %+v", defs)
	}
	s := defs[0].Saga()
	k, c, w, m := &s.Triggers[0], &s.Triggers[1], &s.Triggers[2], &s.Triggers[3]
	if k.Source() != engine.SourceKafka || k.Topic() != "orders.created" || k.Key().Field() != "order.id" || k.MaxConcurrent() != 7 ||
		k.RateLimit() != (engine.RateLimit{PerSecond: 2.5, Burst: 4}) {
		t.Errorf("kafka trigger: %s %q key %s max %d rate %+v", k.Source(), k.Topic(), k.Key(), k.MaxConcurrent(), k.RateLimit())
	}
	wantPol := engine.CronPolicy{CatchUp: engine.CatchUpAll, CatchUpWindow: 6 * time.Hour, Overlap: engine.OverlapSkip, Jitter: 30 * time.Second}
	if c.Source() != engine.SourceCron || c.Schedule() != "CRON_TZ=Europe/Berlin 0 2 * * *" || c.ScheduleName() != "nightly" || c.CronPolicy() != wantPol {
		t.Errorf("cron trigger: %q %q %+v", c.Schedule(), c.ScheduleName(), c.CronPolicy())
	}
	if w.Webhook() != "shop" || m.EventType() != "full.go" || !w.Key().IsZero() {
		t.Errorf("webhook %q manual %q", w.Webhook(), m.EventType())
	}
	if len(s.Steps) != 2 || s.Steps[0].Compensate == nil || s.Steps[1].Compensate != nil {
		t.Fatalf("steps: %+v", s.Steps)
	}
	if got := s.Steps[0].Retry; got.MaxAttempts != 9 || got.InitialDelay != engine.DefaultRetry.InitialDelay || got.Multiplier != engine.DefaultRetry.Multiplier {
		t.Errorf("retry: %+v, want max 9 and the rest of the default", got)
	}
	if s.Steps[0].CompensateRetry != engine.DefaultCompensateRetry {
		t.Errorf("compensation retry: %+v", s.Steps[0].CompensateRetry)
	}
	if defs[0].Steps[0].Action.Method != "POST" {
		t.Errorf("method not normalised: %q", defs[0].Steps[0].Action.Method)
	}
	reg := engine.NewRegistry()
	if err := declarative.Register(reg, path); err != nil {
		t.Fatal(err)
	}
	routes, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if routes.Saga("full") == nil || routes.Saga("second") == nil || len(routes.Match(engine.SourceCron, "full:nightly")) != 1 {
		t.Errorf("routes: %+v", routes.Table())
	}
}

// TestRegisterRefusesTakenName: a YAML saga cannot shadow a compiled one.
func TestRegisterRefusesTakenName(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "s", Steps: []engine.Step{{Name: "x", Action: func(context.Context, *engine.Run) error { return nil }}},
		Triggers: []engine.Trigger{engine.Manual("x", engine.PassThrough)}})
	path := write(t, t.TempDir(), "s.yaml", minimal)
	err := declarative.Register(reg, path)
	if err == nil || !strings.Contains(err.Error(), `s.yaml:1:1: name: saga "s" is already declared (compiled into the binary)`) {
		t.Fatalf("want a located duplicate error, got %v", err)
	}
}

// TestFingerprint: steps and compensations by name and order, nothing else.
func TestFingerprint(t *testing.T) {
	dir := t.TempDir()
	load := func(doc string) string {
		t.Helper()
		defs, err := declarative.Load(write(t, dir, "f.yaml", doc))
		if err != nil {
			t.Fatal(err)
		}
		s := defs[0].Saga()
		if defs[0].Fingerprint != declarative.Fingerprint(&s) || !strings.HasPrefix(defs[0].Fingerprint, "sha256:") {
			t.Fatalf("fingerprint %q", defs[0].Fingerprint)
		}
		return defs[0].Fingerprint
	}
	two := minimal + "  - name: b\n    action: {http: {method: GET, url: 'http://127.0.0.1:1/b'}}\n"
	base := load(two)
	if load(strings.Replace(two, "/b'", "/other'", 1)) != base {
		t.Error("a URL change changed the fingerprint")
	}
	if load(strings.Replace(two, "name: b", "name: c", 1)) == base {
		t.Error("a renamed step kept the fingerprint")
	}
	swapped := minimal[:strings.Index(minimal, "  - name: a")] + "  - name: b\n    action: {http: {method: GET, url: 'http://127.0.0.1:1/b'}}\n" + minimal[strings.Index(minimal, "  - name: a"):]
	if load(swapped) == base {
		t.Error("reordered steps kept the fingerprint")
	}
	if load(two+"    compensation: {http: {method: GET, url: 'http://127.0.0.1:1/b'}}\n") == base {
		t.Error("an added compensation kept the fingerprint")
	}
}

// TestLoadAnchorsAndMerges: YAML anchors, aliases and merge keys work in
// the structure; explicit keys win over merged ones.
func TestLoadAnchorsAndMerges(t *testing.T) {
	doc := `name: merged
triggers: [{manual: go}]
steps:
  - name: a
    action:
      http: &call
        method: POST
        url: http://127.0.0.1:1/a
        expect: 201
      retry: &retry {max_attempts: 7}
  - name: b
    action:
      http:
        <<: *call
        method: PUT
      retry: *retry
`
	defs, err := declarative.Load(write(t, t.TempDir(), "m.yaml", doc))
	if err != nil {
		t.Fatal(err)
	}
	b := defs[0].Steps[1].Action
	if b.Method != "PUT" || b.URL != "http://127.0.0.1:1/a" || len(b.Expect) != 1 || b.Expect[0] != 201 || b.Retry.MaxAttempts != 7 {
		t.Errorf("merged call: %+v", b)
	}
}

// TestLoadPreviousVersions: previous: lists earlier versions of the steps
// (engine.Saga.Previous), with the fingerprint a compiled saga of the
// same steps has, and positioned errors in them; a previous version equal
// to the current steps is refused.
func TestLoadPreviousVersions(t *testing.T) {
	dir := t.TempDir()
	doc := minimal + "  - name: b2\n    action: {http: {method: GET, url: 'http://127.0.0.1:1/b'}}\n" +
		"previous:\n  - description: before b was renamed\n    steps:\n" +
		"      - name: a\n        action: {http: {method: POST, url: 'http://127.0.0.1:1/a'}}\n" +
		"      - name: b\n        action: {http: {method: GET, url: 'http://127.0.0.1:1/b'}}\n"
	defs, err := declarative.Load(write(t, dir, "p.yaml", doc))
	if err != nil {
		t.Fatal(err)
	}
	s := defs[0].Saga()
	noop := func(context.Context, *engine.Run) error { return nil }
	compiled := engine.Fingerprint(&engine.Saga{Steps: []engine.Step{{Name: "a", Action: noop}, {Name: "b", Action: noop}}})
	if len(s.Previous) != 1 || len(defs[0].Previous) != 1 || defs[0].Previous[0] != compiled || engine.Fingerprint(&s.Previous[0]) != compiled {
		t.Fatalf("previous %+v %v, want one version of fingerprint %s", s.Previous, defs[0].Previous, compiled)
	}
	reg := engine.NewRegistry()
	reg.Register(s)
	routes, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	if v := routes.Versions("s"); len(v) != 2 || v[1] != compiled {
		t.Fatalf("versions %v", v)
	}
	var out strings.Builder
	if err := declarative.Describe(&out, &s, defs[0]); err != nil || !strings.Contains(out.String(), "previous version:  "+compiled+" (steps a, b)") {
		t.Fatalf("describe: %v\n%s", err, out.String())
	}

	bad := minimal + "previous:\n  - steps:\n      - name: x\n"
	_, err = declarative.Load(write(t, dir, "bad.yaml", bad))
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:12:9: previous[0].steps[0]") {
		t.Fatalf("a step without an action in a previous version: %v, want it positioned", err)
	}
	same := minimal + "previous:\n  - steps:\n      - name: a\n        action: {http: {method: POST, url: 'http://127.0.0.1:1/a'}}\n"
	if _, err := declarative.Load(write(t, dir, "same.yaml", same)); err == nil || !strings.Contains(err.Error(), "same steps and compensations as the current declaration") {
		t.Fatalf("a previous version equal to the current steps: %v", err)
	}
}

// TestFingerprintOfKafkaSteps: a step that changes kind (http, command,
// await, sleep), or gains or loses a command compensation, is a new
// definition: a deploy that changes what a step waits for is detected
// like a renamed step.
func TestFingerprintOfKafkaSteps(t *testing.T) {
	const head = "name: s\ntriggers: [{manual: go}]\nsteps:\n  - name: a\n"
	variants := map[string]string{
		"http":             "    action: {http: {method: POST, url: 'http://127.0.0.1:1/a'}}\n",
		"command":          "    action: {command: {topic: t.commands}}\n",
		"command+undo":     "    action: {command: {topic: t.commands}}\n    compensation: {command: {topic: t.commands}}\n",
		"await":            "    action: {await: {topic: t.events, field: id, value: '${{ context.id }}'}, timeout: 1m}\n",
		"sleep":            "    action: {sleep: 5s}\n",
		"http+command":     "    action: {http: {method: POST, url: 'http://127.0.0.1:1/a'}}\n    compensation: {command: {topic: t.commands}}\n",
		"await+command":    "    action: {await: {topic: t.events, field: id, value: '${{ context.id }}'}, timeout: 1m}\n    compensation: {command: {topic: t.commands}}\n",
		"sleep, then http": "    action: {sleep: 5s}\n  - name: b\n    action: {http: {method: POST, url: 'http://127.0.0.1:1/b'}}\n",
	}
	seen := map[string]string{}
	dir := t.TempDir()
	for name, steps := range variants {
		defs, err := declarative.Load(write(t, dir, "v.yaml", head+steps))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fp := defs[0].Fingerprint
		if other, dup := seen[fp]; dup {
			t.Errorf("%s and %s have the same fingerprint %s", name, other, fp)
		}
		seen[fp] = name
		if fp != engine.Fingerprint(func() *engine.Saga { s := defs[0].Saga(); return &s }()) {
			t.Errorf("%s: the definition's fingerprint is not the engine's", name)
		}
	}
	if len(seen) != len(variants) {
		t.Errorf("%d fingerprints for %d variants", len(seen), len(variants))
	}
	// What a step sends or waits for may change as a URL may (the
	// fingerprint is the shape): a topic, a payload, a timeout, a sleep's
	// duration, how a compensation is made.
	same := []string{
		"    action: {command: {topic: other.commands, payload: {x: 1}}, timeout: 5s}\n    compensation: {http: {method: POST, url: 'http://127.0.0.1:1/u'}}\n",
		"    action: {command: {topic: t.commands, key: '${{ context.id }}'}}\n    compensation: {command: {topic: t.undo}}\n",
	}
	for _, steps := range same {
		defs, err := declarative.Load(write(t, dir, "v.yaml", head+steps))
		if err != nil {
			t.Fatal(err)
		}
		if seen[defs[0].Fingerprint] != "command+undo" {
			t.Errorf("%s: fingerprint %s, want command+undo's", steps, defs[0].Fingerprint)
		}
	}
}
