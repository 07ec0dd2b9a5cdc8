package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	sagazmember "github.com/sagaz-go/sagaz/member"
)

// stuckSaga holds, then pays unless the context says "ok": "yes"; the
// hold cannot be undone, so a saga that does not pay ends failed.
func stuckSaga(triggers ...engine.Trigger) engine.Saga {
	return engine.Saga{Name: "stuck", Sensitive: []string{"card"}, Triggers: triggers, Steps: []engine.Step{
		{Name: "hold", Action: noop, Compensate: func(context.Context, *engine.Run) error {
			return engine.Permanent(errors.New("the hold cannot be released"))
		}},
		{Name: "pay", Action: func(_ context.Context, r *engine.Run) error {
			if r.String("ok") != "yes" {
				return engine.Permanent(errors.New("not ok"))
			}
			return nil
		}},
	}}
}

func tokenRef(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:4])
}

// Over the API: a failed saga retried with an edited context (the edit in
// its history, its sensitive fields masked there too), another resolved;
// the 400 and 409 answers name what is wrong.
func TestRetryWithContextAndResolveOverTheAPI(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(stuckSaga(engine.Manual("stuck.requested", engine.PassThrough)))
	e := newEnvWith(t, reg, 2<<20)
	fire := func(body string) string {
		t.Helper()
		return e.expect(202, "POST", "/api/fire", body)["saga_ids"].([]any)[0].(string)
	}
	first := fire(`{"event_type":"stuck.requested","card":"4111","ok":"no","n":1}`)
	second := fire(`{"event_type":"stuck.requested","card":"4222","ok":"no","n":2}`)
	e.waitSaga(first, "failed")
	e.waitSaga(second, "failed")
	retry, resolve := "/api/sagas/"+first+"/retry", "/api/sagas/"+second+"/resolve"

	// Bad requests: 400, naming what is wrong; nothing changes.
	for _, c := range []struct{ path, body, detail string }{
		{retry, `[1]`, `"context"`},
		{retry, `{"contxt": {}}`, `unknown field "contxt"`},
		{retry, `{"context": [1, 2]}`, "the context is an array; want a JSON object"},
		{retry, `{"context": "x"}`, "want a JSON object"},
		{retry, `{"context": {"pad": "` + strings.Repeat("x", 950<<10) + `"}}`, "over the limit"},
		{retry, `{"reason": "` + strings.Repeat("r", 1100) + `"}`, "at most 1024"},
		{resolve, ``, "a reason is required"},
		{resolve, `{"reason": " "}`, "a reason is required"},
		{resolve, `{"reason": "x", "extra": 1}`, `unknown field "extra"`},
	} {
		out := e.expect(400, "POST", c.path, c.body)
		if !strings.Contains(fmt.Sprint(out["detail"]), c.detail) {
			t.Errorf("POST %s %.40s: detail %q, want it to say %q", c.path, c.body, out["detail"], c.detail)
		}
	}
	if s := e.expect(200, "GET", "/api/sagas/"+first, ""); s["status"] != "failed" || s["history"] != nil {
		t.Fatalf("refused requests changed the saga: %v", s)
	}
	e.expect(409, "POST", "/api/sagas/"+first+"/cancel", `{"reason":"too late"}`) // finished
	e.expect(404, "POST", "/api/sagas/sagaz.events:0:999999:stuck/resolve", `{"reason":"x"}`)
	e.expect(400, "POST", "/api/sagas/bad/resolve", `{"reason":"x"}`)

	// Retry with an edited context: the card given back masked keeps its
	// value; the answer carries the saga with its history.
	out := e.expect(202, "POST", retry, `{"context": {"card": "***", "ok": "yes", "n": 1}, "reason": "customer confirmed"}`)
	saga, _ := out["saga"].(map[string]any)
	if out["status"] != "accepted" || saga == nil || saga["history"] == nil {
		t.Fatalf("retry answer %v", out)
	}
	s := e.waitSaga(first, "completed")
	if ctx, _ := s["context"].(map[string]any); ctx["card"] != engine.Masked || ctx["ok"] != "yes" {
		t.Errorf("context after the retry: %v", s["context"])
	}
	if got, err := e.m.Store.Get(context.Background(), first); err != nil || !strings.Contains(string(got.Context), `"card":"4111"`) {
		t.Errorf("the stored context lost the card: %s %v", got.Context, err)
	}
	h, _ := s["history"].([]any)
	if len(h) != 1 {
		t.Fatalf("history %v", s["history"])
	}
	entry := h[0].(map[string]any)
	prev, _ := entry["previous_context"].(map[string]any)
	if entry["action"] != "retry_with_context" || entry["reason"] != "customer confirmed" || entry["by"] != "token:"+tokenRef(token) ||
		prev["ok"] != "no" || prev["card"] != engine.Masked || entry["previous_context_truncated"] != nil {
		t.Errorf("history entry %v", entry)
	}

	// Resolve: 200, resolved, listed as resolved and not as failed.
	out = e.expect(200, "POST", resolve, `{"reason": "refunded by hand"}`)
	if saga, _ := out["saga"].(map[string]any); out["status"] != "resolved" || saga["status"] != "resolved" {
		t.Fatalf("resolve answer %v", out)
	}
	ids := func(status string) []string {
		var out []string
		for _, s := range e.expect(200, "GET", "/api/sagas?status="+status, "")["sagas"].([]any) {
			out = append(out, s.(map[string]any)["id"].(string))
		}
		return out
	}
	if r, f := ids("resolved"), ids("failed"); len(r) != 1 || r[0] != second || len(f) != 0 {
		t.Errorf("listed resolved %v, failed %v", r, f)
	}
	out = e.expect(409, "POST", "/api/sagas/"+second+"/retry", "")
	if d := fmt.Sprint(out["detail"]); !strings.Contains(d, "resolved by hand") || !strings.Contains(d, "refunded by hand") {
		t.Errorf("retry of a resolved saga: %q", d)
	}
	e.expect(409, "POST", resolve, `{"reason": "again"}`)
	e.expect(409, "POST", "/api/sagas/"+first+"/resolve", `{"reason": "completed"}`)
	s = e.expect(200, "GET", "/api/sagas/"+second, "")
	if h, _ := s["history"].([]any); len(h) != 1 || h[0].(map[string]any)["action"] != "resolve" || h[0].(map[string]any)["reason"] != "refunded by hand" {
		t.Errorf("history of the resolved saga: %v", s["history"])
	}
}

