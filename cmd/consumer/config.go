package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
)

// Config is the service's configuration. Every field has a flag and a
// SAGAZ_* environment variable; a flag given on the command line wins over
// the environment, which wins over the default.
type Config struct {
	Brokers         string
	Group           string
	DataDir         string
	HTTPAddr        string
	LogFormat       string
	LogLevel        string
	MaxInFlight     int
	ShutdownTimeout time.Duration

	// Kafka connection.
	ClientID              string
	TLS                   bool
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSInsecureSkipVerify bool
	SASLMechanism         string
	SASLUser              string
	SASLPassword          string

	// Consumer.
	GroupInstanceID        string
	SessionTimeout         time.Duration
	FetchMaxBytes          int
	FetchMaxPartitionBytes int
	MaxPollRecords         int
	MaxEventBytes          int
	DeadLetterTopic        string
	PendingHighWater       int
	PendingLowWater        int
	CreateTopics           bool
	TopicPartitions        int
	TopicReplication       int
	DevBrokerPort          int
	Retention              time.Duration

	// HTTP API.
	AdminToken            string
	AllowInsecureHTTP     bool
	EventsTopic           string
	CronTopic             string
	MaxBodyBytes          int
	MaxConcurrentWebhooks int
	// Sagas is a YAML file or directory of sagas registered next to the
	// compiled ones (package declarative).
	Sagas string
	// WebhookSecrets come from SAGAZ_WEBHOOK_SECRET_<NAME> (the webhook name
	// upper-cased, other characters than letters and digits as "_").
	WebhookSecrets map[string]string
}

