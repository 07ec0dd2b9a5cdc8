package main

import (
	"context"
	"flag"
	"io"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/participant"
	"github.com/sagaz-go/sagaz/sagas"
)

type participantOpts struct {
	brokers    string
	group      string
	instanceID string
	create     bool
	logFormat  string
	logLevel   string
}

func participantFlags(getenv func(string) string) (*flag.FlagSet, *participantOpts) {
	fs := newFlagSet("demo-participant")
	o := &participantOpts{}
	brokers := getenv("SAGAZ_BROKERS")
	if brokers == "" {
		brokers = "127.0.0.1:9092"
	}
	fs.StringVar(&o.brokers, "brokers", brokers, "Kafka brokers (env SAGAZ_BROKERS)")
	fs.StringVar(&o.group, "group", "sagaz-demo-accounts", "the participant's consumer group")
	fs.StringVar(&o.instanceID, "instance-id", "", "this process's stable name in the group (default: the host name); one per process")
	fs.BoolVar(&o.create, "create-topics", true, "create the participant's state topic when missing")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return fs, o
}

// demoParticipant is `sagaz demo-participant`: the accounts service of the
// transfer demo (sagas.TransferCommands) on accounts.commands, until
// SIGTERM or SIGINT.
func demoParticipant(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs, o := participantFlags(getenv)
	pos, err := parseArgs(fs, args, "demo-participant", stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("demo-participant", "unexpected arguments: %s", strings.Join(pos, " "))
	}
	brokers := splitBrokers(o.brokers)
	for _, b := range brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return usagef("demo-participant", "--brokers %q: want host:port", b)
		}
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return usagef("demo-participant", "--log-format %q: want text or json", o.logFormat)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return usagef("demo-participant", "--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	cfg := &Config{LogFormat: o.logFormat, LogLevel: o.logLevel}
	p, err := participant.New(participant.Config{Client: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Group: o.group, Topic: sagas.AccountsTopic,
		InstanceID: o.instanceID, CreateTopics: o.create, Logger: cfg.logger()}, sagas.TransferCommands)
	if err != nil {
		return &usageError{err: err, cmd: "demo-participant"}
	}
	return p.Run(ctx)
}
