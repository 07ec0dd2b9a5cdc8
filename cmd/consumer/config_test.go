package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*Config) bool
		wantErr []string
	}{
		{name: "defaults", check: func(c *Config) bool {
			return c.Brokers == "" && c.Group == "sagaz" && c.DataDir == "data" && c.HTTPAddr == "127.0.0.1:8080" && c.ShutdownTimeout == 10*time.Second
		}},
		{name: "env", env: map[string]string{"SAGAZ_BROKERS": "k1:9092,k2:9092", "SAGAZ_GROUP": "g", "SAGAZ_SHUTDOWN_TIMEOUT": "3s"},
			check: func(c *Config) bool {
				return c.Brokers == "k1:9092,k2:9092" && c.Group == "g" && c.ShutdownTimeout == 3*time.Second
			}},
		{name: "flag beats env", args: []string{"--group", "flag"}, env: map[string]string{"SAGAZ_GROUP": "env"},
			check: func(c *Config) bool { return c.Group == "flag" }},
		{name: "every bad field reported", args: []string{"--group", "", "--log-format", "xml", "--max-in-flight", "0"},
			env:     map[string]string{"SAGAZ_SHUTDOWN_TIMEOUT": "soon"},
			wantErr: []string{"SAGAZ_SHUTDOWN_TIMEOUT", "--group", "--log-format", "--max-in-flight"}},
		{name: "stray args", args: []string{"extra"}, wantErr: []string{"unexpected arguments: extra"}},
		{name: "public address needs a token", args: []string{"--http-addr", "0.0.0.0:8080"}, wantErr: []string{"not a loopback address", "--admin-token"}},
		{name: "public address with a token", args: []string{"--http-addr", ":8080"}, env: map[string]string{"SAGAZ_ADMIN_TOKEN": "t"},
			check: func(c *Config) bool { return c.AdminToken == "t" }},
		{name: "public address, told to allow it", args: []string{"--http-addr", "10.0.0.5:8080", "--allow-insecure-http"},
			check: func(c *Config) bool { return c.AllowInsecureHTTP }},
		{name: "localhost is loopback", args: []string{"--http-addr", "localhost:9000"}, check: func(c *Config) bool { return c.AdminToken == "" }},
		{name: "webhook secret from the environment", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "whsec"},
			check: func(c *Config) bool { return c.WebhookSecrets["payments"] == "whsec" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c, err := Load(fs, tc.args, func(k string) string { return tc.env[k] })
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("config = %+v", c)
			}
		})
	}
}
