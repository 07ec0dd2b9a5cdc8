package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/logx"
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
	LogCompleted    bool
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

	// HTTP API. The tokens are whitespace-separated lists (rotation).
	AdminToken            string
	ReadToken             string
	MetricsToken          string
	AdvertiseURL          string
	AllowInsecureHTTP     bool
	EventsTopic           string
	CronTopic             string
	MaxBodyBytes          int
	MaxConcurrentWebhooks int
	// WebhookTolerance bounds signed webhook timestamps (standard, stripe).
	WebhookTolerance time.Duration
	// Sagas is a YAML file or directory of sagas registered next to the
	// compiled ones (package declarative).
	Sagas string
	// Webhooks: how each webhook's calls are verified (compiled-in and YAML
	// sagas alike), from SAGAZ_WEBHOOK_SECRET_<NAME> (or
	// SAGAZ_WEBHOOK_SECRET_FILE_<NAME>) and SAGAZ_WEBHOOK_SCHEME_<NAME> (the
	// webhook name upper-cased, other characters than letters and digits as
	// "_").
	Webhooks map[string]httpapi.WebhookAuth
}

// Load parses args (without the program name) and the environment.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string) (*Config, error) {
	c, errs := defineConfig(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if c.Sagas != "" { // before the webhook secrets: YAML sagas may declare webhooks
		if err := declarative.Register(engine.DefaultRegistry(), c.Sagas); err != nil {
			errs = append(errs, fmt.Errorf("--sagas %s:\n%w", c.Sagas, err))
		}
	}
	var werrs []error
	c.Webhooks, werrs = webhookAuth(getenv, c.WebhookTolerance)
	errs = append(errs, werrs...)
	errs = append(errs, c.signedWebhooks())
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	errs = append(errs, c.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// defineConfig defines the service's flags on fs, with their defaults from
// the environment; it returns the config they fill in and the environment
// variables that did not parse.
func defineConfig(fs *flag.FlagSet, getenv func(string) string) (*Config, []error) {
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
	str(&c.AdminToken, "admin-token", "", "bearer token(s) of every /api route, whitespace-separated for rotation; at least 16 characters each (prefer the environment variable)")
	str(&c.ReadToken, "read-token", "", "read-only bearer token(s): GET /api routes only (needs --admin-token)")
	str(&c.MetricsToken, "metrics-token", "", "bearer token(s) of /metrics (default: /metrics is open)")
	str(&c.AdvertiseURL, "advertise-url", "", "URL other members and clients reach this member's HTTP server at (e.g. http://10.0.0.5:8080); its host is accepted in the Host header without a token")
	boolean(&c.AllowInsecureHTTP, "allow-insecure-http", false, "listen on a non-loopback address without an admin token")
	dur(&c.WebhookTolerance, "webhook-tolerance", httpapi.DefaultTolerance, "how far a signed webhook's timestamp may be from this clock (standard, stripe); also the replay window")
	str(&c.EventsTopic, "events-topic", "sagaz.events", "topic for webhook calls and manual events")
	str(&c.CronTopic, "cron-topic", "sagaz.cron", "topic for schedule ticks")
	integer(&c.MaxBodyBytes, "max-body-bytes", 1<<20, "largest webhook or fire request body (413 past it)")
	integer(&c.MaxConcurrentWebhooks, "max-concurrent-webhooks", 64, "webhook and fire requests in progress at once (503 past it)")
	dur(&c.Retention, "retention", 7*24*time.Hour, "how long finished sagas (and their idempotency keys) are kept: the de-duplication window")
	integer(&c.DevBrokerPort, "dev-broker-port", 9092, "port of the embedded broker (dev mode, when --brokers is empty)")
	str(&c.Sagas, "sagas", "", "YAML file or directory of sagas to run next to the compiled ones (see docs/declarative.md)")
	boolean(&c.LogCompleted, "log-completed", false, "log completed sagas at info (default: debug; rolled back sagas log at info, failed at warn)")
	return c, errs
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
	if c.HTTPAddr != "" && len(c.AdminTokens()) == 0 && !c.AllowInsecureHTTP && !loopback(c.HTTPAddr) {
		errs = append(errs, fmt.Errorf("--http-addr %s is not a loopback address: set --admin-token (SAGAZ_ADMIN_TOKEN), or --allow-insecure-http to serve the API unauthenticated", c.HTTPAddr))
	}
	errs = append(errs, c.validateTokens()...)
	if _, err := c.advertisedHost(); err != nil {
		errs = append(errs, err)
	}
	if c.WebhookTolerance <= 0 || c.WebhookTolerance > c.Retention {
		errs = append(errs, fmt.Errorf("--webhook-tolerance %s: want a positive duration no longer than --retention %s (a delivery id is remembered only as long as its saga)", c.WebhookTolerance, c.Retention))
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

// Tokens are whitespace-separated lists: several are accepted while one is
// rotated.
func tokens(s string) []string { return strings.Fields(s) }

// AdminTokens, ReadTokens and MetricsTokens are the configured token lists.
func (c *Config) AdminTokens() []string   { return tokens(c.AdminToken) }
func (c *Config) ReadTokens() []string    { return tokens(c.ReadToken) }
func (c *Config) MetricsTokens() []string { return tokens(c.MetricsToken) }

// validateTokens reports blank, short and misplaced tokens, never their
// values.
func (c *Config) validateTokens() []error {
	var errs []error
	for _, t := range []struct{ flag, value string }{{"admin-token", c.AdminToken}, {"read-token", c.ReadToken}, {"metrics-token", c.MetricsToken}} {
		what := fmt.Sprintf("--%s (%s)", t.flag, envName(t.flag))
		list := tokens(t.value)
		if t.value != "" && len(list) == 0 {
			errs = append(errs, fmt.Errorf("%s is set but blank: give a token of at least %d characters, or unset it", what, httpapi.MinTokenLength))
		}
		for i, tok := range list {
			if len(tok) < httpapi.MinTokenLength {
				errs = append(errs, fmt.Errorf("%s: token %d of %d has %d characters: want at least %d (e.g. openssl rand -hex 16)", what, i+1, len(list), len(tok), httpapi.MinTokenLength))
			}
		}
	}
	if len(c.ReadTokens()) > 0 && len(c.AdminTokens()) == 0 {
		errs = append(errs, errors.New("--read-token (SAGAZ_READ_TOKEN) needs --admin-token (SAGAZ_ADMIN_TOKEN) as well"))
	}
	return errs
}

// advertisedHost parses --advertise-url and returns its host name ("" when
// unset).
func (c *Config) advertisedHost() (string, error) {
	if c.AdvertiseURL == "" {
		return "", nil
	}
	u, err := url.Parse(c.AdvertiseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("--advertise-url %q: want http(s)://host[:port], e.g. http://10.0.0.5:8080", c.AdvertiseURL)
	}
	return u.Hostname(), nil
}

// Auth is the HTTP server's token and Host configuration.
func (c *Config) Auth() httpapi.Auth {
	a := httpapi.Auth{AdminTokens: c.AdminTokens(), ReadTokens: c.ReadTokens(), MetricsTokens: c.MetricsTokens()}
	if h, _ := c.advertisedHost(); h != "" {
		a.AllowedHosts = append(a.AllowedHosts, h)
	}
	// A listener on one specific address is reached by that address.
	if host, _, err := net.SplitHostPort(c.HTTPAddr); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			a.AllowedHosts = append(a.AllowedHosts, host)
		}
	}
	return a
}

// Dev reports dev mode: no --brokers, an embedded broker.
func (c *Config) Dev() bool { return len(c.BrokerList()) == 0 }

// webhookAuth reads every compiled-in webhook's secrets and scheme from
// the environment: SAGAZ_WEBHOOK_SECRET_<NAME> (whitespace-separated
// secrets, for rotation) or SAGAZ_WEBHOOK_SECRET_FILE_<NAME> (a file of
// them), and SAGAZ_WEBHOOK_SCHEME_<NAME>. Errors name the variables, never
// a secret.
func webhookAuth(getenv func(string) string, tolerance time.Duration) (map[string]httpapi.WebhookAuth, []error) {
	out := map[string]httpapi.WebhookAuth{}
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return out, nil // reported at start-up, with every registration error
	}
	var errs []error
	owner := map[string]string{} // environment variable -> webhook
	for _, r := range routes.All() {
		name := r.Trigger.Webhook()
		if r.Trigger.Source() != engine.SourceWebhook {
			continue
		}
		for _, env := range []string{WebhookSecretEnv(name), WebhookSecretFileEnv(name), WebhookSchemeEnv(name)} {
			if o, ok := owner[env]; ok && o != name {
				errs = append(errs, fmt.Errorf("webhooks %q and %q share the environment variable %s: rename one", o, name, env))
			}
			owner[env] = name
		}
	}
	for _, r := range routes.All() {
		name := r.Trigger.Webhook()
		if r.Trigger.Source() != engine.SourceWebhook {
			continue
		}
		if _, done := out[name]; done {
			continue
		}
		secretEnv, fileEnv, schemeEnv := WebhookSecretEnv(name), WebhookSecretFileEnv(name), WebhookSchemeEnv(name)
		raw, file, scheme := getenv(secretEnv), getenv(fileEnv), getenv(schemeEnv)
		switch {
		case raw != "" && file != "":
			errs = append(errs, fmt.Errorf("webhook %q: both %s and %s are set: keep one", name, secretEnv, fileEnv))
			continue
		case file != "":
			b, err := os.ReadFile(file)
			if err != nil {
				errs = append(errs, fmt.Errorf("webhook %q: %s: %w", name, fileEnv, err))
				continue
			}
			raw = string(b)
			if len(tokens(raw)) == 0 {
				errs = append(errs, fmt.Errorf("webhook %q: %s: the file %s holds no secret", name, fileEnv, file))
				continue
			}
		case raw == "" && scheme == "":
			continue
		}
		a := httpapi.WebhookAuth{Secrets: tokens(raw), Tolerance: tolerance}
		if scheme != "" {
			sc, err := httpapi.ParseScheme(scheme)
			if err != nil {
				errs = append(errs, fmt.Errorf("webhook %q: %s: %w", name, schemeEnv, err))
				continue
			}
			a.Scheme = sc
		}
		if len(a.Secrets) == 0 {
			errs = append(errs, fmt.Errorf("webhook %q: %s is set but no secret: set %s or %s", name, schemeEnv, secretEnv, fileEnv))
			continue
		}
		if _, err := a.Verifier(); err != nil {
			errs = append(errs, fmt.Errorf("webhook %q (%s): %w", name, secretEnv, err))
			continue
		}
		out[name] = a
	}
	return out, errs
}

// signedWebhooks reports webhooks declared engine.Signed that have no
// secret, except in dev mode.
func (c *Config) signedWebhooks() error {
	if c.Dev() {
		return nil
	}
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		return nil
	}
	var errs []error
	for _, r := range routes.All() {
		name := r.Trigger.Webhook()
		if r.Trigger.Source() != engine.SourceWebhook || !r.Trigger.SignatureRequired() {
			continue
		}
		if _, ok := c.Webhooks[name]; !ok {
			errs = append(errs, fmt.Errorf("webhook %q (saga %q) must be signed (engine.Signed) but has no secret: set %s (or %s)",
				name, r.Saga.Name, WebhookSecretEnv(name), WebhookSecretFileEnv(name)))
		}
	}
	return errors.Join(errs...)
}

