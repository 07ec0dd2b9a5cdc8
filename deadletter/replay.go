package deadletter

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
)

// Result is what Replay did with one dead letter.
type Result struct {
	Coord
	// Topic, ReplayPartition and ReplayOffset are where the replayed record
	// was produced (set when Error is empty).
	Topic           string `json:"topic,omitempty"`
	ReplayPartition int32  `json:"replay_partition"`
	ReplayOffset    int64  `json:"replay_offset"`
	// Error says why the dead letter was not replayed.
	Error string `json:"error,omitempty"`
}

// maxGap is the most records read past to reach the next wanted offset of
// the same partition before seeking instead.
const maxGap = 1000

// Replay produces each dead letter to the topic and partition it came from
// (headers sagaz.original.topic and sagaz.original.partition) with its
// original key, value and headers, without the sagaz.dlq.* and
// sagaz.original.* headers dead-lettering added, and with HeaderReplayOf
// naming the dead letter; acks=all. Results are in request order; a dead
// letter that is gone, has no original topic, or lost its value
// (sagaz.dlq.value_dropped) gets an Error and the others are replayed. The
// dead letters stay in the dead-letter topic.
//
// Nothing here de-duplicates: replaying a dead letter twice produces two
// records. What the consumer does with them is the trigger's rule: a
// trigger with an idempotency key starts one saga per key, a trigger
// without one starts a saga per record (each has its own position).
func (r *Reader) Replay(ctx context.Context, coords []Coord) ([]Result, error) {
	if len(coords) == 0 || len(coords) > MaxReplay {
		return nil, fmt.Errorf("%w: %d dead letters: want 1 to %d", ErrInvalidQuery, len(coords), MaxReplay)
	}
	seen := map[Coord]bool{}
	for _, c := range coords {
		if c.Partition < 0 || c.Offset < 0 {
			return nil, fmt.Errorf("%w: dead letter %s: negative partition or offset", ErrInvalidQuery, c)
		}
		if seen[c] {
			return nil, fmt.Errorf("%w: dead letter %s listed twice", ErrInvalidQuery, c)
		}
		seen[c] = true
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	starts, ends, err := r.offsets(ctx)
	if err != nil {
		return nil, err
	}
	results := make([]Result, len(coords))
	wanted := map[int32][]int64{}
	for i, c := range coords {
		results[i].Coord = c
		end, ok := ends[c.Partition]
		switch {
		case !ok:
			results[i].Error = fmt.Sprintf("%s has no partition %d", r.cfg.Topic, c.Partition)
		case c.Offset < starts[c.Partition] || c.Offset >= end:
			results[i].Error = fmt.Sprintf("no record at %s partition %d offset %d (it holds offsets %d to %d)", r.cfg.Topic, c.Partition, c.Offset,
				starts[c.Partition], end-1)
		default:
			wanted[c.Partition] = append(wanted[c.Partition], c.Offset)
		}
	}
	found, err := r.fetch(ctx, wanted)
	if err != nil {
		return nil, err
	}

	var recs []*kgo.Record
	idx := map[*kgo.Record]int{} // ProduceSync answers in completion order
	for i, c := range coords {
		if results[i].Error != "" {
			continue
		}
		dl, ok := found[c]
		if !ok {
			results[i].Error = fmt.Sprintf("no record at %s partition %d offset %d (deleted or compacted)", r.cfg.Topic, c.Partition, c.Offset)
			continue
		}
		rec, err := r.replayRecord(dl)
		if err != nil {
			results[i].Error = err.Error()
			continue
		}
		recs = append(recs, rec)
		idx[rec] = i
	}
	if len(recs) == 0 {
		return results, nil
	}
	opts := append(append([]kgo.Opt(nil), r.cfg.Client...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKafka, err)
	}
	defer cl.Close()
	for _, res := range cl.ProduceSync(ctx, recs...) {
		out := &results[idx[res.Record]]
		if res.Err != nil {
			out.Error = fmt.Sprintf("produce to %s partition %d: %v", res.Record.Topic, res.Record.Partition, res.Err)
			continue
		}
		out.Topic, out.ReplayPartition, out.ReplayOffset = res.Record.Topic, res.Record.Partition, res.Record.Offset
	}
	return results, nil
}

// replayRecord builds the record a dead letter replays as.
func (r *Reader) replayRecord(dl *kgo.Record) (*kgo.Record, error) {
	topic := header(dl, consumer.HeaderOrigTopic)
	if topic == "" {
		return nil, fmt.Errorf("dead letter %d/%d has no %s header: not written by sagaz", dl.Partition, dl.Offset, consumer.HeaderOrigTopic)
	}
	part, err := strconv.ParseInt(header(dl, consumer.HeaderOrigPartition), 10, 32)
	if err != nil || part < 0 {
		return nil, fmt.Errorf("dead letter %d/%d: bad %s header %q", dl.Partition, dl.Offset, consumer.HeaderOrigPartition,
			header(dl, consumer.HeaderOrigPartition))
	}
	if header(dl, consumer.HeaderValueDropped) == "true" {
		return nil, fmt.Errorf("dead letter %d/%d lost its value (it was too large for %s): nothing to replay; re-send the event from its source",
			dl.Partition, dl.Offset, r.cfg.Topic)
	}
	rec := &kgo.Record{Topic: topic, Partition: int32(part), Key: dl.Key, Value: dl.Value}
	for _, h := range dl.Headers {
		if !isAdded(h.Key) && h.Key != HeaderReplayOf {
			rec.Headers = append(rec.Headers, h)
		}
	}
	rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: HeaderReplayOf,
		Value: []byte(r.cfg.Topic + "/" + strconv.Itoa(int(dl.Partition)) + "/" + strconv.FormatInt(dl.Offset, 10))})
	return rec, nil
}

// fetch reads the records at the wanted offsets (each inside the log). A
// partition's offsets close to each other are read in one window; far ones
// in later rounds.
func (r *Reader) fetch(ctx context.Context, wanted map[int32][]int64) (map[Coord]*kgo.Record, error) {
	for p := range wanted {
		sort.Slice(wanted[p], func(i, j int) bool { return wanted[p][i] < wanted[p][j] })
	}
	found := map[Coord]*kgo.Record{}
	for len(wanted) > 0 {
		wins := map[int32]window{}
		want := map[Coord]bool{}
		for p, offs := range wanted {
			k := 1
			for k < len(offs) && offs[k]-offs[k-1] <= maxGap {
				k++
			}
			wins[p] = window{offs[0], offs[k-1] + 1}
			for _, o := range offs[:k] {
				want[Coord{p, o}] = true
			}
			if k == len(offs) {
				delete(wanted, p)
			} else {
				wanted[p] = offs[k:]
			}
		}
		if _, err := r.read(ctx, wins, func(rec *kgo.Record) {
			if c := (Coord{rec.Partition, rec.Offset}); want[c] {
				found[c] = rec
			}
		}); err != nil {
			return nil, err
		}
	}
	return found, nil
}
