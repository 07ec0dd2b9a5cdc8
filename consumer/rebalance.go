package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

func (c *Consumer) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	// Restore each partition's state from its changelog, then let the engine
	// resume its sagas; fetching starts only after this callback.
	c.restoring.Add(int32(countParts(assigned)))
	c.m.Restoring.Set(float64(c.restoring.Load()))
	if len(assigned) > 0 {
		c.health.Set(health.Restoring, "restoring assigned partitions from their changelog: "+fmtParts(assigned))
	}
	for t, ps := range assigned {
		for _, pn := range ps {
			c.acquire(ctx, storage.Partition{Topic: t, Partition: pn}) // restore, then resume its sagas (refuse.go)
			c.restoring.Add(-1)
			c.m.Restoring.Set(float64(c.restoring.Load()))
		}
	}
	c.mu.Lock()
	n := 0
	for t, ps := range assigned {
		if c.owned[t] == nil {
			c.owned[t] = map[int32]bool{}
		}
		for _, p := range ps {
			c.owned[t][p] = true
			n++
		}
	}
	c.m.Partitions.Set(float64(countOwned(c.owned)))
	c.mu.Unlock()
	c.m.Rebalances.WithLabelValues("assigned").Inc()
	if c.restoring.Load() == 0 {
		c.health.Clear(health.Restoring)
	}
	c.health.Clear(health.Joining)
	c.joined.Store(true)
	c.log.Info("partitions assigned", "partitions", fmtParts(assigned), "count", n)
}

