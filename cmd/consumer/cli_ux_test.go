package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
)

// sagaz runs the command line and returns its output and exit code, as the
// process would exit.
func sagaz(t *testing.T, env func(string) string, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := exitCode(run(context.Background(), args, &out, env), &errOut)
	return out.String() + errOut.String(), code
}

func TestHelpListsTheCommandsAndExitsZero(t *testing.T) {
	for _, args := range [][]string{nil, {"help"}, {"--help"}, {"-h"}, {"-help"}} {
		out, code := sagaz(t, noEnv, args...)
		if code != exitOK {
			t.Errorf("sagaz %v: exit %d", args, code)
		}
		for _, c := range commands {
			if !strings.Contains(out, "\n  "+c.name+" ") {
				t.Errorf("sagaz %v: help does not list %s:\n%s", args, c.name, out)
			}
		}
		if !strings.Contains(out, "Exit codes") || strings.Contains(out, "Usage of") {
			t.Errorf("sagaz %v: help:\n%s", args, out)
		}
	}
	// Each command's help: its arguments and flags, exit 0; the flags show
	// built-in defaults, never the environment's (a token is a secret).
	secret := func(k string) string {
		if k == "SAGAZ_ADMIN_TOKEN" || k == "SAGAZ_SASL_PASSWORD" {
			return "s3cret"
		}
		return ""
	}
	for _, args := range [][]string{{"help", "sagas"}, {"sagas", "--help"}, {"sagas", "list", "-h"}, {"--api", "http://x", "sagas", "-h"}} {
		out, code := sagaz(t, secret, args...)
		if code != exitOK || !strings.Contains(out, "Usage: sagaz sagas list") || !strings.Contains(out, "-status") || !strings.Contains(out, "-watch") {
			t.Errorf("sagaz %v: exit %d\n%s", args, code, out)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("sagaz %v: help shows a secret from the environment", args)
		}
	}
	for _, args := range [][]string{{"help", "run"}, {"run", "--help"}} {
		out, code := sagaz(t, secret, args...)
		if code != exitOK || !strings.Contains(out, "Usage: sagaz run") || !strings.Contains(out, "-brokers") || !strings.Contains(out, "-log-completed") {
			t.Errorf("sagaz %v: exit %d\n%s", args, code, out)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("sagaz %v: help shows a secret from the environment", args)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}, {"-version"}} {
		out, code := sagaz(t, noEnv, args...)
		if code != exitOK || !strings.HasPrefix(out, "sagaz ") || !strings.Contains(out, "commit ") {
			t.Errorf("sagaz %v: exit %d %q", args, code, out)
		}
	}
	out, code := sagaz(t, noEnv, "version", "-o", "json")
	var v struct{ Version, Commit, GoVersion string }
	if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil || v.Version == "" || v.Commit == "" {
		t.Errorf("version -o json: exit %d %q %v", code, out, err)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"bogus"}, {"sagas"}, {"sagas", "frobnicate"}, {"sagas", "show"}, {"sagas", "list", "--bogus"},
		{"sagas", "show", "x", "--status", "failed"}, {"sagas", "list", "-o", "yaml"}, {"sagas", "list", "--limit", "0"},
		{"fire"}, {"fire", "t", "not json"}, {"schedules", "backfill", "x"}, {"schedules", "backfill", "x", "--from", "yesterday", "--to", "today"},
		{"run", "--bogus"}, {"run", "--log-format", "xml"}, {"run", "extra"}, {"--bogus"}, {"healthcheck", "--http-addr", "nohost"},
		{"topics", "--create"}, {"demo", "--count", "0"}, {"help", "nope"},
	} {
		out, code := sagaz(t, noEnv, args...)
		if code != exitUsage || !strings.Contains(out, "sagaz help") {
			t.Errorf("sagaz %s: exit %d, want %d with a pointer to the help: %q", strings.Join(args, " "), code, exitUsage, out)
		}
	}
}

