package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sagaz-go/sagaz/engine"
)

// The compose file and Dockerfile cannot run here (no Docker engine), so
// check what can be checked: they parse, and name what they should.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       any               `yaml:"build"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Ports       []string          `yaml:"ports"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	kafka := c.Services["kafka"]
	if !strings.HasPrefix(kafka.Image, "apache/kafka:") || !strings.Contains(kafka.Environment["KAFKA_PROCESS_ROLES"], "controller") {
		t.Errorf("kafka service: image %q roles %q, want apache/kafka in KRaft mode", kafka.Image, kafka.Environment["KAFKA_PROCESS_ROLES"])
	}
	if c.Services["kafka-init"].DependsOn["kafka"].Condition != "service_healthy" {
		t.Error("kafka-init must wait for a healthy broker")
	}
	// kafka-init creates what the members need, derived from the binary and
	// the members' own settings (not a hand-written list).
	kinit := c.Services["kafka-init"]
	if kinit.Build == nil || strings.Join(kinit.Command, " ") != "topics --create" {
		t.Errorf("kafka-init: build %v command %v, want this image running `topics --create`", kinit.Build, kinit.Command)
	}
	// A fresh machine has no variables set: nothing may be required.
	if strings.Contains(string(b), ":?") || strings.Contains(string(b), "${SAGAZ_ADMIN_TOKEN?") {
		t.Error("docker-compose.yml requires a variable: `docker compose up` fails on a fresh machine")
	}
	// Published ports listen on loopback only (the API may run without a token).
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond loopback", name, p)
			}
		}
	}
	// Every SAGAZ_* variable the replicas set must be a real setting.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := Load(fs, nil, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	routes, err := engine.DefaultRegistry().Routes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes.All() {
		if w := r.Trigger.Webhook(); w != "" {
			known[WebhookSecretEnv(w)], known[WebhookSecretFileEnv(w)], known[WebhookSchemeEnv(w)] = true, true, true
		}
	}
	volumes, ids := map[string]bool{}, map[string]bool{}
	for _, name := range []string{"sagaz-1", "sagaz-2"} {
		s, ok := c.Services[name]
		if !ok {
			t.Fatalf("service %s missing", name)
		}
		if s.Build == nil || s.Environment["SAGAZ_BROKERS"] != "kafka:9092" || s.Environment["SAGAZ_GROUP"] != "sagaz" {
			t.Errorf("%s: build %v brokers %q group %q", name, s.Build, s.Environment["SAGAZ_BROKERS"], s.Environment["SAGAZ_GROUP"])
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "SAGAZ_") && !known[k] {
				t.Errorf("%s sets %s, which is no sagaz setting", name, k)
			}
		}
		// The demo's signed webhook needs its secret against a real cluster.
		if s.Environment["SAGAZ_WEBHOOK_SECRET_PAYMENTS"] == "" {
			t.Errorf("%s does not set SAGAZ_WEBHOOK_SECRET_PAYMENTS: the service would not start", name)
		}
		ids[s.Environment["SAGAZ_GROUP_INSTANCE_ID"]] = true
		var data []string
		for _, v := range s.Volumes {
			if named, ok := strings.CutSuffix(v, ":/data"); ok {
				data = append(data, named)
			} else if host, _, _ := strings.Cut(v, ":"); !strings.HasPrefix(host, "./") || !strings.HasSuffix(v, ":ro") {
				t.Errorf("%s: volume %s: want the data volume, or a read-only mount of this repository's files", name, v)
			} else if _, err := os.Stat(filepath.Join("..", "..", host)); err != nil {
				t.Errorf("%s mounts %s: %v", name, host, err)
			}
		}
		if len(data) != 1 {
			t.Errorf("%s: volumes %v, want one volume on /data", name, s.Volumes)
		} else {
			volumes[data[0]] = true
			if _, declared := c.Volumes[data[0]]; !declared {
				t.Errorf("%s: volume %s is not declared", name, data[0])
			}
		}
		if p := s.Environment["SAGAZ_SAGAS"]; p != kinit.Environment["SAGAZ_SAGAS"] {
			t.Errorf("%s loads the sagas %q, kafka-init %q: the topics it creates would not be the ones asked for", name, p, kinit.Environment["SAGAZ_SAGAS"])
		}
		if s.DependsOn["kafka-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s must start after the topics exist", name)
		}
		if strings.Join(s.Command, " ") != "run" {
			t.Errorf("%s: command %v, want run", name, s.Command)
		}
		if hc := strings.Join(s.Healthcheck.Test, " "); hc != "CMD /usr/local/bin/sagaz healthcheck" {
			t.Errorf("%s: health check %q, want the binary's healthcheck (the image has no shell)", name, hc)
		}
		for _, k := range []string{"SAGAZ_GROUP", "SAGAZ_BROKERS", "SAGAZ_TOPIC_PARTITIONS", "SAGAZ_CREATE_TOPICS"} {
			if s.Environment[k] != kinit.Environment[k] {
				t.Errorf("%s: %s = %q, kafka-init has %q: the topics it creates would not be the ones asked for", name, k, s.Environment[k], kinit.Environment[k])
			}
		}
	}
	if len(volumes) != 2 || len(ids) != 2 {
		t.Errorf("the replicas must have their own data volumes %v and instance ids %v", volumes, ids)
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if n := strings.Count(s, "\nFROM "); n < 2 {
		t.Errorf("want a multi-stage build, found %d FROM lines", n)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/consumer", "USER 65532", "VOLUME [\"/data\"]", "SAGAZ_DATA_DIR=/data",
		`CMD ["run"]`, `HEALTHCHECK`, `"/usr/local/bin/sagaz", "healthcheck"`, "internal/buildinfo.version="} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Contains(s, "USER root") || strings.Contains(s, "USER 0") {
		t.Error("the final image must not run as root")
	}
}
