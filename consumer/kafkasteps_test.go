package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/participant"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

const accountsGroup = "accounts"

// xfer is the demo transfer saga with its commands' timeout and attempts.
func xfer(timeout time.Duration, attempts int) *engine.Registry {
	s := sagas.Transfer
	s.Steps = append([]engine.Step(nil), s.Steps...)
	for i := range s.Steps {
		s.Steps[i].Timeout = timeout
		s.Steps[i].Retry = engine.RetryPolicy{MaxAttempts: attempts, InitialDelay: 200 * time.Millisecond, Multiplier: 1}
	}
	reg := engine.NewRegistry()
	reg.Register(s)
	return reg
}

// startParticipant runs the demo's accounts service until the test ends.
func startParticipant(t *testing.T, seeds []string, instance string) func() {
	t.Helper()
	p, err := participant.New(participant.Config{Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: accountsGroup, Topic: sagas.AccountsTopic,
		InstanceID: instance, CreateTopics: true, Logger: sagaztest.Logger()}, sagas.TransferCommands)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	kafkatest.WaitFor(t, 60*time.Second, "the participant to join its group", func() bool { return p.Partitions() > 0 })
	stop := func() {
		if cancel == nil {
			return
		}
		cancel()
		cancel = nil
		if err := <-done; err != nil {
			t.Errorf("participant: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

type transfer struct {
	id, from, to string
	amount       int64
	extra        string
	want         storage.Status
}

func produceTransfers(t *testing.T, seeds []string, ts []transfer) {
	t.Helper()
	cl := kafkatest.Client(t, seeds)
	var recs []*kgo.Record
	for _, x := range ts {
		recs = append(recs, &kgo.Record{Topic: sagas.TransferTopic, Key: []byte(x.id),
			Value: []byte(fmt.Sprintf(`{"transfer_id":%q,"from":%q,"to":%q,"amount":%d%s}`, x.id, x.from, x.to, x.amount, x.extra))})
	}
	kafkatest.Produce(t, cl, recs...)
}

// readCommitted reads a topic as read_committed consumers see it.
func readCommitted(t *testing.T, seeds []string, topic string) []*kgo.Record {
	t.Helper()
	return kafkatest.ReadCommitted(t, seeds, topic)
}

// checkLedger checks the accounts service's effects, read from its state
// topic (one record per saga, step and kind: what it did): a transfer that
// completed moved its amount from one account to the other, one that
// rolled back moved nothing (what it did was undone), so every account
// balances with the transfers that completed.
func checkLedger(t *testing.T, seeds []string, ts []transfer) {
	t.Helper()
	type state struct {
		Saga, Step, Kind, Outcome string
		Payload                   map[string]sagas.TransferEffect
	}
	latest := map[string][]byte{} // the state topic is compacted: the last record of a key is what counts
	for _, r := range readCommitted(t, seeds, accountsGroup+"-state-"+sagas.AccountsTopic) {
		latest[string(r.Key)] = r.Value
	}
	net := map[string]map[string]int64{} // saga -> account -> amount
	for _, v := range latest {
		var s state
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatalf("state record %s: %v", v, err)
		}
		for _, e := range s.Payload {
			if net[s.Saga] == nil {
				net[s.Saga] = map[string]int64{}
			}
			net[s.Saga][e.Account] += e.Amount
		}
	}
	for _, x := range ts {
		got := net[storage.FormatKeyedID("transfer", x.id)]
		want := map[string]int64{}
		if x.want == storage.StatusCompleted {
			want[x.from], want[x.to] = -x.amount, x.amount
		}
		for _, acct := range []string{x.from, x.to} {
			if got[acct] != want[acct] {
				t.Errorf("%s transfer %s: account %s moved %d, want %d (all: %v)", x.want, x.id, acct, got[acct], want[acct], got)
			}
		}
	}
}

func checkTransfers(t *testing.T, ts []transfer, stores ...storage.Store) {
	t.Helper()
	want := map[string]storage.Status{}
	for _, x := range ts {
		want[x.id] = x.want
	}
	var all []*storage.Saga
	for _, st := range stores {
		all = append(all, sagasIn(t, st)...)
	}
	sagaztest.CheckOrders(t, "transfer", want, all, false)
}

// The demo: transfers through the accounts service, some refused at the
// debit or the credit, some with slow replies. Each ends once, as asked,
// and the accounts balance; replies are read by the saga's owner.
func TestTransfersThroughAParticipant(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, sagas.TransferTopic, sagas.AccountsTopic))
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", xfer(5*time.Second, 2), nil)
	startParticipant(t, seeds, "p1")
	var ts []transfer
	accounts := []string{"alice", "bob", "carol"}
	for i := range 30 {
		x := transfer{id: fmt.Sprintf("t-%d", i), from: accounts[i%3], to: accounts[(i+1)%3], amount: int64(10 + i), want: storage.StatusCompleted}
		switch i % 6 {
		case 1:
			x.extra, x.want = `,"fail_at":"credit"`, storage.StatusRolledBack
		case 2:
			x.extra, x.want = `,"fail_at":"debit"`, storage.StatusRolledBack
		case 3:
			x.extra = `,"delay_ms":50`
		}
		ts = append(ts, x)
	}
	produceTransfers(t, seeds, ts)
	kafkatest.WaitFor(t, 60*time.Second, "30 transfers to end", func() bool { return m.Finished.Load() >= 30 })
	checkTransfers(t, ts, m.Store)
	checkLedger(t, seeds, ts)
	if n := testutil.ToFloat64(m.Metrics.RepliesApplied); n < 55 {
		t.Errorf("%v replies applied, want at least 55", n)
	}
	for _, s := range sagasIn(t, m.Store) {
		if s.Status == storage.StatusRolledBack && strings.Contains(s.Error, "credit") && s.Steps[0].Status != storage.StepCompensated {
			t.Errorf("%s: the debit was not refunded: %+v", s.ID(), s.Steps)
		}
	}
	if end := kafkatest.EndOffsets(t, seeds, dlq); end[0]+end[1]+end[2]+end[3] != 0 {
		t.Errorf("dead letters: %v", end)
	}
}

// Replies no saga waits for are ignored and counted, never dead-lettered:
// the same replies again (duplicates), a reply to an attempt that timed out
// (late: the participant answered after the deadline), one for a saga that
// does not exist, one that is not a reply.
func TestRepliesNoSagaWaitsForAreIgnored(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, sagas.TransferTopic, sagas.AccountsTopic))
	seeds := c.ListenAddrs()
	m := startMember(t, seeds, "", xfer(time.Second, 3), nil)
	startParticipant(t, seeds, "p1")
	ts := []transfer{
		{id: "t-ok", from: "a", to: "b", amount: 5, want: storage.StatusCompleted},
		// The reply to attempt 1 comes after its deadline: late; attempt 2
		// is answered from what the participant recorded, at once.
		{id: "t-slow", from: "b", to: "a", amount: 7, extra: `,"delay_ms":1500`, want: storage.StatusCompleted},
	}
	produceTransfers(t, seeds, ts)
	kafkatest.WaitFor(t, 60*time.Second, "2 transfers to end", func() bool { return m.Finished.Load() >= 2 })
	ignored := func(reason string) float64 {
		return testutil.ToFloat64(m.Metrics.RepliesIgnored.WithLabelValues(reason))
	}
	if ignored(engine.IgnoreLate) < 1 {
		t.Errorf("late replies: %v, want at least 1", ignored(engine.IgnoreLate))
	}
	repliesTopic := consumer.ReplyTopic(group, group+"-keys")
	replies := readCommitted(t, seeds, repliesTopic)
	applied := testutil.ToFloat64(m.Metrics.RepliesApplied)
	dups := ignored(engine.IgnoreDuplicate)
	cl := manual(t, seeds)
	var again []*kgo.Record
	for _, r := range replies {
		again = append(again, &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers})
	}
	ghost := append([]kgo.RecordHeader(nil), replies[0].Headers...)
	for i, h := range ghost {
		if h.Key == engine.HeaderSagaRef {
			ghost[i].Value = []byte(group + "-keys:0:999999:transfer")
		}
	}
	again = append(again,
		&kgo.Record{Topic: repliesTopic, Partition: 0, Value: []byte(`{"not":"a reply"}`)},
		&kgo.Record{Topic: repliesTopic, Partition: 0, Headers: ghost, Value: []byte(`{}`)},
	)
	kafkatest.Produce(t, cl, again...)
	kafkatest.WaitFor(t, 30*time.Second, "the replies to be ignored", func() bool {
		return ignored(engine.IgnoreDuplicate)+ignored(engine.IgnoreLate) >= dups+float64(len(replies))-1 &&
			ignored(engine.IgnoreMalformed) == 1 && ignored(engine.IgnoreUnknown) == 1
	})
	if got := testutil.ToFloat64(m.Metrics.RepliesApplied); got != applied {
		t.Errorf("replies applied went from %v to %v", applied, got)
	}
	checkTransfers(t, ts, m.Store)
	checkLedger(t, seeds, ts)
	if end := kafkatest.EndOffsets(t, seeds, dlq); end[0]+end[1] != 0 {
		t.Errorf("dead letters: %v", end)
	}
}

