//go:build uitest

// The console in a real headless browser (Debian's chromium driven with
// chromedp) against a member on kfake. Run with `make test-ui`, or
// `go test -tags uitest ./console/`. Screenshots go to $SAGAZ_UI_SCREENSHOTS
// when set, else to the test's artifact directory (kept with
// `go test -artifacts`).

package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/deadletter"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
)

const uiToken = "ui-admin-token-0123"

// browserPath finds a Chromium or Chrome binary.
func browserPath(t *testing.T) string {
	if p := os.Getenv("SAGAZ_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium found in PATH (and SAGAZ_CHROMIUM unset): run `make test-ui` as root to install Debian's chromium, or install it yourself")
	return ""
}

// uiMember is a member with every kind of saga the console shows.
type uiMember struct {
	m         *sagaztest.Member
	base      string
	producer  *kgo.Client
	compFail  atomic.Bool // the order saga's compensation gives up while set
	reject    atomic.Bool // the order trigger rejects orders with "reject" while set
	release   chan struct{}
	closeOnce sync.Once
}

func startUIMember(t *testing.T) *uiMember {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "slow"))
	seeds := c.ListenAddrs()
	u := &uiMember{release: make(chan struct{})}
	reg := engine.NewRegistry()
	step := func(name string) engine.Step {
		return engine.Step{Name: name, Retry: engine.RetryPolicy{MaxAttempts: 1}, Action: func(_ context.Context, r *engine.Run) error {
			if v, _ := r.Get("fail_at").(string); v == name {
				return engine.Permanent(fmt.Errorf("%s: card declined", name))
			}
			return nil
		}}
	}
	reserve := step("reserve")
	reserve.CompensateRetry = engine.RetryPolicy{MaxAttempts: 1}
	reserve.Compensate = func(_ context.Context, r *engine.Run) error {
		if r.Get("comp_fail") == true && u.compFail.Load() {
			return engine.Permanent(errors.New("release: warehouse unreachable"))
		}
		return nil
	}
	reg.Register(engine.Saga{Name: "order", Sensitive: []string{"card.number"}, Steps: []engine.Step{reserve, step("charge"), step("ship")},
		Triggers: []engine.Trigger{engine.Kafka("orders", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			if err == nil && m["reject"] == true && u.reject.Load() {
				return nil, errors.New("orders with reject are refused")
			}
			return m, err
		}, engine.WithKey(engine.KeyField("order_id")))}})
	reg.Register(engine.Saga{Name: "slow", Steps: []engine.Step{
		{Name: "prepare", Action: func(context.Context, *engine.Run) error { return nil }},
		{Name: "hold", Action: func(ctx context.Context, _ *engine.Run) error {
			select {
			case <-u.release:
			case <-ctx.Done():
			}
			return ctx.Err()
		}},
	}, Triggers: []engine.Trigger{engine.Kafka("slow", engine.PassThrough, engine.WithMaxConcurrent(1))}})
	reg.Register(engine.Saga{Name: "report", Steps: []engine.Step{{Name: "write", Action: func(context.Context, *engine.Run) error { return nil }}},
		Triggers: []engine.Trigger{engine.Cron("0 3 1 1 *", engine.WithName("yearly"), engine.WithCronPolicy(engine.CronPolicy{CatchUp: engine.CatchUpSkip}))}})

	// The member as the binary assembles it: its HTTP server serves the
	// API and the console, its scheduler the schedule.
	u.m = sagaztest.StartWith(t, seeds, "ui-test", "", reg, func(c *member.Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.API = &httpapi.API{OverviewInterval: time.Second}
		c.Auth = httpapi.Auth{AdminTokens: []string{uiToken}}
		c.Consumer.TopicPartitions = 1
	})
	t.Cleanup(func() { u.closeOnce.Do(func() { close(u.release) }) }) // before the member stops
	u.producer = kafkatest.Client(t, seeds)
	u.base = "http://" + u.m.HTTP.Addr()
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return u.m.Ready() == nil })
	return u
}

