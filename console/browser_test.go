//go:build uitest

// The console in a real headless browser (Debian's chromium driven with
// chromedp) against a member on kfake: with an admin and a read-only token
// (every page needs a login), and in loopback mode without a token. Run with
// `make test-ui`, or `go test -tags uitest ./console/`. Screenshots go to
// $SAGAZ_UI_SCREENSHOTS when set, else to the test's artifact directory
// (kept with `go test -artifacts`).

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

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
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

const (
	uiToken     = "ui-admin-token-0123"
	uiReadToken = "ui-read-only-token-4567"
)

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
	token     string // sent by get as a script would; "" without one
	producer  *kgo.Client
	compFail  atomic.Bool // the order saga's compensation gives up while set
	reject    atomic.Bool // the order trigger rejects orders with "reject" while set
	release   chan struct{}
	closeOnce sync.Once
}

// startUIMember starts the member with auth (no AdminTokens: loopback mode).
func startUIMember(t *testing.T, auth httpapi.Auth) *uiMember {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "orders", "slow"))
	seeds := c.ListenAddrs()
	u := &uiMember{release: make(chan struct{})}
	if len(auth.AdminTokens) > 0 {
		u.token = auth.AdminTokens[0]
	}
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
		c.Auth = auth
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

// get reads the API as a script would (with the admin token if there is
// one, no session).
func (u *uiMember) get(t *testing.T, path string, out any) int {
	t.Helper()
	hdr := []string{}
	if u.token != "" {
		hdr = append(hdr, "Authorization", "Bearer "+u.token)
	}
	return u.call(t, "GET", path, out, hdr...)
}

// call sends a request with the given header pairs (and Content-Type:
// application/json for other methods than GET) and returns the status,
// decoding a 200 answer into out.
func (u *uiMember) call(t *testing.T, method, path string, out any, hdr ...string) int {
	t.Helper()
	req, _ := http.NewRequest(method, u.base+path, nil)
	if method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// sagaStatus is the saga's status read through the API.
func (u *uiMember) sagaStatus(t *testing.T, id string) string {
	t.Helper()
	var s struct{ Status string }
	if code := u.get(t, "/api/sagas/"+url.PathEscape(id), &s); code != 200 {
		t.Fatalf("GET saga %s: %d", id, code)
	}
	return s.Status
}

// schedulePaused reads the yearly schedule's state through the API.
func (u *uiMember) schedulePaused(t *testing.T) bool {
	t.Helper()
	var out struct{ Schedules []cron.Row }
	if code := u.get(t, "/api/schedules", &out); code != 200 || len(out.Schedules) != 1 {
		t.Fatalf("GET /api/schedules: %d %+v", code, out)
	}
	return out.Schedules[0].Paused
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

// eval returns the value of a JavaScript expression (a promise's value
// when it is one).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
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

// strayText finds text nodes that read "null" or "undefined": an absent
// value rendered as text.
const strayText = `(() => {
	const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), bad = [];
	while (w.nextNode()) {
		const t = w.currentNode.textContent.trim();
		if (t === "null" || t === "undefined") bad.push(w.currentNode.parentElement.id || w.currentNode.parentElement.tagName);
	}
	return bad.join(", ");
})()`

// shot saves a screenshot, and checks the page shows no stray "null".
func (b *browser) shot(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if bad, err := chromedp.Run(ctx, chromedp.Evaluate[string](strayText)); err == nil && bad != "" {
		b.t.Errorf("%s: the page shows \"null\" or \"undefined\" as text in: %s", name, bad)
	}
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

// login types the token into the login form and submits it with the
// keyboard (Enter).
func (b *browser) login(token string) {
	b.t.Helper()
	b.wait("the focused token field", `document.activeElement?.id === "login-token"`)
	b.do("type a token and press Enter", chromedp.SendKeys(chromedp.CSS("#login-token"), token+kb.Enter))
}

// sessionCookie returns the browser's session cookie for the member, read
// through the DevTools protocol (scripts in the page cannot read it).
func (b *browser) sessionCookie(u *uiMember) *network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{u.base + "/ui/"}})
	if err != nil {
		b.t.Fatalf("read the cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == httpapi.SessionCookie {
			return c
		}
	}
	b.t.Fatalf("no %s cookie in the browser", httpapi.SessionCookie)
	return nil
}