// A timeout that falls due while no member runs: the member stops while a
// transfer waits for its debit's reply (no participant runs); the deadline
// passes; when a member starts again the timer fires at once, the debit
// (which may have happened) is refunded, the transfer rolls back.
func TestTimeoutFallsDueWhileTheMemberIsDown(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, sagas.TransferTopic, sagas.AccountsTopic))
	seeds := c.ListenAddrs()
	dir := t.TempDir()
	reg := xfer(2*time.Second, 1)
	m := startMember(t, seeds, dir, reg, nil)
	ts := []transfer{{id: "t-1", from: "a", to: "b", amount: 3, want: storage.StatusRolledBack}}
	produceTransfers(t, seeds, ts)
	var deadline time.Time
	kafkatest.WaitFor(t, 30*time.Second, "the debit to wait for its reply", func() bool {
		for _, s := range sagasIn(t, m.Store) {
			if s.Wait != nil && s.Wait.Kind == storage.WaitCommand {
				deadline = s.Wait.Deadline
				return true
			}
		}
		return false
	})
	if n := memberGauge(t, m, "sagaz_sagas_waiting"); n != 1 {
		t.Errorf("sagaz_sagas_waiting = %v, want 1", n)
	}
	m.Stop()
	kafkatest.WaitFor(t, 10*time.Second, "the deadline to pass with the member down", func() bool { return time.Now().After(deadline.Add(500 * time.Millisecond)) })
	startParticipant(t, seeds, "p1")
	m = startMember(t, seeds, dir, reg, nil)
	kafkatest.WaitFor(t, 30*time.Second, "the transfer to end", func() bool { return m.Finished.Load() >= 1 })
	checkTransfers(t, ts, m.Store)
	s := sagasIn(t, m.Store)[0]
	if s.Steps[0].Status != storage.StepCompensated || !strings.Contains(s.Steps[0].Error, "timed out") {
		t.Fatalf("debit: %+v", s.Steps[0])
	}
	checkLedger(t, seeds, ts)
}

