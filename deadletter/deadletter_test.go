package deadletter_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/deadletter"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
)

const dlq = "sagaz.dlq"

// deadLetter builds a record as the consumer dead-letters it.
func deadLetter(p int32, ts time.Time, reason, topic string, origPart int32, origOff int64, key, value string, own ...kgo.RecordHeader) *kgo.Record {
	hs := append([]kgo.RecordHeader(nil), own...)
	for _, kv := range [][2]string{
		{consumer.HeaderReason, reason}, {consumer.HeaderError, "boom " + key}, {consumer.HeaderSaga, "order"},
		{consumer.HeaderTrigger, "kafka:" + topic}, {consumer.HeaderGroup, "g"}, {consumer.HeaderOrigTopic, topic},
		{consumer.HeaderOrigPartition, strconv.Itoa(int(origPart))}, {consumer.HeaderOrigOffset, strconv.FormatInt(origOff, 10)},
		{consumer.HeaderOrigTimestamp, strconv.FormatInt(ts.Add(-time.Second).UnixMilli(), 10)},
	} {
		hs = append(hs, kgo.RecordHeader{Key: kv[0], Value: []byte(kv[1])})
	}
	return &kgo.Record{Topic: dlq, Partition: p, Timestamp: ts, Key: []byte(key), Value: []byte(value), Headers: hs}
}

type env struct {
	seeds []string
	prod  *kgo.Client
}

func newEnv(t *testing.T) *env {
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, dlq, "orders"))
	seeds := c.ListenAddrs()
	return &env{seeds: seeds, prod: kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))}
}

