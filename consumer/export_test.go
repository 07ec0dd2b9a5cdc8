package consumer

import (
	"context"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// SetExpireBetween sets a function a retention pass calls after it has
// listed the owned partitions and before it expires each (nil: none).
func SetExpireBetween(fn func(p storage.Partition)) { expireBetween = fn }

// SetExpireOutcomesNext sets a function a retention pass calls after it
// has expired a partition's sagas and before its event outcomes (nil:
// none).
func SetExpireOutcomesNext(fn func(p storage.Partition)) { expireOutcomesNext = fn }

// ExpirePass runs one retention pass with the given cutoff.
func (c *Consumer) ExpirePass(ctx context.Context, cutoff time.Time) { c.expire(ctx, cutoff) }

// GiveUp releases p as a revoke does (its changelog flushed).
func (c *Consumer) GiveUp(ctx context.Context, p storage.Partition) {
	c.release(ctx, map[string][]int32{p.Topic: {p.Partition}}, true)
}