func (u *uiMember) produce(t *testing.T, topic, key, value string) {
	kafkatest.Produce(t, u.producer, &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(value)})
}

// get reads the API as a script would (with the admin token, no session).
func (u *uiMember) get(t *testing.T, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", u.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+uiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode
}

type sagaRow struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Saga   string `json:"saga"`
	Key    string `json:"idempotency_key"`
}

func (u *uiMember) sagas(t *testing.T, query string) []sagaRow {
	var out struct{ Sagas []sagaRow }
	u.get(t, "/api/sagas?limit=100&"+query, &out)
	return out.Sagas
}

// status waits for the saga with key (or of saga name when key is "") to
// reach status, and returns its id.
func (u *uiMember) waitStatus(t *testing.T, query, status string) string {
	t.Helper()
	id := ""
	kafkatest.WaitFor(t, 30*time.Second, query+" to be "+status, func() bool {
		for _, s := range u.sagas(t, query) {
			if s.Status == status {
				id = s.ID
				return true
			}
		}
		return false
	})
	return id
}

// browser drives one headless chromium tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T) *browser {
	path := browserPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	dir := os.Getenv("SAGAZ_UI_SCREENSHOTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, ctx: ctx, dir: dir}
	// Start the browser now (outside any timeout), and record the page's
	// exceptions and content-security-policy violations.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int]("1")); err != nil {
		t.Skipf("chromium at %s cannot start in this environment: %v", path, err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.IsException() || m.Source == "security" || m.Type == chromedp.ConsoleError && m.Source == "" {
				b.mu.Lock()
				b.errs = append(b.errs, m.String())
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.errs {
			t.Errorf("browser console: %s", e)
		}
	})
	return b
}

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// wait polls a JavaScript expression until it is true.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(25*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

// eval returns the value of a JavaScript expression.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// click clicks the element once it is there and enabled (the page
// re-renders on every refresh, so the element is found and clicked in one
// step).
func (b *browser) click(what, sel string) {
	b.t.Helper()
	q, _ := json.Marshal(sel)
	b.wait("to click "+what, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e || e.disabled) return false; e.click(); return true })()`, q))
}

// set sets a form field's value.
func (b *browser) set(sel, value string) {
	b.t.Helper()
	q, _ := json.Marshal(sel)
	v, _ := json.Marshal(value)
	b.wait("to set "+sel, fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false; e.value = %s; e.dispatchEvent(new Event("change")); return true })()`, q, v))
}

func (b *browser) goTo(u *uiMember, hash string) {
	b.t.Helper()
	b.do("open "+hash, chromedp.Navigate(u.base+"/ui/"+hash))
}

func (b *browser) shot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot: %s", p)
}

