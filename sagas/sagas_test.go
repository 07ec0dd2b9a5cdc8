package sagas_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	_ "github.com/sagaz-go/sagaz/sagas"
)

// The tests in this file hold for any set of sagas in this package: add a
// saga as the README says and they still pass, or they name what is wrong
// with it. Tests of particular sagas live next to them (order_test.go).

func routes(t *testing.T) *engine.Routes {
	t.Helper()
	rs, err := engine.DefaultRegistry().Routes()
	if err != nil {
		t.Fatalf("the sagas do not register cleanly (the service would refuse to start):\n%v", err)
	}
	return rs
}

func TestSagasRegisterCleanly(t *testing.T) {
	rs := routes(t)
	if len(rs.SagaNames()) == 0 {
		t.Fatal("no saga registered")
	}
	for _, name := range rs.SagaNames() {
		if len(rs.Saga(name).Triggers) == 0 || len(rs.Saga(name).Steps) == 0 {
			t.Errorf("saga %q: no trigger or no step", name)
		}
	}
	// The payment provider's webhook must be signed outside dev mode.
	if r := rs.Match(engine.SourceWebhook, "payments"); len(r) != 1 || !r[0].Trigger.SignatureRequired() {
		t.Error("the payments webhook is not declared engine.Signed")
	}
}

// A trigger on a topic sagaz writes itself would feed its own output back
// in: dead letters, changelogs, the events and cron topics (consumed through
// webhook, manual and cron triggers instead).
func TestNoTriggerConsumesSagazOwnTopics(t *testing.T) {
	own := map[string]string{"sagaz.dlq": "the dead-letter topic", "sagaz.events": "the events topic", "sagaz.cron": "the cron topic"}
	for _, t2 := range routes(t).Topics() {
		if what, ok := own[t2]; ok {
			t.Errorf("a kafka trigger consumes %s, %s (use a webhook, manual or cron trigger)", t2, what)
		}
		if strings.Contains(t2, "-changelog-") {
			t.Errorf("a kafka trigger consumes %s, which is named like a changelog (<group>-changelog-<topic>)", t2)
		}
	}
}

// Every topic a member needs — changelogs included — must be a name Kafka
// accepts, and distinct.
func TestTopicsTheMemberNeedsAreValid(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)
	seen := map[string]bool{}
	for _, s := range consumer.RequiredTopics(routes(t), consumer.Config{}, true) {
		if !valid.MatchString(s.Name) {
			t.Errorf("%s topic %q is not a valid Kafka topic name (at most 249 of [A-Za-z0-9._-]; changelogs add the group and \"-changelog-\")", s.Role, s.Name)
		}
		if seen[s.Name] {
			t.Errorf("topic %q needed twice", s.Name)
		}
		seen[s.Name] = true
	}
}

// The scheduler accepts every cron trigger's schedule.
func TestSchedulesParse(t *testing.T) {
	for _, r := range routes(t).All() {
		if r.Trigger.Source() != engine.SourceCron {
			continue
		}
		if _, err := cron.Parse(r.Trigger.Schedule()); err != nil {
			t.Errorf("saga %q schedule %q: %v", r.Saga.Name, r.Trigger.Schedule(), err)
		}
	}
}

// The README's saga is example_test.go's, which compiles and runs: the
// README snippet is that code, after its package clause and imports.
func TestReadmeSagaSnippetIsTheExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "## Writing a saga")
	_, block, ok2 := strings.Cut(section, "```go\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md has no Go block under \"## Writing a saga\"")
	}
	ex, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, region, _ := strings.Cut(string(ex), "// README:begin\n")
	region, _, _ = strings.Cut(region, "// README:end")
	if !strings.HasPrefix(block, "package sagas\n") || !strings.HasSuffix(strings.TrimSpace(block), strings.TrimSpace(region)) {
		t.Fatalf("the README's saga differs from example_test.go's (between README:begin and README:end); README has:\n%s", block)
	}
	for _, imp := range []string{`"context"`, `"time"`, `"github.com/sagaz-go/sagaz/engine"`} {
		if !strings.Contains(block, imp) {
			t.Errorf("the README snippet does not import %s", imp)
		}
	}
}
