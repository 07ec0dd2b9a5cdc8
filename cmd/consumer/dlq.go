package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
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

// dlqCmd: dlq list | dlq replay — the dead-letter topic through the API.
func dlqCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	const usage = "usage: sagaz dlq list [--reason R] [--topic T] [--limit N] [--cursor C] | " +
		"dlq replay PARTITION/OFFSET... | dlq replay --all [--reason R] [--topic T]"
	if len(args) == 0 {
		return errors.New(usage)
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sagaz dlq "+sub, flag.ContinueOnError)
	reason := fs.String("reason", "", "filter: decode, transform_error, transform_panic, missing_key, bad_context, oversized, no_route")
	topic := fs.String("topic", "", "filter: original topic")
	limit := fs.Int("limit", 50, "dead letters per page (1-1000)")
	cursor := fs.String("cursor", "", "next page cursor, from a previous listing")
	all := fs.Bool("all", false, "replay: every dead letter matching --reason and --topic")
	asJSON := fs.Bool("json", false, "list: print the API's JSON")
	c, rest, err := newAPIClient(fs, args, getenv)
	if err != nil {
		return err
	}
	list := func(cur string) (dlqPage, error) {
		q := url.Values{}
		for k, v := range map[string]string{"reason": *reason, "topic": *topic, "cursor": cur} {
			if v != "" {
				q.Set(k, v)
			}
		}
		q.Set("limit", fmt.Sprint(*limit))
		var page dlqPage
		err := c.do(ctx, http.MethodGet, "/api/deadletters?"+q.Encode(), nil, &page)
		return page, err
	}
	switch sub {
	case "list":
		if len(rest) > 0 {
			return errors.New(usage)
		}
		page, err := list(*cursor)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(w, page)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
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
	case "replay":
		var coords []deadletter.Coord
		switch {
		case *all && len(rest) > 0:
			return errors.New("dlq replay: give dead letters or --all, not both")
		case *all:
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
				fmt.Fprintln(w, "no dead letters match")
				return nil
			}
		case len(rest) == 0:
			return errors.New(usage)
		default:
			for _, a := range rest {
				co, err := deadletter.ParseCoord(a)
				if err != nil {
					return err
				}
				coords = append(coords, co)
			}
		}
		failed := 0
		for len(coords) > 0 {
			n := min(len(coords), deadletter.MaxReplay)
			body, _ := json.Marshal(httpapi.ReplayRequest{DeadLetters: coords[:n]})
			coords = coords[n:]
			var out httpapi.ReplayAnswer
			if err := c.do(ctx, http.MethodPost, "/api/deadletters/replay", body, &out); err != nil {
				return err
			}
			for _, r := range out.Results {
				if r.Error != "" {
					fmt.Fprintf(w, "%d/%d: not replayed: %s\n", r.Partition, r.Offset, r.Error)
					continue
				}
				fmt.Fprintf(w, "%d/%d: replayed to %s partition %d offset %d\n", r.Partition, r.Offset, r.Topic, r.ReplayPartition, r.ReplayOffset)
			}
			failed += out.Failed
		}
		if failed > 0 {
			return fmt.Errorf("%d dead letter(s) not replayed", failed)
		}
		return nil
	default:
		return fmt.Errorf("unknown dlq command %q (want list or replay)", sub)
	}
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return s
}
