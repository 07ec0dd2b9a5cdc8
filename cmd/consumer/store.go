package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/storage"
)

type storeOpts struct {
	output
	dataDir string
	timeout time.Duration
}

func storeFlags(getenv func(string) string) (*flag.FlagSet, *storeOpts) {
	fs := newFlagSet("store")
	o := &storeOpts{}
	o.output.define(fs)
	dir := getenv("SAGAZ_DATA_DIR")
	if dir == "" {
		dir = "data"
	}
	fs.StringVar(&o.dataDir, "data-dir", dir, "the member's data directory (env SAGAZ_DATA_DIR), holding sagaz.db")
	fs.DurationVar(&o.timeout, "lock-timeout", 2*time.Second, "how long to wait for a process that holds the store")
	return fs, o
}

// storeCmd: sagaz store check|migrate, on a stopped member's store.
func storeCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, o := storeFlags(getenv)
	pos, err := parseArgs(fs, args, "store", w)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("store", "usage: sagaz store check|migrate [--data-dir DIR]")
	}
	if err := o.check("store"); err != nil {
		return err
	}
	path := member.StorePath(o.dataDir)
	switch pos[0] {
	case "check":
		rep, err := storage.Check(ctx, path, o.timeout)
		if err != nil {
			return err
		}
		if err := o.emit(w, rep, func(w io.Writer) error { return storeReport(w, rep) }); err != nil {
			return err
		}
		if !rep.OK() {
			return errors.New("the store has problems (see above)")
		}
		return nil
	case "migrate":
		m, err := storage.MigrateFile(path, storage.BoltOptions{LockTimeout: o.timeout})
		if err != nil {
			return err
		}
		type answer struct {
			Path      string             `json:"path"`
			Schema    int                `json:"schema"`
			Migration *storage.Migration `json:"migration"` // null: nothing to do
		}
		out := answer{Path: path, Schema: storage.SchemaVersion, Migration: m}
		return o.emit(w, out, func(w io.Writer) error {
			if m == nil {
				_, err := fmt.Fprintf(w, "%s: at store schema %d already; nothing to do\n", path, storage.SchemaVersion)
				return err
			}
			_, err := fmt.Fprintf(w, "%s: migrated from store schema %d to %d in %s; the file as it was is at %s (delete it once the member runs well)\n",
				path, m.From, m.To, m.Took.Round(time.Millisecond), m.Backup)
			return err
		})
	default:
		return usagef("store", "unknown store command %q (want check or migrate)", pos[0])
	}
}

func storeReport(w io.Writer, r *storage.Report) error {
	kv := newTable(w)
	fmt.Fprintf(kv, "Store\t%s\n", r.Path)
	schema := fmt.Sprintf("%d", r.Schema)
	switch {
	case r.Schema == 0:
		schema = "none (an empty store)"
	case r.Newer:
		schema += fmt.Sprintf(" — newer than this release reads (%d to %d): run a release that reads it, see docs/upgrading.md", storage.OldestSchema, r.SchemaCurrent)
	case r.NeedsUpgrade:
		schema += fmt.Sprintf(" — older: the next open (or `sagaz store migrate`) upgrades it to %d", r.SchemaCurrent)
	}
	fmt.Fprintf(kv, "Schema\t%s\n", schema)
	fmt.Fprintf(kv, "Partitions\t%d\n", r.Partitions)
	var counts []string
	for st, n := range r.ByStatus {
		counts = append(counts, fmt.Sprintf("%s %d", st, n))
	}
	sort.Strings(counts)
	fmt.Fprintf(kv, "Sagas\t%d (%s)\n", r.Sagas, strings.Join(counts, ", "))
	if r.NewerRecords > 0 {
		fmt.Fprintf(kv, "Newer records\t%d written by a newer release (this release cannot run them)\n", r.NewerRecords)
	}
	verdict := "ok"
	if r.ProblemCount > 0 {
		verdict = fmt.Sprintf("%d problem(s)", r.ProblemCount)
	}
	fmt.Fprintf(kv, "Check\t%s\n", verdict)
	if err := kv.Flush(); err != nil {
		return err
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	if r.ProblemCount > len(r.Problems) {
		fmt.Fprintf(w, "  ... and %d more\n", r.ProblemCount-len(r.Problems))
	}
	return nil
}
