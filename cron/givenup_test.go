package cron_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// releasingProducer acknowledges a tick after the schedule's partition
// has been given up (a rebalance while the tick was produced).
type releasingProducer struct{ owned *atomic.Bool }

func (p releasingProducer) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	p.owned.Store(false)
	out := kgo.ProduceResults{}
	for _, r := range rs {
		r.Offset = 7
		out = append(out, kgo.ProduceResult{Record: r})
	}
	return out
}

// A schedule's state is recorded and mirrored only while its partition is
// owned (Config.WhileOwned): a partition given up during a tick gets no
// changelog record from this member after its release, where it would
// follow the next owner's (found by an adversarial review).
func TestScheduleStateIsNotMirroredAfterItsPartitionIsGivenUp(t *testing.T) {
	reg := engine.NewRegistry()
	reg.Register(cronSaga("job", "@every 1m", engine.CronPolicy{}, nil))
	routes, err := reg.Routes()
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.OpenBolt(filepath.Join(t.TempDir(), "s.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var owned atomic.Bool
	owned.Store(true)
	var mirrored, afterGivenUp atomic.Int32
	clk := &clock{}
	s, err := cron.New(cron.Config{Routes: routes, Topic: "sagaz.cron", Partitions: 1, Producer: releasingProducer{&owned}, Store: st,
		Owns: func(storage.Partition) bool { return owned.Load() },
		WhileOwned: func(_ storage.Partition, fn func()) bool {
			if !owned.Load() {
				return false
			}
			fn()
			return true
		},
		Mirror: func(storage.Partition, string, []byte) {
			mirrored.Add(1)
			if !owned.Load() {
				afterGivenUp.Add(1)
			}
		}, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	clk.set(t0)
	s.Tick(context.Background(), t0) // a new schedule: its state recorded while owned
	if mirrored.Load() != 1 {
		t.Fatalf("the new schedule's state was mirrored %d times, want once", mirrored.Load())
	}
	clk.set(t0.Add(time.Minute + time.Second))
	s.Tick(context.Background(), t0.Add(time.Minute+time.Second)) // fires; given up while producing
	if n := afterGivenUp.Load(); n > 0 {
		t.Fatalf("%d changelog record(s) of the schedule's state appended after its partition was given up", n)
	}
}
