package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/sagaz-go/sagaz/internal/buildinfo"
	"github.com/sagaz-go/sagaz/storage"
)

// Exit codes of the sagaz command.
const (
	exitOK    = 0 // done (help and version included)
	exitError = 1 // the work failed: the service answered with an error, could not be reached, or stopped on an error
	exitUsage = 2 // the command line or environment is wrong: unknown command or flag, bad value, missing argument
)

// usageError is a mistake on the command line (exit code 2).
type usageError struct {
	err error
	cmd string // the command whose help explains it ("" for the top level)
}

func (e *usageError) Error() string {
	hint := "sagaz help"
	if e.cmd != "" {
		hint = "sagaz help " + e.cmd
	}
	return e.err.Error() + " (see `" + hint + "`)"
}

func (e *usageError) Unwrap() error { return e.err }

// loggedError is an error the service has already logged.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

func usagef(cmd, format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...), cmd: cmd}
}

// exitCode maps run's error to the process's exit code, writing the error
// to w: 0 for none (or help shown), 2 for usage errors, 1 otherwise.
func exitCode(err error, w io.Writer) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintln(w, "sagaz:", err)
		return exitUsage
	case errors.As(err, new(*loggedError)):
		return exitError // the service logged it
	default:
		fmt.Fprintln(w, "sagaz:", err)
		return exitError
	}
}

// command is one subcommand of sagaz.
type command struct {
	name    string
	usage   string // arguments after the name
	summary string
	detail  string
	// flags defines the command's flags on a new flag set (for parsing,
	// help, and finding the command among flags placed before it).
	flags func(getenv func(string) string) *flag.FlagSet
	run   func(ctx context.Context, args []string, out io.Writer, getenv func(string) string) error
}

// commands lists the subcommands, in help order. Set in init (run refers
// to it through the help command).
var commands []*command