// pageFetch sends a request from the page (its origin, its cookies) and
// returns the status.
func (b *browser) pageFetch(method, path string) int {
	b.t.Helper()
	m, _ := json.Marshal(method)
	p, _ := json.Marshal(path)
	return eval[int](b, fmt.Sprintf(`fetch(%s, {method: %s, headers: {"Content-Type": "application/json"}}).then((r) => r.status)`, p, m))
}

// seed produces sagas in every status and two dead letters, and waits for
// them; it returns the ids of the failed and the completed order.
func (u *uiMember) seed(t *testing.T) (failedID, okID string) {
	t.Helper()
	u.compFail.Store(true)
	u.reject.Store(true)
	u.produce(t, "orders", "o-ok", `{"order_id":"o-ok","amount":10,"card":{"number":"4111 1111 1111 1111","brand":"visa"}}`)
	u.produce(t, "orders", "o-rb", `{"order_id":"o-rb","amount":20,"fail_at":"ship"}`)
	u.produce(t, "orders", "o-fail", `{"order_id":"o-fail","amount":30,"fail_at":"charge","comp_fail":true}`)
	u.produce(t, "orders", "o-poison", `{"order_id":"o-poison","reject":true}`)
	u.produce(t, "orders", "o-junk", `this is not json`)
	u.produce(t, "slow", "s", `{"n":1}`)
	u.produce(t, "slow", "s", `{"n":2}`)
	okID = u.waitStatus(t, "key=o-ok", "completed")
	u.waitStatus(t, "key=o-rb", "rolled_back")
	failedID = u.waitStatus(t, "key=o-fail", "failed")
	u.waitStatus(t, "saga=slow", "executing")
	u.waitStatus(t, "saga=slow", "pending")
	kafkatest.WaitFor(t, 30*time.Second, "two dead letters", func() bool {
		var out struct {
			DeadLetters []deadletter.Letter `json:"dead_letters"`
		}
		u.get(t, "/api/deadletters", &out)
		return len(out.DeadLetters) == 2
	})
	return failedID, okID
}

