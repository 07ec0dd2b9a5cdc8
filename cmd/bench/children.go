package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/gctune"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/participant"
	"github.com/sagaz-go/sagaz/sagas"
)

// runBroker runs kfake until killed, printing its address.
func runBroker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	port := fs.Int("port", 0, "port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(*port), kfake.DefaultNumPartitions(6))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println(c.ListenAddrs()[0])
	<-ctx.Done()
	return nil
}

// benchSaga is the benchmark's 3-step saga with no-op steps.
func benchSaga(topic string, maxConcurrent int) engine.Saga {
	noop := func(context.Context, *engine.Run) error { return nil }
	return engine.Saga{
		Name:     "bench",
		Steps:    []engine.Step{{Name: "a", Action: noop}, {Name: "b", Action: noop}, {Name: "c", Action: noop}},
		Triggers: []engine.Trigger{engine.Kafka(topic, engine.PassThrough, engine.WithKey(engine.KeyField("id")), engine.WithMaxConcurrent(maxConcurrent))},
	}
}

// benchRegistry returns the registry of a member child: the bench saga,
// the demo transfer saga on topic with its commands to commands (waited for
// up to two minutes, so a backlog does not time out), or a saga whose one
// command, to commands, is never answered (its sagas wait an hour: the
// memory of waiting sagas).
func benchRegistry(saga, topic, commands string, maxConcurrent int) (*engine.Registry, error) {
	reg := engine.NewRegistry()
	switch saga {
	case "bench":
		reg.Register(benchSaga(topic, maxConcurrent))
	case "transfer":
		s := sagas.Transfer
		s.Steps = append([]engine.Step(nil), s.Steps...)
		for i := range s.Steps {
			st := &s.Steps[i]
			st.Timeout = 2 * time.Minute
			for _, c := range []**engine.Command{&st.Command, &st.CompensateCommand} {
				if *c != nil {
					cmd := **c
					cmd.Topic = commands
					*c = &cmd
				}
			}
		}
		t := sagas.Transfer.Triggers[0]
		s.Triggers = []engine.Trigger{engine.Kafka(topic, t.Transform(), engine.WithKey(t.Key()))}
		reg.Register(s)
	case "wait":
		reg.Register(engine.Saga{Name: "wait",
			Steps:    []engine.Step{{Name: "ask", Command: &engine.Command{Topic: commands}, Timeout: time.Hour}},
			Triggers: []engine.Trigger{engine.Kafka(topic, engine.PassThrough)}})
	default:
		return nil, fmt.Errorf("-saga %q: want bench, transfer or wait", saga)
	}
	return reg, nil
}

// runParticipant runs the demo's accounts service (sagas.TransferCommands)
// until killed, printing "ready" once it owns its partitions.
func runParticipant(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("participant", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "seed brokers")
	topic := fs.String("topic", sagas.AccountsTopic, "the command topic")
	group := fs.String("group", "bench-accounts", "the participant's group")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := participant.New(participant.Config{Client: []kgo.Opt{kgo.SeedBrokers(strings.Split(*brokers, ",")...)}, Group: *group,
		Topic: *topic, InstanceID: "bench", CreateTopics: true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, sagas.TransferCommands)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	for p.Partitions() == 0 {
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
	fmt.Println("ready")
	return <-errc
}

// runMember runs one Sagaz group member (the member package, as the
// binary assembles it) with the bench saga, and the HTTP server for metrics.
func runMember(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("member", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "seed brokers")
	topic := fs.String("topic", "", "topic of the bench saga")
	group := fs.String("group", "", "consumer group")
	dir := fs.String("data-dir", "", "data directory")
	addr := fs.String("http", "127.0.0.1:0", "HTTP address")
	memLimit := fs.String("memory-limit", "", "GOMEMLIMIT-style soft limit, e.g. 150MiB (empty: none)")
	gogc := fs.Int("gogc", 0, "GOGC-style collector percentage for experiments (0: as `sagaz run` sets it)")
	maxInFlight := fs.Int("max-in-flight", 0, "engine MaxInFlight (0: the default)")
	maxConc := fs.Int("max-concurrent", 0, "MaxConcurrent of the bench trigger (0: unbounded)")
	high := fs.Int("high-water", 0, "pending high-water mark (0: the consumer's default)")
	low := fs.Int("low-water", 0, "pending low-water mark (0: the consumer's default)")
	fetchMax := fs.Int("fetch-max-bytes", 0, "FetchMaxBytes (0: the consumer's default)")
	fetchPart := fs.Int("fetch-max-partition-bytes", 0, "FetchMaxPartitionBytes (0: the consumer's default)")
	maxPoll := fs.Int("max-poll-records", 0, "MaxPollRecords (0: the consumer's default)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile here")
	memprofile := fs.String("memprofile", os.Getenv("SAGAZ_BENCH_MEMPROFILE"), "write an allocation profile here at exit")
	pprofAddr := fs.String("pprof", os.Getenv("SAGAZ_BENCH_PPROF"), "serve net/http/pprof here")
	saga := fs.String("saga", "bench", "the saga: bench (3 no-op steps), transfer (the demo's command steps) or wait (a command never answered)")
	commands := fs.String("commands-topic", sagas.AccountsTopic, "the command topic of -saga transfer or wait")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *memprofile != "" {
		defer func() {
			if f, err := os.Create(*memprofile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if *memLimit != "" {
		n, err := parseBytes(*memLimit)
		if err != nil {
			return err
		}
		debug.SetMemoryLimit(n)
	}
	if *gogc != 0 {
		debug.SetGCPercent(*gogc)
	} else {
		gctune.Apply(os.Getenv) // as the binary's `sagaz run` does
	}
	if *pprofAddr != "" {
		go func() { _ = http.ListenAndServe(*pprofAddr, nil) }() //nolint:gosec // local profiling only
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg, err := benchRegistry(*saga, *topic, *commands, *maxConc)
	if err != nil {
		return err
	}
	m, err := member.New(ctx, member.Config{
		DataDir: *dir, Registry: reg, Logger: log, MaxInFlight: *maxInFlight, HTTPAddr: *addr,
		Consumer: consumer.Config{
			Client: []kgo.Opt{kgo.SeedBrokers(strings.Split(*brokers, ",")...)}, Group: *group, CreateTopics: true,
			HighWater: *high, LowWater: *low, FetchMaxBytes: int32(*fetchMax), FetchMaxPartitionBytes: int32(*fetchPart), MaxPollRecords: *maxPoll,
			SessionTimeout: 10 * time.Second,
		},
	})
	if err != nil {
		return err
	}
	fmt.Println(m.HTTP.Addr())
	return m.Run(ctx)
}

// parseBytes reads sizes like 150MiB, 1GiB or 2000000.
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if v, ok := strings.CutSuffix(s, suf); ok {
			s, mult = v, m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
