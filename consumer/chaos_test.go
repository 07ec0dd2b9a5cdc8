package consumer_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

// The chaos tests run group members as processes of this test binary
// (SAGAZ_CHAOS_MEMBER selects helper mode), so they can be SIGKILLed.
func TestMain(m *testing.M) {
	if os.Getenv("SAGAZ_KSTEPS_MEMBER") != "" { // kafkasteps_test.go
		if err := kstepsMember(); err != nil {
			fmt.Fprintln(os.Stderr, "ksteps member:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if name := os.Getenv("SAGAZ_CHAOS_MEMBER"); name != "" {
		if err := chaosMember(name); err != nil {
			fmt.Fprintln(os.Stderr, "chaos member:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// chaosMember runs one member: the order saga of the tests, whose steps
// and compensations append "start|end <saga id> <step> <member> <unix ns>"
// to a shared log, until SIGTERM (or SIGKILL).
func chaosMember(name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logf, err := os.OpenFile(os.Getenv("SAGAZ_CHAOS_LOG"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	note := func(what string, r *engine.Run, step string) {
		fmt.Fprintf(logf, "%s %s %s %s %d\n", what, r.ID, step, name, time.Now().UnixNano()) // one write(2): atomic with O_APPEND
	}
	step := func(name string, undo bool) engine.StepFunc {
		return func(ctx context.Context, r *engine.Run) error {
			label := name
			if undo {
				label = "undo-" + name
			}
			note("start", r, label)
			if !undo && r.String("fail_at") == name {
				note("end", r, label)
				return engine.Permanent(errors.New("asked to fail"))
			}
			note("end", r, label)
			return nil
		}
	}
	saga := engine.Saga{Name: "order",
		Steps: []engine.Step{{Name: "a", Action: step("a", false), Compensate: step("a", true)}, {Name: "b", Action: step("b", false), Compensate: step("b", true)},
			{Name: "c", Action: step("c", false)}},
		Triggers: []engine.Trigger{engine.Kafka(topic, engine.PassThrough, engine.WithKey(engine.KeyField("order_id")))}}
	reg := engine.NewRegistry()
	reg.Register(saga)
	m, err := member.New(ctx, member.Config{
		DataDir: os.Getenv("SAGAZ_CHAOS_DIR"), Registry: reg, Logger: sagaztest.Logger(), ShutdownTimeout: 5 * time.Second,
		HTTPAddr: os.Getenv("SAGAZ_CHAOS_HTTP"),
		Consumer: consumer.Config{Client: []kgo.Opt{kgo.SeedBrokers(strings.Split(os.Getenv("SAGAZ_CHAOS_BROKERS"), ",")...)},
			Group: group, CreateTopics: true, MaxPollRecords: 2000,
			// Static membership: a killed member that restarts gets its
			// partitions back at once. The session timeout leaves room for a
			// loaded machine: a member whose heartbeats lapse loses its
			// partitions while it may still run a step (steps are at-least-once).
			SessionTimeout: 10 * time.Second, RebalanceTimeout: 20 * time.Second, InstanceID: name},
	})
	if err != nil {
		return err
	}
	return m.Run(ctx)
}

type chaosProc struct {
	name, dir, http string
	cmd             *exec.Cmd
	done            chan struct{}
}

type chaos struct {
	t     *testing.T
	seeds []string
	log   string
	root  string
	mu    sync.Mutex
	kills map[string][]time.Time // member -> when it was killed
}

func (c *chaos) start(name string) *chaosProc {
	c.t.Helper()
	p := &chaosProc{name: name, dir: filepath.Join(c.root, name), http: sagaztest.FreeAddr(c.t), done: make(chan struct{})}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), "SAGAZ_CHAOS_MEMBER="+name, "SAGAZ_CHAOS_DIR="+p.dir, "SAGAZ_CHAOS_LOG="+c.log,
		"SAGAZ_CHAOS_BROKERS="+strings.Join(c.seeds, ","), "SAGAZ_CHAOS_HTTP="+p.http)
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	c.t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done })
	return p
}

func (c *chaos) kill(p *chaosProc) {
	c.mu.Lock()
	c.kills[p.name] = append(c.kills[p.name], time.Now()) // it runs no step after this
	c.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (c *chaos) stop(p *chaosProc) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		c.t.Fatalf("member %s did not stop within 60s of SIGTERM", p.name)
	}
}

// stream produces n orders (every 7th fails at b, every 11th at c) with a
// poison record after every 5,000th, paced over a few seconds. It returns
// the wanted outcome per order and the poison positions.
func (c *chaos) stream(n int) (map[string]storage.Status, map[string]bool) {
	cl := kafkatest.Client(c.t, c.seeds, kgo.ProducerLinger(2*time.Millisecond))
	want, poison := map[string]storage.Status{}, map[string]bool{}
	const chunk = 2000
	for i := 0; i < n; i += chunk {
		var recs []*kgo.Record
		for j := i; j < min(i+chunk, n); j++ {
			id := "o-" + strconv.Itoa(j)
			extra, w := "", storage.StatusCompleted
			switch {
			case j%7 == 3:
				extra, w = `,"fail_at":"b"`, storage.StatusRolledBack
			case j%11 == 5:
				extra, w = `,"fail_at":"c"`, storage.StatusRolledBack
			}
			want[id] = w
			recs = append(recs, orderRecord(id, extra))
			if j%5000 == 4999 {
				recs = append(recs, &kgo.Record{Topic: topic, Key: []byte("poison-" + id), Value: []byte("{not json")})
			}
		}
		res := cl.ProduceSync(context.Background(), recs...)
		if err := res.FirstErr(); err != nil {
			c.t.Fatal(err)
		}
		for _, r := range res {
			if strings.HasPrefix(string(r.Record.Key), "poison-") {
				poison[fmt.Sprintf("%d/%d", r.Record.Partition, r.Record.Offset)] = true
			}
		}
		time.Sleep(50 * time.Millisecond) // pace the stream over the chaos
	}
	return want, poison
}

type interval struct {
	member     string
	start, end time.Time
}

// checkNoOverlap reads the step log: a step that started on a member and
// has no end ran until that member was killed. No saga may have steps
// running on two members at overlapping times.
func (c *chaos) checkNoOverlap() (runs int) {
	f, err := os.Open(c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	open := map[string]time.Time{} // saga|step|member -> start
	by := map[string][]interval{}  // saga -> intervals
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 5 {
			c.t.Fatalf("bad step log line %q", sc.Text())
		}
		ns, _ := strconv.ParseInt(f[4], 10, 64)
		at := time.Unix(0, ns)
		k := f[1] + "|" + f[2] + "|" + f[3]
		if f[0] == "start" {
			open[k] = at
			continue
		}
		by[f[1]] = append(by[f[1]], interval{f[3], open[k], at})
		delete(open, k)
		runs++
	}
	for k, start := range open { // cut off by a kill
		parts := strings.Split(k, "|")
		end := time.Now()
		for _, kt := range c.kills[parts[2]] {
			if kt.After(start) && kt.Before(end) {
				end = kt
			}
		}
		by[parts[0]] = append(by[parts[0]], interval{parts[2], start, end})
	}
	for id, ivs := range by {
		sort.Slice(ivs, func(i, j int) bool { return ivs[i].start.Before(ivs[j].start) })
		for i := 1; i < len(ivs); i++ {
			if ivs[i].member != ivs[i-1].member && ivs[i].start.Before(ivs[i-1].end) {
				c.t.Fatalf("saga %s ran on %s and %s at overlapping times", id, ivs[i-1].member, ivs[i].member)
			}
		}
	}
	return runs
}

// finish waits until every offset is committed and every member is idle,
// stops them, and checks the outcome across their stores and the
// dead-letter topic.
func (c *chaos) finish(procs []*chaosProc, want map[string]storage.Status, poison map[string]bool) {
	t := c.t
	kafkatest.WaitCommittedAtEnd(t, c.seeds, group, topic, 3*time.Minute)
	kafkatest.WaitCommittedAtEnd(t, c.seeds, group, group+"-keys", 3*time.Minute) // every keyed start recorded
	kafkatest.WaitFor(t, 2*time.Minute, "every member ready and idle", func() bool {
		for _, p := range procs {
			if sagaztest.Metric(p.http, "sagaz_ready") != 1 || sagaztest.Metric(p.http, "sagaz_sagas_pending") != 0 || sagaztest.Metric(p.http, "sagaz_sagas_executing") != 0 {
				return false
			}
		}
		return true
	})
	for _, p := range procs {
		c.stop(p)
	}
	var all []*storage.Saga
	dirs, _ := filepath.Glob(filepath.Join(c.root, "*"))
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "sagaz.db")); err != nil {
			continue
		}
		st, err := storage.OpenBolt(filepath.Join(d, "sagaz.db"), storage.BoltOptions{})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sagaztest.Sagas(t, st)...)
		st.Close()
	}
	sagaztest.CheckOrders(t, "order", want, all, false)
	got := map[string]int{}
	for _, r := range kafkatest.ReadAll(t, c.seeds, "sagaz.dlq") {
		got[header(r, consumer.HeaderOrigPartition)+"/"+header(r, consumer.HeaderOrigOffset)]++
	}
	dups := 0
	for pos, n := range got {
		if !poison[pos] {
			t.Fatalf("dead letter for %s, which is no poison record", pos)
		}
		dups += n - 1
	}
	if len(got) != len(poison) {
		t.Fatalf("dead-letter topic holds %d of the %d poison records", len(got), len(poison))
	}
	t.Logf("%d orders, %d poison records (%d dead letters written twice after a kill), %d step runs", len(want), len(poison), dups, c.checkNoOverlap())
}

