package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	sagazmember "github.com/sagaz-go/sagaz/member"
)

// consoleEnv is a member with the console's endpoints: a kafka-triggered
// saga "card" whose transformer rejects records while reject is set, with
// sensitive fields, and a saga "fragile" that fails.
type consoleEnv struct {
	*env
	seeds    []string
	producer *kgo.Client
	reject   *atomic.Bool
}

func newConsoleEnv(t *testing.T, token string) *consoleEnv {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(2, "cards"))
	seeds := c.ListenAddrs()
	reject := &atomic.Bool{}
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "card", Sensitive: []string{"card.number", "email"}, Steps: []engine.Step{{Name: "charge", Action: noop}},
		Triggers: []engine.Trigger{engine.Kafka("cards", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			if err == nil && reject.Load() {
				return nil, errors.New("cards are closed")
			}
			return m, err
		}, engine.WithKey(engine.KeyField("email")))}})
	reg.Register(engine.Saga{Name: "fragile", Steps: []engine.Step{{Name: "break", Action: func(context.Context, *engine.Run) error {
		return engine.Permanent(errors.New("broken"))
	}}}, Triggers: []engine.Trigger{engine.Manual("fragile.go", engine.PassThrough)}})
	// The member's own server, as the binary assembles it (console sources
	// included).
	m := sagaztest.StartWith(t, seeds, "console-test", "", reg, func(c *sagazmember.Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.API = &httpapi.API{OverviewInterval: time.Hour, ProduceTimeout: 5 * time.Second}
		if token != "" {
			c.Auth = httpapi.Auth{AdminTokens: []string{token}, ReadTokens: []string{readTok}}
		}
	})
	producer := kafkatest.Client(t, seeds)
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	return &consoleEnv{env: &env{t: t, base: "http://" + m.HTTP.Addr(), m: m}, seeds: seeds, producer: producer, reject: reject}
}

func (e *consoleEnv) produce(key, value string) {
	kafkatest.Produce(e.t, e.producer, &kgo.Record{Topic: "cards", Key: []byte(key), Value: []byte(value)})
}

// sagaWithKey waits for the saga of idempotency key to be listed.
func (e *consoleEnv) sagaWithKey(key, status string) map[string]any {
	e.t.Helper()
	var s map[string]any
	kafkatest.WaitFor(e.t, 30*time.Second, "a "+status+" saga with key "+key, func() bool {
		code, out := e.call("GET", "/api/sagas?key="+url.QueryEscape(key), "")
		if code != 200 {
			return false
		}
		list := out["sagas"].([]any)
		if len(list) != 1 {
			return false
		}
		s = list[0].(map[string]any)
		return s["status"] == status
	})
	return s
}

func TestSensitiveFieldsAreMasked(t *testing.T) {
	e := newConsoleEnv(t, "")
	e.produce("ada@example.com", `{"email":"ada@example.com","card":{"number":"4111 1111","brand":"visa"},"amount":12}`)
	listed := e.sagaWithKey("ada@example.com", "completed")
	id := listed["id"].(string)
	if listed["idempotency_key"] != engine.Masked {
		t.Fatalf("the listing shows a key taken from a sensitive field: %v", listed["idempotency_key"])
	}
	s := e.expect(200, "GET", "/api/sagas/"+url.PathEscape(id), "")
	ctx := s["context"].(map[string]any)
	card := ctx["card"].(map[string]any)
	if card["number"] != engine.Masked || ctx["email"] != engine.Masked || card["brand"] != "visa" || ctx["amount"] != float64(12) ||
		s["idempotency_key"] != engine.Masked {
		t.Fatalf("GET /api/sagas/{id}: %v", s)
	}
	stored, err := e.m.Store.Get(context.Background(), id)
	if err != nil || !strings.Contains(string(stored.Context), "4111 1111") || stored.IdempotencyKey != engine.HashKey("ada@example.com") {
		t.Fatalf("the store keeps the context as it is, and a key from a sensitive field as its hash: %s %q %v", stored.Context, stored.IdempotencyKey, err)
	}
	if strings.Contains(id, "ada") {
		t.Fatalf("the saga's ID shows a sensitive key: %s", id)
	}
}

