package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

const token = "s3cret-admin-token" // at least 16 characters

func noop(context.Context, *engine.Run) error { return nil }

func testRegistry() *engine.Registry {
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "payment", Steps: []engine.Step{{Name: "mark", Action: noop}},
		Triggers: []engine.Trigger{engine.Webhook("payments", engine.PassThrough, engine.WithKey(engine.KeyField("payment_id")))}})
	reg.Register(engine.Saga{Name: "signup", Steps: []engine.Step{{Name: "greet", Action: noop}},
		Triggers: []engine.Trigger{engine.Webhook("signups", engine.PassThrough), engine.Manual("user.invited", engine.PassThrough)}})
	reg.Register(engine.Saga{Name: "refund", Steps: []engine.Step{{Name: "refund", Action: func(context.Context, *engine.Run) error {
		return engine.Permanent(fmt.Errorf("refunds are closed"))
	}}}, Triggers: []engine.Trigger{engine.Manual("refund.requested", engine.PassThrough)}})
	return reg
}

type env struct {
	t       *testing.T
	cluster *kfake.Cluster
	base    string
	m       *sagaztest.Member
}

func newEnv(t *testing.T) *env { return newEnvWith(t, testRegistry(), 2048) }

// newEnvWith starts a member of reg and the API in front of it, taking
// bodies of up to maxBody bytes.
func newEnvWith(t *testing.T, reg *engine.Registry, maxBody int64) *env {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1))
	seeds := c.ListenAddrs()
	m := sagaztest.Start(t, seeds, "api-test", "", reg, nil)
	producer := kafkatest.Client(t, seeds)
	srv, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Logger: sagaztest.Logger(), ReadHeaderTimeout: 300 * time.Millisecond,
		Auth: httpapi.Auth{AdminTokens: []string{token}},
		API: &httpapi.API{Engine: m.Engine, Store: m.Store, Producer: producer, EventsTopic: m.Consumer.Config().EventsTopic,
			Webhooks: map[string]httpapi.WebhookAuth{"signups": {Secrets: []string{"hook-secret"}}}, MaxBodyBytes: maxBody, ProduceTimeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", m.Consumer.Ready)
	return &env{t: t, cluster: c, base: "http://" + srv.Addr(), m: m}
}

// call sends a request and returns the status and the decoded JSON body.
// It sends the admin token unless the headers give an Authorization ("":
// none).
func (e *env) call(method, path, body string, headers ...string) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if method != http.MethodGet && method != http.MethodHead {
		req.Header.Set("Content-Type", "application/json") // what the loopback mode asks of a POST
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			e.t.Fatalf("%s %s: body is not JSON: %s", method, path, raw)
		}
	}
	return resp.StatusCode, out
}

func (e *env) expect(want int, method, path, body string, headers ...string) map[string]any {
	e.t.Helper()
	code, out := e.call(method, path, body, headers...)
	if code != want {
		e.t.Fatalf("%s %s %s: %d %v, want %d", method, path, body, code, out, want)
	}
	if code >= 400 && (out["error"] == nil || out["detail"] == nil) {
		e.t.Fatalf("%s %s: error body %v lacks error/detail", method, path, out)
	}
	return out
}

// waitSaga polls the API until the saga has the status.
func (e *env) waitSaga(id, status string) map[string]any {
	e.t.Helper()
	var out map[string]any
	kafkatest.WaitFor(e.t, 30*time.Second, "saga "+id+" to be "+status, func() bool {
		var code int
		code, out = e.call("GET", "/api/sagas/"+id, "")
		return code == 200 && out["status"] == status
	})
	return out
}

func sign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func TestWebhooks(t *testing.T) {
	e := newEnv(t)
	out := e.expect(202, "POST", "/webhooks/payments", `{"payment_id":"p-1","amount":3}`)
	ids := out["saga_ids"].([]any)
	if out["topic"] != "sagaz.events" || len(ids) != 1 || out["event_id"] == "" {
		t.Fatalf("202 body %v", out)
	}
	s := e.waitSaga(ids[0].(string), "completed")
	if s["idempotency_key"] != "p-1" || s["trigger"] != "webhook:payments" {
		t.Fatalf("saga %v", s)
	}
	// The same payment again: accepted, and it starts nothing new.
	e.expect(202, "POST", "/webhooks/payments", `{"payment_id":"p-1","amount":3}`)
	e.expect(400, "POST", "/webhooks/payments", `{"amount":3}`) // names the missing field
	e.expect(400, "POST", "/webhooks/payments", `not json`)     // the key field cannot be read
	e.expect(404, "POST", "/webhooks/nope", `{}`)               // unknown webhook
	e.expect(413, "POST", "/webhooks/payments", `{"payment_id":"`+strings.Repeat("x", 4096)+`"}`)
	code, body := e.call("POST", "/webhooks/payments", `{"amount":3}`)
	if code != 400 || !strings.Contains(fmt.Sprint(body["detail"]), `"payment_id"`) {
		t.Fatalf("missing key: %d %v", code, body)
	}

	// Signed webhook: a wrong or missing signature, or a body changed by one
	// byte, is 401; the right one is accepted.
	signup := `{"user":"ada"}`
	e.expect(401, "POST", "/webhooks/signups", signup)
	e.expect(401, "POST", "/webhooks/signups", signup, "X-Sagaz-Signature", sign("other", signup))
	e.expect(401, "POST", "/webhooks/signups", `{"user":"adb"}`, "X-Sagaz-Signature", sign("hook-secret", signup))
	out = e.expect(202, "POST", "/webhooks/signups", signup, "X-Sagaz-Signature", sign("hook-secret", signup), "Idempotency-Key", "signup-ada")
	first := out["saga_ids"].([]any)[0].(string)
	s = e.waitSaga(first, "completed")
	if s["idempotency_key"] != "signup-ada" {
		t.Fatalf("the Idempotency-Key header was not used: %v", s)
	}

	// Kafka refuses the event: 503, never 202.
	h := e.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "sagaz.events", Err: kerr.UnknownServerError, Count: -1})
	e.expect(503, "POST", "/webhooks/payments", `{"payment_id":"p-2"}`)
	h.Remove()
	e.expect(202, "POST", "/webhooks/payments", `{"payment_id":"p-2"}`)
}