// TestConsoleInBrowser: a member with an admin and a read-only token. Every
// page needs a login; a read-only login sees everything and cannot act; an
// admin login acts; an ended session brings the login back on the same page.
func TestConsoleInBrowser(t *testing.T) {
	u := startUIMember(t, httpapi.Auth{AdminTokens: []string{uiToken}, ReadTokens: []string{uiReadToken}})
	failedID, okID := u.seed(t)
	failedPath := "/api/sagas/" + url.PathEscape(failedID)
	b := newBrowser(t)

	// Before login: every page shows the login form, its field focused,
	// instead of empty pages or "unauthorized" errors.
	for _, hash := range []string{"#/", "#/sagas?status=failed", "#/schedules", "#/deadletters", "#/saga/" + url.PathEscape(failedID)} {
		b.goTo(u, hash)
		b.wait("the login form on "+hash, `document.querySelector("#login-form") !== null && document.activeElement?.id === "login-token"`)
		if n := eval[int](b, `document.querySelectorAll("#overview, #sagas, #saga, #schedules, #deadletters, button[data-act], #act-retry, #replay-selected").length`); n != 0 {
			t.Fatalf("%s before login: %d elements of the page or its actions are shown", hash, n)
		}
		if live := eval[string](b, `document.querySelector("#live").textContent`); strings.Contains(live, "Could not refresh") {
			t.Fatalf("%s before login: %q", hash, live)
		}
		if state := eval[string](b, `document.querySelector("#session-state").textContent`); state != "Not logged in" {
			t.Fatalf("%s before login: session state %q", hash, state)
		}
	}
	if label := eval[string](b, `document.querySelector('label[for="login-token"]').textContent`); !strings.Contains(label, "Token") {
		t.Fatalf("the token field's label: %q", label)
	}
	b.shot("login")
	// Actions are refused without a session, from the page and from a script.
	if code := b.pageFetch("POST", failedPath+"/retry"); code != http.StatusUnauthorized {
		t.Fatalf("a retry from the page without login: %d, want 401", code)
	}
	if code := u.call(t, "POST", failedPath+"/retry", nil); code != http.StatusUnauthorized {
		t.Fatalf("a retry without a token: %d, want 401", code)
	}
	if code := b.pageFetch("GET", "/api/sagas"); code != http.StatusUnauthorized {
		t.Fatalf("a read from the page without login: %d, want 401", code)
	}

	// A wrong token is refused and the field is focused again.
	b.login("not-a-token-of-this-member")
	b.wait("the wrong-token message", `document.querySelector("#login-error")?.textContent.includes("Wrong token") && document.activeElement?.id === "login-token"`)
	b.shot("login-wrong-token")

	// A read-only login: the page asked for (the failed saga) shows, with
	// its timeline; its actions are disabled and say why.
	b.login(uiReadToken)
	b.wait("the saga page after login", `document.querySelector("#saga-status")?.dataset.status === "failed"`)
	if hash := eval[string](b, `location.hash`); hash != "#/saga/"+url.PathEscape(failedID) {
		t.Fatalf("after login the page is %q, want the saga asked for", hash)
	}
	b.wait("the read-only state", `document.querySelector("#session-state")?.textContent === "Logged in (read-only)"`)
	b.wait("the timeline", `document.querySelectorAll("#timeline li").length === 3 && document.querySelector('#timeline li[data-step="reserve"]').textContent.includes("warehouse unreachable")`)
	b.wait("retry disabled with the read-only note", `document.querySelector("#act-retry").disabled && document.querySelector("#act-cancel").disabled &&
		document.querySelector("#readonly-note")?.textContent.includes("Read-only login")`)
	b.shot("saga-read-only")
	if cookie := eval[string](b, `document.cookie`); strings.Contains(cookie, httpapi.SessionCookie) {
		t.Fatalf("the session cookie is readable by scripts: %q", cookie)
	}
	// Through the API with the read-only session: reads pass, actions 403.
	readCookie := b.sessionCookie(u)
	if !readCookie.HTTPOnly {
		t.Fatalf("the session cookie is not HttpOnly: %+v", readCookie)
	}
	readSession := httpapi.SessionCookie + "=" + readCookie.Value
	if code := u.call(t, "GET", "/api/sagas", nil, "Cookie", readSession); code != http.StatusOK {
		t.Fatalf("a read with the read-only session: %d, want 200", code)
	}
	if code := u.call(t, "POST", failedPath+"/retry", nil, "Cookie", readSession, "Origin", u.base, "Sec-Fetch-Site", "same-origin"); code != http.StatusForbidden {
		t.Fatalf("a retry with the read-only session: %d, want 403", code)
	}
	if code := b.pageFetch("POST", failedPath+"/retry"); code != http.StatusForbidden {
		t.Fatalf("a retry from the page with the read-only session: %d, want 403", code)
	}
	if st := u.sagaStatus(t, failedID); st != "failed" {
		t.Fatalf("a read-only retry changed the saga: %s", st)
	}

	// The masked context.
	b.goTo(u, "#/saga/"+url.PathEscape(okID))
	b.wait("the context", `document.querySelector("#saga-context")?.textContent.includes('"brand": "visa"')`)
	if ctx := eval[string](b, `document.querySelector("#saga-context").textContent`); strings.Contains(ctx, "4111") || !strings.Contains(ctx, `"number": "***"`) {
		t.Fatalf("the card number is not masked:\n%s", ctx)
	}

	// Overview: counts, readiness, group, lag, charts.
	b.goTo(u, "#/")
	b.wait("status cards", `document.querySelector('#status-cards [data-status="failed"] .n')?.textContent === "1"`)
	for st, n := range map[string]string{"completed": "1", "rolled_back": "1", "executing": "1", "pending": "1"} {
		b.wait(st+" count", fmt.Sprintf(`document.querySelector('#status-cards [data-status="%s"] .n')?.textContent === "%s"`, st, n))
	}
	b.wait("readiness", `document.querySelector("#readiness")?.textContent.startsWith("Ready")`)
	b.wait("this member in the group", `document.querySelector("#members")?.textContent.includes("this member")`)
	b.wait("lag per partition", `document.querySelectorAll("#lag tbody tr").length >= 2`)
	b.wait("a second sample for the charts", `document.querySelectorAll("svg.chart polyline").length === 10` /* 8 statuses, started and finished */)
	b.shot("overview")

	// Schedules and dead letters, read-only: shown, actions disabled.
	b.goTo(u, "#/schedules")
	b.wait("the schedule, pause disabled", `document.querySelector('#schedules-table tr[data-id="report:yearly"] button[data-act="pause"]')?.disabled === true &&
		document.querySelector("#readonly-note") !== null`)
	// "Log in as admin" opens the login form and comes back to the page.
	b.click("log in as admin", "#readonly-note a")
	b.wait("the login form with its way back", `location.hash === "#/login?next=%23%2Fschedules" && document.querySelector("#login-form") !== null`)
	b.login(uiReadToken) // the same read-only token again: a new session
	b.wait("the schedules again", `location.hash === "#/schedules" && document.querySelector("#schedules-table") !== null`)
	readSession = httpapi.SessionCookie + "=" + b.sessionCookie(u).Value
	b.goTo(u, "#/deadletters")
	b.wait("two dead letters, replay disabled", `document.querySelectorAll("#dl-table tbody tr").length === 2 &&
		[...document.querySelectorAll('#dl-table button[data-act="replay"], #replay-selected')].every((x) => x.disabled)`)
	b.set("#f-reason", "decode")
	b.click("apply", `#dl-filters button[type=submit]`)
	b.wait("the decode dead letter", `(() => { const r = [...document.querySelectorAll("#dl-table tbody tr")]; return r.length === 1 && r[0].dataset.reason === "decode" })()`)
	b.shot("dead-letters-read-only")

	// Sagas: the group's listing (a group of one), saying who answered,
	// narrowed by filters.
	b.goTo(u, "#/sagas")
	b.wait("five sagas", `document.querySelectorAll("#sagas-table tbody tr").length === 5`)
	if h1 := eval[string](b, `document.querySelector("h1").textContent`); !strings.Contains(h1, "the whole group") {
		t.Fatalf("the sagas page must say whose sagas it lists: %q", h1)
	}
	if scope := eval[string](b, `document.querySelector("#sagas-scope").textContent`); !strings.Contains(scope, "1 of 1 member answered") {
		t.Fatalf("the sagas page must say how many members answered: %q", scope)
	}
	b.set("#f-saga", "slow")
	b.click("apply", `#saga-filters button[type=submit]`)
	b.wait("only slow sagas", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 2 && r.every((x) => x.children[1].textContent === "slow") })()`)
	b.set("#f-saga", "")
	b.set("#f-key", "o-rb")
	b.click("apply", `#saga-filters button[type=submit]`)
	b.wait("the saga of key o-rb", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 1 && r[0].dataset.status === "rolled_back" })()`)
	b.set("#f-key", "")
	b.set("#f-status", "failed")
	b.click("apply", `#saga-filters button[type=submit]`)
	b.wait("only the failed saga", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 1 && r[0].dataset.status === "failed" })()`)
	b.shot("sagas-failed")

	// The session ends on the member (as when it expires): the next refresh
	// answers 401 and the login form comes back on the same page.
	const filtered = "#/sagas?status=failed"
	if code := u.call(t, "DELETE", "/api/session", nil, "Cookie", readSession); code != http.StatusOK {
		t.Fatalf("end the session: %d", code)
	}
	b.wait("the login form after the session ended", `document.querySelector("#login-reason")?.textContent.includes("session ended") && document.activeElement?.id === "login-token"`)
	if hash := eval[string](b, `location.hash`); hash != filtered {
		t.Fatalf("the session's end moved the page to %q, want %q", hash, filtered)
	}
	b.shot("session-ended")

	// An admin login: back on the same filtered page; actions work.
	b.login(uiToken)
	b.wait("the filtered page again", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 1 && r[0].dataset.status === "failed" })()`)
	b.wait("the admin state", `document.querySelector("#session-state")?.textContent === "Logged in (admin)"`)
	if hash := eval[string](b, `location.hash`); hash != filtered {
		t.Fatalf("after login the page is %q, want %q", hash, filtered)
	}
	adminSession := httpapi.SessionCookie + "=" + b.sessionCookie(u).Value

	// Retry the failed saga now that its compensation can succeed; the page
	// follows without a reload.
	u.compFail.Store(false)
	b.click("the failed saga", `#sagas-table tbody tr[data-status="failed"] a`)
	b.wait("the saga page", `document.querySelector("#saga-status")?.dataset.status === "failed" && document.querySelector("#readonly-note") === null`)
	b.click("retry", "#act-retry")
	u.waitStatus(t, "key=o-fail", "rolled_back")
	b.wait("the page to follow without a reload", `document.querySelector("#saga-status")?.dataset.status === "rolled_back"`)
	b.shot("saga-retried")

	// Schedules: pause through the page, seen in the API.
	b.goTo(u, "#/schedules")
	b.click("pause", `#schedules-table tr[data-id="report:yearly"] button[data-act="pause"]`)
	kafkatest.WaitFor(t, 10*time.Second, "the schedule to be paused", func() bool { return u.schedulePaused(t) })
	b.wait("the paused state", `document.querySelector('#schedules-table tr[data-id="report:yearly"] [data-paused="true"]') !== null`)
	b.shot("schedules")

	// Dead letters: filtered, replayed once the cause is fixed.
	b.goTo(u, "#/deadletters")
	b.wait("two dead letters", `document.querySelectorAll("#dl-table tbody tr").length === 2`)
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

	// Log out: the login form replaces the page, the session is gone on the
	// member too, and nothing can be done with its cookie.
	b.goTo(u, "#/schedules")
	b.wait("the schedules", `document.querySelector('#schedules-table tr[data-id="report:yearly"] button[data-act="resume"]') !== null`)
	b.click("log out", "#logout")
	b.wait("the login form after logout", `document.querySelector("#login-form") !== null && document.querySelector("#schedules") === null &&
		document.querySelector("#session-state")?.textContent === "Not logged in" && document.activeElement?.id === "login-token"`)
	if hash := eval[string](b, `location.hash`); hash != "#/schedules" {
		t.Fatalf("logging out moved the page to %q", hash)
	}
	if code := u.call(t, "POST", "/api/schedules/report:yearly/resume", nil, "Cookie", adminSession, "Origin", u.base, "Sec-Fetch-Site", "same-origin"); code != http.StatusUnauthorized {
		t.Fatalf("a resume with the logged-out session: %d, want 401", code)
	}
	if code := b.pageFetch("POST", "/api/schedules/report:yearly/resume"); code != http.StatusUnauthorized {
		t.Fatalf("a resume from the page after logout: %d, want 401", code)
	}
	if !u.schedulePaused(t) {
		t.Fatal("a resume after logout resumed the schedule")
	}
}