// fakeAPI answers like the service's HTTP API and records the requests.
type fakeAPI struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{}
	saga := `{"id":"orders.created:0:5:order","saga":"order","trigger":"kafka:orders.created","status":"executing",
		"source":{"topic":"orders.created","partition":0,"offset":5},"idempotency_key":"o-5","context":{"order_id":"o-5","amount":42},
		"steps":[{"name":"reserve","status":"completed","attempts":1,"started_at":"2026-11-26T10:00:00Z","ended_at":"2026-11-26T10:00:01Z"},
		{"name":"charge","status":"pending","attempts":2,"error":"card service timeout","started_at":"2026-11-26T10:00:01Z"},
		{"name":"ship","status":"pending","attempts":0}],
		"created_at":"2026-11-26T10:00:00Z","updated_at":"2026-11-26T10:00:03Z","version":4,"owned_here":true}`
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/sagas", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"sagas":[`+saga+`],"next_cursor":""}`)
	})
	mux.HandleFunc("GET /api/sagas/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "orders.created:0:5:order" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"saga not found","detail":"`+r.PathValue("id")+`"}`)
			return
		}
		io.WriteString(w, saga)
	})
	mux.HandleFunc("POST /api/sagas/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"`+r.PathValue("id")+`","status":"accepted"}`)
	})
	mux.HandleFunc("POST /api/fire", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"event_id":"e1","topic":"sagaz.events","partition":0,"offset":7,"saga_ids":["sagaz.events:0:7:order"]}`)
	})
	mux.HandleFunc("GET /api/schedules", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"schedules":[
			{"id":"report:new","spec":"@hourly","owned_here":true,"paused":false,"next_fire":"2026-11-26T11:00:00Z","state":{"last_tick":"2026-11-26T10:20:00Z","fired":0,"skipped":0}},
			{"id":"report:held","spec":"@hourly","owned_here":true,"paused":true,"state":{"last_fired_tick":"2026-11-26T10:00:00Z","fired":3,"skipped":1,"paused":true}},
			{"id":"report:there","spec":"@hourly","owned_here":false,"paused":false,"next_fire":"2026-11-26T11:00:00Z","state":{"fired":0}}]}`)
	})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.RequestURI()+" auth="+r.Header.Get("Authorization"))
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return ""
	}
	return f.reqs[len(f.reqs)-1]
}

func TestFlagsInAnyPosition(t *testing.T) {
	api := newFakeAPI(t)
	env := func(k string) string {
		if k == "SAGAZ_ADMIN_TOKEN" {
			return "tok"
		}
		return ""
	}
	for _, args := range [][]string{
		{"sagas", "list", "--api", api.URL, "--status", "failed"},
		{"--api", api.URL, "sagas", "list", "--status", "failed"},
		{"--api", api.URL, "--status", "failed", "sagas", "list"},
		{"sagas", "--status=failed", "list", "--api=" + api.URL},
	} {
		out, code := sagaz(t, env, args...)
		if code != exitOK || api.last() != "GET /api/sagas?limit=50&status=failed auth=Bearer tok" || !strings.Contains(out, "orders.created:0:5:order") {
			t.Errorf("sagaz %s: exit %d, request %q\n%s", strings.Join(args, " "), code, api.last(), out)
		}
	}
}

// Every command prints the same way per -o: a line (or a table) for
// people, the API's JSON for scripts.
func TestOutputFormats(t *testing.T) {
	api := newFakeAPI(t)
	for _, c := range []struct {
		args  []string
		table string
	}{
		{[]string{"sagas", "retry", "orders.created:0:5:order"}, "orders.created:0:5:order: retry accepted\n"},
		{[]string{"sagas", "cancel", "orders.created:0:5:order"}, "orders.created:0:5:order: cancel accepted\n"},
		{[]string{"sagas", "resolve", "orders.created:0:5:order", "--reason", "done by hand"}, "orders.created:0:5:order: resolved\n"},
		{[]string{"fire", "order.requested", `{"order_id":"o-9"}`}, "order.requested: fire accepted (event e1 at sagaz.events/0 offset 7); sagas: sagaz.events:0:7:order\n"},
		{[]string{"sagas", "list"}, "ID                        SAGA   STATUS     UPDATED               ERROR\norders.created:0:5:order  order  executing  2026-11-26T10:00:03Z\n"},
	} {
		out, code := sagaz(t, noEnv, append(c.args, "--api", api.URL)...)
		if code != exitOK || out != c.table {
			t.Errorf("sagaz %s: exit %d\n got %q\nwant %q", strings.Join(c.args, " "), code, out, c.table)
		}
		out, code = sagaz(t, noEnv, append(c.args, "--api", api.URL, "-o", "json")...)
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil || len(v) == 0 {
			t.Errorf("sagaz %s -o json: exit %d, not a JSON object: %q", strings.Join(c.args, " "), code, out)
		}
	}
}

