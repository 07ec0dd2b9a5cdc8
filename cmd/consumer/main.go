// Command sagaz is the Sagaz service: it consumes the Kafka topics the
// compiled-in sagas name, records each saga durably, and runs it to an end.
//
//	sagaz [run] [flags]                     run the service (the default)
//	sagaz triggers                          the trigger table (of the service, or of this binary)
//	sagaz sagas list|show|retry|cancel ...  look at and steer sagas through the HTTP API
//	sagaz sagas show NAME [--sagas PATH]    a saga's definition: triggers, steps, compensations
//	sagaz validate PATH                     check YAML saga files (exit 0 when valid)
//	sagaz fire EVENT_TYPE [JSON]            fire a manual event through the HTTP API
//	sagaz schedules list|pause|resume|trigger|backfill ...  operate cron schedules
//	sagaz dlq list|replay ...               list the dead-letter topic, replay dead letters
//	sagaz demo [flags]                      produce sample order events (some with fail_at)
//
// Run "sagaz run -h" for the flags; each has a SAGAZ_* environment variable.
// With no --brokers, run starts an embedded Kafka-compatible broker (kfake)
// on 127.0.0.1:9092 with its data under the data directory: dev mode.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/devkafka"
	"github.com/sagaz-go/sagaz/member"
	_ "github.com/sagaz-go/sagaz/sagas" // the sagas compiled into the binary
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Getenv); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sagaz:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	cmd := "run"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		fs := flag.NewFlagSet("sagaz run", flag.ContinueOnError)
		cfg, err := Load(fs, args, getenv)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stdout)
	case "triggers":
		return triggersCmd(ctx, args, stdout, getenv)
	case "sagas":
		return sagasCmd(ctx, args, stdout, getenv)
	case "fire":
		return fireCmd(ctx, args, stdout, getenv)
	case "schedules":
		return schedulesCmd(ctx, args, stdout, getenv)
	case "dlq":
		return dlqCmd(ctx, args, stdout, getenv)
	case "demo":
		return demo(ctx, args, stdout, getenv)
	case "validate":
		return validateCmd(args, stdout)
	default:
		return fmt.Errorf("unknown command %q (want run, validate, triggers, sagas, fire, schedules, dlq or demo)", cmd)
	}
}

// serve runs the service until ctx ends, then shuts down in order (the
// member package owns the ordering): stop fetching and leave the group, let
// running steps finish (bounded), close the changelog and the store, then
// stop the embedded broker.
func serve(ctx context.Context, cfg *Config, stdout io.Writer) error {
	log := cfg.logger()
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return err
	}
	brokers := cfg.BrokerList()
	dev := len(brokers) == 0
	if dev {
		kc, err := devkafka.Start(filepath.Join(cfg.DataDir, "kafka"), cfg.DevBrokerPort)
		if err != nil {
			return err
		}
		defer kc.Close()
		brokers = kc.ListenAddrs()
		cfg.Brokers = brokers[0]
		log.Info("embedded dev broker started", "addr", brokers[0], "data", filepath.Join(cfg.DataDir, "kafka"))
	}
	kopts, err := cfg.kafka().Opts()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var api *httpapi.API
	if cfg.HTTPAddr != "" {
		api = &httpapi.API{Webhooks: cfg.Webhooks, AllowUnsignedWebhooks: dev,
			MaxBodyBytes: int64(cfg.MaxBodyBytes), MaxConcurrentWebhooks: cfg.MaxConcurrentWebhooks}
		if dev {
			for _, name := range cfg.UnsignedRequired(routes) {
				log.Warn("dev mode: webhook must be signed but has no secret; accepting unsigned calls", "webhook", name, "env", WebhookSecretEnv(name))
			}
		}
	}
	m, err := member.New(ctx, member.Config{
		DataDir: cfg.DataDir, Logger: log, Metrics: reg, KafkaMetrics: true,
		MaxInFlight: cfg.MaxInFlight, ShutdownTimeout: cfg.ShutdownTimeout,
		HTTPAddr: cfg.HTTPAddr, API: api, Auth: cfg.Auth(),
		Consumer: consumer.Config{
			Client: kopts, Group: cfg.Group, InstanceID: cfg.GroupInstanceID, SessionTimeout: cfg.SessionTimeout,
			FetchMaxBytes: int32(cfg.FetchMaxBytes), FetchMaxPartitionBytes: int32(cfg.FetchMaxPartitionBytes),
			DeadLetterTopic: cfg.DeadLetterTopic, MaxEventBytes: cfg.MaxEventBytes, MaxPollRecords: cfg.MaxPollRecords,
			HighWater: cfg.PendingHighWater, LowWater: cfg.PendingLowWater,
			CreateTopics: cfg.CreateTopics, TopicPartitions: int32(cfg.TopicPartitions), TopicReplication: int16(cfg.TopicReplication),
			Retention: cfg.Retention, EventsTopic: cfg.EventsTopic, CronTopic: cfg.CronTopic,
		},
	})
	if err != nil {
		return err
	}

	fmt.Fprintln(stdout, "Sagaz — triggers compiled into this binary:")
	if err := routes.WriteTable(stdout); err != nil {
		m.Close()
		return err
	}
	if dev {
		banner(stdout, cfg, m.HTTP)
	}
	err = m.Run(ctx)
	log.Info("stopped")
	return err
}