func TestSagaFilters(t *testing.T) {
	e := newConsoleEnv(t, "")
	before := time.Now().UTC().Add(-time.Second)
	for i := range 5 {
		e.produce(fmt.Sprint(i), fmt.Sprintf(`{"email":"u%d@x"}`, i))
	}
	e.sagaWithKey("u4@x", "completed")
	mid := time.Now().UTC().Add(time.Millisecond)
	kafkatest.WaitFor(t, 5*time.Second, "the clock to pass mid", func() bool { return time.Now().After(mid) })
	e.produce("5", `{"email":"u5@x"}`)
	e.sagaWithKey("u5@x", "completed")

	count := func(query string) int {
		return len(e.expect(200, "GET", "/api/sagas?"+query, "")["sagas"].([]any))
	}
	if n := count("since=" + before.Format(time.RFC3339)); n != 6 {
		t.Fatalf("since before all: %d sagas", n)
	}
	if n := count("since=" + mid.Format(time.RFC3339Nano)); n != 1 {
		t.Fatalf("since mid: %d sagas", n)
	}
	if n := count("until=" + mid.Format(time.RFC3339Nano)); n != 5 {
		t.Fatalf("until mid: %d sagas", n)
	}
	if n := count("until=" + mid.Format(time.RFC3339Nano) + "&limit=2"); n != 2 {
		t.Fatalf("until mid, limit 2: %d sagas", n)
	}
	// Paging a time filter lists every saga once.
	seen := map[string]bool{}
	cursor := ""
	for range 10 {
		out := e.expect(200, "GET", "/api/sagas?limit=2&until="+mid.Format(time.RFC3339Nano)+"&cursor="+cursor, "")
		for _, s := range out["sagas"].([]any) {
			seen[s.(map[string]any)["id"].(string)] = true
		}
		if cursor, _ = out["next_cursor"].(string); cursor == "" {
			break
		}
	}
	if len(seen) != 5 {
		t.Fatalf("paging until mid: %d sagas", len(seen))
	}
	if n := count("key=u3@x&saga=card&status=completed"); n != 1 {
		t.Fatalf("key u3@x: %d sagas", n)
	}
	if n := count("key=u3@x&status=failed"); n != 0 {
		t.Fatalf("key u3@x, failed: %d sagas", n)
	}
	if n := count("key=nobody"); n != 0 {
		t.Fatalf("unknown key: %d sagas", n)
	}
	out := e.expect(400, "GET", "/api/sagas?since=yesterday", "")
	if !strings.Contains(out["detail"].(string), "RFC 3339") {
		t.Fatalf("bad since: %v", out)
	}
}

func TestOverview(t *testing.T) {
	e := newConsoleEnv(t, "")
	e.produce("1", `{"email":"a@x"}`)
	e.expect(202, "POST", "/api/fire", `{"event_type":"fragile.go"}`)
	e.sagaWithKey("a@x", "completed")
	kafkatest.WaitFor(t, 30*time.Second, "the fragile saga to roll back", func() bool {
		_, out := e.call("GET", "/api/sagas?saga=fragile&status=rolled_back", "")
		return len(out["sagas"].([]any)) == 1
	})
	kafkatest.WaitFor(t, 10*time.Second, "the started and finished counters to count both sagas", func() bool {
		return testutil.ToFloat64(e.m.Metrics.SagasStarted.WithLabelValues("card")) == 1 &&
			testutil.ToFloat64(e.m.Metrics.SagasStarted.WithLabelValues("fragile")) == 1 &&
			e.m.Finished.Load() == 2 // counted after sagaz_sagas_finished_total
	})
	ov := e.expect(200, "GET", "/api/overview", "")
	by := ov["by_status"].(map[string]any)
	card := ov["by_saga"].(map[string]any)["card"].(map[string]any)
	if by["completed"] != float64(1) || by["rolled_back"] != float64(1) || by["failed"] != float64(0) || card["completed"] != float64(1) {
		t.Fatalf("counts: %v", ov)
	}
	counters := ov["counters"].(map[string]any)
	if ov["ready"] != true || counters["started"] != float64(2) || counters["finished"] != float64(2) || len(ov["owned_partitions"].([]any)) == 0 {
		t.Fatalf("overview: %v", ov)
	}
	g, _ := ov["group"].(map[string]any)
	if g == nil || len(g["members"].([]any)) != 1 || g["members"].([]any)[0].(map[string]any)["self"] != true || len(g["lag"].([]any)) == 0 {
		t.Fatalf("group: %v (error %v)", ov["group"], ov["group_error"])
	}
	// Within the interval every caller gets the same overview.
	again := e.expect(200, "GET", "/api/overview", "")
	if again["at"] != ov["at"] || len(again["history"].([]any)) != 1 {
		t.Fatalf("the overview was computed again within its interval: %v then %v", ov["at"], again["at"])
	}
}