// UnsignedRequired lists the webhooks declared engine.Signed that run
// without a secret (dev mode).
func (c *Config) UnsignedRequired(routes *engine.Routes) []string {
	var out []string
	for _, r := range routes.All() {
		if r.Trigger.Source() == engine.SourceWebhook && r.Trigger.SignatureRequired() {
			if _, ok := c.Webhooks[r.Trigger.Webhook()]; !ok {
				out = append(out, r.Trigger.Webhook())
			}
		}
	}
	return out
}

func webhookEnvSuffix(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// WebhookSecretEnv is the environment variable holding a webhook's
// secrets (whitespace-separated).
func WebhookSecretEnv(name string) string { return "SAGAZ_WEBHOOK_SECRET_" + webhookEnvSuffix(name) }

// WebhookSecretFileEnv is the environment variable naming a file of a
// webhook's secrets.
func WebhookSecretFileEnv(name string) string {
	return "SAGAZ_WEBHOOK_SECRET_FILE_" + webhookEnvSuffix(name)
}

// WebhookSchemeEnv is the environment variable naming a webhook's
// signature scheme.
func WebhookSchemeEnv(name string) string { return "SAGAZ_WEBHOOK_SCHEME_" + webhookEnvSuffix(name) }

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

// consumer is the group member's consumer configuration (what `sagaz
// topics` derives the topics from, too).
func (c *Config) consumer(kopts []kgo.Opt) consumer.Config {
	return consumer.Config{
		Client: kopts, Group: c.Group, InstanceID: c.GroupInstanceID, SessionTimeout: c.SessionTimeout,
		FetchMaxBytes: int32(c.FetchMaxBytes), FetchMaxPartitionBytes: int32(c.FetchMaxPartitionBytes),
		DeadLetterTopic: c.DeadLetterTopic, MaxEventBytes: c.MaxEventBytes, MaxPollRecords: c.MaxPollRecords,
		HighWater: c.PendingHighWater, LowWater: c.PendingLowWater,
		CreateTopics: c.CreateTopics, TopicPartitions: int32(c.TopicPartitions), TopicReplication: int16(c.TopicReplication),
		Retention: c.Retention, EventsTopic: c.EventsTopic, CronTopic: c.CronTopic,
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

// logger is the service's logger: every line in the configured format
// (durations as strings), on stderr.
func (c *Config) logger() *slog.Logger {
	lvl, _ := parseLevel(c.LogLevel)
	return logx.New(os.Stderr, c.LogFormat, lvl)
}