// TestConsoleInBrowserWithoutToken: loopback mode (no admin token): the
// console reads and acts without a login.
func TestConsoleInBrowserWithoutToken(t *testing.T) {
	u := startUIMember(t, httpapi.Auth{})
	u.compFail.Store(true)
	u.produce(t, "orders", "o-fail", `{"order_id":"o-fail","amount":30,"fail_at":"charge","comp_fail":true}`)
	failedID := u.waitStatus(t, "key=o-fail", "failed")
	b := newBrowser(t)

	b.goTo(u, "#/sagas")
	b.wait("the sagas without login", `document.querySelectorAll("#sagas-table tbody tr").length === 1`)
	b.wait("the open state", `document.querySelector("#session-state")?.textContent.includes("No admin token set") && document.querySelector("#logout") === null`)
	if n := eval[int](b, `document.querySelectorAll("#login-form").length`); n != 0 {
		t.Fatal("the login form is shown without a token")
	}
	b.shot("loopback-sagas")

	// Actions without login: retry (a POST without a body, sent as JSON as
	// loopback mode requires) and pause.
	u.compFail.Store(false)
	b.goTo(u, "#/saga/"+url.PathEscape(failedID))
	b.click("retry", "#act-retry")
	b.wait("the retried saga", `document.querySelector("#saga-status")?.dataset.status === "rolled_back"`)
	if st := u.sagaStatus(t, failedID); st != "rolled_back" {
		t.Fatalf("the retried saga is %s in the API", st)
	}
	b.goTo(u, "#/schedules")
	b.click("pause", `#schedules-table tr[data-id="report:yearly"] button[data-act="pause"]`)
	kafkatest.WaitFor(t, 10*time.Second, "the schedule to be paused", func() bool { return u.schedulePaused(t) })

	// Resolve a failed saga by hand: a reason is required; the saga page
	// then shows it resolved, with the resolution in its history.
	u.compFail.Store(true)
	u.produce(t, "orders", "o-stuck", `{"order_id":"o-stuck","amount":30,"fail_at":"charge","comp_fail":true}`)
	stuckID := u.waitStatus(t, "key=o-stuck", "failed")
	b.goTo(u, "#/saga/"+url.PathEscape(stuckID))
	b.wait("the resolve form", `document.querySelector("#saga-status")?.dataset.status === "failed" && document.querySelector("#resolve-form")?.offsetParent !== null`)
	b.click("resolve without a reason", "#act-resolve")
	b.wait("the reason asked for", `document.querySelector("#toast")?.textContent.includes("a reason is required")`)
	if st := u.sagaStatus(t, stuckID); st != "failed" {
		t.Fatalf("resolved without a reason: %s", st)
	}
	b.set("#resolve-reason", "released the stock by hand")
	b.shot("saga-to-resolve")
	b.click("resolve", "#act-resolve")
	b.wait("the resolved saga", `document.querySelector("#saga-status")?.dataset.status === "resolved" && document.querySelector("#resolve-form")?.offsetParent === null &&
		document.querySelector('#saga-history tr[data-action="resolve"]')?.textContent.includes("released the stock by hand")`)
	b.wait("the history in view", `(() => { const e = document.querySelector("#saga-history"); if (!e) return false; e.scrollIntoView(); return true })()`)
	b.shot("saga-resolved-history")
	if st := u.sagaStatus(t, stuckID); st != "resolved" {
		t.Fatalf("the resolved saga is %s in the API", st)
	}
	b.goTo(u, "#/sagas?status=resolved")
	b.wait("the resolved listing", `(() => { const r = [...document.querySelectorAll("#sagas-table tbody tr")]; return r.length === 1 && r[0].dataset.status === "resolved" })()`)
	b.shot("sagas-resolved")

	b.goTo(u, "#/login")
	b.wait("the open-member note", `document.querySelector("#login-open")?.textContent.includes("no admin token")`)
}

