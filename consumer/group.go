package consumer

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/storage"
)

// admin returns an admin client over the consumer's connection options.
func (c *Consumer) admin() (*kadm.Client, error) {
	cl, err := kgo.NewClient(c.cfg.Client...)
	if err != nil {
		return nil, err
	}
	return kadm.NewClient(cl), nil
}

// Owner names the group member that owns partition p ("" when unknown):
// its member id, client id and host, from the group's description.
func (c *Consumer) Owner(ctx context.Context, p storage.Partition) string {
	adm, err := c.admin()
	if err != nil {
		return ""
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	groups, err := adm.DescribeGroups(ctx, c.cfg.Group)
	if err != nil {
		return ""
	}
	g, ok := groups[c.cfg.Group]
	if !ok {
		return ""
	}
	for _, m := range g.Members {
		a, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		for _, t := range a.Topics {
			if t.Topic != p.Topic {
				continue
			}
			for _, pn := range t.Partitions {
				if pn == p.Partition {
					inst := ""
					if m.InstanceID != nil {
						inst = ", instance " + *m.InstanceID
					}
					return fmt.Sprintf("member %s (client %s%s, host %s)", m.MemberID, m.ClientID, inst, m.ClientHost)
				}
			}
		}
	}
	return ""
}

// Assignment returns the group's members and the partitions assigned to
// each (from the group's description), by group member id.
func (c *Consumer) Assignment(ctx context.Context) (map[string][]storage.Partition, error) {
	adm, err := c.admin()
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	groups, err := adm.DescribeGroups(ctx, c.cfg.Group)
	if err != nil {
		return nil, err
	}
	g, ok := groups[c.cfg.Group]
	if !ok {
		return nil, fmt.Errorf("group %s not described", c.cfg.Group)
	}
	if g.Err != nil {
		return nil, g.Err
	}
	out := map[string][]storage.Partition{}
	for _, m := range g.Members {
		ps := []storage.Partition{}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				for _, p := range t.Partitions {
					ps = append(ps, storage.Partition{Topic: t.Topic, Partition: p})
				}
			}
		}
		out[m.MemberID] = ps
	}
	return out, nil
}

// LagCollector exports the group's consumer lag per partition
// (sagaz_consumer_lag{topic,partition}), computed with kadm at scrape time.
func (c *Consumer) LagCollector() prometheus.Collector { return lagCollector{c} }

type lagCollector struct{ c *Consumer }

var lagDesc = prometheus.NewDesc("sagaz_consumer_lag", "Records not yet committed by the group, per partition (log end offset minus committed offset).",
	[]string{"topic", "partition"}, nil)

func (l lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (l lagCollector) Collect(ch chan<- prometheus.Metric) {
	adm, err := l.c.admin()
	if err != nil {
		return
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	lags, err := adm.Lag(ctx, l.c.cfg.Group)
	if err != nil {
		return
	}
	lags.Each(func(gl kadm.DescribedGroupLag) {
		for _, ml := range gl.Lag.Sorted() {
			if ml.Err != nil || ml.Lag < 0 {
				continue
			}
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(ml.Lag), ml.Topic, fmt.Sprint(ml.Partition))
		}
	})
}