func TestSagasShowIsReadable(t *testing.T) {
	api := newFakeAPI(t)
	out, code := sagaz(t, noEnv, "sagas", "show", "orders.created:0:5:order", "--api", api.URL)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, re := range []string{
		`(?m)^Status\s+executing$`, `(?m)^Key\s+o-5$`, `(?m)^Source\s+orders.created/0 offset 5$`,
		`(?m)^STEP\s+STATUS\s+ATTEMPTS\s+STARTED\s+ENDED\s+ERROR$`,
		`(?m)^  reserve\s+completed\s+1\s+2026-11-26T10:00:00.000Z\s+2026-11-26T10:00:01.000Z$`,
		`(?m)^▶ charge\s+pending \(running\)\s+2\s+2026-11-26T10:00:01.000Z\s+-\s+card service timeout$`, // the running step
		`(?m)^  ship\s+pending\s+0\s+-\s+-$`,
		`"amount": 42`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("sagas show: no match for %s:\n%s", re, out)
		}
	}
	// An error from the service: exit 1, with the service's message.
	out, code = sagaz(t, noEnv, "sagas", "show", "orders.created:0:6:order", "--api", api.URL)
	if code != exitError || !strings.Contains(out, "saga not found (404)") {
		t.Errorf("unknown saga: exit %d %q", code, out)
	}
	// No service: exit 1, saying where it looked.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	out, code = sagaz(t, noEnv, "sagas", "list", "--api", dead)
	if code != exitError || !strings.Contains(out, "is the service running?") {
		t.Errorf("no service: exit %d %q", code, out)
	}
}

