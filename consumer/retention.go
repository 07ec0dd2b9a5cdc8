package consumer

import (
	"context"
	"time"

	"github.com/sagaz-go/sagaz/engine"
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

func (c *Consumer) expire(ctx context.Context, cutoff time.Time) {
	for _, p := range c.eng.Owned() {
		for ctx.Err() == nil {
			// The tombstones are appended inside the deleting transaction:
			// before any saga that takes a freed idempotency key is
			// recorded and appended (docs/architecture.md, changelog
			// invariant 5).
			// Not cancelled with ctx: a cancelled wait leaves the deletion
			// queued, and it would append its tombstones after the
			// changelog closed (Run waits for this loop before that).
			gone, err := c.store.Expire(context.WithoutCancel(ctx), p, cutoff, 5000, c.changelog.AppendTombstone)
			if err != nil {
				c.log.Error("expiring terminal sagas failed", "partition", p.String(), "err", err)
				break
			}
			c.m.Expired.Add(float64(len(gone)))
			if len(gone) < 5000 {
				break
			}
		}
		for ctx.Err() == nil { // the outcomes of events go with the sagas
			keys, err := c.store.ExpireMeta(context.WithoutCancel(ctx), p, engine.OutcomePrefix, cutoff, 5000) // as above
			if err != nil {
				c.log.Error("expiring event outcomes failed", "partition", p.String(), "err", err)
				break
			}
			for _, k := range keys {
				c.changelog.AppendMeta(p, k, nil)
			}
			if len(keys) < 5000 {
				break
			}
		}
	}
}
