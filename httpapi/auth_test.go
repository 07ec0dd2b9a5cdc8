package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

const (
	adminTok   = "admin-token-0123456789"
	admin2Tok  = "admin-token-rotated-0001" // the previous admin token, still accepted
	readTok    = "read-only-token-012345"
	metricsTok = "metrics-token-01234567"
)

// quickServer serves an API without Kafka (unless api names a producer,
// one that accepts every record) and returns its base URL.
func quickServer(t *testing.T, reg *engine.Registry, auth httpapi.Auth, api httpapi.API) string {
	t.Helper()
	st, err := storage.OpenBolt(t.TempDir()+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: sagaztest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	routes := eng.Routes()
	sched, err := cron.New(cron.Config{Routes: routes, Partitions: 1, Producer: fakeProducer{}, Store: st,
		Owns: func(storage.Partition) bool { return false }, Logger: sagaztest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	api.Engine, api.Store, api.EventsTopic, api.Schedules, api.CronTopic = eng, st, "sagaz.events", sched, "sagaz.cron"
	if api.Producer == nil {
		api.Producer = fakeProducer{}
	}
	preg := prometheus.NewRegistry()
	preg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "sagaz_auth_test_total", Help: "t"}))
	srv, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Logger: sagaztest.Logger(), Gatherer: preg, Auth: auth, API: &api})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + srv.Addr()
}

func authRegistry() *engine.Registry {
	reg := testRegistry()
	reg.Register(engine.Saga{Name: "report", Steps: []engine.Step{{Name: "run", Action: noop}}, Triggers: []engine.Trigger{engine.Cron("@daily")}})
	return reg
}

type req struct {
	method, path, body string
	host               string
	headers            []string
}

