package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

// participantProc runs `sagaz demo-participant` until killed.
type participantProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startParticipant(t *testing.T, bin, group, logDir string) *participantProc {
	t.Helper()
	f, err := os.CreateTemp(logDir, "participant-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p := &participantProc{cmd: exec.Command(bin, "demo-participant", "--brokers", strings.Join(brokers, ","), "--group", group, "--instance-id", "p1"),
		done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			sagaztest.LogTail(t, f.Name(), 40)
		}
	})
	return p
}

func (p *participantProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// startAtEnd commits group's offsets of topic at its log end (when the
// topic exists), so the group starts there.
func startAtEnd(t *testing.T, group, topic string) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.Client(t, brokers))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil || ends.Error() != nil {
		return // a new broker: nothing to skip
	}
	offs := kadm.Offsets{}
	ends.Each(func(o kadm.ListedOffset) { offs.AddOffset(o.Topic, o.Partition, o.Offset, -1) })
	if _, err := adm.CommitOffsets(ctx, group, offs); err != nil {
		t.Fatalf("commit %s at the end of %s: %v", group, topic, err)
	}
}

// waitGroupServing waits until group is stable with a member that has
// partitions assigned.
func waitGroupServing(t *testing.T, group string) {
	t.Helper()
	adm := kadm.NewClient(kafkatest.Client(t, brokers))
	kafkatest.WaitFor(t, 90*time.Second, "group "+group+" to be serving", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return false
		}
		g, ok := gs[group]
		if !ok || g.Err != nil || g.State != "Stable" || len(g.Members) == 0 {
			return false
		}
		for _, m := range g.Members {
			if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
				return true
			}
		}
		return false
	})
}

// readCommittedTopic reads a topic as read_committed consumers see it.
func readCommittedTopic(t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	return kafkatest.ReadCommitted(t, brokers, topic)
}

func recHeader(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// sagaView asks the member's API for a saga (nil when it cannot).
func sagaView(addr, id string) *httpapi.SagaView {
	resp, err := http.Get("http://" + addr + "/api/sagas/" + id)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var v httpapi.SagaView
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return nil
	}
	return &v
}

// replayer produces the replies of the transfers again — every one it has
// not replayed yet, twice, in a shuffled order — until stopped.
type replayer struct {
	stop     chan struct{}
	done     chan struct{}
	replayed atomic.Int64
}

func replayReplies(t *testing.T, topic, prefix string) *replayer {
	r := &replayer{stop: make(chan struct{}), done: make(chan struct{})}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		defer cl.Close()
		for {
			select {
			case <-r.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			fs := cl.PollFetches(ctx)
			cancel()
			var again []*kgo.Record
			fs.EachRecord(func(rec *kgo.Record) {
				if !strings.Contains(recHeader(rec, engine.HeaderSagaID), prefix) || recHeader(rec, "it.replayed") != "" {
					return
				}
				hs := append(append([]kgo.RecordHeader(nil), rec.Headers...), kgo.RecordHeader{Key: "it.replayed", Value: []byte("1")})
				for range 2 {
					again = append(again, &kgo.Record{Topic: rec.Topic, Partition: rec.Partition, Key: rec.Key, Value: rec.Value, Headers: hs})
				}
			})
			rand.Shuffle(len(again), func(i, j int) { again[i], again[j] = again[j], again[i] })
			if len(again) > 0 {
				pctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := cl.ProduceSync(pctx, again...).FirstErr(); err == nil {
					r.replayed.Add(int64(len(again)))
				}
				cancel()
			}
		}
	}()
	t.Cleanup(r.halt)
	return r
}

func (r *replayer) halt() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

