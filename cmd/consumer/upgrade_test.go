package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

// TestRollingUpgradeFromPreviousRelease runs the previous release's binary
// (built from its git tag) and this one in one consumer group through a
// rolling deploy with sagas in flight: two members of the previous release;
// one restarted as this release; rolled back to the previous release; then
// both restarted as this release — while orders stream in and their sagas
// (three steps that take a while each, some compensated) run. Partitions
// move between the builds at every restart, so each build restores
// changelog records the other wrote and resumes sagas the other started.
// At the end every order has exactly one saga, ended as its event asks,
// and every offset is committed.
func TestRollingUpgradeFromPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two releases and runs them as processes; skipped with -short")
	}
	prev := sagaztest.PreviousRelease(t)
	cur := sagaztest.BuildBinary(t, ".")
	out, _ := exec.Command(prev.Bin, "version").CombinedOutput()
	t.Logf("previous release %s (%s): %s", prev.Tag, prev.Commit[:12], strings.TrimSpace(string(out)))

	const topic, group = sagas.OrderTopic, "upgrade"
	c := kafkatest.NewCluster(t, kfake.SeedTopics(6, topic))
	seeds := c.ListenAddrs()
	logs := t.TempDir()
	dirs := map[string]string{"a": t.TempDir(), "b": t.TempDir()}
	start := func(name, bin string) *sagaztest.Proc {
		t.Helper()
		p := sagaztest.StartBinary(t, bin, logs, "--brokers", strings.Join(seeds, ","), "--data-dir", dirs[name],
			"--group", group, "--session-timeout", "6s", "--shutdown-timeout", "5s", "--client-id", "member-"+name)
		kafkatest.WaitFor(t, 60*time.Second, "member "+name+" ("+filepath.Base(bin)+") to be ready", func() bool {
			resp, err := http.Get("http://" + p.HTTP + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		return p
	}
	stop := func(p *sagaztest.Proc) {
		t.Helper()
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(); err != nil {
			t.Fatalf("SIGTERM: exit %v (log %s)", err, p.Log)
		}
	}

	// Orders stream in for the whole deploy: every step takes 30 ms, so
	// sagas are executing (and compensating) at every restart.
	want := map[string]storage.Status{}
	var mu sync.Mutex
	streamCtx, endStream := context.WithCancel(context.Background())
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
		if err != nil {
			t.Error(err)
			return
		}
		defer cl.Close()
		for i := 0; streamCtx.Err() == nil; {
			var recs []*kgo.Record
			for range 40 {
				id := "o-" + strconv.Itoa(i)
				extra, end := "", storage.StatusCompleted
				if i%7 == 3 {
					extra, end = `,"fail_at":"ship"`, storage.StatusRolledBack
				}
				recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(id), Value: []byte(fmt.Sprintf(`{"order_id":%q,"amount":5,"sleep_ms":30%s}`, id, extra))})
				mu.Lock()
				want[id] = end
				mu.Unlock()
				i++
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-streamCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	a := start("a", prev.Bin)
	b := start("b", prev.Bin)
	adm := kadm.NewClient(kafkatest.Client(t, seeds))
	// ordersHere reports whether the member with that client id owns a
	// partition of the keys topic, where the (keyed) order sagas run — an
	// orders.created partition only forwards its events there. The
	// assignor balances partition counts over the topics each build
	// subscribes to (this one also has the transfer saga's), so a member
	// may be given none.
	ordersHere := func(name string) (owns, known bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return false, false
		}
		g, ok := gs[group]
		if !ok || g.Err != nil || g.State != "Stable" {
			return false, false
		}
		for _, m := range g.Members {
			if m.ClientID != "member-"+name {
				continue
			}
			asg, ok := m.Assigned.AsConsumer()
			if !ok {
				return false, false
			}
			for _, tp := range asg.Topics {
				if tp.Topic == group+"-keys" && len(tp.Partitions) > 0 {
					return true, true
				}
			}
			return false, true
		}
		return false, false
	}
	busy := func(p *sagaztest.Proc, name, what string) { // let sagas be in flight there before the next restart
		t.Helper()
		kafkatest.WaitFor(t, 30*time.Second, what, func() bool {
			if p.Metric("sagaz_sagas_executing") > 0 {
				return true
			}
			owns, known := ordersHere(name)
			return known && !owns // given no keys partition: no order saga can be in flight there
		})
	}
	busy(a, "a", "sagas executing on a (previous release)")
	stop(a)
	a = start("a", cur) // rolling deploy, first half
	busy(a, "a", "sagas executing on a (this release)")
	stop(a)
	a = start("a", prev.Bin) // rolled back
	busy(a, "a", "sagas executing on a (rolled back)")
	stop(a)
	a = start("a", cur) // the deploy again, to the end
	stop(b)
	b = start("b", cur)
	busy(b, "b", "sagas executing on b (this release)")
	endStream()
	<-streamDone

	for _, tp := range []string{topic, group + "-keys"} {
		kafkatest.WaitCommittedAtEnd(t, seeds, group, tp, 120*time.Second)
	}
	kafkatest.WaitFor(t, 120*time.Second, "every saga to end", func() bool {
		for _, p := range []*sagaztest.Proc{a, b} {
			if p.Metric("sagaz_ready") != 1 || p.Metric("sagaz_sagas_pending") != 0 || p.Metric("sagaz_sagas_executing") != 0 || p.Metric(`sagaz_sagas_parked{saga="order"}`) != 0 {
				return false
			}
		}
		return true
	})
	stop(a)
	stop(b)

	all := sagaztest.StoredSagas(t, dirs["a"], dirs["b"])
	mu.Lock()
	defer mu.Unlock()
	sagaztest.CheckOrders(t, "order", want, all, false)
	t.Logf("%d orders, each with one saga ended as asked, across %s and this release", len(want), prev.Tag)
}