func init() {
	commands = []*command{
		{name: "run", usage: "[flags]", summary: "run the service: a member of the consumer group (dev mode: no --brokers)",
			detail: "Runs the service until SIGTERM or SIGINT. Every flag has a SAGAZ_* environment variable; a flag wins over the\n" +
				"environment. Without --brokers it starts an embedded Kafka-compatible broker (kfake) on 127.0.0.1:9092: dev mode.",
			flags: func(getenv func(string) string) *flag.FlagSet {
				fs := newFlagSet("run")
				defineConfig(fs, getenv)
				return fs
			}, run: runCmd},
		{name: "triggers", usage: "[flags]", summary: "the trigger table (of the service at --api, else of this binary)",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := triggersFlags(getenv); return fs }, run: triggersCmd},
		{name: "sagas", usage: "list [--status S] [--saga NAME] [--watch] | show ID | show NAME [--sagas PATH] | retry ID [--context-file F] [--map OLD=NEW] [--reason R] | resolve ID --reason R | cancel ID [--reason R]",
			summary: "list and inspect sagas; retry a failed (with an edited context) or parked one, or resolve a failed one by hand; cancel a running or parked one",
			detail: "  list       this member's sagas, newest first (--status pending|executing|completed|compensating|rolled_back|failed|\n" +
				"             resolved|parked, --saga NAME, --limit N, --cursor C; --watch re-lists every --interval until interrupted)\n" +
				"  show ID    one saga: status, error, each step's status, attempts, errors and times, the running step, the context,\n" +
				"             and its history (who retried, edited, resolved or cancelled it, when and why)\n" +
				"  show NAME  a saga's definition (compiled in, or YAML with --sagas): triggers, steps, compensations\n" +
				"  retry ID   a failed saga resumes where it stopped (a compensation that gave up is tried again); with\n" +
				"             --context-file F (a JSON object) its context is replaced first and it goes forward again from the\n" +
				"             step that failed (the replaced context is kept in its history). A parked saga moves onto the current\n" +
				"             definition, its recorded steps mapped by name or by --map OLD=NEW (repeatable; OLD= leaves OLD's effect\n" +
				"             uncompensated), and resumes in the status it was parked from\n" +
				"  resolve ID a failed saga dealt with by hand is marked resolved (--reason required): it no longer counts as failed\n" +
				"  cancel ID  a pending or executing saga stops after its current step and is compensated; a parked saga is\n" +
				"             compensated with the compensations of a definition that knows its completed steps\n" +
				"  --reason R goes into the saga's history with the action and the token that did it",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := sagasFlags(getenv); return fs }, run: sagasCmd},
		{name: "fire", usage: "EVENT_TYPE ['{\"field\": \"value\"}'] [--idempotency-key K]", summary: "fire a manual event (POST /api/fire)",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := fireFlags(getenv); return fs }, run: fireCmd},
		{name: "schedules", usage: "list | pause ID | resume ID | trigger ID | backfill ID --from T --to T",
			summary: "cron schedules: next fire, last tick, counts; pause, resume, trigger now, backfill",
			detail:  "Times are RFC 3339 (2026-11-20T00:00:00Z). Only the member owning a schedule acts on it (409 naming the owner otherwise).",
			flags:   func(getenv func(string) string) *flag.FlagSet { fs, _ := schedulesFlags(getenv); return fs }, run: schedulesCmd},
		{name: "dlq", usage: "list [--reason R] [--topic T] | replay PARTITION/OFFSET... | replay --all [--reason R] [--topic T]",
			summary: "list the dead-letter topic (newest first); replay dead letters to their original topic and partition",
			flags:   func(getenv func(string) string) *flag.FlagSet { fs, _ := dlqFlags(getenv); return fs }, run: dlqCmd},
		{name: "validate", usage: "PATH", summary: "check YAML saga files as `run --sagas PATH` would load them (exit 0 when valid)",
			detail: "PATH is a YAML file or a directory of *.yaml / *.yml. Prints each saga, or every problem with its file:line:column (exit 1).",
			flags:  func(func(string) string) *flag.FlagSet { return newFlagSet("validate") }, run: validateRun},
		{name: "topics", usage: "[--create] [run flags]", summary: "the Kafka topics the configured member needs, with their settings",
			detail: "Lists every topic a member with this configuration (the run flags and SAGAZ_* variables: --group, topic names,\n" +
				"--topic-partitions) consumes, produces to or creates: trigger topics, the events, cron and dead-letter topics, and\n" +
				"the compacted changelogs <group>-changelog-<topic>; for sagas with command or await steps the replies topics\n" +
				"<group>-replies-<topic>, the command topics and the awaited topics. With --create it connects to --brokers and\n" +
				"creates the missing ones (changelogs and replies topics with their source's partition count), as a member with\n" +
				"--create-topics would.",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _, _, _ := topicsFlags(getenv); return fs }, run: topicsCmd},
		{name: "store", usage: "check | migrate [--data-dir DIR]", summary: "check a stopped member's saga store, or migrate it to this release's schema",
			detail: "  check    the store's schema, bbolt's page checks, every record's checksum, the status index and the parked\n" +
				"           set against the records, counts by status (exit 0 when nothing is wrong, 1 otherwise); read-only\n" +
				"  migrate  upgrade a store of an older schema in place, after copying it aside (<file>.schema<N>-<time>); a\n" +
				"           member does the same when it opens one. A store of a newer schema is refused (docs/upgrading.md)\n" +
				"Stop the member that uses --data-dir first (the store is locked while it runs).",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := storeFlags(getenv); return fs }, run: storeCmd},
		{name: "healthcheck", usage: "[--http-addr ADDR] [--timeout D]", summary: "exit 0 when the service at --http-addr is ready (/readyz 200), else 1",
			detail: "For container health checks (the image has no shell): GETs /readyz on --http-addr (SAGAZ_HTTP_ADDR, as `run` uses;\n" +
				"an unspecified host such as 0.0.0.0 is asked on loopback).",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := healthFlags(getenv); return fs }, run: healthcheckCmd},
		{name: "demo", usage: "[--brokers ADDR] [--count N] [--saga order|transfer]", summary: "produce sample order events (some with fail_at), or transfers",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := demoFlags(getenv); return fs }, run: demo},
		{name: "demo-participant", usage: "[--brokers ADDR] [--instance-id ID]", summary: "run the accounts service of the transfer demo (replies to accounts.commands)",
			detail: "Consumes accounts.commands in its own group (--group) and replies to each debit, credit and refund once, in Kafka\n" +
				"transactions: fail_at refuses that command for good, delay_ms delays the reply, no_reply stays silent. Runs until\n" +
				"SIGTERM or SIGINT. Give each process of the group its own --instance-id.",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := participantFlags(getenv); return fs }, run: demoParticipant},
		{name: "version", usage: "[-o table|json]", summary: "print the version and commit",
			flags: func(getenv func(string) string) *flag.FlagSet { fs, _ := versionFlags(); return fs }, run: versionCmd},
		{name: "help", usage: "[COMMAND]", summary: "this help, or a command's arguments and flags",
			flags: func(func(string) string) *flag.FlagSet { return newFlagSet("help") }, run: helpCmd},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// newFlagSet returns a flag set that reports errors instead of printing.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("sagaz "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// boolFlags names the flags of every command that take no value, so flags
// placed before the command can be skipped with their values.
func boolFlags() map[string]bool {
	out := map[string]bool{"h": true, "help": true, "version": true}
	env := func(string) string { return "" }
	for _, c := range commands {
		c.flags(env).VisitAll(func(f *flag.Flag) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				out[f.Name] = true
			}
		})
	}
	return out
}

// splitCommand finds the command among args (flags may come before it):
// the first argument that is not a flag nor a flag's value. It returns the
// command ("" when none) and the other arguments in order, and whether
// --help or --version was given before the command.
func splitCommand(args []string) (cmd string, rest []string, help, version bool) {
	bools := boolFlags()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return args[i+1], append(append([]string(nil), args[:i]...), args[i+2:]...), help, version
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return a, append(append([]string(nil), args[:i]...), args[i+1:]...), help, version
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "h", "help":
			help = true
		case "version":
			version = true
		}
		if !hasValue && !bools[name] {
			i++ // its value
		}
	}
	return "", args, help, version
}

