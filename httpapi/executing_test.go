package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	sagazmember "github.com/sagaz-go/sagaz/member"
)

// TestExecutingWhileTheFirstStepRuns: while a saga's first step runs, the
// listing filtered by executing holds it, its view says executing, and the
// metrics count it executing, not pending.
func TestExecutingWhileTheFirstStepRuns(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1))
	entered, release := make(chan string, 1), make(chan struct{})
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "slow", Steps: []engine.Step{
		{Name: "wait", Action: func(ctx context.Context, r *engine.Run) error {
			entered <- r.ID
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{Name: "after", Action: noop},
	}, Triggers: []engine.Trigger{engine.Manual("slow.go", engine.PassThrough)}})
	m := sagaztest.StartWith(t, c.ListenAddrs(), "executing-test", "", reg, func(c *sagazmember.Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.API = &httpapi.API{ProduceTimeout: 5 * time.Second}
	})
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	e := &env{t: t, base: "http://" + m.HTTP.Addr(), m: m}
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	e.expect(202, "POST", "/api/fire", `{"event_type":"slow.go"}`)
	var id string
	select {
	case id = <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first step did not start within 30s")
	}
	// The first step runs now: no waiting for any of the three to catch up.
	list := e.expect(200, "GET", "/api/sagas?status=executing", "")["sagas"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != id {
		t.Errorf("GET /api/sagas?status=executing = %v, want %s", list, id)
	}
	if pending := e.expect(200, "GET", "/api/sagas?status=pending", "")["sagas"].([]any); len(pending) != 0 {
		t.Errorf("GET /api/sagas?status=pending = %v, want none", pending)
	}
	if v := e.expect(200, "GET", "/api/sagas/"+url.PathEscape(id), ""); v["status"] != "executing" {
		t.Errorf("GET /api/sagas/%s: status %v, want executing", id, v["status"])
	}
	metrics := scrape(t, e.base)
	for _, want := range []string{"sagaz_sagas_executing 1\n", "sagaz_sagas_pending 0\n"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	close(release)
	released = true
	e.waitSaga(id, "completed")
	kafkatest.WaitFor(t, 10*time.Second, "sagaz_sagas_executing 0", func() bool {
		return strings.Contains(scrape(t, e.base), "sagaz_sagas_executing 0\n")
	})
}

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