func chaosEvents(t *testing.T) int {
	if v := os.Getenv("SAGAZ_CHAOS_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("SAGAZ_CHAOS_EVENTS=%q", v)
		}
		return n
	}
	return 100_000
}

func newChaos(t *testing.T) *chaos {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic), kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
	root := t.TempDir()
	return &chaos{t: t, seeds: c.ListenAddrs(), log: filepath.Join(root, "steps.log"), root: root, kills: map[string][]time.Time{}}
}

// TestChaosKillsAndLostDisk: three members; members are SIGKILLed and
// restarted at random at least 10 times while the orders stream in, once
// with the data directory deleted before the restart.
func TestChaosKillsAndLostDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test (100,000 events, member processes); skipped with -short")
	}
	c := newChaos(t)
	names := []string{"m1", "m2", "m3"}
	procs := map[string]*chaosProc{}
	for _, n := range names {
		procs[n] = c.start(n)
	}
	type result struct {
		want   map[string]storage.Status
		poison map[string]bool
	}
	streamed := make(chan result, 1)
	go func() { w, p := c.stream(chaosEvents(t)); streamed <- result{w, p} }()
	var res result
	kills := 0
	for done := false; !done || kills < 10; {
		select {
		case res = <-streamed:
			done = true
		case <-time.After(time.Duration(300+rand.IntN(700)) * time.Millisecond): // a random moment
		}
		if kills < 10 {
			n := names[rand.IntN(len(names))]
			c.kill(procs[n])
			if kills == 4 { // this member also loses its disk
				if err := os.RemoveAll(procs[n].dir); err != nil {
					t.Fatal(err)
				}
			}
			procs[n] = c.start(n)
			kills++
		}
	}
	c.finish([]*chaosProc{procs["m1"], procs["m2"], procs["m3"]}, res.want, res.poison)
}

// TestChaosScaleOutAndIn: from one member to three mid-stream, then back
// to one.
func TestChaosScaleOutAndIn(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test (member processes); skipped with -short")
	}
	c := newChaos(t)
	m1 := c.start("m1")
	streamed := make(chan [2]any, 1)
	go func() { w, p := c.stream(chaosEvents(t) / 2); streamed <- [2]any{w, p} }()
	kafkatest.WaitFor(t, 30*time.Second, "m1 to consume", func() bool {
		return sagaztest.Metric(m1.http, `sagaz_records_consumed_total{topic="orders.created"}`) > 0
	})
	m2, m3 := c.start("m2"), c.start("m3")
	kafkatest.WaitFor(t, 60*time.Second, "m2 and m3 to own partitions", func() bool {
		return sagaztest.Metric(m2.http, "sagaz_partitions_owned") > 0 && sagaztest.Metric(m3.http, "sagaz_partitions_owned") > 0
	})
	c.stop(m2)
	c.stop(m3)
	r := <-streamed
	c.finish([]*chaosProc{m1}, r[0].(map[string]storage.Status), r[1].(map[string]bool))
}