func TestDeadLettersListAndReplay(t *testing.T) {
	e := newConsoleEnv(t, token)
	e.reject.Store(true)
	e.produce("p-1", `{"email":"p1@x","card":{"number":"4242"}}`)
	e.produce("p-2", `not json`)
	var letters []any
	kafkatest.WaitFor(t, 30*time.Second, "two dead letters", func() bool {
		_, out := e.call("GET", "/api/deadletters", "")
		letters, _ = out["dead_letters"].([]any)
		return len(letters) == 2
	})
	byReason := map[string]map[string]any{}
	for _, l := range letters {
		byReason[l.(map[string]any)["reason"].(string)] = l.(map[string]any)
	}
	te := byReason["transform_error"]
	if te == nil || byReason["decode"] == nil || te["saga"] != "card" || te["original"].(map[string]any)["topic"] != "cards" ||
		strings.Contains(te["value"].(string), "4242") || !strings.Contains(te["value"].(string), engine.Masked) {
		t.Fatalf("dead letters: %v", letters)
	}
	if n := len(e.expect(200, "GET", "/api/deadletters?reason=decode", "")["dead_letters"].([]any)); n != 1 {
		t.Fatalf("reason=decode: %d", n)
	}
	if n := len(e.expect(200, "GET", "/api/deadletters?topic=elsewhere", "")["dead_letters"].([]any)); n != 0 {
		t.Fatalf("topic=elsewhere: %d", n)
	}
	e.expect(400, "GET", "/api/deadletters?limit=0", "")
	e.expect(400, "GET", "/api/deadletters?cursor=zzz", "")

	body := fmt.Sprintf(`{"dead_letters":[{"partition":%v,"offset":%v}]}`, te["partition"], te["offset"])
	e.expect(401, "POST", "/api/deadletters/replay", body, "Authorization", "")
	e.expect(400, "POST", "/api/deadletters/replay", `{"dead_letters":[]}`, "Authorization", "Bearer "+token)
	e.reject.Store(false) // the cause is fixed
	out := e.expect(200, "POST", "/api/deadletters/replay", body, "Authorization", "Bearer "+token)
	if out["replayed"] != float64(1) || out["failed"] != float64(0) {
		t.Fatalf("replay: %v", out)
	}
	s := e.sagaWithKey("p1@x", "completed")
	if src := s["origin"].(map[string]any); src["topic"] != "cards" {
		t.Fatalf("replayed saga: %v", s)
	}
	// Replayed again: the idempotency key de-duplicates it.
	e.expect(200, "POST", "/api/deadletters/replay", body, "Authorization", "Bearer "+token)
	kafkatest.WaitSettled(t, e.seeds, "console-test", "cards", 30*time.Second)
	if n := len(e.expect(200, "GET", "/api/sagas?saga=card", "")["sagas"].([]any)); n != 1 {
		t.Fatalf("a keyed replay started %d sagas, want 1", n)
	}
}