// Retry and resolve work from any member: a member that does not own the
// saga forwards the request to the one that does, and the history names
// the operator's token, not the token the members share.
func TestResolveAndRetryFromAnotherMember(t *testing.T) {
	const topic, shared, operator = "stuck.requested", "group-shared-token-1", "operator-token-0002"
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, topic))
	seeds := c.ListenAddrs()
	var ms []*sagaztest.Member
	for range 2 {
		reg := engine.NewRegistry()
		reg.Register(stuckSaga(engine.Kafka(topic, engine.PassThrough)))
		ms = append(ms, sagaztest.StartWith(t, seeds, "group-resolve", "", reg, func(c *sagazmember.Config) {
			c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{}
			c.Auth = httpapi.Auth{AdminTokens: []string{shared, operator}}
			c.Consumer.TopicPartitions = 4
		}))
	}
	kafkatest.WaitFor(t, 60*time.Second, "both members ready, each owning partitions", func() bool {
		for _, m := range ms {
			if m.Ready() != nil || len(m.Engine.Owned()) == 0 {
				return false
			}
		}
		return true
	})
	cl := kafkatest.Client(t, seeds)
	var recs []*kgo.Record
	const n = 12
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint("k-", i)), Value: []byte(fmt.Sprintf(`{"ok":"no","i":%d}`, i))})
	}
	kafkatest.Produce(t, cl, recs...)
	base := "http://" + ms[0].HTTP.Addr()
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+operator)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	// The failed sagas the first member does not own.
	var remote []string
	kafkatest.WaitFor(t, 60*time.Second, "every saga failed", func() bool {
		remote = remote[:0]
		_, page := call("GET", "/api/sagas?status=failed", "")
		sagas, _ := page["sagas"].([]any)
		for _, s := range sagas {
			v := s.(map[string]any)
			src := v["source"].(map[string]any)
			if !ms[0].Engine.Owns(storagePos(src["topic"].(string), int32(src["partition"].(float64)))) {
				remote = append(remote, v["id"].(string))
			}
		}
		return len(sagas) == n
	})
	if len(remote) < 2 {
		t.Fatalf("%d failed sagas on the other member, want at least 2", len(remote))
	}
	code, out := call("POST", "/api/sagas/"+url.PathEscape(remote[0])+"/resolve", `{"reason":"handled by the payments team"}`)
	if code != 200 || out["status"] != "resolved" {
		t.Fatalf("resolve through a member that does not own the saga: %d %v", code, out)
	}
	code, out = call("POST", "/api/sagas/"+url.PathEscape(remote[1])+"/retry", `{"context":{"ok":"yes"},"reason":"approved"}`)
	if code != 202 {
		t.Fatalf("retry through a member that does not own the saga: %d %v", code, out)
	}
	want := "token:" + tokenRef(operator)
	for id, status := range map[string]string{remote[0]: "resolved", remote[1]: "completed"} {
		kafkatest.WaitFor(t, 30*time.Second, id+" "+status, func() bool {
			code, s := call("GET", "/api/sagas/"+url.PathEscape(id), "")
			h, _ := s["history"].([]any)
			return code == 200 && s["status"] == status && len(h) == 1 && h[0].(map[string]any)["by"] == want
		})
	}
}
