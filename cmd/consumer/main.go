// Command sagaz is the Sagaz service: it consumes the Kafka topics the
// compiled-in sagas name, records each saga durably, and runs it to an end.
//
//	sagaz [run] [flags]   run the service (the default)
//	sagaz triggers        print the trigger table and exit
//
// Run "sagaz run -h" for the flags; each has a SAGAZ_* environment variable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sagaz-go/sagaz/engine"
	_ "github.com/sagaz-go/sagaz/sagas" // the sagas compiled into the binary
	"github.com/sagaz-go/sagaz/storage"
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
		routes, err := engine.DefaultRegistry().Routes()
		if err != nil {
			return err
		}
		return routes.WriteTable(stdout)
	default:
		return fmt.Errorf("unknown command %q (want run or triggers)", cmd)
	}
}

// serve runs the service until ctx ends.
func serve(ctx context.Context, cfg *Config, stdout io.Writer) error {
	log := cfg.logger()
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return err
	}
	store, err := storage.OpenBolt(cfg.StorePath(), storage.BoltOptions{})
	if err != nil {
		return err
	}
	defer store.Close()
	eng, err := engine.New(engine.Config{Store: store, Logger: log, MaxInFlight: cfg.MaxInFlight, ShutdownTimeout: cfg.ShutdownTimeout})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Sagaz — triggers compiled into this binary:")
	if err := routes.WriteTable(stdout); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	select {
	case <-eng.Ready():
	case err := <-done:
		return err
	}
	fmt.Fprintf(stdout, "\nStore %s open, unfinished sagas resumed.\n", cfg.StorePath())
	fmt.Fprintln(stdout, "Not wired yet: the Kafka consumer (so no events are consumed), cron, webhooks and the HTTP API.")
	fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
	return <-done
}