func TestConsoleSession(t *testing.T) {
	e := newConsoleEnv(t, token)
	info := e.expect(200, "GET", "/api/session", "", "Authorization", "")
	if info["token_required"] != true || info["authenticated"] != false {
		t.Fatalf("session before login: %v", info)
	}
	e.expect(401, "POST", "/api/session", `{"token":"wrong"}`, "Authorization", "")
	e.expect(400, "POST", "/api/session", `token`, "Authorization", "")
	e.expect(403, "POST", "/api/session", `{"token":"`+token+`"}`, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site", "Authorization", "")

	login := func(body, contentType string, headers ...string) *http.Cookie {
		req, _ := http.NewRequest("POST", e.base+"/api/session", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || len(resp.Cookies()) != 1 {
			t.Fatalf("login: %d %v", resp.StatusCode, resp.Cookies())
		}
		return resp.Cookies()[0]
	}
	c := login(`{"token":"`+token+`"}`, "application/json")
	if c.Name != httpapi.SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || len(c.Value) < 32 {
		t.Fatalf("cookie: %+v", c)
	}
	if c2 := login("token="+url.QueryEscape(token), "application/x-www-form-urlencoded", "X-Forwarded-Proto", "https"); !c2.Secure {
		t.Fatalf("a login over TLS must set a Secure cookie: %+v", c2)
	}
	cookie := "Cookie"
	session := httpapi.SessionCookie + "=" + c.Value
	if info := e.expect(200, "GET", "/api/session", "", cookie, session, "Authorization", ""); info["authenticated"] != true {
		t.Fatalf("session after login: %v", info)
	}
	// The session authorizes actions from the console's origin; a
	// cross-origin request with the same cookie is refused.
	e.expect(202, "POST", "/api/fire", `{"event_type":"fragile.go"}`, cookie, session, "Origin", e.base, "Sec-Fetch-Site", "same-origin", "Authorization", "")
	e.expect(401, "POST", "/api/fire", `{"event_type":"fragile.go"}`, cookie, session, "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site", "Authorization", "")
	e.expect(401, "POST", "/api/fire", `{"event_type":"fragile.go"}`, cookie, httpapi.SessionCookie+"=forged", "Authorization", "")
	e.expect(200, "DELETE", "/api/session", "", cookie, session, "Authorization", "")
	e.expect(401, "POST", "/api/fire", `{"event_type":"fragile.go"}`, cookie, session, "Authorization", "")
	e.expect(401, "GET", "/api/sagas", "", cookie, session, "Authorization", "")

	// A read-only token opens a read-only session: the console reads with
	// it (every read needs a token), and every action answers 403.
	e.expect(401, "GET", "/api/sagas", "", "Authorization", "")
	r := login(`{"token":"`+readTok+`"}`, "application/json")
	readSession := httpapi.SessionCookie + "=" + r.Value
	if info := e.expect(200, "GET", "/api/session", "", cookie, readSession, "Authorization", ""); info["authenticated"] != true || info["read_only"] != true {
		t.Fatalf("read-only session: %v", info)
	}
	for _, p := range []string{"/api/sagas", "/api/overview", "/api/triggers", "/api/deadletters"} {
		e.expect(200, "GET", p, "", cookie, readSession, "Authorization", "")
	}
	if out := e.expect(403, "POST", "/api/fire", `{"event_type":"fragile.go"}`, cookie, readSession, "Origin", e.base, "Sec-Fetch-Site", "same-origin", "Authorization", ""); out["error"] != "read-only token" {
		t.Fatalf("an action with a read-only session: %v", out)
	}
	e.expect(403, "POST", "/api/deadletters/replay", `{"dead_letters":[{"partition":0,"offset":0}]}`, cookie, readSession, "Origin", e.base, "Sec-Fetch-Site", "same-origin", "Authorization", "")
	e.expect(200, "DELETE", "/api/session", "", cookie, readSession, "Authorization", "")
	e.expect(401, "GET", "/api/sagas", "", cookie, readSession, "Authorization", "")

	// The console's handler is mounted at /ui/, and / leads to it.
	resp, err := http.Get(e.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/ui/" || resp.StatusCode != 200 {
		t.Fatalf("GET / ended at %s with %d", resp.Request.URL, resp.StatusCode)
	}
}
