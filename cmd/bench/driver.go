package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type sizes struct {
	ingest, complete, backlog int
	transfers, waiting        int
	latencyFor                time.Duration
	loads                     []load
}

// load is a latency phase: events produced at a fraction of the completion
// capacity measured just before, with its p99 target.
type load struct {
	fraction float64
	p99      time.Duration
	rate     int // fixed events/s instead of the fraction (-latency-rates, for A/B experiments; no target)
}

// The latency phases: 50% and 80% of the measured completion capacity.
var loads = []load{{fraction: 0.5, p99: 20 * time.Millisecond}, {fraction: 0.8, p99: 50 * time.Millisecond}}

// Targets, as ratios to the baseline measured in the same run.
const (
	ingestTarget     = 0.10
	completionTarget = 0.025
	restoreTarget    = 0.10
)

// Row is one line of the result table.
type Row struct {
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Text   string  `json:"text"`
	Target string  `json:"target"`
	Ratio  string  `json:"ratio_to_baseline,omitempty"`
	Met    *bool   `json:"target_met,omitempty"`
	// ratio is Ratio's value (0: none), by which -runs picks the median.
	ratio float64
}

// Report is what -json writes.
type Report struct {
	Machine map[string]string `json:"machine"`
	Mode    string            `json:"mode"`
	Rows    []Row             `json:"rows"`
	Runs    int               `json:"runs"`
	Started time.Time         `json:"started"`
	Took    string            `json:"took"`
}

type driver struct {
	self         string
	dataDir      string
	seeds        []string
	adm          *kadm.Client
	cl           *kgo.Client
	profile      string
	out          io.Writer
	profilePhase string
	// memberArgs are extra flags for the memory run's member (experiments).
	memberArgs []string
	// run names this run's topics and groups apart from other runs'.
	run string
	// memLimit is every member's soft memory limit (GOMEMLIMIT), as
	// docs/operations.md recommends deploying; empty: none.
	memLimit string
	// randomIDs: events' ids (the sagas' idempotency keys) in random order
	// instead of clustered (-random-ids).
	randomIDs bool
	// brokerPID is the broker process's, for its CPU time (cpu.go).
	brokerPID int
}

// eventID is the id of a phase's i-th event: prefix-i, in decimal — not
// growing in byte order (c-99 sorts after c-100), but a batch's ids sort in
// a few clusters — or with -random-ids a 64-bit mix of i in hex, up to 16
// digits, in random order (as UUIDv4s or hashes land in the idempotency
// index; shorter than a UUID).
func (d *driver) eventID(prefix string, i int) string {
	if !d.randomIDs {
		return prefix + "-" + strconv.Itoa(i)
	}
	z := uint64(i) + 0x9e3779b97f4a7c15 // splitmix64
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return prefix + "-" + strconv.FormatUint(z^(z>>31), 16)
}

