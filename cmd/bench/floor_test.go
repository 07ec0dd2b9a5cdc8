package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The floor makes a member's broker traffic: one start record per event,
// perStart changelog records per start record, and commits every offset
// it consumed, of the events and of the keys topic.
func TestFloorMakesAMembersTraffic(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(6))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d := &driver{seeds: c.ListenAddrs(), out: io.Discard}
	if d.cl, err = kgo.NewClient(kgo.SeedBrokers(d.seeds...), kgo.ProducerLinger(0)); err != nil {
		t.Fatal(err)
	}
	defer d.cl.Close()
	d.adm = kadm.NewClient(d.cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const n, perStart = 3000, 3
	topic, group := "floor.events", "floor-group"
	if err := d.produce(ctx, topic, "f", n); err != nil {
		t.Fatal(err)
	}
	for _, tp := range []string{group + "-keys", group + "-changelog"} {
		if _, err := d.adm.CreateTopic(ctx, 6, 1, nil, tp); err != nil {
			t.Fatal(err)
		}
	}
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- floorLoop(loopCtx, d.seeds, topic, group, perStart, func() {}) }()
	if _, err := waitFor(ctx, 50*time.Second, "the floor to commit everything", func() (bool, error) {
		return d.drained(ctx, group, topic, n)
	}); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("floorLoop: %v", err)
	}
	for tp, want := range map[string]int64{group + "-keys": n, group + "-changelog": n * perStart} {
		got, err := d.ended(ctx, tp)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s holds %d records, want %d", tp, got, want)
		}
	}
}
