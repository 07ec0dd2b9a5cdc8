package integration

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

// TestRollingUpgradeOnKafka: the previous release (built from its git tag)
// and this one in one group on real Kafka, through a rolling deploy, a
// rollback and the deploy again, while kcat streams orders whose sagas are
// in flight at every restart. Every order ends once, as asked.
func TestRollingUpgradeOnKafka(t *testing.T) {
	needKafka(t)
	prev := sagaztest.PreviousRelease(t)
	cur := sagaztest.BuildBinary(t, "../cmd/consumer")
	group, prefix, logs := unique("it-upgrade"), unique("u"), t.TempDir()
	dirs := map[string]string{"a": t.TempDir(), "b": t.TempDir()}
	dlq := unique("it-dlq")
	start := func(name, bin string) *sagaztest.Proc {
		t.Helper()
		p := sagaztest.StartBinary(t, bin, logs, "--brokers", strings.Join(brokers, ","), "--data-dir", dirs[name], "--group", group,
			"--dead-letter-topic", dlq, "--session-timeout", "10s", "--shutdown-timeout", "5s", "--client-id", "member-"+name)
		kafkatest.WaitFor(t, 90*time.Second, "member "+name+" ready", func() bool {
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
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		if err := p.Wait(); err != nil {
			t.Fatalf("SIGTERM: exit %v (log %s)", err, p.Log)
		}
	}

	want := map[string]storage.Status{}
	var mu sync.Mutex
	streamCtx, endStream := context.WithCancel(context.Background())
	streamDone := make(chan struct{})
	go func() {
		defer close(streamDone)
		for n := 0; streamCtx.Err() == nil; n += 40 {
			lines, w := orderLines(prefix, n, 40, func(i int) string {
				if i%7 == 3 {
					return `,"sleep_ms":30,"fail_at":"ship"`
				}
				return `,"sleep_ms":30`
			})
			kcatProduce(t, sagas.OrderTopic, lines)
			mu.Lock()
			for k, v := range w {
				want[k] = v
			}
			mu.Unlock()
			select {
			case <-streamCtx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()

	a := start("a", prev.Bin)
	b := start("b", prev.Bin)
	stop(a)
	a = start("a", cur)
	stop(a)
	a = start("a", prev.Bin) // rolled back
	stop(a)
	a = start("a", cur)
	stop(b)
	b = start("b", cur)
	endStream()
	<-streamDone

	waitCommitted(t, group, sagas.OrderTopic)
	waitCommitted(t, group, group+"-keys")
	kafkatest.WaitFor(t, 90*time.Second, "every saga to end", func() bool {
		for _, p := range []*sagaztest.Proc{a, b} {
			if p.Metric("sagaz_ready") != 1 || p.Metric("sagaz_sagas_pending") != 0 || p.Metric("sagaz_sagas_executing") != 0 {
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
	checkOrders(t, want, all)
	t.Logf("%d orders across %s and this release, each ended once as asked", len(want), prev.Tag)
}