// Load parses args (without the program name) and the environment.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, error) {
	c := &Config{}
	var errs []error
	str := func(p *string, name, def, usage string) {
		env := envName(name)
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage+" (env "+env+")")
	}
	integer := func(p *int, name string, def int, usage string) {
		env := envName(name)
		if v := getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not an integer", env, v))
			}
			def = n
		}
		fs.IntVar(p, name, def, usage+" (env "+env+")")
	}
	boolean := func(p *bool, name string, def bool, usage string) {
		env := envName(name)
		if v := getenv(env); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a boolean", env, v))
			}
			def = b
		}
		fs.BoolVar(p, name, def, usage+" (env "+env+")")
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		env := envName(name)
		if v := getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a duration (e.g. 10s)", env, v))
			}
			def = d
		}
		fs.DurationVar(p, name, def, usage+" (env "+env+")")
	}
	str(&c.Brokers, "brokers", "", "comma-separated Kafka seed brokers; empty starts an embedded dev broker on 127.0.0.1:9092")
	str(&c.Group, "group", "sagaz", "Kafka consumer group")
	str(&c.DataDir, "data-dir", "data", "directory for the saga store (and the embedded broker's data)")
	str(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "address of the HTTP server (health, readiness, metrics, API)")
	str(&c.LogFormat, "log-format", "text", "log format: text or json")
	str(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	integer(&c.MaxInFlight, "max-in-flight", 1024, "sagas executing at once in this process, over all triggers")
	dur(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long running steps get to finish on SIGTERM/SIGINT")
	str(&c.ClientID, "client-id", "sagaz", "Kafka client id")
	boolean(&c.TLS, "tls", false, "connect to Kafka with TLS")
	str(&c.TLSCAFile, "tls-ca-file", "", "PEM CA bundle for the brokers' certificates (default: system roots)")
	str(&c.TLSCertFile, "tls-cert-file", "", "PEM client certificate (mutual TLS)")
	str(&c.TLSKeyFile, "tls-key-file", "", "PEM client key (mutual TLS)")
	boolean(&c.TLSInsecureSkipVerify, "tls-insecure-skip-verify", false, "do not verify the brokers' certificates (testing only)")
	str(&c.SASLMechanism, "sasl-mechanism", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512")
	str(&c.SASLUser, "sasl-user", "", "SASL user")
	str(&c.SASLPassword, "sasl-password", "", "SASL password (prefer the environment variable)")
	str(&c.GroupInstanceID, "group-instance-id", "", "static group membership id (KIP-345); unique per member")
	dur(&c.SessionTimeout, "session-timeout", 45*time.Second, "consumer group session timeout")
	integer(&c.FetchMaxBytes, "fetch-max-bytes", 4<<20, "maximum bytes of one fetch response")
	integer(&c.FetchMaxPartitionBytes, "fetch-max-partition-bytes", 1<<20, "maximum bytes per partition in a fetch")
	integer(&c.MaxPollRecords, "max-poll-records", 10000, "records per poll batch (one storage transaction)")
	integer(&c.MaxEventBytes, "max-event-bytes", 1<<20, "larger record values go to the dead-letter topic (reason oversized)")
	str(&c.DeadLetterTopic, "dead-letter-topic", "sagaz.dlq", "topic for records that cannot start a saga")
	integer(&c.PendingHighWater, "pending-high-water", 10000, "pause fetching when this many sagas are pending")
	integer(&c.PendingLowWater, "pending-low-water", 5000, "resume fetching when pending sagas fall to this")
	boolean(&c.CreateTopics, "create-topics", true, "create missing trigger and dead-letter topics")
	integer(&c.TopicPartitions, "topic-partitions", 6, "partitions of topics sagaz creates")
	integer(&c.TopicReplication, "topic-replication", -1, "replication factor of topics sagaz creates (-1: broker default)")
	str(&c.AdminToken, "admin-token", "", "bearer token for the mutating API endpoints (prefer the environment variable)")
	boolean(&c.AllowInsecureHTTP, "allow-insecure-http", false, "listen on a non-loopback address without an admin token")
	str(&c.EventsTopic, "events-topic", "sagaz.events", "topic for webhook calls and manual events")
	str(&c.CronTopic, "cron-topic", "sagaz.cron", "topic for schedule ticks")
	integer(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "largest webhook or fire request body (413 past it)")
	integer(&c.MaxConcurrentWebhooks, "max-concurrent-webhooks", 64, "webhook and fire requests in progress at once (503 past it)")
	dur(&c.Retention, "retention", 7*24*time.Hour, "how long finished sagas (and their idempotency keys) are kept: the de-duplication window")
	integer(&c.DevBrokerPort, "dev-broker-port", 9092, "port of the embedded broker (dev mode, when --brokers is empty)")
	str(&c.Sagas, "sagas", "", "YAML file or directory of sagas to run next to the compiled ones (see docs/declarative.md)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.Sagas != "" { // before the webhook secrets: YAML sagas may declare webhooks
		if err := declarative.Register(engine.DefaultRegistry(), c.Sagas); err != nil {
			errs = append(errs, fmt.Errorf("--sagas %s:\n%w", c.Sagas, err))
		}
	}
	c.WebhookSecrets = webhookSecrets(getenv)
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	errs = append(errs, c.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func envName(flagName string) string {
	return "SAGAZ_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Validate reports every bad field at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Group == "" {
		errs = append(errs, errors.New("--group must not be empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if c.HTTPAddr != "" && !strings.Contains(c.HTTPAddr, ":") {
		errs = append(errs, fmt.Errorf("--http-addr %q: want host:port", c.HTTPAddr))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("--max-in-flight %d: want at least 1", c.MaxInFlight))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: want a positive duration", c.ShutdownTimeout))
	}
	if c.MaxPollRecords < 1 || c.MaxEventBytes < 1 || c.FetchMaxBytes < 1 || c.FetchMaxPartitionBytes < 1 {
		errs = append(errs, errors.New("--max-poll-records, --max-event-bytes and the fetch sizes must be positive"))
	}
	if c.PendingLowWater < 0 || c.PendingHighWater < 1 || c.PendingLowWater > c.PendingHighWater {
		errs = append(errs, fmt.Errorf("--pending-low-water %d must be between 0 and --pending-high-water %d", c.PendingLowWater, c.PendingHighWater))
	}
	if c.TopicPartitions < 1 && c.TopicPartitions != -1 {
		errs = append(errs, fmt.Errorf("--topic-partitions %d: want at least 1 (or -1)", c.TopicPartitions))
	}
	if c.MaxBodyBytes < 1 || c.MaxConcurrentWebhooks < 1 {
		errs = append(errs, errors.New("--max-body-bytes and --max-concurrent-webhooks must be positive"))
	}
	if c.HTTPAddr != "" && c.AdminToken == "" && !c.AllowInsecureHTTP && !loopback(c.HTTPAddr) {
		errs = append(errs, fmt.Errorf("--http-addr %s is not a loopback address: set --admin-token (SAGAZ_ADMIN_TOKEN), or --allow-insecure-http to serve the API unauthenticated", c.HTTPAddr))
	}
	if c.Retention < time.Minute {
		errs = append(errs, fmt.Errorf("--retention %s: want at least 1m", c.Retention))
	}
	if c.DevBrokerPort < 1 || c.DevBrokerPort > 65535 {
		errs = append(errs, fmt.Errorf("--dev-broker-port %d: not a port", c.DevBrokerPort))
	}
	if c.Brokers != "" {
		if err := c.kafka().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loopback reports whether addr listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// webhookSecrets reads SAGAZ_WEBHOOK_SECRET_<NAME> for every webhook
// trigger compiled in.
func webhookSecrets(getenv func(string) string) map[string]string {
	out := map[string]string{}
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return out
	}
	for _, r := range routes.All() {
		if r.Trigger.Source() != engine.SourceWebhook {
			continue
		}
		if v := getenv(WebhookSecretEnv(r.Trigger.Webhook())); v != "" {
			out[r.Trigger.Webhook()] = v
		}
	}
	return out
}

// WebhookSecretEnv is the environment variable holding a webhook's secret.
func WebhookSecretEnv(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "SAGAZ_WEBHOOK_SECRET_" + string(b)
}

// BrokerList splits --brokers.
func (c *Config) BrokerList() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func (c *Config) kafka() consumer.KafkaConfig {
	return consumer.KafkaConfig{
		Brokers: c.BrokerList(), ClientID: c.ClientID,
		TLS: c.TLS, TLSCAFile: c.TLSCAFile, TLSCertFile: c.TLSCertFile, TLSKeyFile: c.TLSKeyFile, TLSInsecureSkipVerify: c.TLSInsecureSkipVerify,
		SASLMechanism: c.SASLMechanism, SASLUser: c.SASLUser, SASLPassword: c.SASLPassword,
	}
}

// StorePath is where the saga store lives.
func (c *Config) StorePath() string { return filepath.Join(c.DataDir, "sagaz.db") }

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (c *Config) logger() *slog.Logger {
	lvl, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