func TestFireAndAdminAPI(t *testing.T) {
	e := newEnv(t)
	auth := []string{"Authorization", "Bearer " + token}
	e.expect(401, "POST", "/api/fire", `{"event_type":"user.invited"}`, "Authorization", "")
	e.expect(401, "POST", "/api/fire", `{"event_type":"user.invited"}`, "Authorization", "Bearer wrong")
	e.expect(400, "POST", "/api/fire", `{"user":"x"}`, auth...)
	e.expect(400, "POST", "/api/fire", `[1,2]`, auth...)
	e.expect(404, "POST", "/api/fire", `{"event_type":"nobody.listens"}`, auth...)
	invited := e.expect(202, "POST", "/api/fire", `{"event_type":"user.invited","user":"grace"}`, auth...)["saga_ids"].([]any)[0].(string)
	refund := e.expect(202, "POST", "/api/fire", `{"event_type":"refund.requested","order":"o-1"}`, auth...)["saga_ids"].([]any)[0].(string)
	s := e.waitSaga(invited, "completed")
	if ctx, _ := s["context"].(map[string]any); ctx["user"] != "grace" || len(s["steps"].([]any)) != 1 {
		t.Fatalf("saga %v", s)
	}
	e.waitSaga(refund, "rolled_back")

	list := e.expect(200, "GET", "/api/sagas?status=completed&limit=10", "")
	if n := len(list["sagas"].([]any)); n != 1 {
		t.Fatalf("completed sagas listed: %d", n)
	}
	if n := len(e.expect(200, "GET", "/api/sagas?saga=refund", "")["sagas"].([]any)); n != 1 {
		t.Fatalf("refund sagas listed: %d", n)
	}
	e.expect(400, "GET", "/api/sagas?status=done", "")
	e.expect(400, "GET", "/api/sagas?limit=0", "")
	e.expect(400, "GET", "/api/sagas?cursor=nonsense!", "")
	e.expect(400, "GET", "/api/sagas/not-an-id", "")
	e.expect(404, "GET", "/api/sagas/sagaz.events:0:999999:signup", "")
	if tr := e.expect(200, "GET", "/api/triggers", "")["triggers"].([]any); len(tr) != 4 {
		t.Fatalf("triggers: %v", tr)
	}

	e.expect(401, "POST", "/api/sagas/"+invited+"/cancel", "", "Authorization", "")
	e.expect(401, "GET", "/api/sagas/"+invited, "", "Authorization", "") // reads need the token too
	e.expect(409, "POST", "/api/sagas/"+invited+"/cancel", "", auth...)  // finished
	e.expect(409, "POST", "/api/sagas/"+invited+"/retry", "", auth...)   // not failed
	e.expect(404, "POST", "/api/sagas/sagaz.events:0:999999:signup/retry", "", auth...)
	e.expect(400, "POST", "/api/sagas/bad/retry", "", auth...)
}

func TestSlowClientIsCutOff(t *testing.T) {
	e := newEnv(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhooks/payments HTTP/1.1\r\nHost: x\r\n") // and never the rest
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = bufio.NewReader(conn).ReadString('\n')
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow client not cut off by the read-header timeout (err %v after %s)", err, time.Since(start))
	}
}

// fakeProducer accepts every record (for the fuzz test: no Kafka needed).
type fakeProducer struct{}

func (fakeProducer) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	out := make(kgo.ProduceResults, len(rs))
	for i, r := range rs {
		r.Partition, r.Offset = 1, int64(i)
		out[i] = kgo.ProduceResult{Record: r}
	}
	return out
}

// FuzzWebhook: whatever the body and headers, the webhook handler never
// panics and answers no 5xx but 503.
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(`{"payment_id":"p-1"}`), "payments", "", "")
	f.Add([]byte(`{"user":"x"}`), "signups", "sha256=00", "k")
	f.Add([]byte("\x00\xff{"), "payments", "sha256=zz", "")
	f.Add([]byte(`{"payment_id":{"nested":true}}`), "payments", "", "")
	st, err := storage.OpenBolt(f.TempDir()+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	eng, err := engine.New(engine.Config{Store: st, Registry: testRegistry(), Logger: sagaztest.Logger()})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Logger: sagaztest.Logger(), API: &httpapi.API{Engine: eng, Store: st,
		Producer: fakeProducer{}, EventsTopic: "sagaz.events", Webhooks: map[string]httpapi.WebhookAuth{"signups": {Secrets: []string{"s"}}}, MaxBodyBytes: 1024}})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Run(ctx) }()
	base := "http://" + srv.Addr()
	f.Fuzz(func(t *testing.T, body []byte, name, sig, key string) {
		req, err := http.NewRequest("POST", base+"/webhooks/"+strings.NewReplacer("/", "", "?", "", "#", "", "%", "").Replace(name), bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("X-Sagaz-Signature", sig)
		req.Header.Set("Content-Type", "application/json") // no token: the loopback checks want JSON
		if key != "" && !strings.ContainsAny(key, "\r\n\x00") {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the client refused the request (bad header bytes)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 && resp.StatusCode != 503 {
			t.Fatalf("status %d for %q", resp.StatusCode, body)
		}
	})
}
