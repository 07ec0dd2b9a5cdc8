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
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
)

// apiFlags are the flags of the commands that talk to the HTTP API.
type apiFlags struct {
	base  string
	token string
	output
}

func (a *apiFlags) define(fs *flag.FlagSet, getenv func(string) string) {
	base := getenv("SAGAZ_API")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	token := getenv("SAGAZ_ADMIN_TOKEN")
	if strings.TrimSpace(token) == "" {
		token = getenv("SAGAZ_READ_TOKEN")
	}
	fs.StringVar(&a.base, "api", base, "base URL of the service's HTTP API (env SAGAZ_API)")
	fs.StringVar(&a.token, "token", token, "API token, sent on every request (env SAGAZ_ADMIN_TOKEN, else SAGAZ_READ_TOKEN; of a list, the first)")
	a.output.define(fs)
}

// client checks the output format and returns the API client.
func (a *apiFlags) client(cmd string) (*apiClient, error) {
	if err := a.check(cmd); err != nil {
		return nil, err
	}
	u, err := url.Parse(a.base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef(cmd, "--api %q: want a URL such as http://127.0.0.1:8080", a.base)
	}
	token := ""
	if toks := strings.Fields(a.token); len(toks) > 0 {
		token = toks[0] // a rotation list: the newest comes first
	}
	return &apiClient{base: strings.TrimRight(a.base, "/"), token: token, hc: &http.Client{Timeout: 30 * time.Second}}, nil
}