// parseArgs parses flags anywhere among args and returns the positional
// arguments; "--" ends the flags. Errors are usage errors of cmd;
// --help prints the command's help to out and returns flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string, cmd string, out io.Writer) ([]string, error) {
	var pos []string
	for {
		before := args
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printCommandHelp(out, lookup(cmd))
				return nil, flag.ErrHelp
			}
			return nil, &usageError{err: err, cmd: cmd}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if n := len(before) - len(args); n > 0 && before[n-1] == "--" {
			return append(pos, args...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// output is the -o flag of the commands that print results.
type output struct{ format string }

func (o *output) define(fs *flag.FlagSet) {
	fs.StringVar(&o.format, "o", "table", "output format: table (for people) or json (for scripts)")
	fs.StringVar(&o.format, "output", "table", "same as -o")
}

func (o *output) check(cmd string) error {
	if o.format != "table" && o.format != "json" {
		return usagef(cmd, "-o %q: want table or json", o.format)
	}
	return nil
}

// emit prints v as indented JSON with -o json, else with table.
func (o *output) emit(w io.Writer, v any, table func(io.Writer) error) error {
	if o.format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return table(w)
}

func printHelp(w io.Writer) {
	fmt.Fprint(w, `sagaz — sagas started by Kafka events, recorded durably, run to an end.

Usage:
  sagaz <command> [arguments] [flags]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Flags may come anywhere on the line: "sagaz sagas list --status failed --api URL" and
"sagaz --api URL sagas list" are the same. The commands that talk to a running service
(triggers, sagas, fire, schedules) take --api URL (SAGAZ_API, default http://127.0.0.1:8080)
and --token T (SAGAZ_ADMIN_TOKEN); every command that prints results takes -o table|json.

Exit codes: 0 done; 1 failed (the service answered with an error or could not be reached);
2 usage error (unknown command or flag, bad value, missing argument).

Run "sagaz help COMMAND" for a command's arguments and flags; "sagaz run" starts the service.
`)
}

// printCommandHelp prints a command's usage and flags. The defaults shown
// are the built-in ones, never the environment's (which may hold secrets).
func printCommandHelp(w io.Writer, c *command) {
	if c == nil {
		printHelp(w)
		return
	}
	fmt.Fprintf(w, "Usage: sagaz %s %s\n\n%s.\n", c.name, c.usage, strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.detail != "" {
		fmt.Fprintf(w, "\n%s\n", c.detail)
	}
	fs := c.flags(func(string) string { return "" })
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	fmt.Fprintln(w, "\nFlags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func helpCmd(_ context.Context, args []string, out io.Writer, _ func(string) string) error {
	pos, err := parseArgs(newFlagSet("help"), args, "help", out)
	if err != nil {
		return err
	}
	switch len(pos) {
	case 0:
		printHelp(out)
	case 1:
		c := lookup(pos[0])
		if c == nil {
			return usagef("", "help: unknown command %q", pos[0])
		}
		printCommandHelp(out, c)
	default:
		return usagef("help", "help takes one command, got %q", strings.Join(pos, " "))
	}
	return nil
}

// versionInfo is what `sagaz version` prints: the build, and the formats
// it writes and reads (docs/upgrading.md).
type versionInfo struct {
	buildinfo.Info
	StoreSchema       int `json:"store_schema"`
	OldestStoreSchema int `json:"oldest_store_schema"`
	RecordFormat      int `json:"record_format"`
}

func versionFlags() (*flag.FlagSet, *output) {
	fs := newFlagSet("version")
	o := &output{}
	o.define(fs)
	return fs, o
}

func versionCmd(_ context.Context, args []string, out io.Writer, _ func(string) string) error {
	fs, o := versionFlags()
	pos, err := parseArgs(fs, args, "version", out)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("version", "unexpected arguments: %s", strings.Join(pos, " "))
	}
	if err := o.check("version"); err != nil {
		return err
	}
	v := versionInfo{Info: buildinfo.Get(), StoreSchema: storage.SchemaVersion, OldestStoreSchema: storage.OldestSchema, RecordFormat: storage.RecordVersion}
	return o.emit(out, v, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s\nformats: store schema %d (reads %d to %d), saga record format %d (reads 1 to %d)\n",
			v.Info, v.StoreSchema, v.OldestStoreSchema, v.StoreSchema, v.RecordFormat, v.RecordFormat)
		return err
	})
}

// validateRun is `sagaz validate PATH` in the command table.
func validateRun(_ context.Context, args []string, w io.Writer, _ func(string) string) error {
	pos, err := parseArgs(newFlagSet("validate"), args, "validate", w)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("validate", "usage: sagaz validate PATH (a YAML file or a directory of *.yaml / *.yml)")
	}
	return validateCmd(pos, w)
}