// A saga parked by a deploy (its definition's second step renamed) is
// retried from its page with a step mapping; the mapping being typed
// survives the page's refreshes.
func TestConsoleInBrowserRetriesParkedSaga(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "moves"))
	seeds := c.ListenAddrs()
	dir := t.TempDir()
	hold := make(chan struct{})
	done := func(context.Context, *engine.Run) error { return nil }
	definition := func(second string, blocks bool) *engine.Registry {
		act := done
		if blocks {
			act = func(ctx context.Context, _ *engine.Run) error {
				select {
				case <-hold:
				case <-ctx.Done():
				}
				return ctx.Err()
			}
		}
		reg := engine.NewRegistry()
		reg.Register(engine.Saga{Name: "move", Steps: []engine.Step{{Name: "pack", Action: done}, {Name: second, Action: act}},
			Triggers: []engine.Trigger{engine.Kafka("moves", engine.PassThrough, engine.WithKey(engine.KeyField("id")))}})
		return reg
	}
	start := func(reg *engine.Registry) *uiMember { return startPlainUIMember(t, seeds, "ui-park", dir, reg) }

	// The release that declares "ship" starts the saga, which is still
	// running it when the member stops.
	u := start(definition("ship", true))
	u.produce(t, "moves", "m-1", `{"id":"m-1"}`)
	id := u.waitStatus(t, "key=m-1", "executing")
	u.m.Stop()
	close(hold)
	// The next release calls that step "deliver": the saga is parked.
	u = start(definition("deliver", false))
	u.waitStatus(t, "key=m-1", "parked")

	b := newBrowser(t)
	b.goTo(u, "#/saga/"+url.PathEscape(id))
	b.wait("the parked saga and the mapping field", `document.querySelector("#saga-status")?.dataset.status === "parked" && document.querySelector("#retry-map")?.offsetParent !== null`)
	b.wait("the first refresh", `document.querySelector("#live").textContent.startsWith("Updated")`)
	live := eval[string](b, `document.querySelector("#live").textContent`)
	b.set("#retry-map", "ship=deliver")
	b.wait("a refresh of the saga", fmt.Sprintf(`document.querySelector("#live").textContent !== %q && document.querySelector("#live").textContent.startsWith("Updated")`, live))
	if v := eval[string](b, `document.querySelector("#retry-map").value`); v != "ship=deliver" {
		t.Fatalf("the mapping being typed is %q after a refresh", v)
	}
	b.shot("saga-parked-mapping")
	b.click("retry with the current definition", "#act-retry")
	b.wait("the retried saga", `document.querySelector("#saga-status")?.dataset.status === "completed" && document.querySelector("#retry-map")?.offsetParent === null`)
	var s struct {
		Status string
		Steps  []struct{ Name, Status string }
	}
	if code := u.get(t, "/api/sagas/"+url.PathEscape(id), &s); code != 200 || s.Status != "completed" || len(s.Steps) != 2 ||
		s.Steps[1].Name != "deliver" || s.Steps[1].Status != "completed" {
		t.Fatalf("the retried saga: %d %+v", code, s)
	}
}

