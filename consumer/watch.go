package consumer

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// Progress and reachability, for a /readyz that tells the truth.
//
// A partition is stuck from the moment a batch of it could not be handled
// (its dead letters or changelog records were not acknowledged, the store
// failed, its fetches fail) until a batch of it is recorded. A partition
// stuck for longer than StallTimeout, or a batch in flight for that long,
// sets the "stalled" condition naming them. Every ProbeInterval the member
// asks the brokers for the end offsets of its topics: failure sets the
// "brokers" condition until a probe succeeds.

// stuck records that partition p could not make progress, and why.
func (c *Consumer) stuck(p storage.Partition, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.stuckSince[p]
	if !ok {
		s.since = time.Now()
	}
	s.why = why
	c.stuckSince[p] = s
}

// progressed records that partition p made progress (or is no longer ours).
// Called with c.mu held.
func (c *Consumer) progressedLocked(p storage.Partition) { delete(c.stuckSince, p) }

// noteFetchErrors records a poll's errors: a partition's error makes it
// stuck; an error of no partition (empty topic: the client's or the
// group's, e.g. UNKNOWN_MEMBER_ID after the session was lost) is the
// group's, held until a poll returns without one. The group's error held
// for StallTimeout sets the "group" condition.
func (c *Consumer) noteFetchErrors(fetches kgo.Fetches) {
	group := ""
	fetches.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
			return
		}
		if t == "" {
			group = err.Error()
			if ok, quiet := c.errLog.Allow("fetch-group"); ok {
				c.log.Warn("fetch error of the group member (the client rejoins and retries)", "group", c.cfg.Group, "err", err, "similar_lines_suppressed", quiet)
			}
			return
		}
		c.stuck(storage.Partition{Topic: t, Partition: p}, "fetch: "+err.Error())
		if ok, quiet := c.errLog.Allow("fetch"); ok {
			c.log.Warn("fetch error (the client retries)", "topic", t, "partition", p, "err", err, "similar_lines_suppressed", quiet)
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	if group == "" {
		c.groupSince, c.groupWhy = time.Time{}, ""
		return
	}
	if c.groupSince.IsZero() {
		c.groupSince = time.Now()
	}
	c.groupWhy = group
}

type stuckState struct {
	since time.Time
	why   string
}

// watch evaluates progress every second and probes the brokers every
// ProbeInterval, until ctx ends. It runs on its own goroutine (started and
// waited for by Run) and owns c.brokersDown.
func (c *Consumer) watch(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastProbe time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			c.evaluateStalls(now)
			if now.Sub(lastProbe) >= c.cfg.ProbeInterval {
				lastProbe = now
				c.probe(ctx)
			}
		}
	}
}

func (c *Consumer) evaluateStalls(now time.Time) {
	var stalled []string
	c.mu.Lock()
	for p, s := range c.stuckSince {
		if d := now.Sub(s.since); d >= c.cfg.StallTimeout {
			stalled = append(stalled, fmt.Sprintf("%s (no progress for %s: %s)", p, d.Round(time.Second), s.why))
		}
	}
	group := ""
	if !c.groupSince.IsZero() && now.Sub(c.groupSince) >= c.cfg.StallTimeout {
		group = fmt.Sprintf("fetching fails for the group member since %s: %s", c.groupSince.UTC().Format(time.RFC3339), c.groupWhy)
	}
	c.mu.Unlock()
	if group == "" {
		c.health.Clear(health.Group)
	} else {
		c.health.Set(health.Group, group)
	}
	at := c.recordingSince.Load()
	if m := c.mirroringSince.Load(); m != 0 && (at == 0 || m < at) {
		at = m // the older batch
	}
	if at != 0 {
		if d := now.Sub(time.Unix(0, at)); d >= c.cfg.StallTimeout {
			stalled = append(stalled, fmt.Sprintf("a batch has been waiting for the store and the changelog for %s", d.Round(time.Second)))
		}
	}
	if len(stalled) == 0 {
		c.health.Clear(health.Stalled)
		return
	}
	sort.Strings(stalled)
	c.health.Set(health.Stalled, strings.Join(stalled, "; "))
}

// probe asks the brokers for the end offsets of the consumed topics.
func (c *Consumer) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeInterval)
	defer cancel()
	lo, err := kadm.NewClient(c.cl).ListEndOffsets(pctx, c.topics...)
	if err == nil {
		err = lo.Error() // a partition the brokers could not answer for
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		c.brokersDown = true
		c.health.Set(health.Brokers, "cannot reach the brokers: "+err.Error())
		if ok, quiet := c.errLog.Allow("probe"); ok {
			c.log.Warn("cannot reach the brokers", "err", err, "similar_lines_suppressed", quiet)
		}
		return
	}
	if c.brokersDown {
		c.brokersDown = false
		c.log.Info("the brokers answer again")
	}
	c.health.Clear(health.Brokers)
}
