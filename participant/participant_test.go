package participant_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/participant"
)

const (
	cmds    = "commands"
	replies = "replies"
)

// calls counts the handler's runs per saga/step/kind.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *calls) add(k string) {
	c.mu.Lock()
	c.n[k]++
	c.mu.Unlock()
}

func (c *calls) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func run(t *testing.T, seeds []string, instance string, h participant.Handler) (stop func()) {
	t.Helper()
	p, err := participant.New(participant.Config{Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: "g", Topic: cmds, InstanceID: instance,
		CreateTopics: true, Logger: sagaztest.Logger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	kafkatest.WaitFor(t, 60*time.Second, "the participant to join", func() bool { return p.Partitions() > 0 })
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

func command(saga, step, kind string, attempt int, value string) *kgo.Record {
	return &kgo.Record{Topic: cmds, Partition: 0, Key: []byte(saga), Value: []byte(value), Headers: []kgo.RecordHeader{
		{Key: engine.HeaderSagaID, Value: []byte(saga)}, {Key: engine.HeaderSagaRef, Value: []byte("t:0:" + saga + ":s")},
		{Key: engine.HeaderStep, Value: []byte(step)}, {Key: engine.HeaderKind, Value: []byte(kind)},
		{Key: engine.HeaderAttempt, Value: []byte(strconv.Itoa(attempt))},
		{Key: engine.HeaderReplyTopic, Value: []byte(replies)}, {Key: engine.HeaderReplyPartition, Value: []byte("0")},
	}}
}

func expired(r *kgo.Record) *kgo.Record {
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: engine.HeaderDeadline, Value: []byte(time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano))})
	return r
}

type reply struct {
	saga, step, kind, attempt, outcome, err, value string
}

func (r reply) String() string {
	return fmt.Sprintf("%s/%s/%s#%s=%s(%s)%s", r.saga, r.step, r.kind, r.attempt, r.outcome, r.err, r.value)
}

// readReplies reads the replies as Sagaz does (read_committed), up to the
// last stable offset.
func readReplies(t *testing.T, seeds []string) []reply {
	t.Helper()
	cl := kafkatest.Client(t, seeds)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, replies)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(replies, 0)
	if end.Offset == 0 {
		return nil
	}
	rd := kafkatest.Client(t, seeds, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{replies: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	var out []reply
	for {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading replies: %v", ctx.Err())
		}
		last := int64(-1)
		fs.EachRecord(func(r *kgo.Record) {
			last = r.Offset
			if r.Attrs.IsControl() {
				return
			}
			h := func(k string) string {
				for _, x := range r.Headers {
					if x.Key == k {
						return string(x.Value)
					}
				}
				return ""
			}
			out = append(out, reply{h(engine.HeaderSagaID), h(engine.HeaderStep), h(engine.HeaderKind), h(engine.HeaderAttempt), h(engine.HeaderOutcome),
				h(engine.HeaderError), string(r.Value)})
		})
		if last >= end.Offset-1 {
			return out
		}
	}
}

func waitReplies(t *testing.T, seeds []string, n int) []reply {
	t.Helper()
	var got []reply
	kafkatest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d replies", n), func() bool { got = readReplies(t, seeds); return len(got) >= n })
	return got
}

func newCluster(t *testing.T) []string {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, cmds, replies))
	return c.ListenAddrs()
}

