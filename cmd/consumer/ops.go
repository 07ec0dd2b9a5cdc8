package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/logx"
)

type topicsOpts struct {
	output
	create bool
}

func topicsFlags(getenv func(string) string) (*flag.FlagSet, *Config, *topicsOpts, []error) {
	fs := newFlagSet("topics")
	cfg, envErrs := defineConfig(fs, getenv)
	o := &topicsOpts{}
	o.output.define(fs)
	fs.BoolVar(&o.create, "create", false, "create the missing topics on --brokers (with --topic-partitions and --topic-replication)")
	return fs, cfg, o, envErrs
}

// topicsCmd: the topics the configured member needs; --create creates them.
func topicsCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, cfg, o, envErrs := topicsFlags(getenv)
	pos, err := parseArgs(fs, args, "topics", w)
	if err != nil {
		return err
	}
	errs := envErrs
	if len(pos) > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(pos, " ")))
	}
	if cfg.Group == "" {
		errs = append(errs, errors.New("--group must not be empty"))
	}
	if cfg.TopicPartitions < 1 && cfg.TopicPartitions != -1 {
		errs = append(errs, fmt.Errorf("--topic-partitions %d: want at least 1 (or -1)", cfg.TopicPartitions))
	}
	if o.create {
		if cfg.Brokers == "" {
			errs = append(errs, errors.New("--create needs --brokers (SAGAZ_BROKERS)"))
		} else if err := cfg.kafka().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := o.check("topics"); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return &usageError{err: err, cmd: "topics"}
	}
	if cfg.Sagas != "" { // YAML sagas run next to the compiled ones: their topics count too
		if err := declarative.Register(engine.DefaultRegistry(), cfg.Sagas); err != nil {
			return &usageError{err: fmt.Errorf("--sagas %s:\n%w", cfg.Sagas, err), cmd: "topics"}
		}
	}
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return err
	}
	specs := consumer.RequiredTopics(routes, cfg.consumer(nil), true)
	if !o.create {
		return o.emit(w, specs, func(w io.Writer) error { return topicTable(w, specs, nil) })
	}
	kopts, err := cfg.kafka().Opts()
	if err != nil {
		return err
	}
	states, err := consumer.EnsureTopics(ctx, kopts, specs, true, int16(cfg.TopicReplication), logx.New(io.Discard, "text", nil))
	if err != nil {
		return err
	}
	return o.emit(w, states, func(w io.Writer) error { return topicTable(w, specs, states) })
}

