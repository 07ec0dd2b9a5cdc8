// Command bench is the performance harness behind `make bench`: one run
// measures the baseline (a plain franz-go group consumer) and Sagaz's
// figures (docs/benchmarks.md) against a kfake broker running in its own process,
// with the Sagaz member in a third process, and Python Sagaz's trigger path
// for the "× Sagaz" ratio when python3 is available (python.go); it prints
// one markdown table.
//
//	bench [-full] [-json out.json] [-data dir]    run the benchmarks
//	bench broker -port N                           (child) the kfake broker
//	bench member -brokers ... -topic ...           (child) a Sagaz group member
//	bench participant -brokers ...                 (child) the demo's accounts service
//	bench floor -brokers ... -topic ...            (child) the Kafka floor: a member's broker traffic, no store
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	var err error
	switch {
	case len(args) > 0 && args[0] == "broker":
		err = runBroker(ctx, args[1:])
	case len(args) > 0 && args[0] == "member":
		err = runMember(ctx, args[1:])
	case len(args) > 0 && args[0] == "participant":
		err = runParticipant(ctx, args[1:])
	case len(args) > 0 && args[0] == "floor":
		err = runFloor(ctx, args[1:])
	default:
		err = runDriver(ctx, args)
	}
	if err != nil && err != flag.ErrHelp {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
