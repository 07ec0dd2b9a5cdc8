package httpapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	sagazmember "github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

var replayKey = []byte("replay test key, 24 bytes")

func replayRegistry() *engine.Registry {
	reg := engine.NewRegistry()
	// No declared key: the delivery id is the only thing that tells a
	// replay from a new call.
	reg.Register(engine.Saga{Name: "invite", Steps: []engine.Step{{Name: "send", Action: noop}},
		Triggers: []engine.Trigger{engine.Webhook("invites", engine.PassThrough, engine.Signed())}})
	return reg
}

// member is a group member (as the binary assembles one) with its HTTP
// API.
type member struct {
	*sagaztest.Member
	base string
}

func startMember(t *testing.T, seeds []string, dir string) *member {
	t.Helper()
	m := sagaztest.StartWith(t, seeds, "replay", dir, replayRegistry(), func(c *sagazmember.Config) {
		c.HTTPAddr, c.Auth = "127.0.0.1:0", httpapi.Auth{AdminTokens: []string{adminTok}}
		c.API = &httpapi.API{Webhooks: map[string]httpapi.WebhookAuth{"invites": {Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(replayKey)}}}}
	})
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", m.Consumer.Ready)
	return &member{Member: m, base: "http://" + m.HTTP.Addr()}
}

// deliver posts a Standard Webhooks call signed at ts.
func deliver(t *testing.T, base, id string, ts time.Time, body string, extra ...string) (int, httpapi.EventAccepted, string) {
	t.Helper()
	sec := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, replayKey)
	fmt.Fprintf(m, "%s.%s.%s", id, sec, body)
	req, _ := http.NewRequest("POST", base+"/webhooks/invites", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", sec)
	req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out httpapi.EventAccepted
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, string(raw)
}

// sagasByKey counts the distinct sagas (by ID) with each idempotency key
// over the members' stores.
func sagasByKey(t *testing.T, ms ...*member) map[string]map[string]storage.Status {
	out := map[string]map[string]storage.Status{}
	for _, m := range ms {
		for _, s := range sagaztest.Sagas(t, m.Store) {
			if out[s.IdempotencyKey] == nil {
				out[s.IdempotencyKey] = map[string]storage.Status{}
			}
			out[s.IdempotencyKey][s.ID()] = s.Status
		}
	}
	return out
}

// TestSignedDeliveryIsNotReplayable: a Standard Webhooks delivery replayed
// within the tolerance — to the same member, to another member of the
// group, or after the member restarted — answers the same event_id and
// starts no second saga; replayed after the tolerance it is refused (401).
func TestSignedDeliveryIsNotReplayable(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1))
	seeds := c.ListenAddrs()
	dirA := t.TempDir()
	a := startMember(t, seeds, dirA)
	b := startMember(t, seeds, "")
	kafkatest.WaitFor(t, 30*time.Second, "both members ready", func() bool { return a.Consumer.Ready() && b.Consumer.Ready() })

	const body = `{"user":"ada"}`
	sent := time.Now()
	code, first, raw := deliver(t, a.base, "msg_1", sent, body)
	if code != 202 || first.EventID != httpapi.DeliveryEventID("invites", "msg_1") {
		t.Fatalf("first delivery: %d %s", code, raw)
	}
	key := httpapi.DeliveryKey("invites", "msg_1")
	kafkatest.WaitFor(t, 30*time.Second, "the delivery's saga to complete", func() bool {
		for _, st := range sagasByKey(t, a, b)[key] {
			return st == storage.StatusCompleted
		}
		return false
	})

	same := func(where string, got httpapi.EventAccepted, code int, raw string) {
		t.Helper()
		if code != 202 || got.EventID != first.EventID || got.Topic != first.Topic || got.Partition != first.Partition {
			t.Fatalf("replay %s: %d %s, want 202 with event_id %s on partition %d", where, code, raw, first.EventID, first.Partition)
		}
	}
	// Inside the window, to the same member; a changed Idempotency-Key
	// header (not signed) changes nothing.
	code, again, raw := deliver(t, a.base, "msg_1", sent, body, "Idempotency-Key", "attacker-chosen")
	same("to the same member", again, code, raw)
	// To the other member.
	code, again, raw = deliver(t, b.base, "msg_1", sent.Add(time.Second), body)
	same("to another member", again, code, raw)
	// Outside the window: refused, whatever else is right.
	if code, _, raw := deliver(t, b.base, "msg_1", sent.Add(-httpapi.DefaultTolerance-time.Minute), body); code != 401 || !strings.Contains(raw, "tolerance") {
		t.Fatalf("a replay outside the tolerance: %d %s, want 401", code, raw)
	}
	// After a restart of the first member (same data directory).
	a.Stop()
	a = startMember(t, seeds, dirA)
	kafkatest.WaitFor(t, 30*time.Second, "both members ready after the restart", func() bool { return a.Consumer.Ready() && b.Consumer.Ready() })
	code, again, raw = deliver(t, a.base, "msg_1", sent, body)
	same("after a restart", again, code, raw)
	// A new delivery of the same body is a new event.
	if code, next, raw := deliver(t, b.base, "msg_2", time.Now(), body); code != 202 || next.EventID == first.EventID {
		t.Fatalf("a new delivery: %d %s", code, raw)
	}

	kafkatest.WaitSettled(t, seeds, "replay", "sagaz.events", 30*time.Second)
	got := sagasByKey(t, a, b)
	if len(got[key]) != 1 {
		t.Fatalf("delivery msg_1 (sent 5 times, 4 accepted) started %d sagas: %v", len(got[key]), got[key])
	}
	if n := len(got[httpapi.DeliveryKey("invites", "msg_2")]); n != 1 {
		t.Fatalf("delivery msg_2 started %d sagas", n)
	}
	if len(got["attacker-chosen"]) != 0 {
		t.Fatal("the unsigned Idempotency-Key header was used over the delivery id")
	}
}

