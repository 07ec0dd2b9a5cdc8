package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/deadletter"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

// fullServer runs a server with every optional part (API, schedules, dead
// letters, console, metrics) on store st, without Kafka.
func fullServer(t *testing.T, st *storage.Bolt, reg *engine.Registry, auth httpapi.Auth) *httpapi.Server {
	t.Helper()
	eng, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: sagaztest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	sched, err := cron.New(cron.Config{Routes: eng.Routes(), Partitions: 1, Producer: fakeProducer{}, Store: st,
		Owns: func(storage.Partition) bool { return false }, Logger: sagaztest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	dl, err := deadletter.New(deadletter.Config{Client: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, Topic: "sagaz.dlq"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Logger: sagaztest.Logger(), Gatherer: prometheus.NewRegistry(), Auth: auth,
		UI: http.NotFoundHandler(),
		API: &httpapi.API{Engine: eng, Store: st, Producer: fakeProducer{}, EventsTopic: "sagaz.events", Schedules: sched,
			CronTopic: "sagaz.cron", DeadLetters: dl}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv
}

func openStore(t *testing.T) *storage.Bolt {
	t.Helper()
	st, err := storage.OpenBolt(t.TempDir()+"/sagaz.db", storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestWrongMethodIs405: for every route the server serves, every other
// method is answered 405 with an Allow header naming the route's methods,
// and a JSON error body; a path no route serves is a JSON 404.
func TestWrongMethodIs405(t *testing.T) {
	srv := fullServer(t, openStore(t), authRegistry(), httpapi.Auth{AdminTokens: []string{adminTok}})
	base := "http://" + srv.Addr()
	// The methods served at each path.
	methods := map[string][]string{}
	var paths []string
	for _, p := range srv.Routes() {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Fatalf("route %q has no method: every route must name its method", p)
		}
		if methods[path] == nil {
			paths = append(paths, path)
		}
		methods[path] = append(methods[path], method)
		if method == "GET" {
			methods[path] = append(methods[path], "HEAD")
		}
	}
	for _, want := range []string{"/webhooks/{name}", "/api/sagas", "/api/sagas/{id}/retry", "/api/sagas/{id}/resolve", "/api/schedules/{id}/backfill", "/api/deadletters/replay", "/api/session", "/ui/", "/{$}"} {
		if methods[want] == nil {
			t.Fatalf("the server does not serve %s: %v", want, srv.Routes())
		}
	}
	concrete := func(path string) string {
		path = strings.ReplaceAll(path, "{$}", "")
		for strings.Contains(path, "{") {
			i, j := strings.Index(path, "{"), strings.Index(path, "}")
			path = path[:i] + "x" + path[j+1:]
		}
		return path
	}
	for _, path := range paths {
		allowed := methods[path]
		slices.Sort(allowed)
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			if slices.Contains(allowed, m) {
				continue
			}
			t.Run(m+" "+path, func(t *testing.T) {
				req, _ := http.NewRequest(m, base+concrete(path), nil)
				req.Header.Set("Authorization", "Bearer "+adminTok)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusMethodNotAllowed {
					t.Fatalf("%d, want 405", resp.StatusCode)
				}
				if got, want := resp.Header.Get("Allow"), strings.Join(allowed, ", "); got != want {
					t.Fatalf("Allow: %q, want %q", got, want)
				}
				if m == "HEAD" {
					return // no body
				}
				var e struct{ Error, Detail string }
				if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error != "method not allowed" || !strings.Contains(e.Detail, m) {
					t.Fatalf("body: %+v (%v), want the JSON error contract", e, err)
				}
			})
		}
	}
	// The example of the issue, without a token (webhooks are not guarded).
	resp, err := http.Get(base + "/webhooks/payments")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET /webhooks/payments: %d Allow %q, want 405 Allow POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
	// Unknown paths stay JSON 404s; an /api route still asks for a token
	// before it says which methods it takes.
	for _, c := range []struct {
		method, path, auth string
		want               int
	}{
		{"GET", "/nope", "", 404},
		{"POST", "/api/nope", "Bearer " + adminTok, 404},
		{"DELETE", "/api/sagas/x", "", 401},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.want || err != nil || e.Error == "" {
			t.Errorf("%s %s: %d %+v (%v), want a JSON %d", c.method, c.path, resp.StatusCode, e, err, c.want)
		}
	}
	// Non-canonical paths are still redirected as before.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = client.Get(base + "/api/../healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/healthz" {
		t.Errorf("GET /api/../healthz: %d Location %q, want a redirect to /healthz", resp.StatusCode, resp.Header.Get("Location"))
	}
}
