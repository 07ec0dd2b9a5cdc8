// Package roster tells the members of a consumer group where each other's
// HTTP API is, so that any member can answer for the whole group. Each
// member publishes an entry — its advertised URL and its group member id —
// to a compacted topic ("<group>-members", one partition) every Interval,
// and reads the topic from its start to keep every member's latest entry.
// A member that stops cleanly leaves a tombstone; a member that dies stops
// refreshing its entry, which is then stale after Expiry. Which partitions
// a member owns is the group's own truth (kadm DescribeGroups), not the
// roster's: the roster only maps a group member id to a URL.
package roster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Entry is one member's published entry.
type Entry struct {
	// Key identifies the member across restarts: its static group
	// instance id, or an id kept in its data directory.
	Key string `json:"key"`
	// URL is the member's advertised HTTP base URL (http://host:port).
	URL string `json:"url"`
	// MemberID is the member's current group member id ("" while joining).
	MemberID string    `json:"member_id"`
	Updated  time.Time `json:"updated"`
}

// Config configures a Roster.
type Config struct {
	// Client holds the Kafka connection options. Required.
	Client []kgo.Opt
	// Topic is the members topic (compacted, one partition). Required.
	Topic string
	// Self is this member's entry (Key and URL; MemberID comes from
	// MemberID at each publication).
	Self Entry
	// MemberID returns the member's current group member id.
	MemberID func() string
	// Interval between publications (default 5s); Expiry after which an
	// entry that was not refreshed is ignored (default 4 × Interval).
	Interval, Expiry time.Duration
	Logger           *slog.Logger
}

// Roster is the view of the group's members.
type Roster struct {
	cfg Config
	cl  *kgo.Client

	mu      sync.Mutex
	entries map[string]Entry
	now     func() time.Time
}

// New returns a roster; Run publishes and reads.
func New(cfg Config) (*Roster, error) {
	if len(cfg.Client) == 0 || cfg.Topic == "" || cfg.Self.Key == "" {
		return nil, errors.New("roster: Client, Topic and Self.Key are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = 4 * cfg.Interval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MemberID == nil {
		cfg.MemberID = func() string { return "" }
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), cfg.Client...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("roster: kafka client: %w", err)
	}
	return &Roster{cfg: cfg, cl: cl, entries: map[string]Entry{}, now: time.Now}, nil
}

// Run publishes this member's entry every Interval and reads the others'
// until ctx ends; then it publishes a tombstone (bounded) and closes.
func (r *Roster) Run(ctx context.Context) error {
	defer r.cl.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.read(ctx) }()
	// Publish every Interval, and at once when the group member id changes
	// (a join or rejoin), checked every poll (at most a second).
	poll := min(time.Second, r.cfg.Interval)
	t := time.NewTicker(poll)
	defer t.Stop()
	var last time.Time
	lastID := "\x00"
	for {
		if id := r.cfg.MemberID(); id != lastID || time.Since(last) >= r.cfg.Interval {
			r.publish(ctx)
			last, lastID = time.Now(), id
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			defer cancel()
			_ = r.cl.ProduceSync(tctx, &kgo.Record{Topic: r.cfg.Topic, Partition: 0, Key: []byte(r.cfg.Self.Key)}).FirstErr()
			return nil
		case <-t.C:
		}
	}
}

func (r *Roster) publish(ctx context.Context) {
	e := r.cfg.Self
	e.MemberID, e.Updated = r.cfg.MemberID(), r.now().UTC()
	v, _ := json.Marshal(e)
	r.note(e)
	pctx, cancel := context.WithTimeout(ctx, r.cfg.Interval)
	defer cancel()
	if err := r.cl.ProduceSync(pctx, &kgo.Record{Topic: r.cfg.Topic, Partition: 0, Key: []byte(e.Key), Value: v}).FirstErr(); err != nil && ctx.Err() == nil {
		r.cfg.Logger.Debug("roster: publishing this member's entry failed (retried)", "err", err)
	}
}

func (r *Roster) read(ctx context.Context) {
	for ctx.Err() == nil {
		fs := r.cl.PollFetches(ctx)
		fs.EachRecord(func(rec *kgo.Record) {
			if len(rec.Value) == 0 {
				r.mu.Lock()
				delete(r.entries, string(rec.Key))
				r.mu.Unlock()
				return
			}
			var e Entry
			if json.Unmarshal(rec.Value, &e) == nil && e.Key == string(rec.Key) {
				r.note(e)
			}
		})
	}
}

func (r *Roster) note(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.entries[e.Key]; !ok || !e.Updated.Before(old.Updated) {
		r.entries[e.Key] = e
	}
}

// Members returns the fresh entries (refreshed within Expiry), sorted by
// key; this member's own entry is always among them.
func (r *Roster) Members() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	cutoff := r.now().Add(-r.cfg.Expiry)
	out := make([]Entry, 0, len(r.entries))
	for _, e := range r.entries {
		if e.Key == r.cfg.Self.Key || e.Updated.After(cutoff) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// URLOf returns the advertised URL of the member with the given group
// member id, if its entry is fresh.
func (r *Roster) URLOf(memberID string) (string, bool) {
	if memberID == "" {
		return "", false
	}
	for _, e := range r.Members() {
		if e.MemberID == memberID {
			return e.URL, true
		}
	}
	return "", false
}
