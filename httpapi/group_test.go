package httpapi_test

import (
	"context"
	"encoding/json"
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
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

func getJSON(t *testing.T, u string, out any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

type groupPage struct {
	Sagas []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"sagas"`
	Next        string                `json:"next_cursor"`
	Members     int                   `json:"members"`
	Unavailable []httpapi.Unavailable `json:"unavailable"`
}

// listAll pages through the whole group's listing from one member.
func listAll(t *testing.T, base, query string, limit int) (map[string]string, int) {
	t.Helper()
	seen := map[string]string{}
	rows, cursor := 0, ""
	for {
		var p groupPage
		if code := getJSON(t, fmt.Sprintf("%s/api/sagas?limit=%d&%s&cursor=%s", base, limit, query, url.QueryEscape(cursor)), &p); code != 200 {
			t.Fatalf("listing: %d", code)
		}
		if len(p.Unavailable) > 0 {
			t.Fatalf("members left out of the listing: %+v", p.Unavailable)
		}
		for _, s := range p.Sagas {
			if _, dup := seen[s.ID]; dup {
				t.Fatalf("saga %s listed twice", s.ID)
			}
			seen[s.ID] = s.Status
			rows++
		}
		if p.Next == "" {
			return seen, rows
		}
		cursor = p.Next
	}
}

// Any member answers for the whole group: the listing from one member
// holds every saga of every member exactly once (paging included), a saga
// run by another member is shown and can be cancelled from any member, and
// after a member leaves the listing is still exact.
func TestAnyMemberAnswersForTheGroup(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, sagas.OrderTopic))
	seeds := c.ListenAddrs()
	reg := func() *engine.Registry {
		r := engine.NewRegistry()
		r.Register(sagas.Order)
		return r
	}
	var ms []*sagaztest.Member
	for range 3 {
		ms = append(ms, sagaztest.StartWith(t, seeds, "group-api", "", reg(), func(c *sagazmember.Config) {
			c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{}
			c.Consumer.TopicPartitions = 6
		}))
	}
	ready := func(ms ...*sagaztest.Member) {
		kafkatest.WaitFor(t, 60*time.Second, "members ready, each owning partitions", func() bool {
			for _, m := range ms {
				if m.Ready() != nil || len(m.Engine.Owned()) == 0 {
					return false
				}
			}
			return true
		})
	}
	ready(ms...)
	cl := kafkatest.Client(t, seeds)
	var recs []*kgo.Record
	const n = 600
	for i := range n {
		id := fmt.Sprintf("g-%d", i)
		recs = append(recs, &kgo.Record{Topic: sagas.OrderTopic, Key: []byte(id), Value: []byte(`{"order_id":"` + id + `"}`)})
	}
	kafkatest.Produce(t, cl, recs...)
	base := "http://" + ms[0].HTTP.Addr()
	kafkatest.WaitFor(t, 60*time.Second, "every saga completed, listed from one member", func() bool {
		var p groupPage
		getJSON(t, base+"/api/sagas?limit=1000&status=completed", &p)
		return len(p.Sagas) == n && p.Next == ""
	})
	seen, rows := listAll(t, base, "saga=order", 37)
	if len(seen) != n || rows != n {
		t.Fatalf("paging the group's listing: %d sagas in %d rows, want %d", len(seen), rows, n)
	}
	// A saga owned by another member, read through the first.
	var remote string
	for id := range seen {
		p, _ := ms[0].Consumer.KeyPartition("order", id[len("order:key:"):])
		if !ms[0].Engine.Owns(storagePos(p.Topic, p.Partition)) {
			remote = id
			break
		}
	}
	if remote == "" {
		t.Fatal("every saga is owned by the first member: nothing to read across members")
	}
	var one map[string]any
	if code := getJSON(t, base+"/api/sagas/"+url.PathEscape(remote), &one); code != 200 || one["id"] != remote || one["status"] != "completed" {
		t.Fatalf("GET a saga of another member: %d %v", code, one)
	}
	if code := getJSON(t, base+"/api/sagas/"+url.PathEscape("order:key:nope"), nil); code != 404 {
		t.Fatalf("GET an unknown keyed saga: %d", code)
	}
	// One member leaves: its partitions move, and the listing stays exact.
	ms[2].Stop()
	ready(ms[0], ms[1])
	kafkatest.WaitFor(t, 60*time.Second, "the listing after a member left", func() bool {
		var p groupPage
		getJSON(t, base+"/api/sagas?limit=1000&saga=order", &p)
		return len(p.Sagas) == n && len(p.Unavailable) == 0 && p.Members == 2
	})
	if seen, _ := listAll(t, base, "saga=order", 101); len(seen) != n {
		t.Fatalf("after a member left: %d sagas, want %d", len(seen), n)
	}
}

func storagePos(topic string, p int32) storage.Position {
	return storage.Position{Topic: topic, Partition: p}
}

// A member that does not answer is named in a group-wide listing (with the
// number of partitions whose sagas are missing), never left out silently;
// a request about one of its sagas answers 503 naming it.
func TestUnreachableMemberIsNamed(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, sagas.OrderTopic))
	seeds := c.ListenAddrs()
	reg := func() *engine.Registry {
		r := engine.NewRegistry()
		r.Register(sagas.Order)
		return r
	}
	good := sagaztest.StartWith(t, seeds, "group-api", "", reg(), func(c *sagazmember.Config) {
		c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{PeerTimeout: time.Second}
		c.Consumer.TopicPartitions = 4
	})
	bad := sagaztest.StartWith(t, seeds, "group-api", "", reg(), func(c *sagazmember.Config) {
		c.HTTPAddr, c.API, c.AdvertiseURL = "127.0.0.1:0", &httpapi.API{}, "http://127.0.0.1:1" // nobody listens there
		c.Consumer.TopicPartitions = 4
	})
	kafkatest.WaitFor(t, 60*time.Second, "both members own partitions", func() bool {
		return good.Ready() == nil && bad.Ready() == nil && len(good.Engine.Owned()) > 0 && len(bad.Engine.Owned()) > 0
	})
	base := "http://" + good.HTTP.Addr()
	var p groupPage
	kafkatest.WaitFor(t, 30*time.Second, "the listing to name the unreachable member", func() bool {
		p = groupPage{}
		return getJSON(t, base+"/api/sagas", &p) == 200 && len(p.Unavailable) == 1 && p.Unavailable[0].URL != ""
	})
	u := p.Unavailable[0]
	if u.URL != "http://127.0.0.1:1" || u.Partitions == 0 || u.Error == "" || p.Members != 2 {
		t.Fatalf("unavailable: %+v (members %d)", u, p.Members)
	}
	// A saga whose key the unreachable member owns.
	var key string
	for i := range 1000 {
		k := fmt.Sprintf("k-%d", i)
		part, _ := good.Consumer.KeyPartition("order", k)
		if bad.Engine.Owns(storagePos(part.Topic, part.Partition)) {
			key = k
			break
		}
	}
	if code := getJSON(t, base+"/api/sagas/"+url.PathEscape(storage.FormatKeyedID("order", key)), nil); code != 503 {
		t.Fatalf("GET a saga of the unreachable member: %d, want 503", code)
	}
}

// The 202 of a fired event or a webhook call links to what the event did,
// and the link answers on every member: the saga it started, the saga of
// the same key it joined, an event the transformer ignored, a dead letter.
func TestEventLinkSaysWhatTheEventDid(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, sagas.OrderTopic))
	seeds := c.ListenAddrs()
	reg := func() *engine.Registry {
		r := engine.NewRegistry()
		r.Register(sagas.Order)
		r.Register(sagas.PaymentConfirmed)
		return r
	}
	var ms []*sagaztest.Member
	for range 2 {
		ms = append(ms, sagaztest.StartWith(t, seeds, "events-api", "", reg(), func(c *sagazmember.Config) {
			c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{AllowUnsignedWebhooks: true}
			c.Consumer.TopicPartitions = 4
		}))
	}
	kafkatest.WaitFor(t, 60*time.Second, "both members own partitions", func() bool {
		return ms[0].Ready() == nil && ms[1].Ready() == nil && len(ms[0].Engine.Owned()) > 0 && len(ms[1].Engine.Owned()) > 0
	})
	post := func(m *sagaztest.Member, path, body string) httpapi.EventAccepted {
		resp, err := http.Post("http://"+m.HTTP.Addr()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var acc httpapi.EventAccepted
		if err := json.NewDecoder(resp.Body).Decode(&acc); err != nil || resp.StatusCode != 202 || acc.Event == "" {
			t.Fatalf("POST %s: %d %+v %v", path, resp.StatusCode, acc, err)
		}
		return acc
	}
	outcome := func(acc httpapi.EventAccepted, want string) httpapi.EventRoute {
		var v httpapi.EventView
		for _, m := range ms { // every member answers
			kafkatest.WaitFor(t, 30*time.Second, acc.Event+" to be "+want, func() bool {
				v = httpapi.EventView{}
				code := getJSON(t, "http://"+m.HTTP.Addr()+acc.Event, &v)
				return code == 200 && v.Consumed && len(v.Routes) == 1 && v.Routes[0].Outcome == want
			})
		}
		return v.Routes[0]
	}
	first := post(ms[0], "/api/fire", `{"event_type":"order.requested","order_id":"ev-1"}`)
	if r := outcome(first, "started"); r.SagaID != "order:key:ev-1" || r.SagaID != first.SagaIDs[0] {
		t.Fatalf("started: %+v (answer named %v)", r, first.SagaIDs)
	}
	again := post(ms[1], "/api/fire", `{"event_type":"order.requested","order_id":"ev-1"}`)
	if r := outcome(again, "joined"); r.SagaID != "order:key:ev-1" {
		t.Fatalf("joined: %+v", r)
	}
	outcome(post(ms[0], "/webhooks/payments", `{"payment_id":"p-9","status":"declined"}`), "ignored")
	if r := outcome(post(ms[1], "/api/fire", `{"event_type":"order.requested","order_id":"ev-2","fail_at":"moon"}`), "dead_letter"); r.Reason != engine.ReasonTransform {
		t.Fatalf("dead letter: %+v", r)
	}
	if code := getJSON(t, "http://"+ms[0].HTTP.Addr()+"/api/events/bogus", nil); code != 400 {
		t.Fatalf("a bad event id: %d", code)
	}
}

// A keyed saga placed by its concurrency key (its ID does not tell its
// partition) is found through any member.
func TestSagaPlacedByConcurrencyKeyIsFoundFromAnyMember(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, "shop"))
	seeds := c.ListenAddrs()
	reg := func() *engine.Registry {
		r := engine.NewRegistry()
		r.Register(engine.Saga{Name: "ship", Steps: []engine.Step{{Name: "s", Action: func(context.Context, *engine.Run) error { return nil }}},
			Triggers: []engine.Trigger{engine.Kafka("shop", engine.PassThrough, engine.WithKey(engine.KeyField("order")),
				engine.WithConcurrencyKey(engine.KeyField("customer"), 2))}})
		return r
	}
	var ms []*sagaztest.Member
	for range 2 {
		ms = append(ms, sagaztest.StartWith(t, seeds, "conc-api", "", reg(), func(c *sagazmember.Config) {
			c.HTTPAddr, c.API = "127.0.0.1:0", &httpapi.API{}
			c.Consumer.TopicPartitions = 4
		}))
	}
	kafkatest.WaitFor(t, 60*time.Second, "both members own partitions", func() bool {
		return ms[0].Ready() == nil && ms[1].Ready() == nil && len(ms[0].Engine.Owned()) > 0 && len(ms[1].Engine.Owned()) > 0
	})
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, &kgo.Record{Topic: "shop", Value: []byte(fmt.Sprintf(`{"order":"o-%d","customer":"c-%d"}`, i, i%7))})
	}
	kafkatest.Produce(t, kafkatest.Client(t, seeds), recs...)
	kafkatest.WaitFor(t, 60*time.Second, "40 sagas", func() bool { return ms[0].Finished.Load()+ms[1].Finished.Load() >= 40 })
	for i := range 40 {
		id := storage.FormatKeyedID("ship", fmt.Sprintf("o-%d", i))
		for _, m := range ms {
			// Right after a rebalance a member may not know the owner's
			// address yet (it answers 503 naming the member): poll.
			var (
				v    map[string]any
				code int
			)
			deadline := time.Now().Add(30 * time.Second)
			for {
				v = nil
				if code = getJSON(t, "http://"+m.HTTP.Addr()+"/api/sagas/"+url.PathEscape(id), &v); code != http.StatusServiceUnavailable || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if code != 200 || v["concurrency_key"] == nil {
				t.Fatalf("GET %s from a member: %d %v", id, code, v)
			}
		}
	}
}