// Waiting sagas follow their partition: a member is SIGKILLed while twenty
// transfers wait for replies (the accounts service is not running yet); a
// second member restores them from the changelog, a third joins and takes
// half of the partitions; then the accounts service starts and the replies
// reach whoever owns each saga now. Every transfer ends once, as asked.
func TestWaitingSagasFollowTheirPartition(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(4, sagas.TransferTopic, sagas.AccountsTopic))
	seeds := c.ListenAddrs()
	proc := startKstepsMember(t, seeds)
	var ts []transfer
	for i := range 20 {
		x := transfer{id: fmt.Sprintf("t-%d", i), from: fmt.Sprintf("acct-%d", i%4), to: fmt.Sprintf("acct-%d", (i+1)%4), amount: int64(i + 1), want: storage.StatusCompleted}
		if i%4 == 1 {
			x.extra, x.want = `,"fail_at":"credit"`, storage.StatusRolledBack
		}
		ts = append(ts, x)
	}
	produceTransfers(t, seeds, ts)
	kafkatest.WaitFor(t, 60*time.Second, "20 debits produced", func() bool {
		end := kafkatest.EndOffsets(t, seeds, sagas.AccountsTopic)
		return end[0]+end[1]+end[2]+end[3] >= 20
	})
	_ = proc.Process.Signal(syscall.SIGKILL)
	_ = proc.Wait()

	b := startMember(t, seeds, "", xfer(time.Minute, 3), nil)
	kafkatest.WaitFor(t, 60*time.Second, "b to restore the waiting transfers", func() bool {
		n := 0
		for _, s := range sagasIn(t, b.Store) {
			if s.Wait != nil {
				n++
			}
		}
		return n == 20 && b.Ready() == nil
	})
	cm := startMember(t, seeds, "", xfer(time.Minute, 3), nil)
	kafkatest.WaitFor(t, 60*time.Second, "c to take partitions", func() bool {
		return cm.Ready() == nil && b.Ready() == nil && len(cm.Engine.Owned()) > 0 && len(b.Engine.Owned()) > 0
	})
	startParticipant(t, seeds, "p1")
	kafkatest.WaitFor(t, 90*time.Second, "20 transfers to end", func() bool {
		done := map[string]bool{}
		for _, st := range []storage.Store{b.Store, cm.Store} {
			for _, s := range sagasIn(t, st) {
				if s.Status.Terminal() && (b.Engine.Owns(s.Source) || cm.Engine.Owns(s.Source)) {
					done[s.ID()] = true
				}
			}
		}
		return len(done) == 20
	})
	checkTransfers(t, ts, b.Store, cm.Store)
	checkLedger(t, seeds, ts)
}

// startKstepsMember runs a member with the transfer saga (replies waited for
// a minute) as a process of this test binary, to be killed.
func startKstepsMember(t *testing.T, seeds []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SAGAZ_KSTEPS_MEMBER=1", "SAGAZ_CHAOS_DIR="+filepath.Join(t.TempDir(), "a"),
		"SAGAZ_CHAOS_BROKERS="+strings.Join(seeds, ","))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }) })
	return cmd
}

// kstepsMember is the process startKstepsMember runs.
func kstepsMember() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	m, err := member.New(ctx, member.Config{
		DataDir: os.Getenv("SAGAZ_CHAOS_DIR"), Registry: xfer(time.Minute, 3), Logger: sagaztest.Logger(), ShutdownTimeout: 5 * time.Second,
		Consumer: consumer.Config{Client: []kgo.Opt{kgo.SeedBrokers(strings.Split(os.Getenv("SAGAZ_CHAOS_BROKERS"), ",")...)},
			Group: group, CreateTopics: true, SessionTimeout: 6 * time.Second},
	})
	if err != nil {
		return err
	}
	return m.Run(ctx)
}

// memberGauge reads a gauge without labels from a member's registry (-1: none).
func memberGauge(t *testing.T, m *testMember, name string) float64 {
	t.Helper()
	mfs, err := m.Member.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