// startPlainUIMember starts a member of group with its store in dir, the
// API and console in loopback mode, and one partition per topic it creates.
func startPlainUIMember(t *testing.T, seeds []string, group, dir string, reg *engine.Registry) *uiMember {
	return startUIMemberParts(t, seeds, group, dir, reg, 1)
}

func startUIMemberParts(t *testing.T, seeds []string, group, dir string, reg *engine.Registry, parts int32) *uiMember {
	m := sagaztest.StartWith(t, seeds, group, dir, reg, func(c *member.Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.API = &httpapi.API{}
		c.Consumer.TopicPartitions = parts
	})
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	return &uiMember{m: m, base: "http://" + m.HTTP.Addr(), producer: kafkatest.Client(t, seeds)}
}

// A saga waiting on a durable timer (a sleep step): its page says what it
// waits for, since when and until when, and marks the step that waits.
func TestConsoleInBrowserShowsWaitingSaga(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(1, "holds"))
	seeds := c.ListenAddrs()
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "hold", Steps: []engine.Step{
		{Name: "place", Action: func(context.Context, *engine.Run) error { return nil }},
		{Name: "cool-off", Sleep: time.Hour},
		{Name: "release", Action: func(context.Context, *engine.Run) error { return nil }},
	}, Triggers: []engine.Trigger{engine.Kafka("holds", engine.PassThrough, engine.WithKey(engine.KeyField("id")))}})
	u := startPlainUIMember(t, seeds, "ui-wait", "", reg)
	u.produce(t, "holds", "h-1", `{"id":"h-1"}`)
	var id string
	var view struct {
		Waiting *struct {
			Kind     string
			Step     string
			Since    time.Time
			Deadline time.Time
		}
	}
	kafkatest.WaitFor(t, 30*time.Second, "the saga to wait on its sleep", func() bool {
		rows := u.sagas(t, "key=h-1")
		if len(rows) != 1 {
			return false
		}
		id = rows[0].ID
		return u.get(t, "/api/sagas/"+url.PathEscape(id), &view) == 200 && view.Waiting != nil
	})
	if view.Waiting.Kind != "sleep" || view.Waiting.Step != "cool-off" || view.Waiting.Deadline.Sub(view.Waiting.Since) != time.Hour {
		t.Fatalf("the API's view of the wait: %+v", *view.Waiting)
	}

	b := newBrowser(t)
	b.goTo(u, "#/saga/"+url.PathEscape(id))
	b.wait("the waiting saga", `document.querySelector("#saga-waiting")?.dataset.kind === "sleep"`)
	text := eval[string](b, `document.querySelector("#saga-waiting").textContent`)
	if !strings.Contains(text, "since") || !strings.Contains(text, "until") {
		t.Errorf("the wait reads %q: want what it waits for, since and until when", text)
	}
	if got := eval[string](b, `document.querySelector('#timeline li[data-step="cool-off"] .st-waiting')?.textContent || ""`); got != "waiting: sleep" {
		t.Errorf("the waiting step's badge reads %q, want \"waiting: sleep\"", got)
	}
	if got := eval[int](b, `document.querySelectorAll("#timeline .st-waiting").length`); got != 1 {
		t.Errorf("%d steps marked waiting, want 1", got)
	}
	b.shot("saga-waiting")
}

