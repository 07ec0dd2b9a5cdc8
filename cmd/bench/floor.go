package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The Kafka floor: the broker traffic a member makes for each event, made
// by plain franz-go with no store, no engine and no encoding — the most any
// member could do on this machine and this broker, whatever its own code
// costs. For each event it consumes, the floor produces a start record to
// the keys topic (keyed by the event's key, as a keyed saga starts there);
// for each start record it consumes back, it produces -changelog records to
// the changelog partition of the start record's partition (one per
// transition a member mirrors: about 1 while ingesting, about 3.7 for a
// 3-step saga after coalescing); each poll's offsets are committed once
// that poll's records are acknowledged (acks=all, idempotent), in poll
// order, while the next poll is read (docs/benchmarks.md, *How each figure
// is measured*).

// Sizes like the member's records (measured from the bench saga's records).
const (
	floorStartBytes     = 200 // a start record: the event and the headers naming saga, trigger and origin
	floorChangelogBytes = 280 // a changelog record: the saga's record, its key a saga key
)

// runFloor is the floor's child process: it prints "assigned" once it is
// given partitions, then runs until killed.
func runFloor(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "seed brokers")
	topic := fs.String("topic", "", "the events topic")
	group := fs.String("group", "", "consumer group (its keys topic is <group>-keys, its changelog <group>-changelog)")
	perStart := fs.Int("changelog", 1, "changelog records per start record")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *perStart < 0 {
		return fmt.Errorf("-changelog %d: want 0 or more", *perStart)
	}
	return floorLoop(ctx, strings.Split(*brokers, ","), *topic, *group, *perStart, func() { fmt.Println("assigned") })
}

// floorLoop runs the floor's traffic until ctx ends; assigned is called
// once, when the group first gives it partitions.
func floorLoop(ctx context.Context, seeds []string, topic, group string, perStart int, assigned func()) error {
	keys, changelog := group+"-keys", group+"-changelog"
	var once sync.Once
	// The member's consumer settings (consumer.Config's defaults): its
	// fetch sizes bound how many records each poll and commit carries.
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic, keys),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(1<<20), kgo.FetchMaxPartitionBytes(256<<10),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			once.Do(assigned)
		}))
	if err != nil {
		return err
	}
	// The changelog's producer, as the member's: its own client, records
	// placed by partition, a 1 ms linger.
	chl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(time.Millisecond), kgo.MaxBufferedRecords(1<<20))
	if err != nil {
		cl.Close()
		return err
	}

	startValue := bytes.Repeat([]byte{'s'}, floorStartBytes)
	changeValue := bytes.Repeat([]byte{'c'}, floorChangelogBytes)
	// A poll's records, and the first error of their produces.
	type polled struct {
		recs []*kgo.Record
		wg   sync.WaitGroup
		mu   sync.Mutex
		err  error
	}
	done := func(p *polled) func(*kgo.Record, error) {
		return func(_ *kgo.Record, err error) {
			if err != nil {
				p.mu.Lock()
				if p.err == nil {
					p.err = err
				}
				p.mu.Unlock()
			}
			p.wg.Done()
		}
	}
	// The committer: each poll's offsets once its records are acknowledged,
	// in poll order; up to four polls in flight. A poll with a failed
	// produce is not committed: the committer stops with its error.
	commits := make(chan *polled, 4)
	committed := make(chan struct{})
	var commitErr error
	pollCtx, stopPolling := context.WithCancel(ctx) // a poll waiting for records ends when the committer stops
	defer stopPolling()
	go func() {
		defer close(committed)
		defer stopPolling()
		for p := range commits {
			p.wg.Wait()
			if p.err != nil {
				commitErr = fmt.Errorf("floor: produce: %w", p.err)
				return
			}
			if err := cl.CommitRecords(ctx, p.recs...); err != nil {
				commitErr = fmt.Errorf("floor: commit: %w", err)
				return
			}
		}
	}()
	stopped := func() error { // the committer's error once it has stopped
		<-committed
		return commitErr
	}
	defer func() {
		close(commits)
		// Records still buffered fail once ctx ends (they were produced
		// with it), and closing the clients fails the rest, so the
		// committer's wait for acks ends.
		chl.Close()
		cl.Close()
		<-committed
	}()
	for {
		// As a member's poll: at most MaxPollRecords (the consumer's
		// default, 10,000) records.
		fetches := cl.PollRecords(pollCtx, 10_000)
		if ctx.Err() != nil {
			return nil
		}
		if pollCtx.Err() != nil {
			return stopped()
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return errs[0].Err
		}
		recs := fetches.Records()
		if len(recs) == 0 {
			continue
		}
		p := &polled{recs: recs}
		for _, r := range recs {
			if r.Topic == keys {
				for i := range perStart {
					p.wg.Add(1)
					key := fmt.Appendf(nil, "bench/%d/%d/%d", r.Partition, r.Offset, i)
					chl.Produce(ctx, &kgo.Record{Topic: changelog, Partition: r.Partition, Key: key, Value: changeValue}, done(p))
				}
				continue
			}
			p.wg.Add(1)
			cl.Produce(ctx, &kgo.Record{Topic: keys, Key: r.Key, Value: startValue}, done(p))
		}
		select {
		case commits <- p:
		case <-committed:
			return stopped()
		case <-ctx.Done():
			return nil
		}
	}
}

// floor measures the Kafka floor of a backlog of n events with perStart
// changelog records per start; timed from the assignment to the last
// offset committed, as the member is.
func (d *driver) floor(ctx context.Context, name string, n, perStart int) (float64, error) {
	topic := "bench." + name + d.run
	group := "bench-" + name + d.run
	d.logf("%s: producing %d events", name, n)
	if err := d.produce(ctx, topic, "f", n); err != nil {
		return 0, err
	}
	for _, t := range []string{group + "-keys", group + "-changelog"} {
		if _, err := d.adm.CreateTopic(ctx, 6, 1, nil, t); err != nil {
			return 0, err
		}
	}
	f, err := d.start(ctx, "floor", "-brokers", strings.Join(d.seeds, ","), "-topic", topic, "-group", group,
		"-changelog", fmt.Sprint(perStart))
	if err != nil {
		return 0, err
	}
	defer f.kill()
	t0, c0 := time.Now(), d.cpuNow(f.cmd.Process.Pid)
	t1, err := waitFor(ctx, 10*time.Minute, "all offsets committed", func() (bool, error) {
		select {
		case err := <-f.done: // it failed (it runs until killed)
			f.done <- err // for kill
			return false, fmt.Errorf("the floor's process exited: %v", err)
		default:
		}
		return d.drained(ctx, group, topic, int64(n))
	})
	if err != nil {
		return 0, err
	}
	c1 := d.cpuNow(f.cmd.Process.Pid)
	rate := float64(n) / t1.Sub(t0).Seconds()
	d.logf("%s: %d events in %s: %.0f events/s", name, n, t1.Sub(t0).Round(time.Millisecond), rate)
	d.logf("  %s (the floor's process as the member)", c0.to(c1, n, "event"))
	return rate, nil
}
