package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

func startBinary(t *testing.T, bin, dataDir string, seeds []string) *sagaztest.Proc {
	t.Helper()
	return sagaztest.StartBinary(t, bin, dataDir, "--brokers", strings.Join(seeds, ","), "--data-dir", dataDir,
		"--group", "e2e", "--group-instance-id", "e2e-member", "--session-timeout", "6s", "--shutdown-timeout", "5s", "--log-level", "debug")
}

type produced struct {
	mu    sync.Mutex
	byPos map[storage.Position]string // position -> order id
	want  map[string]storage.Status   // order id -> expected end
}

// TestBinarySIGKILLedWhileEventsStreamIn: the built binary is killed with
// SIGKILL at random moments while 20,000 events stream in, and restarted
// each time. After every kill, no offset may be committed ahead of a
// durable saga; at the end there is exactly one saga per order, terminal,
// with the outcome the event asks for.
func TestBinarySIGKILLedWhileEventsStreamIn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	const topic, total, kills = "orders.created", 20000, 5
	bin := sagaztest.BuildBinary(t, ".")
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic))
	seeds := c.ListenAddrs()
	dir := t.TempDir()
	prod := &produced{byPos: map[storage.Position]string{}, want: map[string]storage.Status{}}

	// Stream 20,000 events (plus re-sends of every 50th, as a retrying
	// producer would send them) in batches, while the member is killed.
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for i := 0; i < total; {
			var recs []*kgo.Record
			for j := 0; j < 200 && i < total; j, i = j+1, i+1 {
				id := "o-" + strconv.Itoa(i)
				extra, want := "", storage.StatusCompleted
				if i%10 == 3 {
					extra, want = `,"fail_at":"charge"`, storage.StatusRolledBack
				}
				v := []byte(fmt.Sprintf(`{"order_id":%q,"amount":1%s}`, id, extra))
				recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(id), Value: v})
				if i%50 == 0 {
					recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(id), Value: v})
				}
				prod.mu.Lock()
				prod.want[id] = want
				prod.mu.Unlock()
			}
			res := cl.ProduceSync(context.Background(), recs...)
			if err := res.FirstErr(); err != nil {
				t.Error(err)
				return
			}
			prod.mu.Lock()
			for _, r := range res {
				prod.byPos[storage.Position{Topic: r.Record.Topic, Partition: r.Record.Partition, Offset: r.Record.Offset}] = string(r.Record.Key)
			}
			prod.mu.Unlock()
			time.Sleep(80 * time.Millisecond) // pace the stream over several seconds
		}
	}()

	for range kills {
		p := startBinary(t, bin, dir, seeds)
		// Let it work a random while once it has begun consuming.
		kafkatest.WaitFor(t, 30*time.Second, "the member to consume", func() bool {
			return p.Metric("sagaz_records_consumed_total{topic=\"orders.created\"}") > 0 || p.Metric("sagaz_partitions_owned") > 0
		})
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond) // a random moment to kill at
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.Wait()
		checkCommittedBehindDurable(t, seeds, dir, prod)
	}
	<-streamDone

	p := startBinary(t, bin, dir, seeds)
	kafkatest.WaitSettled(t, seeds, "e2e", topic, 120*time.Second)
	kafkatest.WaitFor(t, 60*time.Second, "every saga to finish", func() bool {
		// Ready first: committed offsets at the end say nothing about a
		// member that has not yet taken its partitions (and their sagas
		// recorded, but not run, by the member killed before it).
		return p.Metric("sagaz_ready") == 1 && p.Metric("sagaz_sagas_pending") == 0 && p.Metric("sagaz_sagas_executing") == 0
	})
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("SIGTERM: exit %v", err)
	}

	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seen := map[string]string{}
	err = st.Scan(context.Background(), storage.Statuses, func(s *storage.Saga) error {
		if prev, dup := seen[s.IdempotencyKey]; dup {
			return fmt.Errorf("order %s has two sagas: %s and %s", s.IdempotencyKey, prev, s.ID())
		}
		seen[s.IdempotencyKey] = s.ID()
		want, ok := prod.want[s.IdempotencyKey]
		if !ok {
			return fmt.Errorf("saga %s for an order never produced", s.ID())
		}
		if s.Status != want {
			return fmt.Errorf("saga %s: %s, want %s", s.ID(), s.Status, want)
		}
		// The saga's origin is a record of the order (its first to arrive,
		// or a re-send), and it lives in the partition of the keys topic
		// that owns its key.
		if id := prod.byPos[s.Origin]; id != s.IdempotencyKey {
			return fmt.Errorf("saga %s from a position holding order %q", s.ID(), id)
		}
		if s.Source.Topic != "e2e-keys" || s.Source.Partition != engine.KeyPartition("order", s.IdempotencyKey, 6) {
			return fmt.Errorf("saga %s lives in %s, not where its key is owned", s.ID(), s.Source.TopicPartition())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != total {
		t.Fatalf("%d orders have a saga, want %d", len(seen), total)
	}
}

// checkCommittedBehindDurable opens the killed member's store and checks
// invariant 1: for every partition, every record below the committed offset
// has its saga recorded durably, and the committed offset is not past the
// store's recorded next offset.
func checkCommittedBehindDurable(t *testing.T, seeds []string, dir string, prod *produced) {
	t.Helper()
	committed := kafkatest.Committed(t, seeds, "e2e", "orders.created")
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys := map[string]bool{}
	if err := st.Scan(context.Background(), storage.Statuses, func(s *storage.Saga) error { keys[s.IdempotencyKey] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	// A committed order is durable when its saga is in the store, or its
	// start is acknowledged on the keys topic (the partition that owns its
	// key records it, before that topic's offset is committed).
	starts := map[string]bool{}
	for _, r := range kafkatest.ReadAll(t, seeds, "e2e-keys") {
		for _, h := range r.Headers {
			if h.Key == engine.HeaderStartKey {
				starts[string(h.Value)] = true
			}
		}
	}
	kc := kafkatest.Committed(t, seeds, "e2e", "e2e-keys")
	for part, off := range kc {
		next, _, err := st.NextOffset(context.Background(), storage.Partition{Topic: "e2e-keys", Partition: part})
		if err != nil {
			t.Fatal(err)
		}
		if off > next {
			t.Fatalf("keys partition %d: committed %d ahead of the store's recorded next offset %d", part, off, next)
		}
	}
	prod.mu.Lock()
	defer prod.mu.Unlock()
	checked := 0
	for part, off := range committed {
		next, _, err := st.NextOffset(context.Background(), storage.Partition{Topic: "orders.created", Partition: part})
		if err != nil {
			t.Fatal(err)
		}
		if off > next {
			t.Fatalf("partition %d: committed %d ahead of the store's recorded next offset %d", part, off, next)
		}
		for o := int64(0); o < off; o++ {
			id, ok := prod.byPos[storage.Position{Topic: "orders.created", Partition: part, Offset: o}]
			if !ok {
				continue // produced, but the producer has not yet recorded its position
			}
			if !keys[id] && !starts[id] {
				t.Fatalf("partition %d offset %d (order %s) is committed but has no durable saga nor start", part, o, id)
			}
			checked++
		}
	}
	t.Logf("after kill: committed %v, %d committed records checked, %d sagas stored", committed, checked, len(keys))
}

// TestAcceptedEventSurvivesSIGKILL: a webhook call answered 202 is always
// found as a saga afterwards, even when the process is SIGKILLed right
// after answering.
func TestAcceptedEventSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary; skipped with -short")
	}
	bin := sagaztest.BuildBinary(t, ".")
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1))
	seeds := c.ListenAddrs()
	dir := t.TempDir()
	// The demo webhook must be signed against a real cluster: StartBinary
	// gives the binary DemoWebhookKey.
	key := sagaztest.DemoWebhookKey
	args := []string{"--brokers", strings.Join(seeds, ","), "--data-dir", dir, "--group", "e2e-hook", "--group-instance-id", "hook-1", "--session-timeout", "6s"}
	ready := func(p *sagaztest.Proc) {
		kafkatest.WaitFor(t, 30*time.Second, "ready", func() bool {
			resp, err := http.Get("http://" + p.HTTP + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	var ids []string
	for i := range 5 {
		p := sagaztest.StartBinary(t, bin, dir, args...)
		ready(p)
		body := fmt.Sprintf(`{"payment_id":"pay-%d","order_id":"o-%d","status":"succeeded"}`, i, i)
		req, _ := http.NewRequest("POST", "http://"+p.HTTP+"/webhooks/payments", strings.NewReader(body))
		id, ts := fmt.Sprintf("delivery-%d", i), strconv.FormatInt(time.Now().Unix(), 10)
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "." + body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("webhook-id", id)
		req.Header.Set("webhook-timestamp", ts)
		req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var acc struct {
			SagaIDs []string `json:"saga_ids"`
		}
		err = json.NewDecoder(resp.Body).Decode(&acc)
		resp.Body.Close()
		if resp.StatusCode != 202 || err != nil || len(acc.SagaIDs) != 1 {
			t.Fatalf("webhook: %d %v %+v", resp.StatusCode, err, acc)
		}
		_ = p.Cmd.Process.Signal(syscall.SIGKILL) // right after the 202
		_ = p.Wait()
		ids = append(ids, acc.SagaIDs[0])
	}
	p := sagaztest.StartBinary(t, bin, dir, args...)
	ready(p)
	for _, id := range ids {
		kafkatest.WaitFor(t, 30*time.Second, "saga "+id+" completed", func() bool {
			resp, err := http.Get("http://" + p.HTTP + "/api/sagas/" + id)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var s struct{ Status string }
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&s) == nil && s.Status == "completed"
		})
	}
}