// apiClient talks to a running service's HTTP API.
type apiClient struct {
	base   string
	token  string
	hc     *http.Client
	header http.Header // extra request headers
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
	for k, vs := range c.header {
		req.Header[k] = vs
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

func triggersFlags(getenv func(string) string) (*flag.FlagSet, *apiFlags) {
	fs := newFlagSet("triggers")
	a := &apiFlags{}
	a.define(fs, getenv)
	return fs, a
}

// triggersCmd prints the trigger table of the running service, or of this
// binary when no service answers.
func triggersCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, a := triggersFlags(getenv)
	pos, err := parseArgs(fs, args, "triggers", w)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("triggers", "unexpected arguments: %s", strings.Join(pos, " "))
	}
	c, err := a.client("triggers")
	if err != nil {
		return err
	}
	var out struct {
		Triggers []engine.TableRow `json:"triggers"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/triggers", nil, &out); err != nil {
		if _, answered := errors.AsType[*apiError](err); answered {
			return err // e.g. 401: the service is there, the token is not
		}
		routes, rerr := engine.DefaultRegistry().Routes()
		if rerr != nil {
			return rerr
		}
		out.Triggers = routes.Table()
		if a.format == "table" {
			fmt.Fprintf(w, "(no service at %s: the triggers compiled into this binary)\n", c.base)
		}
	}
	return a.emit(w, out, func(w io.Writer) error {
		tw := newTable(w)
		fmt.Fprintln(tw, "SOURCE\tNAME\tSAGA\tSTEPS\tIDEMPOTENCY KEY\tMAX CONCURRENT")
		for _, r := range out.Triggers {
			name, mc := r.Name, "unbounded"
			if r.Schedule != "" {
				name += " (" + r.Schedule + ")"
			}
			if r.MaxConcurrent > 0 {
				mc = fmt.Sprint(r.MaxConcurrent)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Source, name, r.Saga, r.Steps, r.IdempotencyKey, mc)
		}
		return tw.Flush()
	})
}

type sagasOpts struct {
	apiFlags
	sagas                string
	status, saga, cursor string
	limit                int
	watch                bool
	interval             time.Duration
	mapping              stepMapping
	contextFile, reason  string
}

// stepMapping is retry's --map OLD=NEW (repeatable): how a parked saga's
// recorded steps map onto the current definition's.
type stepMapping map[string]string

func (m *stepMapping) String() string {
	var parts []string
	for k, v := range *m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (m *stepMapping) Set(v string) error {
	from, to, ok := strings.Cut(v, "=")
	if !ok || from == "" {
		return fmt.Errorf("want OLD=NEW (a recorded step and a step of the current definition; OLD= leaves OLD out), got %q", v)
	}
	if *m == nil {
		*m = stepMapping{}
	}
	if _, dup := (*m)[from]; dup {
		return fmt.Errorf("step %q mapped twice", from)
	}
	(*m)[from] = to
	return nil
}

func sagasFlags(getenv func(string) string) (*flag.FlagSet, *sagasOpts) {
	fs := newFlagSet("sagas")
	o := &sagasOpts{}
	o.apiFlags.define(fs, getenv)
	fs.StringVar(&o.sagas, "sagas", getenv("SAGAZ_SAGAS"), "show NAME: YAML file or directory of sagas (env SAGAZ_SAGAS)")
	fs.StringVar(&o.status, "status", "", "list: only sagas in this status (pending, executing, completed, compensating, rolled_back, failed, resolved, parked)")
	fs.Var(&o.mapping, "map", "retry of a parked saga: OLD=NEW maps a recorded step onto a step of the current definition (repeatable; unmapped steps keep their name; OLD= leaves OLD's effect uncompensated)")
	fs.StringVar(&o.saga, "saga", "", "list: only sagas of this name")
	fs.IntVar(&o.limit, "limit", 50, "list: sagas per page (1-1000)")
	fs.StringVar(&o.cursor, "cursor", "", "list: the next page's cursor, from a previous listing")
	fs.BoolVar(&o.watch, "watch", false, "list: list again every --interval until interrupted")
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "list --watch: time between listings")
	fs.StringVar(&o.contextFile, "context-file", "", "retry: a JSON file whose object replaces the saga's context (the saga goes forward from the step that failed)")
	fs.StringVar(&o.reason, "reason", "", "retry, cancel, resolve: why (recorded in the saga's history; required by resolve)")
	return fs, o
}

// sagasCmd: sagas list|show|retry|resolve|cancel.
func sagasCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, o := sagasFlags(getenv)
	pos, err := parseArgs(fs, args, "sagas", w)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("sagas", "missing subcommand: list, show ID, retry ID, resolve ID or cancel ID")
	}
	sub, rest := pos[0], pos[1:]
	// Flags that belong to other subcommands are refused, not ignored.
	var misplaced []string
	fs.Visit(func(f *flag.Flag) {
		var only []string
		switch f.Name {
		case "status", "saga", "limit", "cursor", "watch", "interval":
			only = []string{"list"}
		case "context-file", "map":
			only = []string{"retry"}
		case "reason":
			only = []string{"retry", "cancel", "resolve"}
		default:
			return
		}
		if !slices.Contains(only, sub) {
			misplaced = append(misplaced, "--"+f.Name+": only for sagas "+strings.Join(only, ", "))
		}
	})
	if len(misplaced) > 0 {
		return usagef("sagas", "%s", strings.Join(misplaced, "; "))
	}
	c, err := o.client("sagas")
	if err != nil {
		return err
	}
	needID := func() (string, error) {
		if len(rest) != 1 {
			return "", usagef("sagas", "usage: sagaz sagas %s ID", sub)
		}
		return url.PathEscape(rest[0]), nil
	}
	switch sub {
	case "list":
		if len(rest) > 0 {
			return usagef("sagas", "sagas list takes no arguments, got %q", strings.Join(rest, " "))
		}
		if o.limit < 1 || o.limit > 1000 {
			return usagef("sagas", "--limit %d: want 1 to 1000", o.limit)
		}
		if o.watch {
			if o.interval < 100*time.Millisecond {
				return usagef("sagas", "--interval %s: want at least 100ms", o.interval)
			}
			return watchSagas(ctx, c, o, w)
		}
		return listSagas(ctx, c, o, w)
	case "show":
		id, err := needID()
		if err != nil {
			return err
		}
		if !strings.Contains(rest[0], ":") { // saga IDs have ':', names cannot: a definition
			return showDefinition(w, rest[0], o.sagas)
		}
		var out httpapi.SagaView
		if err := c.do(ctx, http.MethodGet, "/api/sagas/"+id, nil, &out); err != nil {
			return err
		}
		return o.emit(w, out, func(w io.Writer) error { return showSaga(w, &out) })
	case "retry", "cancel", "resolve":
		id, err := needID()
		if err != nil {
			return err
		}
		body, err := operateBody(sub, o)
		if err != nil {
			return err
		}
		var out httpapi.OperateAnswer
		if err := c.do(ctx, http.MethodPost, "/api/sagas/"+id+"/"+sub, body, &out); err != nil {
			return err
		}
		return o.emit(w, out, func(w io.Writer) error {
			msg := sub + " accepted"
			if sub == "resolve" {
				msg = "resolved"
			}
			_, err := fmt.Fprintf(w, "%s: %s\n", rest[0], msg)
			return err
		})
	default:
		return usagef("sagas", "unknown sagas command %q (want list, show, retry, resolve or cancel)", sub)
	}
}

// operateBody is the request body of sagas retry, cancel or resolve: the
// reason, and for retry the context read from --context-file (checked to
// be a JSON object here, so a typo is a usage error rather than a trip to
// the service).
func operateBody(sub string, o *sagasOpts) ([]byte, error) {
	if sub == "resolve" && strings.TrimSpace(o.reason) == "" {
		return nil, usagef("sagas", "sagas resolve needs --reason TEXT: what was done about the saga (it goes into the saga's history)")
	}
	req := httpapi.RetryRequest{Reason: o.reason}
	if len(o.mapping) > 0 {
		req.Steps = o.mapping
	}
	if o.contextFile != "" {
		raw, err := os.ReadFile(o.contextFile)
		if err != nil {
			return nil, usagef("sagas", "--context-file: %v", err)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			if err == nil {
				err = errors.New("it holds null")
			}
			return nil, usagef("sagas", "--context-file %s: want a JSON object (the saga's new context): %v", o.contextFile, err)
		}
		req.Context = raw
	}
	if req.Reason == "" && req.Context == nil && req.Steps == nil {
		return nil, nil
	}
	return json.Marshal(req)
}

// sagaPage is the answer of GET /api/sagas.
type sagaPage struct {
	Sagas      []httpapi.SagaView `json:"sagas"`
	NextCursor string             `json:"next_cursor"`
}

func fetchSagas(ctx context.Context, c *apiClient, o *sagasOpts) (*sagaPage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"status": o.status, "saga": o.saga, "cursor": o.cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	q.Set("limit", fmt.Sprint(o.limit))
	var out sagaPage
	if err := c.do(ctx, http.MethodGet, "/api/sagas?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func listSagas(ctx context.Context, c *apiClient, o *sagasOpts, w io.Writer) error {
	page, err := fetchSagas(ctx, c, o)
	if err != nil {
		return err
	}
	return o.emit(w, page, func(w io.Writer) error { return sagaTable(w, page) })
}

func sagaTable(w io.Writer, page *sagaPage) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSAGA\tSTATUS\tUPDATED\tERROR")
	for _, s := range page.Sagas {
		why := s.Error
		if s.Parked != nil {
			why = "parked: " + s.Parked.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Saga, s.Status, s.UpdatedAt.Format(time.RFC3339), oneLine(why, 120))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.NextCursor != "" {
		fmt.Fprintf(w, "next page: sagaz sagas list --cursor %s\n", page.NextCursor)
	}
	return nil
}

// watchSagas lists every interval until ctx ends (Ctrl-C: exit 0). A
// failed listing is printed and the watch goes on (the service may be
// restarting). With -o json each listing is one JSON line.
func watchSagas(ctx context.Context, c *apiClient, o *sagasOpts, w io.Writer) error {
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		page, err := fetchSagas(ctx, c, o)
		switch {
		case ctx.Err() != nil:
			return nil
		case o.format == "json" && err == nil:
			b, _ := json.Marshal(page)
			fmt.Fprintf(w, "%s\n", b)
		case o.format == "json":
			b, _ := json.Marshal(map[string]string{"error": err.Error()})
			fmt.Fprintf(w, "%s\n", b)
		default:
			fmt.Fprintf(w, "Every %s: sagaz sagas list — %s\n", o.interval, time.Now().Format(time.RFC3339))
			if err != nil {
				fmt.Fprintf(w, "error: %v\n", err)
			} else if err := sagaTable(w, page); err != nil {
				return err
			}
			fmt.Fprintln(w)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(timeFormat)
}

// showSaga prints one saga for people: what it is, where it stands, each
// step (status, attempts, errors, times; the compensation on its own line),
// the step running now, and the context.
func showSaga(w io.Writer, s *httpapi.SagaView) error {
	kv := newTable(w)
	fmt.Fprintf(kv, "Saga\t%s\n", s.ID)
	if s.Definition != "" {
		fmt.Fprintf(kv, "Name\t%s (trigger %s, definition %s)\n", s.Saga, s.Trigger, s.Definition)
	} else {
		fmt.Fprintf(kv, "Name\t%s (trigger %s)\n", s.Saga, s.Trigger)
	}
	fmt.Fprintf(kv, "Status\t%s\n", s.Status)
	if s.IdempotencyKey != "" {
		fmt.Fprintf(kv, "Key\t%s\n", s.IdempotencyKey)
	}
	src := fmt.Sprintf("%s/%d offset %d", s.Source.Topic, s.Source.Partition, s.Source.Offset)
	if !s.EventTime.IsZero() {
		src += ", event at " + fmtTime(s.EventTime)
	}
	fmt.Fprintf(kv, "Source\t%s\n", src)
	fmt.Fprintf(kv, "Created\t%s\n", fmtTime(s.CreatedAt))
	fmt.Fprintf(kv, "Updated\t%s (%s after creation)\n", fmtTime(s.UpdatedAt), s.UpdatedAt.Sub(s.CreatedAt).Round(time.Millisecond))
	if s.Error != "" {
		fmt.Fprintf(kv, "Error\t%s\n", s.Error)
	}
	if p := s.Parked; p != nil {
		fmt.Fprintf(kv, "Parked\tsince %s (was %s): %s\n", fmtTime(p.Since), p.From, p.Reason)
		fmt.Fprintf(kv, "\tresumes where a member declaring its definition owns its partition; or: sagaz sagas retry %s [--map OLD=NEW], sagaz sagas cancel %s\n", s.ID, s.ID)
	}
	if !s.OwnedHere {
		owner := "another member"
		if s.Owner != "" {
			owner = s.Owner
		}
		fmt.Fprintf(kv, "Owner\t%s runs it now; this copy may be behind\n", owner)
	}
	if wv := s.Waiting; wv != nil {
		until := ""
		if !wv.Deadline.IsZero() {
			until = ", until " + fmtTime(wv.Deadline)
		}
		fmt.Fprintf(kv, "Waiting\tfor %s, since %s%s\n", wv.For, fmtTime(wv.Since), until)
	}
	if err := kv.Flush(); err != nil {
		return err
	}

	running, note := runningStep(s)
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "STEP\tSTATUS\tATTEMPTS\tSTARTED\tENDED\tERROR")
	for i, st := range s.Steps {
		name, status := "  "+st.Name, st.Status.String()
		if i == running {
			name, status = "▶ "+st.Name, status+" ("+note+")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", name, status, st.Attempts, fmtTime(st.StartedAt), fmtTime(st.EndedAt), oneLine(st.Error, 80))
		if st.CompAttempts > 0 || st.CompError != "" || !st.CompEndedAt.IsZero() {
			status := "compensating"
			switch st.Status.String() {
			case "compensated":
				status = "compensated"
			case "compensation_failed":
				status = "gave up"
			}
			fmt.Fprintf(tw, "    ↳ compensation\t%s\t%d\t\t%s\t%s\n", status, st.CompAttempts, fmtTime(st.CompEndedAt), oneLine(st.CompError, 80))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Context) > 0 {
		var buf bytes.Buffer
		if json.Indent(&buf, s.Context, "", "  ") == nil {
			fmt.Fprintf(w, "\nContext\n%s\n", buf.String())
		}
	}
	return showHistory(w, s.History)
}

// showHistory prints what operators did to the saga, oldest first: when,
// what, by whom, why, and for a context edit the context it replaced.
func showHistory(w io.Writer, h []httpapi.HistoryView) error {
	if len(h) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nHistory")
	tw := newTable(w)
	fmt.Fprintln(tw, "AT\tACTION\tBY\tREASON")
	for _, e := range h {
		by := e.By
		if by == "" {
			by = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", fmtTime(e.At), e.Action, by, oneLine(e.Reason, 100))
		// Under the reason (the last column: its width is no column's).
		switch {
		case len(e.PreviousContext) > 0:
			fmt.Fprintf(tw, "\t\t\t↳ replaced context: %s\n", oneLine(string(e.PreviousContext), 200))
		case e.PreviousContextTruncated && e.PreviousContextPrefix != "":
			fmt.Fprintf(tw, "\t\t\t↳ replaced context (%d bytes, the first kept): %s…\n", e.PreviousContextBytes, oneLine(e.PreviousContextPrefix, 200))
		case e.PreviousContextTruncated:
			fmt.Fprintf(tw, "\t\t\t↳ replaced context (%d bytes, not kept)\n", e.PreviousContextBytes)
		}
	}
	return tw.Flush()
}

// runningStep returns the index of the step an unfinished saga is at (-1
// when none) and what it is doing there.
func runningStep(s *httpapi.SagaView) (int, string) {
	if wv := s.Waiting; wv != nil {
		for i, st := range s.Steps {
			if st.Name == wv.Step {
				return i, "waiting: " + wv.Kind.String()
			}
		}
	}
	switch s.Status.String() {
	case "executing":
		for i, st := range s.Steps {
			if st.Status.String() != "completed" {
				if st.Attempts > 0 {
					return i, "running"
				}
				return i, "next"
			}
		}
	case "compensating":
		for i := len(s.Steps) - 1; i >= 0; i-- { // compensation goes backwards over completed steps
			if s.Steps[i].Status.String() == "completed" {
				return i, "compensating"
			}
		}
	}
	return -1, ""
}

type fireOpts struct {
	apiFlags
	key string
}

func fireFlags(getenv func(string) string) (*flag.FlagSet, *fireOpts) {
	fs := newFlagSet("fire")
	o := &fireOpts{}
	o.apiFlags.define(fs, getenv)
	fs.StringVar(&o.key, "idempotency-key", "", "Idempotency-Key of the event (for triggers that declare no key field)")
	return fs, o
}

// fireCmd: fire EVENT_TYPE [JSON object] — a manual event.
func fireCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, o := fireFlags(getenv)
	pos, err := parseArgs(fs, args, "fire", w)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("fire", `usage: sagaz fire EVENT_TYPE ['{"field": "value"}']`)
	}
	body := map[string]any{}
	if len(pos) == 2 {
		if err := json.Unmarshal([]byte(pos[1]), &body); err != nil {
			return usagef("fire", "event body: not a JSON object: %v", err)
		}
	}
	body["event_type"] = pos[0]
	raw, _ := json.Marshal(body)
	c, err := o.client("fire")
	if err != nil {
		return err
	}
	if o.key != "" {
		c.header = http.Header{"Idempotency-Key": {o.key}}
	}
	var out httpapi.EventAccepted
	if err := c.do(ctx, http.MethodPost, "/api/fire", raw, &out); err != nil {
		return err
	}
	return o.emit(w, out, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s: fire accepted (event %s at %s/%d offset %d); sagas: %s\n",
			pos[0], out.EventID, out.Topic, out.Partition, out.Offset, strings.Join(out.SagaIDs, ", "))
		return err
	})
}

type schedulesOpts struct {
	apiFlags
	from, to string
}

func schedulesFlags(getenv func(string) string) (*flag.FlagSet, *schedulesOpts) {
	fs := newFlagSet("schedules")
	o := &schedulesOpts{}
	o.apiFlags.define(fs, getenv)
	fs.StringVar(&o.from, "from", "", "backfill: first time (RFC 3339)")
	fs.StringVar(&o.to, "to", "", "backfill: last time (RFC 3339)")
	return fs, o
}

// schedulesCmd: schedules list|pause|resume|trigger|backfill.
func schedulesCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, o := schedulesFlags(getenv)
	pos, err := parseArgs(fs, args, "schedules", w)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("schedules", "missing subcommand: list, pause ID, resume ID, trigger ID or backfill ID --from T --to T")
	}
	sub, rest := pos[0], pos[1:]
	c, err := o.client("schedules")
	if err != nil {
		return err
	}
	if sub == "list" {
		if len(rest) > 0 {
			return usagef("schedules", "schedules list takes no arguments, got %q", strings.Join(rest, " "))
		}
		var out struct {
			Schedules []cron.Row `json:"schedules"`
		}
		if err := c.do(ctx, http.MethodGet, "/api/schedules", nil, &out); err != nil {
			return err
		}
		return o.emit(w, out, func(w io.Writer) error { return scheduleTable(w, out.Schedules) })
	}
	if len(rest) != 1 {
		return usagef("schedules", "usage: sagaz schedules %s ID", sub)
	}
	var body []byte
	switch sub {
	case "pause", "resume", "trigger":
	case "backfill":
		if o.from == "" || o.to == "" {
			return usagef("schedules", "backfill needs --from and --to (RFC 3339 times)")
		}
		for _, v := range []string{o.from, o.to} {
			if _, err := time.Parse(time.RFC3339, v); err != nil {
				return usagef("schedules", "%q: not an RFC 3339 time (e.g. 2026-11-20T00:00:00Z)", v)
			}
		}
		body, _ = json.Marshal(map[string]string{"from": o.from, "to": o.to})
	default:
		return usagef("schedules", "unknown schedules command %q (want list, pause, resume, trigger or backfill)", sub)
	}
	var out map[string]any
	if err := c.do(ctx, http.MethodPost, "/api/schedules/"+url.PathEscape(rest[0])+"/"+sub, body, &out); err != nil {
		return err
	}
	return o.emit(w, out, func(w io.Writer) error {
		msg := sub + " accepted"
		switch sub {
		case "trigger":
			msg = fmt.Sprintf("tick %v published", out["tick"])
		case "backfill":
			msg = fmt.Sprintf("%v ticks published", out["ticks_published"])
		}
		_, err := fmt.Fprintf(w, "%s: %s\n", rest[0], msg)
		return err
	})
}

// scheduleTable prints the schedules: NEXT is "paused" for a paused
// schedule, LAST TICK "-" until a tick fired.
func scheduleTable(w io.Writer, rows []cron.Row) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSPEC\tHERE\tNEXT\tLAST TICK\tFIRED\tSKIPPED")
	for _, r := range rows {
		next, last, fired, skipped := "-", "-", "-", "-"
		switch {
		case r.Paused:
			next = "paused"
		case !r.Next.IsZero():
			next = r.Next.Format(time.RFC3339)
		}
		if r.OwnedHere { // the state is known on the owner only
			if !r.State.LastFiredTick.IsZero() {
				last = r.State.LastFiredTick.Format(time.RFC3339)
			}
			fired, skipped = fmt.Sprint(r.State.Fired), fmt.Sprint(r.State.Skipped)
		}
		here := "yes"
		if !r.OwnedHere {
			here = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Spec, here, next, last, fired, skipped)
	}
	return tw.Flush()
}

// newTable returns a tabwriter for w whose lines carry no trailing spaces
// (an empty last cell would leave its column's padding).
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(&trimRight{w: w}, 0, 4, 2, ' ', 0)
}

// trimRight passes whole lines on without their trailing spaces.
type trimRight struct {
	w   io.Writer
	buf []byte
}

func (t *trimRight) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		if _, err := t.w.Write(append(bytes.TrimRight(t.buf[:i], " "), '\n')); err != nil {
			return 0, err
		}
		t.buf = t.buf[i+1:]
	}
}