// recorder keeps the records it is given.
type recorder struct {
	mu   sync.Mutex
	recs []*kgo.Record
}

func (r *recorder) ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	r.mu.Lock()
	r.recs = append(r.recs, rs...)
	r.mu.Unlock()
	return fakeProducer{}.ProduceSync(ctx, rs...)
}

func (r *recorder) last() *kgo.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[len(r.recs)-1]
}

func recHeader(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// TestDeliveryIDsByScheme: each scheme's delivery id becomes the event's
// idempotency key (for triggers without one) and its event_id; the record
// is keyed by it, so a replay lands in the same partition. Without a
// delivery id (hmac-sha256) the Idempotency-Key header is used, as before.
func TestDeliveryIDsByScheme(t *testing.T) {
	reg := engine.NewRegistry()
	for _, name := range []string{"gh", "stripe", "plain"} {
		reg.Register(engine.Saga{Name: "on-" + name, Steps: []engine.Step{{Name: "s", Action: noop}}, Triggers: []engine.Trigger{engine.Webhook(name, engine.PassThrough)}})
	}
	rec := &recorder{}
	baseRec := quickServer(t, reg, httpapi.Auth{AdminTokens: []string{adminTok}}, httpapi.API{Producer: rec, Webhooks: map[string]httpapi.WebhookAuth{
		"gh":     {Scheme: httpapi.SchemeGitHub, Secrets: []string{"gh-secret"}},
		"stripe": {Scheme: httpapi.SchemeStripe, Secrets: []string{"whsec_st"}},
		"plain":  {Secrets: []string{"plain-secret"}},
	}})
	body := `{"id":"evt_42","type":"charge.succeeded"}`
	now := time.Now().Unix()
	cases := []struct {
		hook     string
		headers  []string
		delivery string
		key      string // the idempotency key header of the record
	}{
		{"gh", []string{"X-Hub-Signature-256", githubSign("gh-secret", body), "X-GitHub-Delivery", "guid-1", "Idempotency-Key", "ignored"}, "guid-1", "webhook:gh:guid-1"},
		{"stripe", []string{"Stripe-Signature", fmt.Sprintf("t=%d,v1=%s", now, stripeV1("whsec_st", now, body))}, "evt_42", "webhook:stripe:evt_42"},
		{"plain", []string{"X-Sagaz-Signature", githubSign("plain-secret", body), "Idempotency-Key", "caller-key"}, "", "caller-key"},
	}
	for _, tc := range cases {
		code, out := 0, ""
		for range 2 {
			code, out = do(t, baseRec, req{method: "POST", path: "/webhooks/" + tc.hook, body: body, headers: append([]string{"Content-Type", "application/json"}, tc.headers...)})
			if code != 202 {
				t.Fatalf("%s: %d %s", tc.hook, code, out)
			}
		}
		r := rec.last()
		if got := recHeader(r, engine.HeaderIdempotencyKey); got != tc.key || string(r.Key) != tc.key {
			t.Errorf("%s: idempotency key %q, record key %q; want %q", tc.hook, got, r.Key, tc.key)
		}
		var acc httpapi.EventAccepted
		_ = json.Unmarshal([]byte(out), &acc)
		if tc.delivery != "" && (acc.EventID != httpapi.DeliveryEventID(tc.hook, tc.delivery) || recHeader(r, engine.HeaderEventID) != acc.EventID) {
			t.Errorf("%s: event_id %s, header %s; want %s", tc.hook, acc.EventID, recHeader(r, engine.HeaderEventID), httpapi.DeliveryEventID(tc.hook, tc.delivery))
		}
	}
	// A delivery id that would make an oversized key is refused.
	long := strings.Repeat("x", httpapi.MaxDeliveryIDBytes+1)
	if code, out := do(t, baseRec, req{method: "POST", path: "/webhooks/gh", body: body, headers: []string{"Content-Type", "application/json",
		"X-Hub-Signature-256", githubSign("gh-secret", body), "X-GitHub-Delivery", long}}); code != 400 || !strings.Contains(out, "delivery id") {
		t.Fatalf("a long delivery id: %d %s", code, out)
	}
}