func banner(w io.Writer, cfg *Config, srv *httpapi.Server) {
	httpLine := "HTTP server disabled (--http-addr is empty)"
	if srv != nil {
		httpLine = "HTTP:   http://" + srv.Addr() + "  (/healthz /readyz /metrics)\n  Console: http://" + srv.Addr() + "/ui/"
	}
	fmt.Fprintf(w, `
Dev mode: embedded Kafka-compatible broker on %[1]s (data in %[2]s).
  %[3]s
  Send an order:   echo '{"order_id":"o-1","amount":42}' | kcat -P -b %[1]s -t orders.created -k o-1
  Watch it fail:   echo '{"order_id":"o-2","fail_at":"charge"}' | kcat -P -b %[1]s -t orders.created -k o-2
  Sample events:   make demo   (or: bin/sagaz demo --count 20)
`, cfg.Brokers, filepath.Join(cfg.DataDir, "kafka"), httpLine)
}

// demo produces sample order events: every 5th fails at charge, every 7th
// at ship.
func demo(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("sagaz demo", flag.ContinueOnError)
	brokers := getenv("SAGAZ_BROKERS")
	if brokers == "" {
		brokers = "127.0.0.1:9092"
	}
	fs.StringVar(&brokers, "brokers", brokers, "Kafka brokers (env SAGAZ_BROKERS)")
	count := fs.Int("count", 10, "number of order events")
	prefix := fs.String("prefix", "demo", "order id prefix")
	sleep := fs.Int("sleep-ms", 0, "sleep_ms of each event (each step sleeps that long)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *count < 1 {
		return fmt.Errorf("--count %d: want at least 1", *count)
	}
	for _, b := range splitBrokers(brokers) {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("--brokers %q: want host:port", b)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(splitBrokers(brokers)...), kgo.AllowAutoTopicCreation())
	if err != nil {
		return err
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := 1; i <= *count; i++ {
		id := *prefix + "-" + strconv.Itoa(i)
		extra := ""
		switch {
		case i%5 == 0:
			extra = `,"fail_at":"charge"`
		case i%7 == 0:
			extra = `,"fail_at":"ship"`
		}
		if *sleep > 0 {
			extra += `,"sleep_ms":` + strconv.Itoa(*sleep)
		}
		recs = append(recs, &kgo.Record{Topic: "orders.created", Key: []byte(id),
			Value: []byte(fmt.Sprintf(`{"order_id":%q,"amount":%d%s}`, id, 10+i, extra))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", brokers, err)
	}
	fmt.Fprintf(stdout, "produced %d order events to orders.created on %s\n", len(recs), brokers)
	return nil
}

func splitBrokers(s string) []string {
	c := Config{Brokers: s}
	return c.BrokerList()
}
