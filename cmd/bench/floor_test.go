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

// floorDriver is a driver on an in-process kfake, and a context bounded
// to a minute.
func floorDriver(t *testing.T) (*driver, context.Context) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(6))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	d := &driver{seeds: c.ListenAddrs(), out: io.Discard}
	if d.cl, err = kgo.NewClient(kgo.SeedBrokers(d.seeds...), kgo.ProducerLinger(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.cl.Close)
	d.adm = kadm.NewClient(d.cl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return d, ctx
}

// The floor makes a member's broker traffic: one start record per event,
// perStart changelog records per start record, and commits every offset
// it consumed, of the events and of the keys topic.
func TestFloorMakesAMembersTraffic(t *testing.T) {
	d, ctx := floorDriver(t)

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

// A changelog record the broker refuses stops the floor with an error, and
// the poll that held it is not committed: a floor that failed cannot pass
// for a drained one.
func TestFloorStopsWithoutCommittingWhatItFailedToWrite(t *testing.T) {
	d, ctx := floorDriver(t)

	const n = 500
	topic, group := "floor.events", "floor-failing"
	if err := d.produce(ctx, topic, "f", n); err != nil {
		t.Fatal(err)
	}
	if _, err := d.adm.CreateTopic(ctx, 6, 1, nil, group+"-keys"); err != nil {
		t.Fatal(err)
	}
	// No changelog topic: every changelog record fails.
	err := floorLoop(ctx, d.seeds, topic, group, 1, func() {})
	if err == nil {
		t.Fatal("floorLoop returned no error with every changelog record refused")
	}
	got, err := d.committed(ctx, group, group+"-keys")
	if err != nil {
		t.Fatal(err)
	}
	if got != 0 {
		t.Errorf("%d start records committed although none was mirrored", got)
	}
}