func do(t *testing.T, base string, r req) (int, string) {
	t.Helper()
	hr, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		hr.Host = r.host
	}
	for i := 0; i+1 < len(r.headers); i += 2 {
		hr.Header.Set(r.headers[i], r.headers[i+1])
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEveryRouteByTokenState: with tokens set, every /api route needs one
// (reads too), a read-only token only reads, /metrics takes its own token,
// /healthz and /readyz stay open, webhooks answer to their signature only.
func TestEveryRouteByTokenState(t *testing.T) {
	base := quickServer(t, authRegistry(), httpapi.Auth{AdminTokens: []string{adminTok, admin2Tok}, ReadTokens: []string{readTok}, MetricsTokens: []string{metricsTok}},
		httpapi.API{Webhooks: map[string]httpapi.WebhookAuth{"signups": {Secrets: []string{"hook-secret"}}}})
	type class int
	const (
		open class = iota
		metrics
		read
		write
	)
	id := "sagaz.events:0:5:payment"
	routes := []struct {
		class
		method, path, body string
		want               int // the answer once through (0: whatever the handler says, checked to be neither 401 nor 403)
	}{
		{open, "GET", "/healthz", "", 200},
		{open, "GET", "/readyz", "", 200},
		{open, "POST", "/webhooks/payments", `{"payment_id":"p-1"}`, 202}, // unsigned webhook: open by design
		{open, "POST", "/webhooks/signups", `{"user":"x"}`, 401},          // signed webhook: tokens do not replace the signature
		{metrics, "GET", "/metrics", "", 200},
		{read, "GET", "/api/triggers", "", 200},
		{read, "HEAD", "/api/triggers", "", 200},
		{read, "GET", "/api/sagas", "", 200},
		{read, "GET", "/api/sagas?status=completed&limit=5", "", 200},
		{read, "GET", "/api/sagas/" + id, "", 404},
		{read, "GET", "/api/schedules", "", 200},
		{read, "GET", "/api/no-such-route", "", 404},
		{read, "GET", "/api/../api/sagas", "", 0},
		{write, "POST", "/api/sagas/" + id + "/retry", "", 0},
		{write, "POST", "/api/sagas/" + id + "/cancel", "", 0},
		{write, "POST", "/api/sagas/" + id + "/resolve", `{"reason":"done by hand"}`, 0},
		{write, "POST", "/api/fire", `{"event_type":"user.invited"}`, 202},
		{write, "POST", "/api/schedules/report:report/pause", "", 409},
		{write, "POST", "/api/schedules/report:report/resume", "", 409},
		{write, "POST", "/api/schedules/report:report/trigger", "", 0},
		{write, "POST", "/api/schedules/report:report/backfill", `{"from":"2026-01-01T00:00:00Z","to":"2026-01-02T00:00:00Z"}`, 0},
		{write, "DELETE", "/api/sagas/" + id, "", 0},
	}
	states := []struct {
		name  string
		auth  string // the Authorization header ("": none)
		kinds map[class]bool
	}{
		{"none", "", nil},
		{"wrong", "Bearer wrong-token-0123456789", nil},
		{"blank", "Bearer    ", nil},
		{"other scheme", "Basic " + adminTok, nil},
		{"admin token as a prefix", "Bearer " + adminTok[:len(adminTok)-1], nil},
		{"read-only", "Bearer " + readTok, map[class]bool{read: true}},
		{"metrics", "Bearer " + metricsTok, map[class]bool{metrics: true}},
		{"admin", "Bearer " + adminTok, map[class]bool{read: true, write: true, metrics: true}},
		{"admin, rotated", "Bearer " + admin2Tok, map[class]bool{read: true, write: true, metrics: true}},
		{"admin, scheme in lower case", "bearer " + adminTok, map[class]bool{read: true, write: true, metrics: true}},
		{"admin, scheme in upper case, extra spaces", "BEARER   " + adminTok + "  ", map[class]bool{read: true, write: true, metrics: true}},
	}
	for _, rt := range routes {
		for _, st := range states {
			t.Run(fmt.Sprintf("%s %s/%s", rt.method, rt.path, st.name), func(t *testing.T) {
				r := req{method: rt.method, path: rt.path, body: rt.body, headers: []string{"Content-Type", "application/json"}}
				if st.auth != "" {
					r.headers = append(r.headers, "Authorization", st.auth)
				}
				code, body := do(t, base, r)
				switch {
				case rt.class == open || st.kinds[rt.class]:
					if rt.want != 0 && code != rt.want || rt.want == 0 && (code == 401 || code == 403) {
						t.Fatalf("%d %s, want %d", code, body, rt.want)
					}
				case rt.class == write && st.kinds[read]:
					if code != 403 || rt.method != "HEAD" && !strings.Contains(body, "read-only token") {
						t.Fatalf("%d %s, want 403 (read-only token)", code, body)
					}
				default:
					if code != 401 {
						t.Fatalf("%d %s, want 401", code, body)
					}
				}
			})
		}
	}
}

// TestLoopbackBrowserChecks: without tokens, what a web page could send is
// refused: another Host (DNS rebinding), another origin (CSRF), a
// mutating request that is not JSON.
func TestLoopbackBrowserChecks(t *testing.T) {
	base := quickServer(t, authRegistry(), httpapi.Auth{AllowedHosts: []string{"sagaz.example.com"}},
		httpapi.API{Webhooks: map[string]httpapi.WebhookAuth{"signups": {Secrets: []string{"hook-secret"}}}})
	port := base[strings.LastIndex(base, ":"):]
	json := []string{"Content-Type", "application/json"}
	fire := `{"event_type":"user.invited"}`
	signup := `{"user":"ada"}`
	cases := []struct {
		name string
		req
		want int
	}{
		{"read from the loopback address", req{method: "GET", path: "/api/triggers"}, 200},
		{"read by localhost", req{method: "GET", path: "/api/triggers", host: "localhost" + port}, 200},
		{"read by a .localhost name", req{method: "GET", path: "/api/triggers", host: "sagaz.localhost" + port}, 200},
		{"read by [::1]", req{method: "GET", path: "/api/triggers", host: "[::1]" + port}, 200},
		{"read by 127.1.2.3", req{method: "GET", path: "/api/triggers", host: "127.1.2.3" + port}, 200},
		{"read by the advertised host", req{method: "GET", path: "/api/sagas", host: "SAGAZ.example.com:8443"}, 200},
		{"DNS rebinding: another host", req{method: "GET", path: "/api/sagas", host: "evil.example" + port}, 403},
		{"DNS rebinding: a name that starts like loopback", req{method: "GET", path: "/api/sagas", host: "127.0.0.1.nip.io" + port}, 403},
		{"DNS rebinding: fire", req{method: "POST", path: "/api/fire", body: fire, host: "evil.example", headers: json}, 403},
		{"probes stay open to any Host", req{method: "GET", path: "/healthz", host: "evil.example"}, 200},
		{"fire, JSON, no Origin (curl)", req{method: "POST", path: "/api/fire", body: fire, headers: json}, 202},
		{"fire, JSON with charset", req{method: "POST", path: "/api/fire", body: fire, headers: []string{"Content-Type", "application/json; charset=utf-8"}}, 202},
		{"fire, same origin", req{method: "POST", path: "/api/fire", body: fire, headers: append([]string{"Origin", strings.Replace(base, "localhost", "127.0.0.1", 1)}, json...)}, 202},
		{"fire, text/plain (a form or fetch without preflight)", req{method: "POST", path: "/api/fire", body: fire, headers: []string{"Content-Type", "text/plain"}}, 415},
		{"fire, no Content-Type", req{method: "POST", path: "/api/fire", body: fire}, 415},
		{"fire, form", req{method: "POST", path: "/api/fire", body: "event_type=x", headers: []string{"Content-Type", "application/x-www-form-urlencoded"}}, 415},
		{"retry without Content-Type", req{method: "POST", path: "/api/sagas/sagaz.events:0:1:payment/retry"}, 415},
		{"CSRF: cross-site Origin", req{method: "POST", path: "/api/fire", body: fire, headers: append([]string{"Origin", "https://evil.example"}, json...)}, 403},
		{"CSRF: Origin null", req{method: "POST", path: "/api/fire", body: fire, headers: append([]string{"Origin", "null"}, json...)}, 403},
		{"CSRF: another port of localhost", req{method: "POST", path: "/api/fire", body: fire, headers: append([]string{"Origin", "http://127.0.0.1:3000"}, json...)}, 403},
		{"CSRF: Sec-Fetch-Site cross-site", req{method: "POST", path: "/api/fire", body: fire, headers: append([]string{"Sec-Fetch-Site", "cross-site"}, json...)}, 403},
		{"CSRF: Sec-Fetch-Site same-site", req{method: "POST", path: "/api/sagas/sagaz.events:0:1:payment/cancel", headers: append([]string{"Sec-Fetch-Site", "same-site"}, json...)}, 403},
		{"cross-origin read", req{method: "GET", path: "/api/sagas", headers: []string{"Origin", "https://evil.example"}}, 403},
		{"unsigned webhook, text/plain", req{method: "POST", path: "/webhooks/payments", body: `{"payment_id":"p"}`, headers: []string{"Content-Type", "text/plain"}}, 415},
		{"unsigned webhook, cross-site", req{method: "POST", path: "/webhooks/payments", body: `{"payment_id":"p"}`, headers: append([]string{"Origin", "https://evil.example"}, json...)}, 403},
		{"unsigned webhook, another Host", req{method: "POST", path: "/webhooks/payments", body: `{"payment_id":"p"}`, host: "evil.example", headers: json}, 403},
		{"unsigned webhook, JSON", req{method: "POST", path: "/webhooks/payments", body: `{"payment_id":"p"}`, headers: json}, 202},
		{"signed webhook: its signature is the check", req{method: "POST", path: "/webhooks/signups", body: signup, host: "hooks.example.net",
			headers: []string{"Content-Type", "text/plain", "X-Sagaz-Signature", sign("hook-secret", signup)}}, 202},
		{"signed webhook, unsigned", req{method: "POST", path: "/webhooks/signups", body: signup, headers: json}, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := do(t, base, tc.req); code != tc.want {
				t.Fatalf("%d %s, want %d", code, body, tc.want)
			}
		})
	}

	// With a token, the Host and Origin checks give way to the token.
	tokBase := quickServer(t, authRegistry(), httpapi.Auth{AdminTokens: []string{adminTok}}, httpapi.API{})
	if code, body := do(t, tokBase, req{method: "POST", path: "/api/fire", body: fire, host: "sagaz.internal",
		headers: []string{"Authorization", "Bearer " + adminTok, "Content-Type", "text/plain"}}); code != 202 {
		t.Fatalf("token mode: %d %s", code, body)
	}
}

func TestAuthConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		auth httpapi.Auth
		want string
	}{
		{httpapi.Auth{AdminTokens: []string{"short"}}, "admin token 1 of 1 has 5 characters: want at least 16"},
		{httpapi.Auth{AdminTokens: []string{adminTok, "  "}}, "admin token 2 of 2 is blank"},
		{httpapi.Auth{AdminTokens: []string{"has a space in it, long enough"}}, "admin token 1 of 1 contains whitespace"},
		{httpapi.Auth{ReadTokens: []string{readTok}}, "a read-only token needs an admin token"},
		{httpapi.Auth{AdminTokens: []string{adminTok}, ReadTokens: []string{adminTok}}, "both a admin and a read-only token"},
		{httpapi.Auth{MetricsTokens: []string{"tiny"}}, "metrics token 1 of 1 has 4 characters"},
	} {
		_, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Auth: tc.auth})
		if !errors.Is(err, httpapi.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error mentioning %q", tc.auth, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), adminTok) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}

// TestSignedWebhookNeedsASecret: a webhook declared engine.Signed does not
// start without a secret, unless unsigned calls are allowed (dev mode).
func TestSignedWebhookNeedsASecret(t *testing.T) {
	reg := func() *engine.Registry {
		r := engine.NewRegistry()
		r.Register(engine.Saga{Name: "charge", Steps: []engine.Step{{Name: "s", Action: noop}},
			Triggers: []engine.Trigger{engine.Webhook("stripe-events", engine.PassThrough, engine.Signed())}})
		return r
	}
	st, err := storage.OpenBolt(t.TempDir()+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng, err := engine.New(engine.Config{Store: st, Registry: reg(), Logger: sagaztest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", API: &httpapi.API{Engine: eng, Store: st, Producer: fakeProducer{}, EventsTopic: "e"}})
	if !errors.Is(err, httpapi.ErrInvalidConfig) || !strings.Contains(err.Error(), `webhook "stripe-events" (saga "charge") is declared engine.Signed but has no secret`) {
		t.Fatalf("New = %v", err)
	}
	_, err = httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", API: &httpapi.API{Engine: eng, Store: st, Producer: fakeProducer{}, EventsTopic: "e",
		Webhooks: map[string]httpapi.WebhookAuth{"stripe-events": {Scheme: httpapi.SchemeStandard, Secrets: []string{"not-whsec"}}}}})
	if !errors.Is(err, httpapi.ErrInvalidConfig) || !strings.Contains(err.Error(), `webhook "stripe-events"`) || strings.Contains(err.Error(), "not-whsec") {
		t.Fatalf("New with a bad secret = %v", err)
	}

	dev := quickServer(t, reg(), httpapi.Auth{}, httpapi.API{AllowUnsignedWebhooks: true})
	if code, body := do(t, dev, req{method: "POST", path: "/webhooks/stripe-events", body: `{"id":"evt_1"}`, headers: []string{"Content-Type", "application/json"}}); code != 202 {
		t.Fatalf("dev mode, unsigned: %d %s", code, body)
	}
	signed := quickServer(t, reg(), httpapi.Auth{}, httpapi.API{AllowUnsignedWebhooks: true,
		Webhooks: map[string]httpapi.WebhookAuth{"stripe-events": {Scheme: httpapi.SchemeStripe, Secrets: []string{"whsec_x"}}}})
	if code, body := do(t, signed, req{method: "POST", path: "/webhooks/stripe-events", body: `{"id":"evt_1"}`, headers: []string{"Content-Type", "application/json"}}); code != 401 {
		t.Fatalf("with a secret, unsigned: %d %s", code, body)
	}
}
