package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sagaz-go/sagaz/deadletter"
	"github.com/sagaz-go/sagaz/httpapi"
)

type dlqPage struct {
	Topic       string              `json:"topic"`
	DeadLetters []deadletter.Letter `json:"dead_letters"`
	NextCursor  string              `json:"next_cursor"`
	Scanned     int                 `json:"scanned"`
}

type dlqOpts struct {
	apiFlags
	reason, topic, cursor string
	limit                 int
	all, asJSON           bool
}

func dlqFlags(getenv func(string) string) (*flag.FlagSet, *dlqOpts) {
	fs := newFlagSet("dlq")
	o := &dlqOpts{}
	o.apiFlags.define(fs, getenv)
	fs.StringVar(&o.reason, "reason", "", "filter: decode, transform_error, transform_panic, missing_key, invalid_key, bad_context, oversized, no_route")
	fs.StringVar(&o.topic, "topic", "", "filter: original topic")
	fs.IntVar(&o.limit, "limit", 50, "list: dead letters per page (1-1000)")
	fs.StringVar(&o.cursor, "cursor", "", "list: next page cursor, from a previous listing")
	fs.BoolVar(&o.all, "all", false, "replay: every dead letter matching --reason and --topic")
	fs.BoolVar(&o.asJSON, "json", false, "same as -o json")
	return fs, o
}

// dlqCmd: dlq list | dlq replay — the dead-letter topic through the API.
func dlqCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, o := dlqFlags(getenv)
	pos, err := parseArgs(fs, args, "dlq", w)
	if err != nil {
		return err
	}
	if o.asJSON {
		o.format = "json"
	}
	if len(pos) == 0 {
		return usagef("dlq", "missing subcommand: list, or replay PARTITION/OFFSET... | replay --all")
	}
	sub, rest := pos[0], pos[1:]
	c, err := o.client("dlq")
	if err != nil {
		return err
	}
	list := func(cur string) (dlqPage, error) {
		q := url.Values{}
		for k, v := range map[string]string{"reason": o.reason, "topic": o.topic, "cursor": cur} {
			if v != "" {
				q.Set(k, v)
			}
		}
		q.Set("limit", fmt.Sprint(o.limit))
		var page dlqPage
		err := c.do(ctx, http.MethodGet, "/api/deadletters?"+q.Encode(), nil, &page)
		return page, err
	}
	switch sub {
	case "list":
		if len(rest) > 0 {
			return usagef("dlq", "dlq list takes no arguments, got %q", strings.Join(rest, " "))
		}
		page, err := list(o.cursor)
		if err != nil {
			return err
		}
		return o.emit(w, page, func(w io.Writer) error {
			tw := newTable(w)
			fmt.Fprintln(tw, "DEAD LETTER\tTIME\tREASON\tORIGINAL\tSAGA\tKEY\tERROR")
			for _, l := range page.DeadLetters {
				fmt.Fprintf(tw, "%d/%d\t%s\t%s\t%s/%d@%d\t%s\t%s\t%s\n", l.Partition, l.Offset, l.Timestamp.Format(time.RFC3339), l.Reason,
					l.Original.Topic, l.Original.Partition, l.Original.Offset, l.Saga, oneLine(l.Key, 40), oneLine(l.Error, 80))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(w, "(%d records read) next page: sagaz dlq list --cursor %s\n", page.Scanned, page.NextCursor)
			}
			return nil
		})
	case "replay":
		var coords []deadletter.Coord
		switch {
		case o.all && len(rest) > 0:
			return usagef("dlq", "dlq replay: give dead letters or --all, not both")
		case o.all:
			for cur := ""; ; {
				page, err := list(cur)
				if err != nil {
					return err
				}
				for _, l := range page.DeadLetters {
					coords = append(coords, deadletter.Coord{Partition: l.Partition, Offset: l.Offset})
				}
				if cur = page.NextCursor; cur == "" {
					break
				}
			}
			if len(coords) == 0 {
				return o.emit(w, httpapi.ReplayAnswer{}, func(w io.Writer) error {
					_, err := fmt.Fprintln(w, "no dead letters match")
					return err
				})
			}
		case len(rest) == 0:
			return usagef("dlq", "dlq replay needs PARTITION/OFFSET... or --all")
		default:
			for _, a := range rest {
				co, err := deadletter.ParseCoord(a)
				if err != nil {
					return usagef("dlq", "%v", err)
				}
				coords = append(coords, co)
			}
		}
		var all httpapi.ReplayAnswer
		for len(coords) > 0 {
			n := min(len(coords), deadletter.MaxReplay)
			body, _ := json.Marshal(httpapi.ReplayRequest{DeadLetters: coords[:n]})
			coords = coords[n:]
			var out httpapi.ReplayAnswer
			if err := c.do(ctx, http.MethodPost, "/api/deadletters/replay", body, &out); err != nil {
				return err
			}
			all.Results = append(all.Results, out.Results...)
			all.Failed += out.Failed
			all.Replayed += out.Replayed
		}
		if err := o.emit(w, all, func(w io.Writer) error {
			for _, r := range all.Results {
				if r.Error != "" {
					fmt.Fprintf(w, "%d/%d: not replayed: %s\n", r.Partition, r.Offset, r.Error)
					continue
				}
				fmt.Fprintf(w, "%d/%d: replayed to %s partition %d offset %d\n", r.Partition, r.Offset, r.Topic, r.ReplayPartition, r.ReplayOffset)
			}
			return nil
		}); err != nil {
			return err
		}
		if all.Failed > 0 {
			return fmt.Errorf("%d dead letter(s) not replayed", all.Failed)
		}
		return nil
	default:
		return usagef("dlq", "unknown dlq command %q (want list or replay)", sub)
	}
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}
