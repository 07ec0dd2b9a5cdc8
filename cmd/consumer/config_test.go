package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/httpapi"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	secretFile, emptyFile := filepath.Join(dir, "secret"), filepath.Join(dir, "empty")
	if err := os.WriteFile(secretFile, []byte("file-secret-new\nfile-secret-old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(emptyFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*Config) bool
		wantErr []string
		hidden  string // must not appear in the error (a secret)
	}{
		{name: "defaults", check: func(c *Config) bool {
			return c.Brokers == "" && c.Group == "sagaz" && c.DataDir == "data" && c.HTTPAddr == "127.0.0.1:8080" && c.ShutdownTimeout == 10*time.Second
		}},
		{name: "env", env: map[string]string{"SAGAZ_BROKERS": "k1:9092,k2:9092", "SAGAZ_GROUP": "g", "SAGAZ_SHUTDOWN_TIMEOUT": "3s",
			"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "s"}, // a real cluster: the signed demo webhook needs its secret
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
		{name: "public address with a token", args: []string{"--http-addr", ":8080"}, env: map[string]string{"SAGAZ_ADMIN_TOKEN": "0123456789abcdef"},
			check: func(c *Config) bool { return c.AdminToken == "0123456789abcdef" }},
		{name: "public address, told to allow it", args: []string{"--http-addr", "10.0.0.5:8080", "--allow-insecure-http"},
			check: func(c *Config) bool { return c.AllowInsecureHTTP }},
		{name: "localhost is loopback", args: []string{"--http-addr", "localhost:9000"}, check: func(c *Config) bool { return c.AdminToken == "" }},
		{name: "webhook secret from the environment", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "hook-secret"},
			check: func(c *Config) bool {
				a := c.Webhooks["payments"]
				return len(a.Secrets) == 1 && a.Secrets[0] == "hook-secret" && a.Resolved() == httpapi.SchemeHMACSHA256 && a.Tolerance == 5*time.Minute
			}},
		{name: "a whsec_ secret selects Standard Webhooks; several for rotation", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": " whsec_bmV3LWtleQ==\twhsec_b2xkLWtleQ== "},
			args: []string{"--webhook-tolerance", "90s"},
			check: func(c *Config) bool {
				a := c.Webhooks["payments"]
				return len(a.Secrets) == 2 && a.Secrets[1] == "whsec_b2xkLWtleQ==" && a.Resolved() == httpapi.SchemeStandard && a.Tolerance == 90*time.Second
			}},
		{name: "scheme said outright", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "whsec_stripe-key", "SAGAZ_WEBHOOK_SCHEME_PAYMENTS": "Stripe"},
			check: func(c *Config) bool { return c.Webhooks["payments"].Resolved() == httpapi.SchemeStripe }},
		{name: "secrets from a file", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS": secretFile},
			check: func(c *Config) bool {
				a := c.Webhooks["payments"]
				return len(a.Secrets) == 2 && a.Secrets[0] == "file-secret-new" && a.Secrets[1] == "file-secret-old"
			}},
		{name: "bad webhook settings", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "whsec_%%%", "SAGAZ_WEBHOOK_SCHEME_PAYMENTS": "standard"},
			wantErr: []string{`webhook "payments"`, "SAGAZ_WEBHOOK_SECRET_PAYMENTS", "does not decode"}, hidden: "whsec_%%%"},
		{name: "unknown scheme", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "s", "SAGAZ_WEBHOOK_SCHEME_PAYMENTS": "md5"},
			wantErr: []string{"SAGAZ_WEBHOOK_SCHEME_PAYMENTS", `"md5"`, "standard, github, stripe or hmac-sha256"}},
		{name: "scheme without secret", env: map[string]string{"SAGAZ_WEBHOOK_SCHEME_PAYMENTS": "github"},
			wantErr: []string{"SAGAZ_WEBHOOK_SCHEME_PAYMENTS is set but no secret"}},
		{name: "secret and file both set", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "a", "SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS": secretFile},
			wantErr: []string{"both SAGAZ_WEBHOOK_SECRET_PAYMENTS and SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS"}},
		{name: "missing secret file", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS": "/nonexistent/secret"},
			wantErr: []string{"SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS", "/nonexistent/secret"}},
		{name: "empty secret file", env: map[string]string{"SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS": emptyFile},
			wantErr: []string{"holds no secret"}},
		{name: "a signed webhook needs its secret against a real cluster", args: []string{"--brokers", "k:9092"},
			wantErr: []string{`webhook "payments"`, "engine.Signed", "SAGAZ_WEBHOOK_SECRET_PAYMENTS", "SAGAZ_WEBHOOK_SECRET_FILE_PAYMENTS"}},
		{name: "a signed webhook with its secret", args: []string{"--brokers", "k:9092"}, env: map[string]string{"SAGAZ_WEBHOOK_SECRET_PAYMENTS": "s"},
			check: func(c *Config) bool { return !c.Dev() && len(c.Webhooks["payments"].Secrets) == 1 }},
		{name: "dev mode runs a signed webhook without secret", check: func(c *Config) bool { return c.Dev() && len(c.Webhooks) == 0 }},
		{name: "tokens: short, blank, read-only without admin", env: map[string]string{"SAGAZ_ADMIN_TOKEN": "   ", "SAGAZ_READ_TOKEN": "short-token", "SAGAZ_METRICS_TOKEN": "0123456789abcdef tiny"},
			wantErr: []string{"--admin-token (SAGAZ_ADMIN_TOKEN) is set but blank", "--read-token (SAGAZ_READ_TOKEN): token 1 of 1 has 11 characters: want at least 16",
				"--metrics-token (SAGAZ_METRICS_TOKEN): token 2 of 2 has 4 characters", "--read-token (SAGAZ_READ_TOKEN) needs --admin-token"}, hidden: "short-token"},
		{name: "a blank token does not count as a token", args: []string{"--http-addr", "0.0.0.0:8080"}, env: map[string]string{"SAGAZ_ADMIN_TOKEN": " "},
			wantErr: []string{"not a loopback address", "is set but blank"}},
		{name: "tokens: rotation lists", env: map[string]string{"SAGAZ_ADMIN_TOKEN": "new-admin-token-0001 old-admin-token-0002", "SAGAZ_READ_TOKEN": "reader-token-00001", "SAGAZ_METRICS_TOKEN": "metrics-token-0001"},
			args: []string{"--advertise-url", "https://sagaz.example.com:8443/"},
			check: func(c *Config) bool {
				a := c.Auth()
				return len(a.AdminTokens) == 2 && a.AdminTokens[1] == "old-admin-token-0002" && len(a.ReadTokens) == 1 && len(a.MetricsTokens) == 1 &&
					len(a.AllowedHosts) == 2 && a.AllowedHosts[0] == "sagaz.example.com" && a.AllowedHosts[1] == "127.0.0.1" && a.Validate() == nil
			}},
		{name: "webhook tolerance longer than the retention", args: []string{"--webhook-tolerance", "2h", "--retention", "1h"}, wantErr: []string{"--webhook-tolerance 2h0m0s", "--retention 1h0m0s"}},
		{name: "bad advertise URL", args: []string{"--advertise-url", "sagaz.example.com:8080"}, wantErr: []string{"--advertise-url", "want http(s)://host[:port]"}},
		{name: "advertise URL with a path", args: []string{"--advertise-url", "http://h/x?y"}, wantErr: []string{"--advertise-url"}},
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
				if tc.hidden != "" && strings.Contains(err.Error(), tc.hidden) {
					t.Errorf("error %q shows the secret %q", err, tc.hidden)
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
