package main

import (
	"bytes"
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

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
)

// apiClient talks to a running service's HTTP API (the CLI subcommands).
type apiClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAPIClient(fs *flag.FlagSet, args []string, getenv func(string) string) (*apiClient, []string, error) {
	base := getenv("SAGAZ_API")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	c := &apiClient{hc: &http.Client{Timeout: 30 * time.Second}}
	token := getenv("SAGAZ_ADMIN_TOKEN")
	if strings.TrimSpace(token) == "" {
		token = getenv("SAGAZ_READ_TOKEN")
	}
	fs.StringVar(&c.base, "api", base, "base URL of the service's HTTP API (env SAGAZ_API)")
	fs.StringVar(&c.token, "token", token, "API token, sent on every request (env SAGAZ_ADMIN_TOKEN, else SAGAZ_READ_TOKEN; of a list, the first)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	c.base = strings.TrimRight(c.base, "/")
	if toks := strings.Fields(c.token); len(toks) > 0 {
		c.token = toks[0] // a rotation list: the newest comes first
	} else {
		c.token = ""
	}
	return c, fs.Args(), nil
}

// apiError is an error answer of the API (the service was reached).
type apiError struct {
	Code        int
	Msg, Detail string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%d): %s", e.Msg, e.Code, e.Detail) }

// do sends a request and decodes a 2xx JSON answer into out; an error
// answer becomes an error with the API's message.
func (c *apiClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if method != http.MethodGet {
		// Also for empty bodies: without a token the service takes only
		// JSON requests (a web page cannot send them cross-origin).
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the service running? see --api)", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error, Detail string }
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return &apiError{Code: resp.StatusCode, Msg: e.Error, Detail: e.Detail}
		}
		return &apiError{Code: resp.StatusCode, Msg: method + " " + path, Detail: resp.Status}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(raw, out)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// triggersCmd prints the trigger table of the running service, or of this
// binary when no service answers.
func triggersCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	c, _, err := newAPIClient(flag.NewFlagSet("sagaz triggers", flag.ContinueOnError), args, getenv)
	if err != nil {
		return err
	}
	var out struct{ Triggers []engine.TableRow }
	if err := c.do(ctx, http.MethodGet, "/api/triggers", nil, &out); err != nil {
		if _, answered := errors.AsType[*apiError](err); answered {
			return err // e.g. 401: the service is there, the token is not
		}
		routes, rerr := engine.DefaultRegistry().Routes()
		if rerr != nil {
			return rerr
		}
		fmt.Fprintf(w, "(no service at %s: the triggers compiled into this binary)\n", c.base)
		return routes.WriteTable(w)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tNAME\tSAGA\tSTEPS\tIDEMPOTENCY KEY\tMAX CONCURRENT")
	for _, r := range out.Triggers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\n", r.Source, r.Name, r.Saga, r.Steps, r.IdempotencyKey, r.MaxConcurrent)
	}
	return tw.Flush()
}