// The transfer demo against Apache Kafka, with the accounts service as a
// process (`sagaz demo-participant`): the member and the participant are
// SIGKILLed mid-flow and restarted, every reply is produced twice more in a
// shuffled order, and a transfer's credit times out while the member is
// down. Each transfer ends completed or rolled back exactly once — those
// asked to fail roll back — and every account balances: a completed
// transfer was debited and credited once and not refunded, a rolled-back
// one was refunded or never debited.
func TestTransfersSurviveKillsDuplicatesAndReorderedReplies(t *testing.T) {
	needKafka(t)
	bin := sagaztest.BuildBinary(t, "../cmd/consumer")
	group, accounts, prefix, dir := unique("it-xfer"), unique("it-accounts"), unique("x"), t.TempDir()
	args := []string{"--brokers", strings.Join(brokers, ","), "--data-dir", dir, "--group", group, "--group-instance-id", group + "-1",
		"--dead-letter-topic", unique("it-dlq"), "--session-timeout", "10s", "--shutdown-timeout", "5s"}
	// Earlier runs' transfers and commands on a shared broker are not ours.
	startAtEnd(t, group, sagas.TransferTopic)
	startAtEnd(t, accounts, sagas.AccountsTopic)
	m := sagaztest.StartBinary(t, bin, dir, args...)
	p := startParticipant(t, bin, accounts, dir)
	kafkatest.WaitFor(t, 90*time.Second, "the member to own partitions", func() bool { return m.Metric("sagaz_partitions_owned") > 0 })
	waitGroupServing(t, accounts)
	replay := replayReplies(t, consumer.ReplyTopic(group, group+"-keys"), prefix)

	want := map[string]string{} // transfer id -> "" (either end) or the end it must have
	var lines []string
	chunk := func(from, n int) {
		lines = lines[:0]
		for i := from; i < from+n; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			extra, end := "", ""
			switch i % 6 {
			case 1:
				extra, end = `,"fail_at":"credit"`, "rolled_back"
			case 2:
				extra, end = `,"fail_at":"debit"`, "rolled_back"
			case 3:
				extra = `,"delay_ms":150`
			}
			want[id] = end
			lines = append(lines, fmt.Sprintf(`%s|{"transfer_id":%q,"from":"%s-a%d","to":"%s-a%d","amount":%d%s}`, id, id, prefix, i%4, prefix, (i+1)%4, 5+i, extra))
		}
		kcatProduce(t, sagas.TransferTopic, lines)
	}

	// Mid-flow, the member is killed and restarted at once.
	chunk(0, 60)
	kafkatest.WaitFor(t, 60*time.Second, "replies to flow", func() bool { return m.Metric("sagaz_replies_applied_total") > 20 })
	_ = m.Cmd.Process.Signal(syscall.SIGKILL)
	_ = m.Wait()
	m = sagaztest.StartBinary(t, bin, dir, args...)

	// Then the participant, killed mid-flow and restarted (same instance:
	// its open transaction is aborted).
	chunk(60, 60)
	kafkatest.WaitFor(t, 60*time.Second, "replies to flow again", func() bool { return m.Metric("sagaz_replies_applied_total") > 10 })
	p.kill()
	p = startParticipant(t, bin, accounts, dir)
	waitGroupServing(t, accounts)
	kafkatest.WaitFor(t, 60*time.Second, "replies to flow from the restarted participant", func() bool {
		return m.Metric("sagaz_replies_applied_total") > 60
	})

	// A transfer whose credit gets no reply: the member dies while it waits,
	// and stays down past the deadline.
	down := prefix + "-down"
	want[down] = "rolled_back"
	kcatProduce(t, sagas.TransferTopic, []string{fmt.Sprintf(`%s|{"transfer_id":%q,"from":"%s-a0","to":"%s-a1","amount":1000,"no_reply":"credit"}`, down, down, prefix, prefix)})
	// The member's own view says when the credit waits (faster than reading
	// the accounts topic: the step's timeout is 3 s, and the kill must come
	// before it).
	var deadline time.Time
	var last *httpapi.SagaView
	t.Cleanup(func() {
		if t.Failed() && last != nil && last.Waiting == nil {
			b, _ := json.Marshal(last)
			t.Logf("the silent transfer as the member last showed it: %s", b)
		}
	})
	kafkatest.WaitFor(t, 60*time.Second, "the silent credit to wait for its reply", func() bool {
		v := sagaView(m.HTTP, storage.FormatKeyedID("transfer", down))
		if v != nil {
			last = v
		}
		if v == nil || v.Waiting == nil || v.Waiting.Step != "credit" || v.Waiting.Kind != storage.WaitCommand {
			return false
		}
		deadline = v.Waiting.Deadline
		return true
	})
	_ = m.Cmd.Process.Signal(syscall.SIGKILL)
	_ = m.Wait()
	killedAt := time.Now()
	kafkatest.WaitFor(t, 30*time.Second, "the credit's deadline to pass while the member is down", func() bool { return time.Now().After(deadline.Add(time.Second)) })
	m = sagaztest.StartBinary(t, bin, dir, args...)
	restartedAt := time.Now()
	chunk(120, 60)

	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, storage.FormatKeyedID("transfer", id))
	}
	sort.Strings(ids)
	kafkatest.WaitFor(t, 5*time.Minute, "every transfer to end", func() bool {
		for _, id := range ids {
			if v := sagaView(m.HTTP, id); v == nil || !v.Status.Terminal() {
				return false
			}
		}
		return true
	})
	replay.halt()
	if replay.replayed.Load() == 0 {
		t.Error("no reply was replayed")
	}
	if n := m.Metric(`sagaz_replies_ignored_total{reason="duplicate"}`) + m.Metric(`sagaz_replies_ignored_total{reason="late"}`); n <= 0 {
		t.Errorf("no replayed reply was ignored by the last member (duplicate+late = %v)", n)
	}
	_ = m.Cmd.Process.Signal(syscall.SIGTERM)
	if err := m.Wait(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ends := map[string]*storage.Saga{}
	for _, s := range sagaztest.Sagas(t, st) {
		if s.Name != "transfer" || !strings.HasPrefix(s.IdempotencyKey, prefix+"-") {
			continue
		}
		if _, dup := ends[s.IdempotencyKey]; dup {
			t.Fatalf("two sagas for transfer %s", s.IdempotencyKey)
		}
		ends[s.IdempotencyKey] = s
	}
	for id, end := range want {
		s := ends[id]
		switch {
		case s == nil:
			t.Errorf("transfer %s: no saga", id)
		case s.Status != storage.StatusCompleted && s.Status != storage.StatusRolledBack:
			t.Errorf("transfer %s: %s (%s)", id, s.Status, s.Error)
		case end != "" && s.Status.String() != end:
			t.Errorf("transfer %s: %s, want %s (%s)", id, s.Status, end, s.Error)
		}
	}
	if len(ends) != len(want) {
		t.Errorf("%d transfers have a saga, want %d", len(ends), len(want))
	}
	if s := ends[down]; s != nil {
		// The credit that timed out may have happened: it was reversed, and
		// the debit refunded.
		if s.Steps[1].Status != storage.StepCompensated || !strings.Contains(s.Steps[1].Error, "timed out") || s.Steps[0].Status != storage.StepCompensated {
			t.Errorf("the silent transfer: steps %+v", s.Steps)
		}
		if deadline.Before(killedAt) || deadline.After(restartedAt) {
			t.Errorf("the credit's deadline %s was not while the member was down (%s to %s)", deadline, killedAt, restartedAt)
		}
	}
	checkTransferLedger(t, accounts, prefix, ends)
}