// One reply per attempt; an action that succeeded or was refused is
// answered from its record without running the handler; a failure is
// retried by running it again; a silent handler sends nothing; a command
// past its deadline is not run.
func TestRepliesOncePerAttempt(t *testing.T) {
	seeds := newCluster(t)
	c := &calls{n: map[string]int{}}
	var silent sync.Once
	run(t, seeds, "a", func(_ context.Context, cmd *participant.Command) ([]byte, error) {
		c.add(cmd.SagaID + "/" + cmd.Step)
		switch cmd.Step {
		case "refuse":
			return nil, participant.Refuse(errors.New("no funds"))
		case "flaky":
			if cmd.Attempt == 1 {
				return nil, errors.New("try later")
			}
		case "quiet":
			var first bool
			silent.Do(func() { first = true })
			if first {
				return nil, participant.ErrNoReply
			}
		case "list":
			return []byte(`[1,2]`), nil // not an object: it ran all the same
		}
		return []byte(`{"done":"` + cmd.Step + `"}`), nil
	})
	cl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	kafkatest.Produce(t, cl,
		command("s1", "ok", engine.KindAction, 1, "{}"), command("s1", "ok", engine.KindAction, 1, "{}"), // delivered twice
		command("s1", "ok", engine.KindAction, 2, "{}"), // a retry after a lost reply
		command("s1", "refuse", engine.KindAction, 1, "{}"), command("s1", "refuse", engine.KindAction, 2, "{}"),
		command("s1", "flaky", engine.KindAction, 1, "{}"), command("s1", "flaky", engine.KindAction, 2, "{}"),
		command("s1", "quiet", engine.KindAction, 1, "{}"), command("s1", "quiet", engine.KindAction, 2, "{}"),
		expired(command("s1", "late", engine.KindAction, 1, "{}")), // the saga stopped waiting for it: not run
		command("s1", "list", engine.KindAction, 1, "{}"), command("s1", "list", engine.KindAction, 2, "{}"),
	)
	got := waitReplies(t, seeds, 9)
	want := []string{
		`s1/ok/action#1=ok()` + `{"done":"ok"}`, `s1/ok/action#2=ok()` + `{"done":"ok"}`,
		`s1/refuse/action#1=refused(no funds)`, `s1/refuse/action#2=refused(no funds)`,
		`s1/flaky/action#1=failed(try later)`, `s1/flaky/action#2=ok()` + `{"done":"flaky"}`,
		`s1/quiet/action#2=ok()` + `{"done":"quiet"}`,
		`s1/list/action#1=ok()[1,2]`, `s1/list/action#2=ok()[1,2]`,
	}
	if len(got) != len(want) {
		t.Fatalf("replies %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("reply %d: %s, want %s", i, got[i], want[i])
		}
	}
	for step, n := range map[string]int{"ok": 1, "refuse": 1, "flaky": 2, "quiet": 2, "late": 0, "list": 1} {
		if c.get("s1/"+step) != n {
			t.Errorf("handler ran %d times for %s, want %d", c.get("s1/"+step), step, n)
		}
	}
}

// A compensation runs only if the action succeeded here; otherwise it
// answers ok (nothing to undo) and an action that comes later is refused.
func TestCompensationFencesTheAction(t *testing.T) {
	seeds := newCluster(t)
	c := &calls{n: map[string]int{}}
	var done []bool
	var mu sync.Mutex
	run(t, seeds, "a", func(_ context.Context, cmd *participant.Command) ([]byte, error) {
		c.add(cmd.SagaID + "/" + cmd.Step + "/" + strconv.FormatBool(cmd.Compensation))
		if cmd.Compensation {
			mu.Lock()
			done = append(done, cmd.ActionDone)
			mu.Unlock()
		}
		return []byte(`{}`), nil
	})
	cl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	kafkatest.Produce(t, cl,
		command("s1", "debit", engine.KindAction, 1, "{}"), command("s1", "debit", engine.KindCompensation, 1, "{}"),
		command("s2", "debit", engine.KindCompensation, 1, "{}"), command("s2", "debit", engine.KindAction, 1, "{}"),
	)
	got := waitReplies(t, seeds, 4)
	want := []string{"s1/debit/action#1=ok(){}", "s1/debit/compensation#1=ok(){}", "s2/debit/compensation#1=ok()", "s2/debit/action#1=refused(compensated before the action arrived)"}
	for i := range want {
		if i >= len(got) || got[i].String() != want[i] {
			t.Fatalf("replies %v, want %v", got, want)
		}
	}
	if c.get("s2/debit/true") != 0 || c.get("s2/debit/false") != 0 || c.get("s1/debit/true") != 1 || len(done) != 1 || !done[0] {
		t.Fatalf("handler runs %v, compensations saw the action done: %v", c.n, done)
	}
}

