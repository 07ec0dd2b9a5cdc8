package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

// settle waits until a group has consumed everything of topic and of its
// keys topic (every keyed start recorded).
func settle(t *testing.T, group, topic string) {
	t.Helper()
	waitCommitted(t, group, topic)
	waitCommitted(t, group, group+"-keys")
}

// On Apache Kafka, the same order id produced by kcat (librdkafka's CRC32
// partitioner) and by franz-go (murmur2), under other record keys too,
// starts one saga: the key is owned by one partition of the keys topic,
// whatever partition each record landed in.
func TestSameKeyFromKcatAndFranzGoStartsOneSaga(t *testing.T) {
	needKafka(t)
	topic, group := unique("it-samekey"), unique("it-group")
	createTopic(t, topic, 6)
	lines, want := orderLines("sk", 0, 100, nil)
	kcatProduce(t, topic, lines) // keyed by order id, CRC32
	cl := kafkatest.Client(t, brokers)
	var recs []*kgo.Record
	for i, l := range lines {
		key, value, _ := strings.Cut(l, "|")
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte(value)}, // murmur2
			&kgo.Record{Topic: topic, Key: []byte(fmt.Sprint("other-", i)), Value: []byte(value)}) // another record key
	}
	kafkatest.Produce(t, cl, recs...)
	m := sagaztest.Start(t, brokers, group, "", orderOn(topic), func(c *consumer.Config) { c.DeadLetterTopic = unique("it-dlq") })
	settle(t, group, topic)
	kafkatest.WaitFor(t, 60*time.Second, "100 sagas to finish", func() bool { return m.Finished.Load() >= 100 })
	checkOrders(t, want, sagaztest.Sagas(t, m.Store))
}

type listing struct {
	Sagas []struct {
		ID             string `json:"id"`
		Status         string `json:"status"`
		IdempotencyKey string `json:"idempotency_key"`
	} `json:"sagas"`
	Next        string `json:"next_cursor"`
	Members     int    `json:"members"`
	Unavailable []any  `json:"unavailable"`
}

// groupListing pages through the whole group's listing from one member.
func groupListing(t *testing.T, addr, query string) (map[string]string, error) {
	t.Helper()
	out := map[string]string{}
	cursor := ""
	for {
		resp, err := http.Get(fmt.Sprintf("http://%s/api/sagas?limit=500&%s&cursor=%s", addr, query, url.QueryEscape(cursor)))
		if err != nil {
			return nil, err
		}
		var l listing
		err = json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return nil, fmt.Errorf("listing: %d %v", resp.StatusCode, err)
		}
		if len(l.Unavailable) > 0 {
			return nil, fmt.Errorf("members left out: %v", l.Unavailable)
		}
		for _, s := range l.Sagas {
			if _, dup := out[s.IdempotencyKey]; dup {
				return nil, fmt.Errorf("order %s listed twice", s.IdempotencyKey)
			}
			out[s.IdempotencyKey] = s.Status
		}
		if l.Next == "" {
			return out, nil
		}
		cursor = l.Next
	}
}

// On Apache Kafka (whose changelog topics are really compacted), three
// member processes of one group are SIGKILLed and restarted at random
// while kcat streams orders — one of them once with its data directory
// lost — and at the end every member lists the whole group: exactly one
// saga per order, with the outcome the order asks for.
func TestGroupChaosOnRealKafka(t *testing.T) {
	needKafka(t)
	bin := sagaztest.BuildBinary(t, "../cmd/consumer")
	topic, group, prefix := unique("it-chaos"), unique("it-group"), unique("c")
	createTopic(t, topic, 6)
	root := t.TempDir()
	type member struct {
		name, dir string
		p         *sagaztest.Proc
	}
	start := func(m *member) {
		m.p = sagaztest.StartBinary(t, bin, root, "--brokers", strings.Join(brokers, ","), "--data-dir", m.dir, "--group", group,
			"--dead-letter-topic", group+"-dlq", "--session-timeout", "6s", "--shutdown-timeout", "5s", "--topic-partitions", "6",
			"--group-instance-id", group+"-"+m.name)
	}
	var ms []*member
	for _, n := range []string{"a", "b", "c"} {
		m := &member{name: n, dir: filepath.Join(root, n)}
		start(m)
		ms = append(ms, m)
	}
	// The order saga consumes orders.created: stream there, with this test's
	// order ids (other tests' orders on the shared topic are left out of
	// the count by their prefix).
	_ = topic
	const chunks, per = 12, 100
	streamed := make(chan map[string]storage.Status, 1)
	go func() {
		all := map[string]storage.Status{}
		for c := range chunks {
			lines, want := orderLines(prefix, c*per, per, func(i int) string {
				if i%7 == 3 {
					return `,"fail_at":"ship"`
				}
				return ""
			})
			kcatProduce(t, "orders.created", lines)
			for k, v := range want {
				all[k] = v
			}
			time.Sleep(200 * time.Millisecond) // pace the stream over a few seconds
		}
		streamed <- all
	}()
	for i := range 4 {
		m := ms[rand.IntN(len(ms))]
		kafkatest.WaitFor(t, 60*time.Second, "the member to own partitions", func() bool { return m.p.Metric("sagaz_partitions_owned") > 0 })
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond) // a random moment to kill at
		_ = m.p.Cmd.Process.Signal(syscall.SIGKILL)
		_ = m.p.Wait()
		if i == 2 { // this one comes back with its disk lost
			if err := os.RemoveAll(m.dir); err != nil {
				t.Fatal(err)
			}
		}
		start(m)
	}
	want := <-streamed
	settle(t, group, "orders.created")
	for _, m := range ms {
		kafkatest.WaitFor(t, 120*time.Second, "every member ready and idle", func() bool {
			return m.p.Metric("sagaz_ready") == 1 && m.p.Metric("sagaz_sagas_pending") == 0 && m.p.Metric("sagaz_sagas_executing") == 0
		})
	}
	for _, m := range ms {
		var got map[string]string
		kafkatest.WaitFor(t, 60*time.Second, "the whole group's listing from "+m.name, func() bool {
			all, err := groupListing(t, m.p.HTTP, "saga=order")
			if err != nil {
				t.Log(err)
				return false
			}
			got = map[string]string{}
			for k, v := range all {
				if strings.HasPrefix(k, prefix+"-") {
					got[k] = v
				}
			}
			return len(got) == len(want)
		})
		for k, st := range want {
			if got[k] != st.String() {
				t.Fatalf("order %s: %q from member %s, want %s", k, got[k], m.name, st)
			}
		}
	}
}