// checkTransferLedger reads the accounts service's state (one record per
// saga, step and kind: what it did) and checks it against how the
// transfers ended: a completed transfer moved its amount from one account
// to the other, a rolled-back one moved nothing (what it did was undone).
func checkTransferLedger(t *testing.T, accounts, prefix string, ends map[string]*storage.Saga) {
	t.Helper()
	type state struct {
		Saga, Step, Kind, Outcome string
		Payload                   map[string]sagas.TransferEffect
	}
	latest := map[string][]byte{} // the state topic is compacted: the last record of a key is what counts
	for _, r := range readCommittedTopic(t, accounts+"-state-"+sagas.AccountsTopic) {
		latest[string(r.Key)] = r.Value
	}
	net := map[string]map[string]int64{} // saga -> account -> amount
	for _, v := range latest {
		var s state
		if json.Unmarshal(v, &s) != nil || !strings.Contains(s.Saga, ":key:"+prefix+"-") {
			continue
		}
		for _, e := range s.Payload {
			if net[s.Saga] == nil {
				net[s.Saga] = map[string]int64{}
			}
			net[s.Saga][e.Account] += e.Amount
		}
	}
	for id, s := range ends {
		var c struct {
			From, To string
			Amount   int64
		}
		if err := json.Unmarshal(s.Context, &c); err != nil {
			t.Fatalf("transfer %s: context %s: %v", id, s.Context, err)
		}
		want := map[string]int64{}
		if s.Status == storage.StatusCompleted {
			want[c.From], want[c.To] = -c.Amount, c.Amount
		}
		got := net[storage.FormatKeyedID("transfer", id)]
		for _, acct := range []string{c.From, c.To} {
			if got[acct] != want[acct] {
				t.Errorf("%s transfer %s: account %s moved %d, want %d (all: %v)", s.Status, id, acct, got[acct], want[acct], got)
			}
		}
	}
}