func topicTable(w io.Writer, specs []consumer.TopicSpec, states []consumer.TopicState) error {
	tw := newTable(w)
	head := "TOPIC\tROLE\tPARTITIONS\tCONFIG"
	if states != nil {
		head += "\tSTATE"
	}
	fmt.Fprintln(tw, head)
	for i, s := range specs {
		parts := strconv.Itoa(int(s.Partitions))
		if s.Partitions == -1 {
			parts = "broker default"
		}
		if s.Source != "" {
			parts = "as " + s.Source
		}
		var cfgs []string
		for k, v := range s.Configs {
			cfgs = append(cfgs, k+"="+v)
		}
		sort.Strings(cfgs)
		line := fmt.Sprintf("%s\t%s\t%s\t%s", s.Name, s.Role, parts, strings.Join(cfgs, ","))
		if states != nil {
			st := "exists"
			if states[i].Created {
				st = "created"
			}
			line += fmt.Sprintf("\t%s (%d partitions)", st, states[i].Have)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

type healthOpts struct {
	addr    string
	timeout time.Duration
}

func healthFlags(getenv func(string) string) (*flag.FlagSet, *healthOpts) {
	fs := newFlagSet("healthcheck")
	o := &healthOpts{}
	addr := getenv("SAGAZ_HTTP_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	fs.StringVar(&o.addr, "http-addr", addr, "the service's HTTP address (env SAGAZ_HTTP_ADDR)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return fs, o
}

// healthcheckCmd GETs /readyz: nil (exit 0) on 200, an error (exit 1)
// otherwise.
func healthcheckCmd(ctx context.Context, args []string, w io.Writer, getenv func(string) string) error {
	fs, o := healthFlags(getenv)
	pos, err := parseArgs(fs, args, "healthcheck", w)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("healthcheck", "unexpected arguments: %s", strings.Join(pos, " "))
	}
	host, port, err := net.SplitHostPort(o.addr)
	if err != nil {
		return usagef("healthcheck", "--http-addr %q: want host:port", o.addr)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() { // listening on every interface
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(body, &e) == nil && e.Detail != "" {
			return fmt.Errorf("not ready (%d): %s", resp.StatusCode, e.Detail)
		}
		return fmt.Errorf("not ready: %s answered %s", url, resp.Status)
	}
	fmt.Fprintln(w, "ready")
	return nil
}

type demoOpts struct {
	brokers string
	count   int
	prefix  string
	sleep   int
	saga    string
}

func demoFlags(getenv func(string) string) (*flag.FlagSet, *demoOpts) {
	fs := newFlagSet("demo")
	o := &demoOpts{}
	brokers := getenv("SAGAZ_BROKERS")
	if brokers == "" {
		brokers = "127.0.0.1:9092"
	}
	fs.StringVar(&o.brokers, "brokers", brokers, "Kafka brokers (env SAGAZ_BROKERS)")
	fs.IntVar(&o.count, "count", 10, "number of order events")
	fs.StringVar(&o.prefix, "prefix", "demo", "order id prefix")
	fs.IntVar(&o.sleep, "sleep-ms", 0, "sleep_ms of each event (each step sleeps that long)")
	fs.StringVar(&o.saga, "saga", "order", "order (orders.created) or transfer (transfers.requested; run `sagaz demo-participant` too)")
	return fs, o
}

// demo produces sample order events: every 5th fails at charge, every 7th
// at ship.
func demo(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	fs, o := demoFlags(getenv)
	pos, err := parseArgs(fs, args, "demo", stdout)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("demo", "unexpected arguments: %s", strings.Join(pos, " "))
	}
	if o.count < 1 {
		return usagef("demo", "--count %d: want at least 1", o.count)
	}
	if o.saga != "order" && o.saga != "transfer" {
		return usagef("demo", "--saga %q: want order or transfer", o.saga)
	}
	for _, b := range splitBrokers(o.brokers) {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return usagef("demo", "--brokers %q: want host:port", b)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(splitBrokers(o.brokers)...), kgo.AllowAutoTopicCreation())
	if err != nil {
		return err
	}
	defer cl.Close()
	var recs []*kgo.Record
	if o.saga == "transfer" {
		recs = transferEvents(o.prefix, o.count)
	}
	for i := 1; o.saga == "order" && i <= o.count; i++ {
		id := o.prefix + "-" + strconv.Itoa(i)
		extra := ""
		switch {
		case i%5 == 0:
			extra = `,"fail_at":"charge"`
		case i%7 == 0:
			extra = `,"fail_at":"ship"`
		}
		if o.sleep > 0 {
			extra += `,"sleep_ms":` + strconv.Itoa(o.sleep)
		}
		recs = append(recs, &kgo.Record{Topic: "orders.created", Key: []byte(id),
			Value: []byte(fmt.Sprintf(`{"order_id":%q,"amount":%d%s}`, id, 10+i, extra))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", o.brokers, err)
	}
	fmt.Fprintf(stdout, "produced %d %s events to %s on %s\n", len(recs), o.saga, recs[0].Topic, o.brokers)
	return nil
}

// transferEvents are sample transfers between four accounts: every 5th
// has its credit refused (a refund follows), every 7th its debit refused,
// every 11th gets no reply to its credit (it times out, the debit is
// refunded).
func transferEvents(prefix string, n int) []*kgo.Record {
	accounts := []string{"alice", "bob", "carol", "dave"}
	var recs []*kgo.Record
	for i := 1; i <= n; i++ {
		id := prefix + "-t" + strconv.Itoa(i)
		extra := ""
		switch {
		case i%5 == 0:
			extra = `,"fail_at":"credit"`
		case i%7 == 0:
			extra = `,"fail_at":"debit"`
		case i%11 == 0:
			extra = `,"no_reply":"credit"`
		}
		from, to := accounts[i%4], accounts[(i+1)%4]
		recs = append(recs, &kgo.Record{Topic: "transfers.requested", Key: []byte(id),
			Value: []byte(fmt.Sprintf(`{"transfer_id":%q,"from":%q,"to":%q,"amount":%d%s}`, id, from, to, 10*i, extra))})
	}
	return recs
}

func splitBrokers(s string) []string {
	c := Config{Brokers: s}
	return c.BrokerList()
}