func TestConsoleInBrowser(t *testing.T) {
	u := startUIMember(t)
	u.compFail.Store(true)
	u.reject.Store(true)
	// Sagas in every status, dead letters and a schedule.
	u.produce(t, "orders", "o-ok", `{"order_id":"o-ok","amount":10,"card":{"number":"4111 1111 1111 1111","brand":"visa"}}`)
	u.produce(t, "orders", "o-rb", `{"order_id":"o-rb","amount":20,"fail_at":"ship"}`)
	u.produce(t, "orders", "o-fail", `{"order_id":"o-fail","amount":30,"fail_at":"charge","comp_fail":true}`)
	u.produce(t, "orders", "o-poison", `{"order_id":"o-poison","reject":true}`)
	u.produce(t, "orders", "o-junk", `this is not json`)
	u.produce(t, "slow", "s", `{"n":1}`)
	u.produce(t, "slow", "s", `{"n":2}`)
	u.waitStatus(t, "key=o-ok", "completed")
	u.waitStatus(t, "key=o-rb", "rolled_back")
	failedID := u.waitStatus(t, "key=o-fail", "failed")
	u.waitStatus(t, "saga=slow", "executing")
	u.waitStatus(t, "saga=slow", "pending")
	kafkatest.WaitFor(t, 30*time.Second, "two dead letters", func() bool {
		var out struct {
			DeadLetters []deadletter.Letter `json:"dead_letters"`
		}
		u.get(t, "/api/deadletters", &out)
		return len(out.DeadLetters) == 2
	})

	b := newBrowser(t)

	// Overview: counts, readiness, group, lag, charts.
	b.goTo(u, "#/")
	b.wait("status cards", `document.querySelector('#status-cards [data-status="failed"] .n')?.textContent === "1"`)
	for st, n := range map[string]string{"completed": "1", "rolled_back": "1", "executing": "1", "pending": "1"} {
		b.wait(st+" count", fmt.Sprintf(`document.querySelector('#status-cards [data-status="%s"] .n')?.textContent === "%s"`, st, n))
	}
	b.wait("readiness", `document.querySelector("#readiness")?.textContent.startsWith("Ready")`)
	b.wait("this member in the group", `document.querySelector("#members")?.textContent.includes("this member")`)
	b.wait("lag per partition", `document.querySelectorAll("#lag tbody tr").length >= 2`)
	b.wait("a second sample for the charts", `document.querySelectorAll("svg.chart polyline").length === 8`)
	b.shot("overview")

	// Sagas: the listing, labelled as this member's, narrowed by filters.
	b.goTo(u, "#/sagas")
	b.wait("five sagas", `document.querySelectorAll("#sagas-table tbody tr").length === 5`)
	if h1 := eval[string](b, `document.querySelector("h1").textContent`); !strings.Contains(h1, "this member's sagas") {
		t.Fatalf("the sagas page must say whose sagas it lists: %q", h1)
	}
	b.set("#f-status", "failed")
	b.click("apply", `#saga-filters button[type=submit]`)
	b.wait("only the failed saga", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 1 && r[0].dataset.status === "failed" })()`)
	b.shot("sagas-failed")
	b.set("#f-status", "")
	b.set("#f-saga", "slow")
	b.click("apply", `#saga-filters button[type=submit]`)
	b.wait("only slow sagas", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 2 && r.every((x) => x.children[1].textContent === "slow") })()`)
	b.set("#f-saga", "")
	b.set("#f-key", "o-rb")
	b.click("apply", `#saga-filters button[type=submit]`)
	b.wait("the saga of key o-rb", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 1 && r[0].dataset.status === "rolled_back" })()`)
	b.set("#f-id", failedID)
	b.click("open by id", `#saga-search button[type=submit]`)

	// The failed saga: timeline, masked context; retry refused without login.
	b.wait("the saga page", `document.querySelector("#saga-status")?.dataset.status === "failed"`)
	b.wait("the timeline", `document.querySelectorAll("#timeline li").length === 3 && document.querySelector('#timeline li[data-step="reserve"]').textContent.includes("warehouse unreachable")`)
	b.click("retry without login", "#act-retry")
	b.wait("the refusal", `document.querySelector("#toast")?.textContent.includes("Retry: refused")`)
	b.shot("saga-retry-refused")
	var s struct{ Status string }
	u.get(t, "/api/sagas/"+url.PathEscape(failedID), &s)
	if s.Status != "failed" {
		t.Fatalf("a retry without login changed the saga: %s", s.Status)
	}
	okID := u.waitStatus(t, "key=o-ok", "completed")
	b.goTo(u, "#/saga/"+url.PathEscape(okID))
	b.wait("the context", `document.querySelector("#saga-context")?.textContent.includes('"brand": "visa"')`)
	if ctx := eval[string](b, `document.querySelector("#saga-context").textContent`); strings.Contains(ctx, "4111") || !strings.Contains(ctx, `"number": "***"`) {
		t.Fatalf("the card number is not masked:\n%s", ctx)
	}

	// Log in: a wrong token is refused, the right one gives a session.
	b.goTo(u, "#/login")
	b.do("type a wrong token", chromedp.SendKeys(chromedp.CSS("#login-token"), "nope"), chromedp.Click(chromedp.CSS("#login-form button[type=submit]")))
	b.wait("the wrong-token message", `document.querySelector("#toast")?.textContent.includes("Wrong token")`)
	b.do("type the token", chromedp.SendKeys(chromedp.CSS("#login-token"), uiToken), chromedp.Click(chromedp.CSS("#login-form button[type=submit]")))
	b.wait("the session", `document.querySelector("#session-state")?.textContent === "Logged in"`)
	if cookie := eval[string](b, `document.cookie`); strings.Contains(cookie, httpapi.SessionCookie) {
		t.Fatalf("the session cookie is readable by scripts: %q", cookie)
	}

	// Retry the failed saga now that its compensation can succeed.
	u.compFail.Store(false)
	b.goTo(u, "#/saga/"+url.PathEscape(failedID))
	b.click("retry", "#act-retry")
	u.waitStatus(t, "key=o-fail", "rolled_back")
	b.wait("the page to follow without a reload", `document.querySelector("#saga-status")?.dataset.status === "rolled_back"`)
	b.shot("saga-retried")

	// Schedules: pause through the page, seen in the API.
	b.goTo(u, "#/schedules")
	b.wait("the schedule", `document.querySelector('#schedules-table tr[data-id="report:yearly"]') !== null`)
	b.click("pause", `#schedules-table tr[data-id="report:yearly"] button[data-act="pause"]`)
	kafkatest.WaitFor(t, 10*time.Second, "the schedule to be paused", func() bool {
		var out struct{ Schedules []cron.Row }
		u.get(t, "/api/schedules", &out)
		return len(out.Schedules) == 1 && out.Schedules[0].Paused
	})
	b.wait("the paused state", `document.querySelector('#schedules-table tr[data-id="report:yearly"] [data-paused="true"]') !== null`)
	b.shot("schedules")

	// Dead letters: listed, filtered, replayed once the cause is fixed.
	b.goTo(u, "#/deadletters")
	b.wait("two dead letters", `document.querySelectorAll("#dl-table tbody tr").length === 2`)
	b.set("#f-reason", "decode")
	b.click("apply", `#dl-filters button[type=submit]`)
	b.wait("the decode dead letter", `(() => { const r = [...document.querySelectorAll("#dl-table tbody tr")]; return r.length === 1 && r[0].dataset.reason === "decode" })()`)
	b.set("#f-reason", "transform_error")
	b.click("apply", `#dl-filters button[type=submit]`)
	b.wait("the rejected order", `(() => { const r = [...document.querySelectorAll("#dl-table tbody tr")]; return r.length === 1 && r[0].dataset.reason === "transform_error" })()`)
	b.shot("dead-letters")
	u.reject.Store(false)
	b.click("select it", `#dl-table input[name=dl]`)
	b.click("replay selected", "#replay-selected")
	b.wait("the replay result", `document.querySelector("#replay-results")?.textContent.includes("Replayed 1")`)
	u.waitStatus(t, "key=o-poison", "completed")
	b.shot("dead-letter-replayed")

	// Logged out, actions are refused again.
	b.click("log out", "#logout")
	b.wait("read-only", `document.querySelector("#session-state")?.textContent === "Read-only"`)
	b.goTo(u, "#/schedules")
	b.click("resume without login", `#schedules-table tr[data-id="report:yearly"] button[data-act="resume"]`)
	b.wait("the refusal", `document.querySelector("#toast")?.textContent.includes("Resume report:yearly: refused")`)
	var rows struct{ Schedules []cron.Row }
	u.get(t, "/api/schedules", &rows)
	if !rows.Schedules[0].Paused {
		t.Fatal("a resume without login resumed the schedule")
	}
}
