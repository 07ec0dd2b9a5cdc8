// Package kafkatest holds test helpers around kfake (the in-process
// Kafka-protocol broker) and franz-go: start a cluster, produce, read a
// topic back, and compare committed offsets with log end offsets.
package kafkatest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NewCluster starts a kfake cluster closed at the end of the test.
func NewCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Client returns a franz-go client for seeds, closed at the end of the test.
func Client(t testing.TB, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// shortClient is a client the caller closes (helpers called in polling
// loops must not pile up connections until the test ends).
func shortClient(t testing.TB, seeds []string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// Produce produces records synchronously (acks=all) and fails the test on
// any error.
func Produce(t testing.TB, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// EndOffsets returns the log end offset of each partition of topic.
func EndOffsets(t testing.TB, seeds []string, topic string) map[int32]int64 {
	t.Helper()
	adm := kadm.NewClient(shortClient(t, seeds))
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lo, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// Committed returns the group's committed offset of each partition of topic.
func Committed(t testing.TB, seeds []string, group, topic string) map[int32]int64 {
	t.Helper()
	adm := kadm.NewClient(shortClient(t, seeds))
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	os, err := adm.FetchOffsets(ctx, group)
	out := map[int32]int64{}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return out // nothing committed yet
	}
	if errors.Is(err, kerr.CoordinatorNotAvailable) || errors.Is(err, kerr.CoordinatorLoadInProgress) || errors.Is(err, kerr.NotCoordinator) {
		return out // the offsets topic is still being created; callers poll
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil {
			out[o.Partition] = o.At
		}
	})
	return out
}

// ReadAll reads every record of topic, from the start to the end offsets
// as they are now.
func ReadAll(t testing.TB, seeds []string, topic string) []*kgo.Record {
	t.Helper()
	end := EndOffsets(t, seeds, topic)
	total := int64(0)
	for _, o := range end {
		total += o
	}
	cl := Client(t, seeds, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for int64(len(out)) < total {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s: got %d of %d records: %v", topic, len(out), total, err)
		}
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// WaitProgress waits until count reaches want, failing the test when it
// has not risen for stall (something is stuck) or after limit in all. A
// slow machine (CI running several packages' tests on two cores) only
// makes it wait longer; a stuck pipeline fails it within stall, saying how
// far it got.
func WaitProgress(t testing.TB, stall, limit time.Duration, what string, want int64, count func() int64) {
	t.Helper()
	start := time.Now()
	last, since := count(), start
	for last < want {
		time.Sleep(10 * time.Millisecond)
		now, n := time.Now(), count()
		switch {
		case n > last:
			last, since = n, now
		case now.Sub(since) >= stall:
			t.Fatalf("%s: stuck at %d of %d for %s", what, n, want, stall)
		}
		if now.Sub(start) >= limit {
			t.Fatalf("%s: %d of %d after %s", what, n, want, limit)
		}
	}
}

// WaitCommittedAtEnd waits until group's committed offsets equal topic's
// log end offsets (as they are when called) on every partition.
func WaitCommittedAtEnd(t testing.TB, seeds []string, group, topic string, timeout time.Duration) {
	t.Helper()
	end := EndOffsets(t, seeds, topic)
	WaitFor(t, timeout, "committed offsets of "+group+" to reach the log end of "+topic, func() bool {
		c := Committed(t, seeds, group, topic)
		for p, o := range end {
			if c[p] != o {
				return false
			}
		}
		return true
	})
}

// WaitSettled waits until group has committed everything of topic and then
// everything of its keys topic (<group>-keys, if it exists): keyed sagas
// are recorded by the keys topic's partition that owns the key, after the
// event's own offset is committed.
func WaitSettled(t testing.TB, seeds []string, group, topic string, timeout time.Duration) {
	t.Helper()
	WaitCommittedAtEnd(t, seeds, group, topic, timeout)
	WaitCommittedAtEnd(t, seeds, group, group+"-keys", timeout)
}

// ReadCommitted reads topic from the start as a read_committed consumer
// sees it, up to its last stable offsets (control records left out).
func ReadCommitted(t testing.TB, seeds []string, topic string) []*kgo.Record {
	t.Helper()
	cl := Client(t, seeds)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	rd := Client(t, seeds, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	var out []*kgo.Record
	for len(want) > 0 {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: %v (left: %v)", topic, ctx.Err(), want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if end, ok := want[r.Partition]; ok && r.Offset >= end-1 {
				delete(want, r.Partition)
			}
		})
	}
	return out
}
