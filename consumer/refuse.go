package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// Partitions refused for newer records. A mixed-version group (a rolling
// deploy, a rollback) can hand a member a partition whose changelog, or
// whose copy in the local store, holds a saga record of a format this
// release does not read (storage.ErrNewerRecord). The member must neither
// guess at it nor stop: it refuses that partition — no restore past it, no
// sagas run, no records fetched, nothing committed — and goes on with the
// others. The "incompatible" readiness condition names the partitions,
// sagaz_partitions_refused counts them, and an error is logged once per
// assignment. The partition is looked at again when it is assigned again
// (to a member of the newer release, in the course of the deploy).

// refuse takes an assigned partition out of this member's work: it is not
// fetched until it is revoked.
func (c *Consumer) refuse(p storage.Partition, cause error) {
	c.mu.Lock()
	c.refused[p] = cause.Error()
	c.nRefused.Store(int32(len(c.refused)))
	reason := c.refusedReasonLocked()
	c.m.Refused.Set(float64(len(c.refused)))
	c.mu.Unlock()
	c.cl.PauseFetchPartitions(map[string][]int32{p.Topic: {p.Partition}})
	c.health.Set(health.Incompatible, reason)
	c.log.Error("partition refused: it holds records written by a newer release; the other partitions go on",
		"partition", p.String(), "err", cause,
		"action", "finish the deploy of the newer release (its members take the partition), or see docs/upgrading.md")
}

// unrefuse forgets the refusal of partitions this member no longer owns,
// and lets them be fetched again when they come back.
func (c *Consumer) unrefuse(parts map[string][]int32) {
	c.mu.Lock()
	resume := map[string][]int32{}
	for t, ps := range parts {
		for _, pn := range ps {
			p := storage.Partition{Topic: t, Partition: pn}
			if _, ok := c.refused[p]; ok {
				delete(c.refused, p)
				resume[t] = append(resume[t], pn)
			}
		}
	}
	c.nRefused.Store(int32(len(c.refused)))
	reason := c.refusedReasonLocked()
	c.m.Refused.Set(float64(len(c.refused)))
	c.mu.Unlock()
	if len(resume) == 0 {
		return
	}
	c.cl.ResumeFetchPartitions(resume)
	if reason == "" {
		c.health.Clear(health.Incompatible)
	} else {
		c.health.Set(health.Incompatible, reason)
	}
}

// isRefused reports whether p is refused here (no lock taken while none
// is: the poll loop asks for every partition of every batch).
func (c *Consumer) isRefused(p storage.Partition) bool {
	if c.nRefused.Load() == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.refused[p]
	return ok
}

// Refused lists the partitions refused here and why.
func (c *Consumer) Refused() map[storage.Partition]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[storage.Partition]string, len(c.refused))
	for p, why := range c.refused {
		out[p] = why
	}
	return out
}

func (c *Consumer) refusedReasonLocked() string {
	if len(c.refused) == 0 {
		return ""
	}
	ps := make([]string, 0, len(c.refused))
	for p := range c.refused {
		ps = append(ps, p.String())
	}
	sort.Strings(ps)
	return fmt.Sprintf("partitions %s hold records written by a newer release (a record format this release does not read): they are not consumed here; finish the deploy of the newer release (docs/upgrading.md)",
		strings.Join(ps, ", "))
}

// acquire restores an assigned partition and lets the engine resume its
// sagas; a partition holding newer records is refused instead.
func (c *Consumer) acquire(ctx context.Context, p storage.Partition) {
	if err := c.restore(ctx, p); err != nil {
		if errors.Is(err, storage.ErrNewerRecord) {
			c.refuse(p, err)
		}
		return
	}
	n, err := c.eng.Acquire(ctx, p)
	switch {
	case errors.Is(err, storage.ErrNewerRecord):
		// The sagas queued before the scan met the record (readable ones)
		// may have started: let their running steps end, as on a revoke.
		rctx, cancel := context.WithTimeout(ctx, c.cfg.ReleaseTimeout)
		if rerr := c.eng.Release(rctx, p); rerr != nil {
			c.log.Error("releasing a refused partition", "partition", p.String(), "err", rerr)
		}
		cancel()
		c.refuse(p, fmt.Errorf("the local store: %w", err))
	case err != nil:
		c.log.Error("resuming the sagas of an assigned partition failed", "partition", p.String(), "err", err)
	case n > 0:
		c.log.Info("resumed unfinished sagas", "partition", p.String(), "sagas", n)
	}
	if err == nil || !errors.Is(err, storage.ErrNewerRecord) {
		c.replies.add(ctx, p) // the replies to its waiting sagas, from where they were handled (replies.go)
	}
}