// sagasCmd: sagas list|show|retry|cancel.
func sagasCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errors.New("usage: sagaz sagas list [--status S] [--saga NAME] [--limit N] [--cursor C] | show ID | show NAME [--sagas PATH] | retry ID | cancel ID")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sagaz sagas "+sub, flag.ContinueOnError)
	sagasPath := fs.String("sagas", getenv("SAGAZ_SAGAS"), "show NAME: YAML file or directory of sagas (env SAGAZ_SAGAS)")
	status := fs.String("status", "", "filter: pending, executing, completed, compensating, rolled_back, failed")
	saga := fs.String("saga", "", "filter: saga name")
	limit := fs.Int("limit", 50, "sagas per page (1-1000)")
	cursor := fs.String("cursor", "", "next page cursor, from a previous listing")
	c, rest, err := newAPIClient(fs, args, getenv)
	if err != nil {
		return err
	}
	if len(rest) > 1 { // flags after the ID or name: sagaz sagas show NAME --sagas PATH
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
		rest = append(rest[:1], fs.Args()...)
	}
	needID := func() (string, error) {
		if len(rest) != 1 {
			return "", fmt.Errorf("usage: sagaz sagas %s ID", sub)
		}
		return url.PathEscape(rest[0]), nil
	}
	switch sub {
	case "list":
		q := url.Values{}
		for k, v := range map[string]string{"status": *status, "saga": *saga, "cursor": *cursor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		q.Set("limit", fmt.Sprint(*limit))
		var out struct {
			Sagas      []httpapi.SagaView
			NextCursor string `json:"next_cursor"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/sagas?"+q.Encode(), nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSAGA\tSTATUS\tUPDATED\tERROR")
		for _, s := range out.Sagas {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Saga, s.Status, s.UpdatedAt.Format(time.RFC3339), s.Error)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if out.NextCursor != "" {
			fmt.Fprintf(w, "next page: sagaz sagas list --cursor %s\n", out.NextCursor)
		}
		return nil
	case "show":
		id, err := needID()
		if err != nil {
			return err
		}
		if !strings.Contains(rest[0], ":") { // saga IDs have ':', names cannot
			return showDefinition(w, rest[0], *sagasPath)
		}
		var out httpapi.SagaView
		if err := c.do(ctx, http.MethodGet, "/api/sagas/"+id, nil, &out); err != nil {
			return err
		}
		return printJSON(w, out)
	case "retry", "cancel":
		id, err := needID()
		if err != nil {
			return err
		}
		var out map[string]string
		if err := c.do(ctx, http.MethodPost, "/api/sagas/"+id+"/"+sub, nil, &out); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: %s accepted\n", rest[0], sub)
		return nil
	default:
		return fmt.Errorf("unknown sagas command %q (want list, show, retry or cancel)", sub)
	}
}

// fireCmd: fire EVENT_TYPE [JSON object] — a manual event.
func fireCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("sagaz fire", flag.ContinueOnError)
	key := fs.String("idempotency-key", "", "Idempotency-Key of the event")
	c, rest, err := newAPIClient(fs, args, getenv)
	if err != nil {
		return err
	}
	if len(rest) < 1 || len(rest) > 2 {
		return errors.New(`usage: sagaz fire EVENT_TYPE ['{"field": "value"}']`)
	}
	body := map[string]any{}
	if len(rest) == 2 {
		if err := json.Unmarshal([]byte(rest[1]), &body); err != nil {
			return fmt.Errorf("event body: not a JSON object: %w", err)
		}
	}
	body["event_type"] = rest[0]
	raw, _ := json.Marshal(body)
	req := *c
	if *key != "" {
		req.hc = &http.Client{Timeout: c.hc.Timeout, Transport: headerTransport{"Idempotency-Key", *key}}
	}
	var out httpapi.EventAccepted
	if err := req.do(ctx, http.MethodPost, "/api/fire", raw, &out); err != nil {
		return err
	}
	return printJSON(w, out)
}

type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

// schedulesCmd: schedules list|pause|resume|trigger|backfill.
func schedulesCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errors.New("usage: sagaz schedules list | pause ID | resume ID | trigger ID | backfill ID --from T --to T")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sagaz schedules "+sub, flag.ContinueOnError)
	from := fs.String("from", "", "backfill: first time (RFC 3339)")
	to := fs.String("to", "", "backfill: last time (RFC 3339)")
	c, rest, err := newAPIClient(fs, args, getenv)
	if err != nil {
		return err
	}
	if len(rest) > 1 { // flags after the ID: sagaz schedules backfill ID --from ... --to ...
		if err := fs.Parse(rest[1:]); err != nil {
			return err
		}
		rest = append(rest[:1], fs.Args()...)
	}
	if sub == "list" {
		var out struct{ Schedules []cron.Row }
		if err := c.do(ctx, http.MethodGet, "/api/schedules", nil, &out); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSPEC\tHERE\tPAUSED\tNEXT\tLAST TICK\tFIRED\tSKIPPED")
		for _, r := range out.Schedules {
			last := ""
			if !r.State.LastTick.IsZero() {
				last = r.State.LastTick.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%s\t%d\t%d\n", r.ID, r.Spec, r.OwnedHere, r.Paused, r.Next.Format(time.RFC3339), last, r.State.Fired, r.State.Skipped)
		}
		return tw.Flush()
	}
	if len(rest) != 1 {
		return fmt.Errorf("usage: sagaz schedules %s ID", sub)
	}
	var body []byte
	switch sub {
	case "pause", "resume", "trigger":
	case "backfill":
		body, _ = json.Marshal(map[string]string{"from": *from, "to": *to})
	default:
		return fmt.Errorf("unknown schedules command %q (want list, pause, resume, trigger or backfill)", sub)
	}
	var out map[string]any
	if err := c.do(ctx, http.MethodPost, "/api/schedules/"+url.PathEscape(rest[0])+"/"+sub, body, &out); err != nil {
		return err
	}
	return printJSON(w, out)
}