func TestSchedulesListShowsWhatHappened(t *testing.T) {
	api := newFakeAPI(t)
	out, code := sagaz(t, noEnv, "schedules", "list", "--api", api.URL)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, re := range []string{
		`(?m)^report:new\s+@hourly\s+yes\s+2026-11-26T11:00:00Z\s+-\s+0\s+0$`,       // nothing fired yet: no last tick
		`(?m)^report:held\s+@hourly\s+yes\s+paused\s+2026-11-26T10:00:00Z\s+3\s+1$`, // paused: no next fire time
		`(?m)^report:there\s+@hourly\s+no\s+2026-11-26T11:00:00Z\s+-\s+-\s+-$`,      // another member's: state unknown here
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("schedules list: no match for %s:\n%s", re, out)
		}
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func TestSagasListWatchRelistsUntilInterrupted(t *testing.T) {
	api := newFakeAPI(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuf{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"sagas", "list", "--watch", "--interval", "100ms", "--api", api.URL}, out, noEnv)
	}()
	kafkatest.WaitFor(t, 10*time.Second, "three listings", func() bool { return strings.Count(out.String(), "Every 100ms") >= 3 })
	cancel() // Ctrl-C
	select {
	case err := <-done:
		if code := exitCode(err, io.Discard); code != exitOK {
			t.Fatalf("interrupted watch: exit %d (%v)", code, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop when interrupted")
	}
	if n := strings.Count(out.String(), "orders.created:0:5:order"); n < 3 {
		t.Errorf("%d listings with the saga:\n%s", n, out.String())
	}
}

func TestHealthcheck(t *testing.T) {
	ready := true
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"not ready","detail":"joining the consumer group"}`)
			return
		}
		io.WriteString(w, `{"status":"ready"}`)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	// The address the service listens on, as configured (0.0.0.0 in the
	// container): asked on loopback.
	env := func(k string) string {
		if k == "SAGAZ_HTTP_ADDR" {
			return "0.0.0.0:" + port
		}
		return ""
	}
	if out, code := sagaz(t, env, "healthcheck"); code != exitOK || !strings.Contains(out, "ready") {
		t.Errorf("ready service: exit %d %q", code, out)
	}
	mu.Lock()
	ready = false
	mu.Unlock()
	if out, code := sagaz(t, env, "healthcheck"); code != exitError || !strings.Contains(out, "joining the consumer group") {
		t.Errorf("service not ready: exit %d %q", code, out)
	}
	srv.Close()
	if out, code := sagaz(t, noEnv, "healthcheck", "--http-addr", "127.0.0.1:"+port, "--timeout", "2s"); code != exitError {
		t.Errorf("no service: exit %d %q", code, out)
	}
}

func TestTopicsListsAndCreatesWhatTheMemberNeeds(t *testing.T) {
	env := func(k string) string {
		return map[string]string{"SAGAZ_GROUP": "shop", "SAGAZ_TOPIC_PARTITIONS": "3"}[k]
	}
	out, code := sagaz(t, env, "topics")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	// The sagas compiled in: orders.created and transfers.requested
	// (kafka), order.requested and payments (events topic), nightly-report
	// (cron topic); transfer's command steps add accounts.commands and the
	// replies topic of the topic its sagas live in (keyed: the keys topic).
	for _, re := range []string{
		`(?m)^transfers.requested\s+trigger\s+3\s*$`, `(?m)^accounts.commands\s+commands\s+3\s*$`,
		`(?m)^shop-replies-shop-keys\s+replies\s+as shop-keys\s*$`,
		`(?m)^orders.created\s+trigger\s+3\s*$`, `(?m)^sagaz.events\s+events\s+3\s*$`, `(?m)^sagaz.cron\s+cron\s+3\s*$`,
		`(?m)^sagaz.dlq\s+dead-letter\s+3\s*$`, `(?m)^shop-changelog-orders.created\s+changelog\s+as orders.created\s+cleanup.policy=compact,min.cleanable.dirty.ratio=0.25,segment.ms=3600000$`,
		`(?m)^shop-changelog-sagaz.events\s+changelog`, `(?m)^shop-changelog-sagaz.cron\s+changelog`,
		`(?m)^shop-keys\s+keys\s+3\s*$`, `(?m)^shop-changelog-shop-keys\s+changelog`, `(?m)^shop-members\s+members\s+1\s+cleanup.policy=compact`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("topics: no match for %s:\n%s", re, out)
		}
	}
	c := kafkatest.NewCluster(t)
	args := []string{"topics", "--create", "--brokers", strings.Join(c.ListenAddrs(), ","), "-o", "json"}
	out, code = sagaz(t, env, args...)
	var states []struct {
		Topic   string
		Created bool
		Have    int32 `json:"have_partitions"`
	}
	if err := json.Unmarshal([]byte(out), &states); code != exitOK || err != nil || len(states) != 14 {
		t.Fatalf("topics --create: exit %d %v\n%s", code, err, out)
	}
	adm := kadm.NewClient(kafkatest.Client(t, c.ListenAddrs()))
	details, err := adm.ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		want := int32(3)
		if s.Topic == "shop-members" {
			want = 1
		}
		if !s.Created || s.Have != want || int32(len(details[s.Topic].Partitions)) != want {
			t.Errorf("%s: created %v, %d partitions (broker: %d)", s.Topic, s.Created, s.Have, len(details[s.Topic].Partitions))
		}
	}
	if out, code = sagaz(t, env, args[:4]...); code != exitOK || strings.Count(out, "exists (3 partitions)") != 13 || !strings.Contains(out, "exists (1 partitions)") {
		t.Errorf("second --create: exit %d\n%s", code, out)
	}
}

func TestExitCodeOfHelpErrors(t *testing.T) {
	if exitCode(flag.ErrHelp, io.Discard) != exitOK || exitCode(errors.New("x"), io.Discard) != exitError ||
		exitCode(usagef("", "x"), io.Discard) != exitUsage || exitCode(nil, io.Discard) != exitOK {
		t.Fatal("exit codes")
	}
	// An error the service logged (in the log's format) is not printed again.
	var buf bytes.Buffer
	if exitCode(&loggedError{errors.New("broker gone")}, &buf) != exitError || buf.Len() != 0 {
		t.Fatalf("logged error: printed %q", buf.String())
	}
}