// A participant that dies in the middle of a transaction leaves nothing
// visible; its restart (same instance id) handles the command again, and
// what it recorded before survives: an action that succeeded is not run
// again.
func TestCrashInATransaction(t *testing.T) {
	seeds := newCluster(t)
	cl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	c := &calls{n: map[string]int{}}
	entered := make(chan struct{}, 1)
	stop := run(t, seeds, "a", func(ctx context.Context, cmd *participant.Command) ([]byte, error) {
		c.add(cmd.SagaID)
		if cmd.SagaID == "s2" { // dies while handling this one
			entered <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return []byte(`{"n":1}`), nil
	})
	kafkatest.Produce(t, cl, command("s1", "debit", engine.KindAction, 1, "{}"))
	waitReplies(t, seeds, 1)
	kafkatest.Produce(t, cl, command("s2", "debit", engine.KindAction, 1, "{}"))
	<-entered
	stop() // the transaction holding s2's reply never commits

	c2 := &calls{n: map[string]int{}}
	run(t, seeds, "a", func(ctx context.Context, cmd *participant.Command) ([]byte, error) {
		c2.add(cmd.SagaID)
		return []byte(`{"n":2}`), nil
	})
	kafkatest.Produce(t, cl, command("s1", "debit", engine.KindAction, 2, "{}"))
	got := waitReplies(t, seeds, 3)
	want := []string{`s1/debit/action#1=ok(){"n":1}`, `s2/debit/action#1=ok(){"n":2}`, `s1/debit/action#2=ok(){"n":1}`}
	if len(got) != 3 {
		t.Fatalf("replies %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("reply %d: %s, want %s", i, got[i], want[i])
		}
	}
	if c2.get("s1") != 0 || c2.get("s2") != 1 {
		t.Errorf("after the restart the handler ran %v, want s2 once only", c2.n)
	}
}

// A participant with a missing field is refused with every problem named.
func TestConfigValidation(t *testing.T) {
	_, err := participant.New(participant.Config{}, nil)
	for _, want := range []string{"no Kafka client options", "no Group", "no command Topic"} {
		if err == nil || !errors.Is(err, participant.ErrConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

// A participant killed after its transaction committed the consumed
// offsets but before the transaction ended leaves them pending: a new
// consumer of its group is told the offsets are unstable until that
// transaction ends, and its replies hold the replies partition's last
// stable offset back. Its restart (same instance id, so the same
// transactional id) aborts that transaction as it starts — before it
// polls — instead of waiting for the transaction to time out (a minute by
// default) with its commands unanswered.
func TestRestartAbortsTheTransactionItsPredecessorLeftOpen(t *testing.T) {
	seeds := newCluster(t)
	cl := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	kafkatest.Produce(t, cl, command("s1", "debit", engine.KindAction, 1, "{}"))

	// The predecessor, as the kill left it: a reply produced and the
	// command's offset committed, both in a transaction that never ends.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dead := kafkatest.Client(t, seeds, kgo.TransactionalID("g-a"), kgo.TransactionTimeout(time.Minute), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := dead.ProduceSync(ctx, &kgo.Record{Topic: replies, Partition: 0, Value: []byte("never committed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	id, epoch, err := dead.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = "g-a", id, epoch, "g"
	if resp, err := add.RequestWith(ctx, dead); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("AddOffsetsToTxn: %v %v", resp, err)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.Group, commit.ProducerID, commit.ProducerEpoch, commit.Generation = "g-a", "g", id, epoch, -1
	tds, err := kadm.NewClient(cl).ListTopics(ctx, cmds)
	if err != nil {
		t.Fatal(err)
	}
	ct := kmsg.NewTxnOffsetCommitRequestTopic()
	ct.Topic, ct.TopicID = cmds, tds[cmds].ID // by name or by id, as the version asks
	cp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	cp.Partition, cp.Offset = 0, 1
	ct.Partitions = append(ct.Partitions, cp)
	commit.Topics = append(commit.Topics, ct)
	if resp, err := commit.RequestWith(ctx, dead); err != nil || len(resp.Topics) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("TxnOffsetCommit: %+v %v", resp, err)
	}

	// The restart answers a new command well within the transaction's
	// minute; the one the predecessor consumed is answered again (its
	// reply was never committed).
	c := &calls{n: map[string]int{}}
	run(t, seeds, "a", func(_ context.Context, cmd *participant.Command) ([]byte, error) {
		c.add(cmd.SagaID)
		return []byte(`{}`), nil
	})
	kafkatest.Produce(t, cl, command("s2", "debit", engine.KindAction, 1, "{}"))
	got := waitReplies(t, seeds, 2)
	want := []string{"s1/debit/action#1=ok(){}", "s2/debit/action#1=ok(){}"}
	if len(got) != 2 || got[0].String() != want[0] || got[1].String() != want[1] {
		t.Fatalf("replies %v, want %v", got, want)
	}
}

// A participant that creates its state topic starts serving at once, not
// after its client's metadata cache (5 s by default) forgets that the
// topic was missing.
func TestCreatedStateTopicIsSeenAtOnce(t *testing.T) {
	seeds := newCluster(t)
	start := time.Now()
	run(t, seeds, "a", func(context.Context, *participant.Command) ([]byte, error) { return []byte(`{}`), nil })
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("the participant joined %s after it started; the state topic it created was not seen for seconds", took.Round(time.Millisecond))
	}
}
