package consumer

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// An error of no partition in a poll (the group's: the session was lost)
// is reported as the "group" condition once it has lasted StallTimeout,
// never as a stuck partition, and clears when a poll returns without it.
func TestGroupFetchErrorIsTheGroupsAndClears(t *testing.T) {
	conds := health.New(nil)
	c := &Consumer{cfg: Config{StallTimeout: time.Second, Group: "g"}, health: conds, log: slog.New(slog.DiscardHandler),
		stuckSince: map[storage.Partition]stuckState{}, errLog: health.NewLogLimiter(time.Second)}
	c.noteFetchErrors(kgo.NewErrFetch(kerr.UnknownMemberID))
	c.evaluateStalls(time.Now().Add(2 * time.Second))
	if conds.Holds(health.Stalled) {
		t.Fatalf("a group error reported as a stalled partition: %v", conds.Err())
	}
	var nr *health.NotReady
	if !errors.As(conds.Err(), &nr) || len(nr.Conditions) != 1 || nr.Conditions[0].Name != health.Group ||
		!strings.Contains(nr.Conditions[0].Reason, "UNKNOWN_MEMBER_ID") {
		t.Fatalf("readiness: %v", conds.Err())
	}
	c.noteFetchErrors(kgo.Fetches{}) // the member fetches again
	c.evaluateStalls(time.Now().Add(2 * time.Second))
	if err := conds.Err(); err != nil {
		t.Fatalf("still not ready after a clean poll: %v", err)
	}
	// A partition's fetch error still makes that partition stuck.
	c.noteFetchErrors(kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: "t", Partitions: []kgo.FetchPartition{{Partition: 3, Err: kerr.NotLeaderForPartition}}}}}})
	c.evaluateStalls(time.Now().Add(2 * time.Second))
	if !conds.Holds(health.Stalled) || conds.Holds(health.Group) {
		t.Fatalf("a partition's error: %v", conds.Err())
	}
}