func (e *env) reader(t *testing.T, mut func(*deadletter.Config)) *deadletter.Reader {
	cfg := deadletter.Config{Client: []kgo.Opt{kgo.SeedBrokers(e.seeds...)}, Topic: dlq}
	if mut != nil {
		mut(&cfg)
	}
	r, err := deadletter.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// seed produces n dead letters spread over 3 partitions, one second apart,
// with reasons decode/transform_error alternating and topics orders/payments
// every third; it returns their keys newest first.
func (e *env) seed(t *testing.T, n int) []string {
	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var recs []*kgo.Record
	var keys []string
	for i := range n {
		reason, topic := "decode", "orders"
		if i%2 == 1 {
			reason = "transform_error"
		}
		if i%3 == 2 {
			topic = "payments"
		}
		key := fmt.Sprintf("k-%02d", i)
		recs = append(recs, deadLetter(int32(i%3), t0.Add(time.Duration(i)*time.Second), reason, topic, 1, int64(100+i), key, `{"n":`+strconv.Itoa(i)+`}`))
		keys = append([]string{key}, keys...)
	}
	kafkatest.Produce(t, e.prod, recs...)
	return keys
}

// listAll pages through a listing and returns the keys in order.
func listAll(t *testing.T, r *deadletter.Reader, q deadletter.Query) ([]string, int) {
	t.Helper()
	var keys []string
	pages := 0
	for {
		page, err := r.List(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, l := range page.Letters {
			keys = append(keys, l.Key)
		}
		if page.Next == "" {
			return keys, pages
		}
		if pages > 200 {
			t.Fatal("the listing does not end")
		}
		q.Cursor = page.Next
	}
}

func TestListNewestFirstFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	want := e.seed(t, 30)
	r := e.reader(t, nil)

	page, err := r.List(context.Background(), deadletter.Query{Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Letters) != 5 || page.Next == "" {
		t.Fatalf("first page: %d letters, next %q", len(page.Letters), page.Next)
	}
	l := page.Letters[0]
	if l.Key != "k-29" || l.Reason != "transform_error" || l.Error != "boom k-29" || l.Saga != "order" || l.Original.Topic != "payments" ||
		l.Original.Partition != 1 || l.Original.Offset != 129 || l.Value != `{"n":29}` || l.ValueBytes != 8 || len(l.Headers) != 0 ||
		l.Original.Timestamp.IsZero() || l.Partition != 2 {
		t.Fatalf("newest letter: %+v", l)
	}

	got, pages := listAll(t, r, deadletter.Query{Limit: 7})
	if strings.Join(got, ",") != strings.Join(want, ",") || pages != 5 {
		t.Fatalf("paged listing (%d pages): %v, want %v", pages, got, want)
	}
	var wantDecodeOrders []string
	for _, k := range want {
		i, _ := strconv.Atoi(k[2:])
		if i%2 == 0 && i%3 != 2 {
			wantDecodeOrders = append(wantDecodeOrders, k)
		}
	}
	got, _ = listAll(t, r, deadletter.Query{Reason: "decode", Topic: "orders", Limit: 3})
	if strings.Join(got, ",") != strings.Join(wantDecodeOrders, ",") {
		t.Fatalf("decode on orders: %v, want %v", got, wantDecodeOrders)
	}
	if got, _ := listAll(t, r, deadletter.Query{Reason: "oversized"}); len(got) != 0 {
		t.Fatalf("oversized: %v", got)
	}

	// A small scan budget gives partial pages, and still every letter once.
	small := e.reader(t, func(c *deadletter.Config) { c.MaxScan = 4 })
	got, pages = listAll(t, small, deadletter.Query{Reason: "transform_error", Limit: 50})
	if len(got) != 15 || pages < 5 {
		t.Fatalf("budget 4: %d letters in %d pages", len(got), pages)
	}
	seen := map[string]bool{}
	for _, k := range got {
		if seen[k] {
			t.Fatalf("%s listed twice", k)
		}
		seen[k] = true
	}

	// Letters written after the first page do not disturb the paging.
	first, _ := r.List(context.Background(), deadletter.Query{Limit: 10})
	kafkatest.Produce(t, e.prod, deadLetter(0, time.Now(), "decode", "orders", 0, 1, "late", "x"))
	rest, _ := listAll(t, r, deadletter.Query{Limit: 10, Cursor: first.Next})
	if len(first.Letters)+len(rest) != 30 || rest[0] != want[10] {
		t.Fatalf("after a new letter: %d + %d letters, rest starts at %s", len(first.Letters), len(rest), rest[0])
	}

	if _, err := r.List(context.Background(), deadletter.Query{Cursor: "not a cursor"}); !errors.Is(err, deadletter.ErrInvalidCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
	if _, err := r.List(context.Background(), deadletter.Query{Limit: 1001}); !errors.Is(err, deadletter.ErrInvalidQuery) {
		t.Fatalf("limit 1001: %v", err)
	}
}

func TestListMissingTopicAndPreview(t *testing.T) {
	e := newEnv(t)
	none := e.reader(t, func(c *deadletter.Config) { c.Topic = "no.such.dlq" })
	page, err := none.List(context.Background(), deadletter.Query{})
	if err != nil || len(page.Letters) != 0 || page.Next != "" {
		t.Fatalf("missing topic: %+v %v", page, err)
	}

	big := `{"card":"4111","pad":"` + strings.Repeat("é", 100) + `"}`
	kafkatest.Produce(t, e.prod, deadLetter(0, time.Now(), "decode", "orders", 0, 1, "k", big, kgo.RecordHeader{Key: "trace", Value: []byte("t-1")}))
	r := e.reader(t, func(c *deadletter.Config) { c.PreviewBytes = 51 })
	page, err = r.List(context.Background(), deadletter.Query{Mask: func(saga string, v []byte) []byte {
		if saga != "order" {
			t.Errorf("mask got saga %q", saga)
		}
		return []byte(strings.Replace(string(v), "4111", "***", 1))
	}})
	if err != nil || len(page.Letters) != 1 {
		t.Fatalf("%+v %v", page, err)
	}
	l := page.Letters[0]
	if !l.ValueTruncated || l.ValueBytes != len(big) || !strings.HasPrefix(l.Value, `{"card":"***"`) || len(l.Value) > 51 ||
		strings.ContainsRune(l.Value, '\uFFFD') {
		t.Fatalf("preview %q (%d bytes, truncated %v)", l.Value, len(l.Value), l.ValueTruncated)
	}
	if len(l.Headers) != 1 || l.Headers[0] != (deadletter.Header{Key: "trace", Value: "t-1"}) {
		t.Fatalf("own headers: %v", l.Headers)
	}
}

func TestReplay(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	dropped := deadLetter(1, now, "oversized", "orders", 0, 7, "big", "")
	dropped.Headers = append(dropped.Headers, kgo.RecordHeader{Key: consumer.HeaderValueDropped, Value: []byte("true")})
	kafkatest.Produce(t, e.prod,
		deadLetter(0, now, "decode", "orders", 2, 40, "o-1", `{"order_id":"o-1"}`, kgo.RecordHeader{Key: "trace", Value: []byte("t-1")},
			kgo.RecordHeader{Key: deadletter.HeaderReplayOf, Value: []byte("sagaz.dlq/9/9")}),
		deadLetter(0, now, "decode", "orders", 1, 41, "o-2", `{"order_id":"o-2"}`),
		&kgo.Record{Topic: dlq, Partition: 0, Key: []byte("foreign"), Value: []byte("x")},
		dropped)
	r := e.reader(t, nil)
	res, err := r.Replay(context.Background(), []deadletter.Coord{{0, 1}, {0, 0}, {0, 2}, {1, 0}, {0, 99}, {7, 0}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"", "", "no sagaz.original.topic header", "lost its value", "no record at sagaz.dlq partition 0 offset 99", "has no partition 7"} {
		if (want == "") != (res[i].Error == "") || !strings.Contains(res[i].Error, want) {
			t.Fatalf("result %d (%s): %+v, want error %q", i, res[i].Coord, res[i], want)
		}
	}
	if res[0].Topic != "orders" || res[0].ReplayPartition != 1 || res[1].ReplayPartition != 2 {
		t.Fatalf("replayed to %#v and %#v: want the original topic and partitions", res[0], res[1])
	}

	// The replayed records: original key, value and headers, no dead-letter
	// headers, a sagaz.replay.of naming the dead letter.
	cl := kafkatest.Client(t, e.seeds, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[string]*kgo.Record{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for len(got) < 2 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) { got[string(rec.Key)] = rec })
	}
	o1 := got["o-1"]
	if o1 == nil || got["o-2"] == nil || string(o1.Value) != `{"order_id":"o-1"}` || o1.Partition != 2 {
		t.Fatalf("replayed records: %v", got)
	}
	var hs []string
	for _, h := range o1.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	if strings.Join(hs, ",") != "trace=t-1,sagaz.replay.of=sagaz.dlq/0/0" {
		t.Fatalf("replayed headers: %v", hs)
	}

	if _, err := r.Replay(context.Background(), nil); !errors.Is(err, deadletter.ErrInvalidQuery) {
		t.Fatalf("empty replay: %v", err)
	}
	if _, err := r.Replay(context.Background(), []deadletter.Coord{{0, 1}, {0, 1}}); !errors.Is(err, deadletter.ErrInvalidQuery) {
		t.Fatalf("duplicate replay: %v", err)
	}
	if c, err := deadletter.ParseCoord("2/17"); err != nil || c != (deadletter.Coord{Partition: 2, Offset: 17}) {
		t.Fatalf("ParseCoord: %v %v", c, err)
	}
	for _, bad := range []string{"", "2", "x/1", "1/-1", "/3"} {
		if _, err := deadletter.ParseCoord(bad); !errors.Is(err, deadletter.ErrInvalidQuery) {
			t.Fatalf("ParseCoord(%q): %v", bad, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	_, err := deadletter.New(deadletter.Config{MaxScan: -1})
	if err == nil || !strings.Contains(err.Error(), "Client") || !strings.Contains(err.Error(), "Topic") || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("validate: %v", err)
	}
}
