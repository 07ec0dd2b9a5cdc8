// Command sagaz is the Sagaz service and its command-line client.
//
//	sagaz run [flags]                                 run the service
//	sagaz triggers                                    the trigger table (of the service, or of this binary)
//	sagaz sagas list|show|retry|cancel ...            look at and steer sagas through the HTTP API
//	sagaz sagas show NAME [--sagas PATH]              a saga's definition: triggers, steps, compensations
//	sagaz validate PATH                               check YAML saga files (exit 0 when valid)
//	sagaz fire EVENT_TYPE [JSON]                      fire a manual event through the HTTP API
//	sagaz schedules list|pause|resume|trigger|backfill ...  operate cron schedules
//	sagaz dlq list|replay ...                         list the dead-letter topic, replay dead letters
//	sagaz topics [--create]                           the Kafka topics the configured member needs
//	sagaz healthcheck                                 exit 0 when the service is ready (container health checks)
//	sagaz demo [flags]                                produce sample order events (some with fail_at), or transfers
//	sagaz demo-participant [flags]                    the accounts service of the transfer demo
//	sagaz version | help [COMMAND]
//
// A bare "sagaz" prints the help. Flags may come anywhere on the line; each
// flag of run has a SAGAZ_* environment variable. Exit codes: 0 done, 1
// failed, 2 usage error. With no --brokers, run starts an embedded
// Kafka-compatible broker (kfake) on 127.0.0.1:9092: dev mode.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/buildinfo"
	"github.com/sagaz-go/sagaz/internal/devkafka"
	"github.com/sagaz-go/sagaz/internal/gctune"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/metrics"
	_ "github.com/sagaz-go/sagaz/sagas" // the sagas compiled into the binary
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Getenv)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// run dispatches to the subcommand; a bare "sagaz" prints the help.
func run(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	name, rest, help, version := splitCommand(args)
	switch {
	case name == "" && version:
		return versionCmd(ctx, nil, stdout, getenv)
	case name == "" && len(rest) > 0 && !help:
		return usagef("", "no command among %q", strings.Join(rest, " "))
	case name == "":
		printHelp(stdout)
		return nil
	}
	c := lookup(name)
	if c == nil {
		return usagef("", "unknown command %q", name)
	}
	return c.run(ctx, rest, stdout, getenv)
}

// runCmd is `sagaz run`: the service.
func runCmd(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs := newFlagSet("run")
	cfg, err := Load(fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, lookup("run"))
		return err
	}
	if err != nil {
		return &usageError{err: err, cmd: "run"}
	}
	// GOGC=200 unless the environment sets GOGC (docs/operations.md). It is
	// process-wide: tests that call run with their own getenv get it too.
	gctune.Apply(getenv)
	return serve(ctx, cfg, stdout)
}

// serve runs the service until ctx ends, then shuts down in order (the
// member package owns the ordering): stop fetching and leave the group, let
// running steps finish (bounded), close the changelog and the store, then
// stop the embedded broker.
func serve(ctx context.Context, cfg *Config, stdout io.Writer) (err error) {
	log := cfg.logger()
	slog.SetDefault(log) // any line logged through the default logger has the configured format too
	defer func() {
		if err != nil { // said once, in the log's format (main prints nothing more)
			log.Error("stopped on an error", "err", err)
			err = &loggedError{err}
		}
	}()
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
	bi := buildinfo.Get()
	metrics.RegisterBuildInfo(reg, bi.Version, bi.Commit, bi.GoVersion)
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
		MaxInFlight: cfg.MaxInFlight, ShutdownTimeout: cfg.ShutdownTimeout, LogCompleted: cfg.LogCompleted,
		HTTPAddr: cfg.HTTPAddr, API: api, Auth: cfg.Auth(), AdvertiseURL: cfg.AdvertiseURL,
		Consumer: cfg.consumer(kopts),
	})
	if err != nil {
		return err
	}

	if cfg.LogFormat == "json" { // every line JSON: the table as log lines
		for _, r := range routes.Table() {
			log.Info("trigger", "source", r.Source, "name", r.Name, "schedule", r.Schedule, "saga", r.Saga, "idempotency_key", r.IdempotencyKey,
				"max_concurrent", r.MaxConcurrent, "steps", r.Steps)
		}
	} else {
		fmt.Fprintln(stdout, "Sagaz — triggers compiled into this binary:")
		if err := routes.WriteTable(stdout); err != nil {
			m.Close()
			return err
		}
		if dev {
			banner(stdout, cfg, m.HTTP)
		}
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
  Send an order:   echo '{"order_id":"o-1","amount":42}' | kcat -P -b %[1]s -t orders.created -k o-1 -X partitioner=murmur2_random
  Watch it fail:   echo '{"order_id":"o-2","fail_at":"charge"}' | kcat -P -b %[1]s -t orders.created -k o-2 -X partitioner=murmur2_random
  Sample events:   make demo   (or: bin/sagaz demo --count 20)
  Transfers:       bin/sagaz demo-participant &   then: bin/sagaz demo --saga transfer --count 12
                   (commands to accounts.commands, replies from the participant; fail_at, delay_ms, no_reply)
  Look at them:    bin/sagaz sagas list   (bin/sagaz sagas show ID; bin/sagaz help)
`, cfg.Brokers, filepath.Join(cfg.DataDir, "kafka"), httpLine)
}