// restore brings p's local state up to date from its changelog, retrying
// until it succeeds or the client closes (a partition is not consumed on
// stale state). A changelog holding a record of a newer release, and a
// damaged store, are not retried: the error is returned at once.
func (c *Consumer) restore(ctx context.Context, p storage.Partition) error {
	cl := c.changelog
	wait := 200 * time.Millisecond
	for {
		start := time.Now()
		n, err := cl.Restore(ctx, c.cfg.Client, c.store, p)
		if errors.Is(err, storage.ErrNewerRecord) || errors.Is(err, storage.ErrDamaged) {
			// Retrying cannot help: a newer release's record (the
			// partition is refused), or a damaged store (the member stops,
			// and the next start moves the file aside).
			return err
		}
		if err == nil {
			el := time.Since(start)
			c.m.RestoreSeconds.Observe(el.Seconds())
			if n > 0 {
				c.log.Info("restored partition state from the changelog", "partition", p.String(), "records", n,
					"took", el.Round(time.Millisecond), "records_per_s", int(float64(n)/max(el.Seconds(), 1e-9)))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.log.Error("restoring a partition from its changelog failed; retrying", "partition", p.String(), "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(wait*2, 10*time.Second)
	}
}

// release stops running p's sagas here and puts their last state in the
// changelog (when flush is set), so the next owner restores it.
func (c *Consumer) release(ctx context.Context, parts map[string][]int32, flush bool) {
	for t, ps := range parts {
		for _, pn := range ps {
			p := storage.Partition{Topic: t, Partition: pn}
			// No retention pass or schedule deletes from p, or appends to
			// its changelog, once it is given up; one in progress ends
			// first, its records flushed below (WhileOwned). Taken before
			// ReleaseTimeout starts, which bounds the release itself.
			c.expMu.Lock()
			rctx, cancel := context.WithTimeout(ctx, c.cfg.ReleaseTimeout)
			c.replies.remove(rctx, p, flush) // no reply is handed on from here; how far they were handled is recorded
			err := c.eng.Release(rctx, p)
			c.expMu.Unlock()
			if err != nil {
				c.log.Error("partition given up with steps still running (they may run again on the next owner)", "partition", p.String(), "err", err)
			}
			if flush {
				if err := c.changelog.Flush(rctx, p); err != nil {
					c.log.Error("changelog flush of a revoked partition failed", "partition", p.String(), "err", err)
				}
			}
			c.changelog.Forget(p)
			cancel()
		}
	}
}

// revoked runs between polls (BlockRebalanceOnPoll): every batch polled is
// recorded. Stop the partitions' sagas, flush their changelog, commit what
// is left, then forget them.
func (c *Consumer) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if len(revoked) == 0 {
		return
	}
	c.release(ctx, revoked, true)
	c.unrefuse(revoked)
	c.mu.Lock()
	toCommit := map[string]map[int32]kgo.EpochOffset{}
	for t, ps := range revoked {
		for _, p := range ps {
			if eo, ok := c.uncommitted[t][p]; ok {
				if toCommit[t] == nil {
					toCommit[t] = map[int32]kgo.EpochOffset{}
				}
				toCommit[t][p] = eo
			}
		}
	}
	c.mu.Unlock()
	if len(toCommit) > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c.commitOffsets(cctx, cl, toCommit)
		cancel()
	}
	c.forget(revoked)
	c.m.Rebalances.WithLabelValues("revoked").Inc()
	c.log.Info("partitions revoked", "partitions", fmtParts(revoked))
}

// lost: the group moved on without us; commits would fail, so just forget.
func (c *Consumer) lost(ctx context.Context, _ *kgo.Client, lost map[string][]int32) {
	c.health.Set(health.Joining, "partitions lost (the group moved on without this member): rejoining "+c.cfg.Group)
	c.release(ctx, lost, false)
	c.unrefuse(lost)
	c.forget(lost)
	c.m.Rebalances.WithLabelValues("lost").Inc()
	c.log.Warn("partitions lost", "partitions", fmtParts(lost))
}

func (c *Consumer) forget(parts map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range parts {
		for _, p := range ps {
			delete(c.owned[t], p)
			delete(c.uncommitted[t], p)
			c.progressedLocked(storage.Partition{Topic: t, Partition: p}) // not ours to watch
		}
		if len(c.uncommitted[t]) == 0 {
			delete(c.uncommitted, t)
		}
	}
	c.m.Partitions.Set(float64(countOwned(c.owned)))
}

// adjust resumes each assigned partition from its committed offset. When
// the store is ahead of it (this member recorded sagas there and died, or
// lost the partition, before committing), those sagas may be missing from
// the changelog (recorded, then the process died before the changelog's
// acks): the partition is fetched again from the committed offset, the
// store recognises every saga (nothing starts twice), and each batch up to
// the store's next offset appends the stored sagas to the changelog again
// before its offsets are committed (mirror). Committing past them instead
// would strand them in this store if the partition moved before they ran.
// It may run while a batch of other partitions is in flight (reMu).
func (c *Consumer) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for t, ps := range offsets {
		for p, o := range ps {
			part := storage.Partition{Topic: t, Partition: p}
			next, ok, err := c.store.NextOffset(ctx, part)
			if err != nil {
				return nil, fmt.Errorf("read recorded offset of %s/%d: %w", t, p, err)
			}
			c.reMu.Lock()
			if committed := o.EpochOffset().Offset; ok && next > committed {
				c.log.Info("store ahead of the committed offset: fetching again from it, mirroring the recorded sagas to the changelog before committing", "topic", t, "partition", p, "committed", committed, "recorded", next)
				c.reappendUntil[part] = next
			} else {
				delete(c.reappendUntil, part)
			}
			c.reMu.Unlock()
		}
	}
	return offsets, nil
}

func countParts(m map[string][]int32) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

func countOwned(m map[string]map[int32]bool) int {
	n := 0
	for _, ps := range m {
		n += len(ps)
	}
	return n
}

func fmtParts(m map[string][]int32) string {
	s := ""
	for t, ps := range m {
		for _, p := range ps {
			if s != "" {
				s += ","
			}
			s += t + "/" + strconv.Itoa(int(p))
		}
	}
	return s
}
