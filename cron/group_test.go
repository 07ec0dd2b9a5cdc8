package cron_test

import (
	"context"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

type cronMember struct {
	m      *sagaztest.Member
	s      *cron.Scheduler
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *cronMember) stop() {
	c.cancel()
	<-c.done
	c.m.Stop()
}

// Three members run the same every-second schedule; only the owner of its
// cron partition publishes. The owner stops mid-way and another takes over.
// Every second in the run has exactly one saga: no tick lost, none doubled.
func TestOneSagaPerTickAcrossTheGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 30+ seconds of ticks; skipped with -short")
	}
	c := kafkatest.NewCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, "sagaz.cron"))
	seeds := c.ListenAddrs()
	reg := engine.NewRegistry()
	reg.Register(cronSaga("tick", "* * * * * *", engine.CronPolicy{CatchUp: engine.CatchUpAll}, nil))
	start := func() *cronMember {
		m := sagaztest.Start(t, seeds, group, "", reg, nil)
		prod := kafkatest.Client(t, seeds, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		s, err := cron.New(cron.Config{Routes: m.Engine.Routes(), Topic: "sagaz.cron", Partitions: 3, Producer: prod, Store: m.Store,
			Owns: func(p storage.Partition) bool {
				return m.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition})
			},
			Mirror: m.Changelog.AppendMeta, Logger: sagaztest.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cm := &cronMember{m: m, s: s, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(cm.done); _ = s.Run(ctx) }()
		return cm
	}
	members := []*cronMember{start(), start(), start()}
	owner := func() int {
		for i, cm := range members {
			if cm != nil && cm.s.Table(time.Now())[0].OwnedHere {
				return i
			}
		}
		return -1
	}
	kafkatest.WaitFor(t, 30*time.Second, "an owner", func() bool { return owner() >= 0 })
	begin := time.Now()
	kafkatest.WaitFor(t, 30*time.Second, "ten ticks", func() bool { return time.Since(begin) > 10*time.Second })
	first := owner()
	members[first].stop() // the owner goes away
	members[first] = nil
	kafkatest.WaitFor(t, 60*time.Second, "another owner", func() bool { return owner() >= 0 })
	kafkatest.WaitFor(t, 60*time.Second, "thirty ticks", func() bool { return time.Since(begin) > 31*time.Second })
	var all []*storage.Saga
	for _, cm := range members {
		if cm != nil {
			cm.m.WaitIdle(30 * time.Second)
			all = append(all, sagaztest.Sagas(t, cm.m.Store)...)
		}
	}
	// A saga whose partition moved is in several stores under one ID.
	ticks := map[time.Time]string{}
	for _, s := range all {
		var ev cron.TickEvent
		if err := json.Unmarshal(s.Context, &ev); err != nil {
			t.Fatal(err)
		}
		if prev, dup := ticks[ev.ScheduledAt]; dup && prev != s.ID() {
			t.Fatalf("tick %s started two sagas: %s and %s", ev.ScheduledAt, prev, s.ID())
		}
		ticks[ev.ScheduledAt] = s.ID()
	}
	var times []time.Time
	for tk := range ticks {
		times = append(times, tk)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	if len(times) < 30 {
		t.Fatalf("%d ticks started sagas, want at least 30", len(times))
	}
	for i := 1; i < len(times); i++ {
		if gap := times[i].Sub(times[i-1]); gap != time.Second {
			t.Fatalf("ticks %s and %s are %s apart: a tick was lost", times[i-1], times[i], gap)
		}
	}
	t.Logf("%d consecutive ticks, one saga each, across an owner change", len(times))
}
