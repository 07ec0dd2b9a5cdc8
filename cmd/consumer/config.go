package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
}

type envFlag struct {
	name, env, usage string
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
	integer(&c.MaxInFlight, "max-in-flight", 4096, "sagas executing at once in this process, over all triggers")
	dur(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long running steps get to finish on SIGTERM/SIGINT")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
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
	return errors.Join(errs...)
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