// Two members: the console of either lists the whole group's sagas and
// shows a saga the other member runs, naming that member.
func TestConsoleInBrowserGroupOfTwo(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "jobs"))
	seeds := c.ListenAddrs()
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "job", Steps: []engine.Step{{Name: "do", Action: func(context.Context, *engine.Run) error { return nil }}},
		Triggers: []engine.Trigger{engine.Kafka("jobs", engine.PassThrough, engine.WithKey(engine.KeyField("id")))}})
	a := startUIMemberParts(t, seeds, "ui-two", "", reg, 2)
	startUIMemberParts(t, seeds, "ui-two", "", reg, 2)
	const n = 12
	for i := range n {
		a.produce(t, "jobs", fmt.Sprint(i), fmt.Sprintf(`{"id":"j-%d"}`, i))
	}
	// Both members own partitions and know each other's address; every
	// saga is listed through a.
	var other string // a saga that b2 runs
	kafkatest.WaitFor(t, 60*time.Second, "the group's listing through one member", func() bool {
		var out struct {
			Sagas []struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"sagas"`
			Members     int   `json:"members"`
			Unavailable []any `json:"unavailable"`
		}
		if a.get(t, "/api/sagas?limit=100&status=completed", &out) != 200 || out.Members != 2 || len(out.Unavailable) != 0 || len(out.Sagas) != n {
			return false
		}
		for _, s := range out.Sagas {
			resp, err := http.Get(a.base + "/api/sagas/" + url.PathEscape(s.ID))
			if err != nil {
				return false
			}
			resp.Body.Close()
			if by := resp.Header.Get("Sagaz-Answered-By"); by != "" {
				other = s.ID
				return true
			}
		}
		return false
	})
	resp, err := http.Get(a.base + "/api/sagas/" + url.PathEscape(other))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	answeredBy := resp.Header.Get("Sagaz-Answered-By")

	b := newBrowser(t)
	b.goTo(a, "#/sagas")
	b.wait("the whole group's sagas", fmt.Sprintf(`document.querySelectorAll("#sagas-table tbody tr").length === %d && document.querySelector("#sagas-scope")?.textContent.includes("2 of 2 members answered")`, n))
	b.shot("sagas-group-of-two")
	b.goTo(a, "#/saga/"+url.PathEscape(other))
	b.wait("the saga the other member runs", `document.querySelector("#saga-status")?.dataset.status === "completed"`)
	if got := eval[string](b, `document.querySelector("#saga-runs-on").textContent`); !strings.Contains(got, "member "+answeredBy) {
		t.Errorf("Runs on reads %q, want the member that answered (%s)", got, answeredBy)
	}
}