func runDriver(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	full := fs.Bool("full", false, "the long run (bigger backlogs, longer latency phases)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	dataDir := fs.String("data", "", "working directory (default: a temporary one, removed afterwards)")
	profile := fs.String("cpuprofile", "", "write a CPU profile of the member of -profile-phase to this file")
	profilePhase := fs.String("profile-phase", "ingest", "phase whose member -cpuprofile profiles: ingest, completion, restore or commands")
	only := fs.String("only", "", "run only these phases (comma-separated: baseline, ingest, completion, python, memory, commands, waiting, floor)")
	memLimit := fs.String("memory-limit", "150MiB", "every member's soft memory limit (GOMEMLIMIT, as docs/operations.md recommends; empty: none)")
	memberArgs := fs.String("member-args", "", "extra flags for the memory run's member (space-separated), for experiments")
	runs := fs.Int("runs", 1, "run every phase this many times and report each figure's median (the targets are judged on -runs 3)")
	latencyFor := fs.Duration("latency-for", 0, "how long each latency phase produces (default 5s, 30s with -full)")
	randomIDs := fs.Bool("random-ids", false, "give every phase's events (and so sagas' idempotency keys) ids in random order (16 hex digits, like UUIDv4s but shorter) instead of decimal counters, which sort in clusters: what random keys cost ingest (docs/operations.md, Speed)")
	latencyRates := fs.String("latency-rates", "", "produce the latency phases at these fixed rates (events/s, comma-separated) instead of 50% and 80% of the measured completion capacity: for comparing two builds at the same load (no targets judged)")
	py := pythonFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 {
		return fmt.Errorf("-runs %d: want at least 1", *runs)
	}
	sz := sizes{ingest: 300_000, complete: 200_000, backlog: 1_000_000, latencyFor: 5 * time.Second, loads: loads,
		transfers: 20_000, waiting: 1_000_000}
	mode := "quick"
	if *full {
		sz = sizes{ingest: 1_000_000, complete: 1_000_000, backlog: 1_000_000, latencyFor: 30 * time.Second, loads: loads,
			transfers: 100_000, waiting: 1_000_000}
		mode = "full"
	}
	if *latencyFor < 0 {
		return fmt.Errorf("-latency-for %s: want a positive duration", *latencyFor)
	} else if *latencyFor > 0 {
		sz.latencyFor = *latencyFor
	}
	if *latencyRates != "" {
		sz.loads = nil
		for _, f := range strings.Split(*latencyRates, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r < 1 {
				return fmt.Errorf("-latency-rates %q: want positive whole events/s, comma-separated", *latencyRates)
			}
			sz.loads = append(sz.loads, load{rate: r})
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "sagaz-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	d := &driver{self: self, dataDir: dir, profile: *profile, out: os.Stderr, memberArgs: strings.Fields(*memberArgs), profilePhase: *profilePhase, memLimit: *memLimit, randomIDs: *randomIDs}
	started := time.Now()
	machine := describeMachine(dir)
	machine["member_memory_limit"] = *memLimit
	if *randomIDs {
		machine["event_ids"] = "random"
	}
	d.logf("machine: %v", machine)

	phase := func(name string) bool { return *only == "" || strings.Contains(","+*only+",", ","+name+",") }
	var all [][]Row
	for i := range *runs {
		if *runs > 1 {
			d.run = fmt.Sprintf(".r%d", i+1)
			d.logf("run %d of %d", i+1, *runs)
		}
		rows, err := d.withBroker(ctx, func() ([]Row, error) { return d.runOnce(ctx, sz, phase, py) })
		if err != nil {
			return err
		}
		all = append(all, rows)
	}
	rows := medianRows(all)

	rep := Report{Machine: machine, Mode: mode, Rows: rows, Runs: *runs, Started: started, Took: time.Since(started).Round(time.Second).String()}
	printTable(os.Stdout, rep)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// withBroker runs fn with a broker of its own: each run of -runs starts
// with an empty kfake (which keeps every record in its heap: the millions
// an earlier run's memory and waiting phases produce would weigh on the
// later runs' phases) and stops it afterwards.
func (d *driver) withBroker(ctx context.Context, fn func() ([]Row, error)) ([]Row, error) {
	broker, err := d.start(ctx, "broker")
	if err != nil {
		return nil, err
	}
	defer broker.stop()
	d.seeds, d.brokerPID = []string{broker.addr}, broker.cmd.Process.Pid
	if d.cl, err = kgo.NewClient(kgo.SeedBrokers(d.seeds...), kgo.ProducerLinger(0), kgo.MaxBufferedRecords(100_000)); err != nil {
		return nil, err
	}
	defer d.cl.Close()
	d.adm = kadm.NewClient(d.cl)
	return fn()
}

// runOnce runs the chosen phases once; every ratio is to this run's
// baseline.
func (d *driver) runOnce(ctx context.Context, sz sizes, phase func(string) bool, py *pyConfig) ([]Row, error) {
	var rows []Row
	var base, compRate float64
	if phase("baseline") {
		var err error
		if base, err = d.baseline(ctx, sz.ingest); err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		rows = append(rows, Row{Figure: "baseline: franz-go group consume + commit per poll", Value: base, Unit: "records/s", Target: "—", Ratio: "1", ratio: 1})
	}
	if phase("ingest") {
		ingest, err := d.ingest(ctx, sz.ingest)
		if err != nil {
			return nil, fmt.Errorf("ingest: %w", err)
		}
		rows = append(rows, ratioRow(Row{Figure: "ingest: event → saga recorded → offset committed (keyed: through the keys topic)", Value: ingest, Unit: "events/s"}, base, ingestTarget))
	}
	if phase("completion") {
		comp, lat, err := d.completion(ctx, sz)
		if err != nil {
			return nil, fmt.Errorf("completion: %w", err)
		}
		rows = append(rows, ratioRow(Row{Figure: "completion: 3-step saga, every transition durable", Value: comp, Unit: "sagas/s"}, base, completionTarget))
		rows = append(rows, lat...)
		compRate = comp
	}
	if phase("floor") { // what the broker traffic alone allows (floor.go)
		for _, f := range []struct {
			name, figure string
			perStart     int
			want         float64
		}{
			{"floor-ingest", "Kafka floor of ingest: event → start record → 1 changelog record → offset committed, plain franz-go, no store", 1, ingestTarget},
			{"floor-completion", "Kafka floor of completion: as above with 4 changelog records per start", 4, completionTarget},
		} {
			rate, err := d.floor(ctx, f.name, sz.ingest, f.perStart)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
			r := ratioRow(Row{Figure: f.figure, Value: rate, Unit: "events/s"}, base, f.want)
			r.Target, r.Met = "— (reported; the target it bounds: "+r.Target+")", nil
			rows = append(rows, r)
		}
	}
	if phase("python") { // Python Sagaz's trigger path and "× Sagaz"; skipped with a row if Python is missing
		rows = append(rows, pythonSagaz(ctx, py, compRate, d.logf)...)
	}
	if phase("memory") {
		mem, restart, err := d.memoryAndRestart(ctx, sz.backlog)
		if err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
		rows = append(rows, mem, restart)
		rs, err := d.restore(ctx, sz.backlog)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		rows = append(rows, ratioRow(rs, base, restoreTarget))
	}
	if phase("commands") {
		rt, err := d.commands(ctx, sz.transfers)
		if err != nil {
			return nil, fmt.Errorf("commands: %w", err)
		}
		r := Row{Figure: "command round trips: command → demo participant (transaction) → reply → saga moved on, every transition durable",
			Value: rt, Unit: "round trips/s", Target: "— (reported)"}
		if base > 0 {
			r.ratio, r.Ratio = rt/base, ratio(rt, base)
		}
		rows = append(rows, r)
	}
	if phase("waiting") {
		row, err := d.waiting(ctx, sz.waiting)
		if err != nil {
			return nil, fmt.Errorf("waiting: %w", err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// ratioRow sets a row's ratio to the baseline and judges it against want
// (no judgement without a baseline in the run).
func ratioRow(r Row, base, want float64) Row {
	r.Target = fmt.Sprintf("≥ %s× baseline", strconv.FormatFloat(want, 'f', -1, 64))
	if base > 0 {
		r.ratio = r.Value / base
		r.Ratio = ratio(r.Value, base)
		r.Met = met(r.ratio >= want)
	}
	return r
}

// medianRows merges the runs' rows figure by figure: each figure's row is
// the run's with the median ratio (the median value for rows without one,
// and for the baseline, whose ratio is 1 in every run).
func medianRows(runs [][]Row) []Row {
	if len(runs) == 1 {
		return runs[0]
	}
	var order []string
	by := map[string][]Row{}
	for _, rows := range runs {
		for _, r := range rows {
			if _, seen := by[r.Figure]; !seen {
				order = append(order, r.Figure)
			}
			by[r.Figure] = append(by[r.Figure], r)
		}
	}
	out := make([]Row, 0, len(order))
	for _, f := range order {
		rs := by[f]
		sort.SliceStable(rs, func(i, j int) bool {
			if rs[i].ratio != rs[j].ratio {
				return rs[i].ratio < rs[j].ratio
			}
			return rs[i].Value < rs[j].Value // no ratio, or the same (the baseline's is always 1)
		})
		m := rs[len(rs)/2]
		if m.Text == "" { // the value is printed from Value and Unit: keep it
			m.Text = fmt.Sprintf("%s %s", humanize(m.Value), m.Unit)
		}
		m.Text = strings.TrimSpace(m.Text + fmt.Sprintf(" (median of %d runs)", len(rs)))
		out = append(out, m)
	}
	return out
}

func met(b bool) *bool { return &b }

func ratio(v, base float64) string {
	if base <= 0 {
		return "—"
	}
	if r := v / base; r < 0.1 {
		return fmt.Sprintf("%.3f", r)
	}
	return fmt.Sprintf("%.2f", v/base)
}

func (d *driver) logf(format string, a ...any) { fmt.Fprintf(d.out, "bench: "+format+"\n", a...) }

// child is a process of this binary running a subcommand.
type child struct {
	cmd  *exec.Cmd
	addr string // the first line it printed
	done chan error
}

func (d *driver) start(ctx context.Context, args ...string) (*child, error) {
	cmd := exec.Command(d.self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			line <- strings.TrimSpace(sc.Text())
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { c.done <- cmd.Wait() }()
	select {
	case c.addr = <-line:
		if c.addr == "" {
			return nil, fmt.Errorf("%s: exited before starting", args[0])
		}
	case <-time.After(60 * time.Second):
		c.kill()
		return nil, fmt.Errorf("%s: did not start", args[0])
	case <-ctx.Done():
		c.kill()
		return nil, ctx.Err()
	}
	return c, nil
}

func (c *child) kill() { _ = c.cmd.Process.Kill(); <-c.done }

// stop sends SIGTERM and waits (killing after 30s).
func (c *child) stop() error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		return err
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return errors.New("killed after 30s")
	}
}

// produce writes n records {"id": eventID(prefix, i), ...} to topic, keyed
// by id.
func (d *driver) produce(ctx context.Context, topic, prefix string, n int) error {
	id := func(i int) string { return d.eventID(prefix, i) }
	return d.produceJSON(ctx, topic, n, id, func(i int) string {
		return `{"id":"` + id(i) + `","amount":12.5,"customer":"c-` + strconv.Itoa(i%1000) + `"}`
	})
}

// baseline: a plain franz-go group consumer committing per poll, doing
// nothing else. Timed from the first records to the last commit.
func (d *driver) baseline(ctx context.Context, n int) (float64, error) {
	topic := "bench.baseline" + d.run
	d.logf("baseline: producing %d records", n)
	if err := d.produce(ctx, topic, "b", n); err != nil {
		return 0, err
	}
	// Timed from the assignment (when fetching starts), as the member is
	// timed from its readiness (which is its assignment).
	assigned := make(chan time.Time, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(d.seeds...), kgo.ConsumerGroup("bench-baseline"+d.run), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(16<<20),
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {
			select {
			case assigned <- time.Now():
			default:
			}
		}))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var got int
	for got < n {
		fs := cl.PollRecords(ctx, 10000)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if k := fs.NumRecords(); k > 0 {
			got += k
			if err := cl.CommitUncommittedOffsets(ctx); err != nil {
				return 0, err
			}
		}
	}
	el := time.Since(<-assigned)
	rate := float64(n) / el.Seconds()
	d.logf("baseline: %d records in %s: %.0f records/s", n, el.Round(time.Millisecond), rate)
	return rate, nil
}

func (d *driver) profileArgs(phase string) []string {
	if d.profile == "" || d.profilePhase != phase {
		return nil
	}
	return []string{"-cpuprofile", d.profile}
}

func (d *driver) member(ctx context.Context, name, topic string, extra ...string) (*child, error) {
	args := append([]string{"member", "-brokers", strings.Join(d.seeds, ","), "-topic", topic, "-group", "bench-" + name + d.run,
		"-data-dir", filepath.Join(d.dataDir, name+d.run)}, extra...)
	if d.memLimit != "" {
		args = append(args, "-memory-limit", d.memLimit)
	}
	return d.start(ctx, args...)
}

// waitFor polls cond every 2ms until it holds (or the deadline passes).
func waitFor(ctx context.Context, deadline time.Duration, what string, cond func() (bool, error)) (time.Time, error) {
	end := time.Now().Add(deadline)
	for {
		ok, err := cond()
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if time.Now().After(end) {
			return time.Time{}, fmt.Errorf("timed out after %s waiting for %s", deadline, what)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// committed sums group's committed offsets on topic.
func (d *driver) committed(ctx context.Context, group, topic string) (int64, error) {
	os, err := d.adm.FetchOffsets(ctx, group)
	if errors.Is(err, kerrGroupNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var sum int64
	os.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			sum += max(o.At, 0)
		}
	})
	return sum, nil
}

// ended sums topic's log end offsets.
func (d *driver) ended(ctx context.Context, topic string) (int64, error) {
	os, err := d.adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var sum int64
	os.Each(func(o kadm.ListedOffset) { sum += max(o.Offset, 0) })
	return sum, nil
}

// drained reports whether group has committed all n events of topic and
// every start they forwarded to its keys topic (each keyed saga starts
// in the partition of <group>-keys that owns its key).
func (d *driver) drained(ctx context.Context, group, topic string, n int64) (bool, error) {
	if c, err := d.committed(ctx, group, topic); err != nil || c < n {
		return false, err
	}
	keys := group + "-keys"
	end, err := d.ended(ctx, keys)
	if err != nil || end < n {
		return false, err
	}
	c, err := d.committed(ctx, group, keys)
	return c >= end, err
}

// ingest: the member drains a backlog with execution held to one saga at a
// time (so the figure is the recording path); timed from its first
// consumed record to the commit of the last.
func (d *driver) ingest(ctx context.Context, n int) (float64, error) {
	topic := "bench.ingest" + d.run
	d.logf("ingest: producing %d events", n)
	if err := d.produce(ctx, topic, "i", n); err != nil {
		return 0, err
	}
	extra := append(append([]string{"-max-concurrent", "1", "-high-water", strconv.Itoa(n + 1)}, d.profileArgs("ingest")...), d.memberArgs...)
	m, err := d.member(ctx, "ingest", topic, extra...)
	if err != nil {
		return 0, err
	}
	defer m.stop()
	t0, err := waitReady(ctx, m.addr)
	if err != nil {
		return 0, err
	}
	w0, c0 := writerNow(m.addr), d.cpuNow(m.cmd.Process.Pid)
	t1, err := waitFor(ctx, 10*time.Minute, "all offsets committed", func() (bool, error) {
		return d.drained(ctx, "bench-ingest"+d.run, topic, int64(n))
	})
	if err != nil {
		return 0, err
	}
	c1 := d.cpuNow(m.cmd.Process.Pid)
	rate := float64(n) / t1.Sub(t0).Seconds()
	d.logf("ingest: %d events in %s: %.0f events/s", n, t1.Sub(t0).Round(time.Millisecond), rate)
	d.logf("  %s", w0.to(writerNow(m.addr)))
	d.logf("  %s", c0.to(c1, n, "event"))
	d.logf("ingest: start records consumed from the keys topic: %.0f",
		scrape(m.addr, `sagaz_records_consumed_total{topic="bench-ingest`+d.run+`-keys"}`))
	if st, err := histogram(m.addr, "sagaz_batch_record_seconds"); err == nil {
		// How the records were batched (events and start records together).
		d.logf("  batches recorded: %.0f, p50 %.1fms p99 %.1fms each", st.total(), st.quantile(0.5)*1e3, st.quantile(0.99)*1e3)
	}
	return rate, nil
}

// completion: a backlog of 3-step sagas, event → completed; then the
// latency phases on the same member at fixed produce rates.
func (d *driver) completion(ctx context.Context, sz sizes) (float64, []Row, error) {
	topic := "bench.complete" + d.run
	d.logf("completion: producing %d events", sz.complete)
	if err := d.produce(ctx, topic, "c", sz.complete); err != nil {
		return 0, nil, err
	}
	m, err := d.member(ctx, "complete", topic, append(d.profileArgs("completion"), d.memberArgs...)...)
	if err != nil {
		return 0, nil, err
	}
	defer m.stop()
	finished := func() float64 { return scrape(m.addr, `sagaz_sagas_finished_total{saga="bench",status="completed"}`) }
	t0, err := waitReady(ctx, m.addr)
	if err != nil {
		return 0, nil, err
	}
	w0, c0 := writerNow(m.addr), d.cpuNow(m.cmd.Process.Pid)
	cl0 := scrape(m.addr, "sagaz_changelog_records_total")
	t1, err := waitFor(ctx, 10*time.Minute, "every saga completed", func() (bool, error) { return finished() >= float64(sz.complete), nil })
	if err != nil {
		return 0, nil, err
	}
	c1 := d.cpuNow(m.cmd.Process.Pid)
	rate := float64(sz.complete) / t1.Sub(t0).Seconds()
	d.logf("completion: %d sagas in %s: %.0f sagas/s", sz.complete, t1.Sub(t0).Round(time.Millisecond), rate)
	d.logf("  %s", w0.to(writerNow(m.addr)))
	d.logf("  %s", c0.to(c1, sz.complete, "saga"))
	if cl1 := scrape(m.addr, "sagaz_changelog_records_total"); cl0 >= 0 && cl1 >= cl0 {
		// Five writes per saga; transitions of one saga within a flush
		// interval leave one changelog record. The counter counts the
		// next-offset and meta records too (a few per batch).
		d.logf("  changelog records: %.0f, %.2f per saga (with the next-offset and meta records)", cl1-cl0, (cl1-cl0)/float64(sz.complete))
	}

	var rows []Row
	total := sz.complete
	for i, ld := range sz.loads {
		r, name := max(int(ld.fraction*rate), 1), fmt.Sprintf("%.0f%% of completion capacity", ld.fraction*100)
		if ld.rate > 0 {
			r, name = ld.rate, fmt.Sprintf("a fixed %s events/s", thousands(ld.rate))
		}
		before, err := histogram(m.addr, "sagaz_event_record_latency_seconds")
		if err != nil {
			return 0, nil, err
		}
		storeBefore, err := histogram(m.addr, "sagaz_batch_record_seconds")
		if err != nil {
			return 0, nil, err
		}
		w0 := writerNow(m.addr)
		n, err := d.produceAtRate(ctx, topic, fmt.Sprintf("l%d", i), r, sz.latencyFor) // ids distinct per phase
		if err != nil {
			return 0, nil, err
		}
		total += n
		if _, err := waitFor(ctx, 5*time.Minute, "the latency events to complete", func() (bool, error) { return finished() >= float64(total), nil }); err != nil {
			return 0, nil, err
		}
		after, err := histogram(m.addr, "sagaz_event_record_latency_seconds")
		if err != nil {
			return 0, nil, err
		}
		delta := after.minus(before)
		p50, p99, p999 := delta.quantile(0.5), delta.quantile(0.99), delta.quantile(0.999)
		d.logf("latency at %d events/s (%s; completion %.0f sagas/s): %d events, p50 %.1fms p99 %.1fms p99.9 %.1fms", r, name, rate, n, p50*1e3, p99*1e3, p999*1e3)
		if storeAfter, err := histogram(m.addr, "sagaz_batch_record_seconds"); err == nil {
			// Where the time goes: each poll batch's store transaction and
			// its fsync (the changelog's acks follow, overlapping the next
			// batch's).
			sd := storeAfter.minus(storeBefore)
			d.logf("  batches recorded: %.0f, p50 %.1fms p99 %.1fms each", sd.total(), sd.quantile(0.5)*1e3, sd.quantile(0.99)*1e3)
		}
		d.logf("  %s", w0.to(writerNow(m.addr)))
		row := Row{
			Figure: fmt.Sprintf("latency at %s: produced → saga recorded (p50 / p99 / p99.9)", name),
			Value:  p99 * 1e3, Unit: "ms (p99)", Text: fmt.Sprintf("%.1f / %.1f / %.1f ms at %s events/s", p50*1e3, p99*1e3, p999*1e3, thousands(r)),
			Target: "— (experiment)",
		}
		if ld.rate == 0 {
			row.Target, row.Met = fmt.Sprintf("p99 ≤ %d ms", ld.p99.Milliseconds()), met(p99 <= ld.p99.Seconds())
		}
		rows = append(rows, row)
	}
	return rate, rows, nil
}

// produceAtRate produces rate events/s for dur, paced every 2ms.
func (d *driver) produceAtRate(ctx context.Context, topic, prefix string, rate int, dur time.Duration) (int, error) {
	tick := 2 * time.Millisecond
	per := float64(rate) * tick.Seconds()
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	n := 0
	for time.Since(start) < dur {
		<-t.C
		due := int(per*float64(time.Since(start)/tick)) - n
		for range due {
			id := d.eventID(prefix, n)
			d.cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(id), Value: []byte(`{"id":"` + id + `"}`)}, nil)
			n++
		}
	}
	return n, d.cl.Flush(ctx)
}

// memoryAndRestart drains a backlog through a fresh member and reads its
// peak RSS; then restarts it on the same store and times start → ready.
func (d *driver) memoryAndRestart(ctx context.Context, n int) (Row, Row, error) {
	topic := "bench.backlog" + d.run
	d.logf("memory: producing %d events", n)
	if err := d.produce(ctx, topic, "m", n); err != nil {
		return Row{}, Row{}, err
	}
	m, err := d.member(ctx, "backlog", topic, d.memberArgs...)
	if err != nil {
		return Row{}, Row{}, err
	}
	var peak int64
	t0 := time.Now()
	_, err = waitFor(ctx, 15*time.Minute, "the backlog to complete", func() (bool, error) {
		return scrape(m.addr, `sagaz_sagas_finished_total{saga="bench",status="completed"}`) >= float64(n), nil
	})
	if err != nil {
		m.kill()
		return Row{}, Row{}, err
	}
	pid := m.cmd.Process.Pid
	peak = statusKB(pid, "VmHWM") * 1024
	d.logf("memory: drained %d sagas in %s, peak RSS %d MB (now: anon %d MB, file-backed %d MB)", n, time.Since(t0).Round(time.Second), peak>>20,
		statusKB(pid, "RssAnon")>>10, statusKB(pid, "RssFile")>>10)
	mem := Row{Figure: fmt.Sprintf("member peak RSS draining a %s-event backlog", thousands(n)), Value: float64(peak) / (1 << 20), Unit: "MB",
		Target: "≤ 200 MB", Met: met(peak <= 200<<20)}
	if err := m.stop(); err != nil {
		return Row{}, Row{}, fmt.Errorf("stop: %w", err)
	}

	start := time.Now()
	m, err = d.member(ctx, "backlog", topic)
	if err != nil {
		return Row{}, Row{}, err
	}
	defer m.stop()
	ready, err := waitReady(ctx, m.addr)
	if err != nil {
		return Row{}, Row{}, err
	}
	took := ready.Sub(start)
	d.logf("restart: ready %s after start with %d stored sagas", took.Round(time.Millisecond), n)
	restart := Row{Figure: fmt.Sprintf("restart with %s stored sagas → ready", thousands(n)), Value: took.Seconds(), Unit: "s",
		Target: "≤ 3 s", Met: met(took <= 3*time.Second)}
	return mem, restart, nil
}

// restore: a member with an empty data directory joins the group that
// holds the backlog's sagas; timed from start to ready, which is after it
// restored every partition from the changelog.
func (d *driver) restore(ctx context.Context, n int) (Row, error) {
	start := time.Now()
	m, err := d.member(ctx, "backlog-restored", "bench.backlog"+d.run, append([]string{"-group", "bench-backlog" + d.run}, d.profileArgs("restore")...)...)
	if err != nil {
		return Row{}, err
	}
	defer m.stop()
	ready, err := waitReady(ctx, m.addr)
	if err != nil {
		return Row{}, err
	}
	took := ready.Sub(start)
	recs := scrape(m.addr, "sagaz_changelog_restored_records_total")
	d.logf("restore: %d changelog records of %d sagas restored into an empty member, ready after %s (%.0f records/s)", int(recs), n, took.Round(time.Millisecond), recs/took.Seconds())
	return Row{Figure: fmt.Sprintf("restore %s sagas from the changelog into an empty member → ready", thousands(n)), Value: recs / took.Seconds(), Unit: "records/s",
		Text: fmt.Sprintf("%s records/s (%s records in %.1f s)", thousands(int(recs/took.Seconds())), thousands(int(recs)), took.Seconds())}, nil
}

// waitReady returns when the member's /readyz answers 200 (recovery done,
// group joined, partitions assigned).
func waitReady(ctx context.Context, addr string) (time.Time, error) {
	return waitFor(ctx, 5*time.Minute, "ready", func() (bool, error) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
}

func statusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return -1
}

func fetchMetrics(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// writerSnap is a member's store writer counters (sagaz_store_*) at one
// moment: a phase's pair says whether the writer bounded it (busy near
// 100%) and what its transactions cost.
type writerSnap struct {
	at                           time.Time
	commits, writes, busy, pages float64
	ok                           bool
}

func writerNow(addr string) writerSnap {
	mfs, err := fetchMetrics(addr)
	if err != nil {
		return writerSnap{}
	}
	w := writerSnap{at: time.Now(), ok: true}
	for name, v := range map[string]*float64{"sagaz_store_commits_total": &w.commits, "sagaz_store_writes_total": &w.writes,
		"sagaz_store_writer_busy_seconds_total": &w.busy, "sagaz_store_page_bytes_total": &w.pages} {
		mf := mfs[name]
		if mf == nil || len(mf.GetMetric()) != 1 {
			return writerSnap{}
		}
		*v = mf.GetMetric()[0].GetCounter().GetValue()
	}
	return w
}

// to describes the writer between w and later.
func (w writerSnap) to(later writerSnap) string {
	dt, c := later.at.Sub(w.at).Seconds(), later.commits-w.commits
	if !w.ok || !later.ok || dt <= 0 || c <= 0 {
		return "store writer: no figures"
	}
	return fmt.Sprintf("store writer: busy %.0f%% of the phase, %.0f commits (%.0f/s), %.1f writes and %.0f KB of pages per commit",
		100*(later.busy-w.busy)/dt, c, c/dt, (later.writes-w.writes)/c, (later.pages-w.pages)/1024/c)
}

// scrape returns one sample, named as exposed (with labels), or -1.
func scrape(addr, sample string) float64 {
	name, labels, _ := strings.Cut(sample, "{")
	mfs, err := fetchMetrics(addr)
	if err != nil {
		return -1
	}
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	for _, m := range mf.GetMetric() {
		var parts []string
		for _, lp := range m.GetLabel() {
			parts = append(parts, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		if strings.Join(parts, ",")+"}" == labels || (labels == "" && len(parts) == 0) {
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

type hist struct {
	bounds []float64
	counts []float64 // cumulative
}

func histogram(addr, name string) (hist, error) {
	mfs, err := fetchMetrics(addr)
	if err != nil {
		return hist{}, err
	}
	mf := mfs[name]
	if mf == nil || len(mf.GetMetric()) == 0 {
		return hist{}, fmt.Errorf("no histogram %s", name)
	}
	var h hist
	for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
		h.bounds = append(h.bounds, b.GetUpperBound())
		h.counts = append(h.counts, float64(b.GetCumulativeCount()))
	}
	return h, nil
}

func (h hist) minus(o hist) hist {
	out := hist{bounds: h.bounds, counts: make([]float64, len(h.counts))}
	for i := range h.counts {
		out.counts[i] = h.counts[i] - o.counts[i]
	}
	return out
}

// total is the number of observations.
func (h hist) total() float64 {
	if len(h.counts) == 0 {
		return 0
	}
	return h.counts[len(h.counts)-1]
}

// quantile interpolates linearly within the bucket holding q.
func (h hist) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return math.NaN()
	}
	total := h.counts[len(h.counts)-1]
	rank := q * total
	i := sort.Search(len(h.counts), func(i int) bool { return h.counts[i] >= rank })
	if i >= len(h.bounds) {
		return math.Inf(1)
	}
	lo, prev := 0.0, 0.0
	if i > 0 {
		lo, prev = h.bounds[i-1], h.counts[i-1]
	}
	in := h.counts[i] - prev
	if in == 0 {
		return h.bounds[i]
	}
	return lo + (h.bounds[i]-lo)*(rank-prev)/in
}

func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func printTable(w io.Writer, rep Report) {
	ids := ""
	if rep.Machine["event_ids"] == "random" {
		ids = "; every phase's events with ids in random order (-random-ids)"
	}
	fmt.Fprintf(w, "\nSagaz benchmark (%s run, %s) on %s, %s cores; fsync %s/s; members with GOMEMLIMIT %s%s\n\n", rep.Mode, rep.Took, rep.Machine["cpu"], rep.Machine["cores"], rep.Machine["fsync_per_s"], cmp.Or(rep.Machine["member_memory_limit"], "unset"), ids)
	fmt.Fprintln(w, "| figure | value | target | ratio to baseline |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range rep.Rows {
		v := r.Text
		if v == "" {
			v = fmt.Sprintf("%s %s", humanize(r.Value), r.Unit)
		}
		t := r.Target
		if r.Met != nil {
			t += map[bool]string{true: " ✓", false: " ✗"}[*r.Met]
		}
		ratio := r.Ratio
		if ratio == "" {
			ratio = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", r.Figure, v, t, ratio)
	}
}

func humanize(v float64) string {
	if v >= 1000 {
		return thousands(int(math.Round(v)))
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func describeMachine(dir string) map[string]string {
	m := map[string]string{"cores": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	m["fsync_per_s"] = strconv.Itoa(fsyncRate(dir))
	return m
}

// fsyncRate measures 4 KiB write+fsync per second in dir for 1s.
func fsyncRate(dir string) int {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return -1
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	n := 0
	start := time.Now()
	for time.Since(start) < time.Second {
		if _, err := f.WriteAt(buf, int64(n%256)*4096); err != nil {
			return -1
		}
		if err := f.Sync(); err != nil {
			return -1
		}
		n++
	}
	return int(float64(n) / time.Since(start).Seconds())
}

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// produceJSON writes n records value(i) to topic (6 partitions), keyed by
// key(i).
func (d *driver) produceJSON(ctx context.Context, topic string, n int, key func(int) string, value func(int) string) error {
	if _, err := d.adm.CreateTopic(ctx, 6, 1, nil, topic); err != nil {
		return err
	}
	errc := make(chan error, 1)
	for i := range n {
		d.cl.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key(i)), Value: []byte(value(i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := d.cl.Flush(ctx); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// commands: a backlog of demo transfers (two command steps each) through
// a member and the demo participant, each in its own process; timed from
// the member's readiness to the last transfer completed. Each transfer is
// two round trips.
func (d *driver) commands(ctx context.Context, n int) (float64, error) {
	d.logf("commands: producing %d transfers", n)
	id := func(i int) string { return d.eventID("t", i) }
	transfers, commands := "bench.transfers"+d.run, "bench.commands"+d.run
	err := d.produceJSON(ctx, transfers, n, id, func(i int) string {
		return `{"transfer_id":"` + id(i) + `","from":"a-` + strconv.Itoa(i%100) + `","to":"a-` + strconv.Itoa((i+1)%100) + `","amount":10}`
	})
	if err != nil {
		return 0, err
	}
	if _, err := d.adm.CreateTopic(ctx, 6, 1, nil, commands); err != nil {
		return 0, err
	}
	p, err := d.start(ctx, "participant", "-brokers", strings.Join(d.seeds, ","), "-topic", commands, "-group", "bench-accounts"+d.run)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	m, err := d.member(ctx, "commands", transfers, append(append([]string{"-saga", "transfer", "-commands-topic", commands}, d.profileArgs("commands")...), d.memberArgs...)...)
	if err != nil {
		return 0, err
	}
	defer m.stop()
	t0, err := waitReady(ctx, m.addr)
	if err != nil {
		return 0, err
	}
	done := func() float64 {
		return scrape(m.addr, `sagaz_sagas_finished_total{saga="transfer",status="completed"}`)
	}
	t1, err := waitFor(ctx, 15*time.Minute, "every transfer completed", func() (bool, error) {
		if f := scrape(m.addr, `sagaz_sagas_finished_total{saga="transfer",status="rolled_back"}`); f > 0 {
			return false, fmt.Errorf("%v transfers rolled back (replies slower than the timeout?)", f)
		}
		return done() >= float64(n), nil
	})
	if err != nil {
		return 0, err
	}
	rate := float64(2*n) / t1.Sub(t0).Seconds()
	d.logf("commands: %d transfers (%d round trips) in %s: %.0f round trips/s", n, 2*n, t1.Sub(t0).Round(time.Millisecond), rate)
	return rate, nil
}

// waiting: n sagas each waiting for the reply to a command nobody answers;
// the member's resident memory once they all wait.
func (d *driver) waiting(ctx context.Context, n int) (Row, error) {
	d.logf("waiting: producing %d events", n)
	topic, void := "bench.wait"+d.run, "bench.void"+d.run
	err := d.produceJSON(ctx, topic, n, func(i int) string { return d.eventID("w", i) },
		func(i int) string { return `{"id":"` + d.eventID("w", i) + `"}` })
	if err != nil {
		return Row{}, err
	}
	if _, err := d.adm.CreateTopic(ctx, 6, 1, nil, void); err != nil {
		return Row{}, err
	}
	m, err := d.member(ctx, "waiting", topic, append([]string{"-saga", "wait", "-commands-topic", void}, d.memberArgs...)...)
	if err != nil {
		return Row{}, err
	}
	defer m.stop()
	t0 := time.Now()
	if _, err := waitFor(ctx, 30*time.Minute, fmt.Sprintf("%d sagas waiting", n), func() (bool, error) {
		return scrape(m.addr, "sagaz_sagas_waiting") >= float64(n), nil
	}); err != nil {
		return Row{}, err
	}
	pid := m.cmd.Process.Pid
	peak := statusKB(pid, "VmHWM") * 1024
	// Once they all wait nothing runs; the store's pages are released every
	// 500ms. Read the resident size over a few seconds, keep the last.
	var rss int64
	for range 10 {
		rss = statusKB(pid, "VmRSS") * 1024
		time.Sleep(500 * time.Millisecond)
	}
	d.logf("waiting: %d sagas waiting after %s; RSS %d MB (anon %d MB, file-backed %d MB), peak %d MB", n, time.Since(t0).Round(time.Second),
		rss>>20, statusKB(pid, "RssAnon")>>10, statusKB(pid, "RssFile")>>10, peak>>20)
	return Row{Figure: fmt.Sprintf("member RSS with %s sagas waiting for replies (no goroutine each)", thousands(n)), Value: float64(rss) / (1 << 20),
		Unit: "MB", Text: fmt.Sprintf("%.0f MB (peak while they started: %.0f MB)", float64(rss)/(1<<20), float64(peak)/(1<<20)),
		Target: "≤ 200 MB", Met: met(rss <= 200<<20)}, nil
}
