package consumer

import (
	"context"
	"fmt"
	"sort"

	"github.com/sagaz-go/sagaz/storage"
)

// GroupInfo describes the consumer group as the console shows it.
type GroupInfo struct {
	Group string `json:"group"`
	// State is the group's state as the coordinator reports it (Stable,
	// PreparingRebalance, Empty, ...).
	State   string         `json:"state"`
	Members []MemberInfo   `json:"members"`
	Lag     []PartitionLag `json:"lag"`
}

// MemberInfo is one member of the group and the partitions assigned to it.
type MemberInfo struct {
	MemberID   string              `json:"member_id"`
	InstanceID string              `json:"instance_id,omitempty"`
	ClientID   string              `json:"client_id"`
	Host       string              `json:"host"`
	Partitions []storage.Partition `json:"partitions"`
	// Self is true for the member answering.
	Self bool `json:"self"`
}

// PartitionLag is the group's lag on one partition: the log end offset
// minus the committed offset (-1 when either is unknown).
type PartitionLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Committed int64  `json:"committed"`
	End       int64  `json:"end"`
	Lag       int64  `json:"lag"`
	MemberID  string `json:"member_id,omitempty"`
}

// Describe returns the group's members, their partitions and the lag per
// partition: one kadm Lag call (DescribeGroups, ListOffsets, OffsetFetch)
// on a short-lived client, bounded by ctx.
func (c *Consumer) Describe(ctx context.Context) (GroupInfo, error) {
	adm, err := c.admin()
	if err != nil {
		return GroupInfo{}, err
	}
	defer adm.Close()
	lags, err := adm.Lag(ctx, c.cfg.Group)
	if err != nil {
		return GroupInfo{}, fmt.Errorf("describe group %s: %w", c.cfg.Group, err)
	}
	gl, ok := lags[c.cfg.Group]
	if !ok {
		return GroupInfo{}, fmt.Errorf("describe group %s: not in the answer", c.cfg.Group)
	}
	if err := gl.Error(); err != nil {
		return GroupInfo{}, fmt.Errorf("describe group %s: %w", c.cfg.Group, err)
	}
	self := ""
	// c.cl is set before the first assignment sets joined (and never
	// without topics to consume).
	if c.joined.Load() && c.cl != nil {
		self, _ = c.cl.GroupMetadata()
	}
	out := GroupInfo{Group: gl.Group, State: gl.State, Members: []MemberInfo{}, Lag: []PartitionLag{}}
	for _, m := range gl.Members {
		mi := MemberInfo{MemberID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost, Self: m.MemberID == self, Partitions: []storage.Partition{}}
		if m.InstanceID != nil {
			mi.InstanceID = *m.InstanceID
		}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				for _, p := range t.Partitions {
					mi.Partitions = append(mi.Partitions, storage.Partition{Topic: t.Topic, Partition: p})
				}
			}
		}
		sort.Slice(mi.Partitions, func(i, j int) bool {
			a, b := mi.Partitions[i], mi.Partitions[j]
			return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
		})
		out.Members = append(out.Members, mi)
	}
	for _, l := range gl.Lag.Sorted() {
		pl := PartitionLag{Topic: l.Topic, Partition: l.Partition, Committed: l.Commit.At, End: l.End.Offset, Lag: l.Lag}
		if l.Err != nil {
			pl.Lag = -1
		}
		if l.Member != nil {
			pl.MemberID = l.Member.MemberID
		}
		out.Lag = append(out.Lag, pl)
	}
	return out, nil
}
