// Command account-participant is a participant of Sagaz command steps
// written with package participant: the accounts service of the transfer
// demo (sagas/transfer.go), as a service of its own. It consumes
// accounts.commands in the group "accounts" and replies to each debit,
// credit and refund once per attempt, in Kafka transactions.
//
//	SAGAZ_BROKERS=127.0.0.1:9092 go run ./examples/account-participant
//
// It is what `sagaz demo-participant` runs; a service of yours replaces
// sagas.TransferCommands with its own handler:
//
//	func(ctx context.Context, c *participant.Command) ([]byte, error) {
//		// c.SagaID and c.Step name the saga and step; c.Attempt counts from 1;
//		// c.Compensation says whether to undo (it runs only if the action
//		// succeeded here); c.Value is the command's payload.
//		return json.Marshal(map[string]any{"debit_id": "d-1"}) // merged into the saga's context
//		// or: participant.Refuse(err)  — the step fails for good
//		// or: any other error          — the saga retries by its policy
//	}
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/participant"
	"github.com/sagaz-go/sagaz/sagas"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "account-participant:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string) error {
	brokers := getenv("SAGAZ_BROKERS")
	if brokers == "" {
		brokers = "127.0.0.1:9092"
	}
	p, err := participant.New(participant.Config{
		Client:       []kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...)},
		Group:        "accounts",
		Topic:        sagas.AccountsTopic,
		InstanceID:   getenv("INSTANCE_ID"), // one per process; default: the host name
		CreateTopics: true,                  // its state topic, accounts-state-accounts.commands
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}, sagas.TransferCommands)
	if err != nil {
		return err
	}
	return p.Run(ctx)
}
