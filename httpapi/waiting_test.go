package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	sagazmember "github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

// A waiting saga's view says what it waits for, since when, until when.
func TestSagaViewShowsTheWait(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1))
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{Name: "nap", Steps: []engine.Step{{Name: "doze", Sleep: time.Hour}, {Name: "wake", Action: noop}},
		Triggers: []engine.Trigger{engine.Manual("nap.requested", engine.PassThrough)}})
	m := sagaztest.StartWith(t, c.ListenAddrs(), "view-test", "", reg, func(c *sagazmember.Config) { c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{} })
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	base := "http://" + m.HTTP.Addr()
	resp, err := http.Post(base+"/api/fire", "application/json", strings.NewReader(`{"event_type":"nap.requested","who":"me"}`))
	if err != nil {
		t.Fatal(err)
	}
	var acc httpapi.EventAccepted
	_ = json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	var v httpapi.SagaView
	kafkatest.WaitFor(t, 30*time.Second, "the saga to wait", func() bool {
		for _, s := range sagaztest.Sagas(t, m.Store) {
			if s.Wait != nil {
				r, err := http.Get(base + "/api/sagas/" + s.ID())
				if err != nil {
					t.Fatal(err)
				}
				defer r.Body.Close()
				return json.NewDecoder(r.Body).Decode(&v) == nil
			}
		}
		return false
	})
	w := v.Waiting
	if v.Status != storage.StatusExecuting || w == nil || w.Kind != storage.WaitSleep || w.Step != "doze" || w.Deadline.Sub(w.Since) != time.Hour ||
		!strings.Contains(w.For, "sleep") {
		t.Fatalf("view: %s %+v", v.Status, w)
	}
}
