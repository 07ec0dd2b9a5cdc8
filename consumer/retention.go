package consumer

import (
	"context"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// expireLoop deletes terminal sagas past the retention from the owned
// partitions, with tombstones in their changelog.
func (c *Consumer) expireLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.RetentionCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.expire(ctx, time.Now().Add(-c.cfg.Retention))
	}
}

// expireBetween, when set (tests), is called after a retention pass has
// listed the owned partitions and before it expires p; expireOutcomesNext,
// after it has expired p's sagas and before p's event outcomes.
var expireBetween, expireOutcomesNext func(p storage.Partition)

func (c *Consumer) expire(ctx context.Context, cutoff time.Time) {
	for _, p := range c.eng.Owned() {
		if expireBetween != nil {
			expireBetween(p)
		}
		c.expirePartition(ctx, p, cutoff)
	}
}

// WhileOwned runs fn holding expMu (for reading) if partition p is still
// owned here, and reports whether it did. release takes expMu before giving a partition
// up, so what fn writes to p's store and appends to p's changelog is done
// before the partition is released (and its changelog flushed) or not at
// all: a member appends no record of a partition it gave up, which would
// come after the next owner's (docs/architecture.md, changelog invariant
// 6). The retention loop deletes through it, and a member's cron
// scheduler records a schedule's state through it. fn must not wait for a
// rebalance.
func (c *Consumer) WhileOwned(p storage.Partition, fn func()) bool {
	c.expMu.RLock()
	defer c.expMu.RUnlock()
	if !c.eng.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition}) {
		return false
	}
	fn()
	return true
}

// expireBatch bounds the deletions of one retention transaction.
const expireBatch = 5000

func (c *Consumer) expirePartition(ctx context.Context, p storage.Partition, cutoff time.Time) {
	// The tombstones are appended inside the deleting transaction: before
	// any saga that takes a freed idempotency key is recorded and appended
	// (docs/architecture.md, changelog invariant 5). Not cancelled with
	// ctx: a cancelled wait leaves the deletion queued, and it would append
	// its tombstones after the changelog closed (Run waits for this loop
	// before that).
	if !c.expireInBatches(ctx, p, "expiring terminal sagas failed", func() (int, error) {
		gone, err := c.store.Expire(context.WithoutCancel(ctx), p, cutoff, expireBatch, c.changelog.AppendTombstone)
		c.m.Expired.Add(float64(len(gone)))
		return len(gone), err
	}) {
		return // given up meanwhile: its next owner expires it
	}
	if expireOutcomesNext != nil {
		expireOutcomesNext(p)
	}
	c.expireInBatches(ctx, p, "expiring event outcomes failed", func() (int, error) { // the outcomes of events go with the sagas
		keys, err := c.store.ExpireMeta(context.WithoutCancel(ctx), p, engine.OutcomePrefix, cutoff, expireBatch)
		for _, k := range keys {
			c.changelog.AppendMeta(p, k, nil)
		}
		return len(keys), err
	})
}

// expireInBatches runs del, a deletion of up to expireBatch records of p
// and the appending of their tombstones, through WhileOwned until it
// deletes fewer, fails (logged as failed) or ctx ends. It reports false
// when p was given up before a batch.
func (c *Consumer) expireInBatches(ctx context.Context, p storage.Partition, failed string, del func() (int, error)) bool {
	for ctx.Err() == nil {
		var (
			n   int
			err error
		)
		if !c.WhileOwned(p, func() { n, err = del() }) {
			return false
		}
		if err != nil {
			c.log.Error(failed, "partition", p.String(), "err", err)
			return true
		}
		if n < expireBatch {
			return true
		}
	}
	return true
}
