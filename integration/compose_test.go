package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	"github.com/sagaz-go/sagaz/storage"
)

// composeFile is the part of docker-compose.yml this test runs.
type composeFile struct {
	Services map[string]struct {
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck struct {
			Test    []string `yaml:"test"`
			Disable bool     `yaml:"disable"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

// interpolate applies Compose's variable syntax with an empty shell
// environment, as on a fresh machine: ${V:-default} and ${V-default} give
// the default, ${V} and $V nothing, ${V:?message} and ${V?message} fail
// (as `docker compose up` would).
func interpolate(s string) (string, error) {
	var bad error
	out := regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`).ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}$`).FindStringSubmatch(m)
		if sub == nil {
			return "" // $V, unset
		}
		switch strings.TrimPrefix(sub[2], ":") {
		case "-":
			return sub[3]
		case "?":
			bad = fmt.Errorf("%s is required: %s", sub[1], sub[3])
		}
		return ""
	})
	return out, bad
}

// dockerfileEnv reads the image's ENV lines (ENV A=B \ C=D).
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	sc := bufio.NewScanner(strings.NewReader(text))
	final := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "FROM ") {
			final = strings.Contains(line, "distroless") // the runtime stage
			env = map[string]string{}
		}
		if rest, ok := strings.CutPrefix(line, "ENV "); ok && final {
			for _, kv := range strings.Fields(rest) {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
		}
	}
	return env
}

// TestComposeStackStartsAsWritten runs docker-compose.yml's Sagaz services
// against the local Apache Kafka, without Docker: kafka-init's command with
// its environment (the image's ENV, then the file's, interpolated as on a
// fresh machine), then both replicas with theirs, until their own health
// check command reports them ready; then an order produced with kcat
// completes. Rewritten for the machine: broker addresses (the local
// Kafka), data directories (temporary), HTTP addresses (free loopback
// ports) and the group (unique, so a shared broker's earlier runs do not
// interfere; kafka-init and the replicas get the same one).
func TestComposeStackStartsAsWritten(t *testing.T) {
	brokers := needKafka(t)
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(raw, &cf); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	bin := sagaztest.BuildBinary(t, "../cmd/consumer")
	image := dockerfileEnv(t)
	group := unique("compose")
	dir := t.TempDir()

	envOf := func(name string) []string {
		t.Helper()
		svc, ok := cf.Services[name]
		if !ok {
			t.Fatalf("docker-compose.yml has no service %s", name)
		}
		if svc.Build == nil {
			t.Fatalf("%s: not built from this repository's Dockerfile", name)
		}
		env := map[string]string{}
		for k, v := range image {
			env[k] = v
		}
		for k, v := range svc.Environment {
			v, err := interpolate(v)
			if err != nil {
				t.Fatalf("%s: %s: `docker compose up` would fail: %v", name, k, err)
			}
			env[k] = v
		}
		if env["SAGAZ_BROKERS"] == "" {
			t.Fatalf("%s: no SAGAZ_BROKERS: it would start the embedded dev broker", name)
		}
		// Bind mounts of this repository's files (./x:/y[:ro]): a setting
		// that names a path under /y names the file under ../x here.
		for _, v := range svc.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
				continue // a named volume (the data directory, rewritten below)
			}
			host, err := filepath.Abs(filepath.Join("..", parts[0]))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(host); err != nil {
				t.Fatalf("%s mounts %s, which this repository does not have: %v", name, parts[0], err)
			}
			for k, val := range env {
				if rest, ok := strings.CutPrefix(val, parts[1]); ok && (rest == "" || strings.HasPrefix(rest, "/")) {
					env[k] = host + rest
				}
			}
		}
		env["SAGAZ_BROKERS"] = strings.Join(brokers, ",")
		env["SAGAZ_DATA_DIR"] = filepath.Join(dir, name)
		env["SAGAZ_HTTP_ADDR"] = sagaztest.FreeAddr(t)
		env["SAGAZ_GROUP"] = group
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}
	command := func(name string) []string {
		c := cf.Services[name].Command
		if len(c) == 0 {
			t.Fatalf("%s: no command (the image's default would apply; the file should say what runs)", name)
		}
		return c
	}
	logFile := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			f.Close()
			if t.Failed() {
				sagaztest.LogTail(t, f.Name(), 60)
			}
		})
		return f
	}

	// kafka-init: one shot, must succeed (the replicas wait for it).
	for _, name := range []string{"sagaz-1", "sagaz-2"} {
		if c := cf.Services[name].DependsOn["kafka-init"].Condition; c != "service_completed_successfully" {
			t.Fatalf("%s: depends on kafka-init with %q, want service_completed_successfully", name, c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	initCmd := exec.CommandContext(ctx, bin, command("kafka-init")...)
	initCmd.Env = envOf("kafka-init")
	f := logFile("kafka-init")
	initCmd.Stdout, initCmd.Stderr = f, f
	if err := initCmd.Run(); err != nil {
		t.Fatalf("kafka-init (%s): %v", strings.Join(command("kafka-init"), " "), err)
	}

	// The replicas, ready by their own health check.
	type member = composeMember
	var members []member
	for _, name := range []string{"sagaz-1", "sagaz-2"} {
		env := envOf(name)
		cmd := exec.Command(bin, command(name)...)
		cmd.Env = env
		f := logFile(name)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		addr := ""
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "SAGAZ_HTTP_ADDR="); ok {
				addr = v
			}
		}
		members = append(members, member{name, addr, env})
	}
	for _, m := range members {
		hc := cf.Services[m.name].Healthcheck
		if hc.Disable || len(hc.Test) < 2 || hc.Test[0] != "CMD" || filepath.Base(hc.Test[1]) != "sagaz" {
			t.Fatalf("%s: health check %v, want [CMD /usr/local/bin/sagaz healthcheck] (the image has no shell)", m.name, hc.Test)
		}
		kafkatest.WaitFor(t, 90*time.Second, m.name+" healthy by its own health check", func() bool {
			c := exec.Command(bin, hc.Test[2:]...)
			c.Env = m.env
			return c.Run() == nil
		})
		resp, err := http.Get("http://" + m.http + "/readyz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s /readyz: %v %v", m.name, resp, err)
		}
		resp.Body.Close()
	}

	// The file asks for JSON logs: every line a member wrote is JSON.
	for _, m := range members {
		b, err := os.ReadFile(filepath.Join(dir, m.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if !json.Valid([]byte(line)) {
				t.Errorf("%s wrote a line that is not JSON: %q", m.name, line)
			}
		}
	}

	// An order, as the file's header comment sends it, completes on one of them.
	id := unique("compose-order")
	kcatProduce(t, "orders.created", []string{fmt.Sprintf(`%s|{"order_id":%q,"amount":42}`, id, id)}, "x-test=compose")
	waitCompleted(t, members, "order", id)

	// The accounts service with its command and environment (its group made
	// unique, as the members' is), and a transfer of the saga the members
	// load from YAML: its command steps are answered and it completes.
	acc := cf.Services["accounts"]
	if acc.Build == nil || len(acc.Command) == 0 || acc.Command[0] != "demo-participant" {
		t.Fatalf("accounts: %v, want the image running demo-participant", acc.Command)
	}
	if acc.DependsOn["kafka-init"].Condition != "service_completed_successfully" {
		t.Fatal("accounts must wait for kafka-init (it creates accounts.commands)")
	}
	if cf.Services["sagaz-1"].Environment["SAGAZ_SAGAS"] == "" && image["SAGAZ_SAGAS"] == "" {
		t.Fatal("the members load no YAML saga (SAGAZ_SAGAS)")
	}
	accCmd := exec.Command(bin, append(append([]string(nil), acc.Command...), "--group", group+"-accounts")...)
	accCmd.Env = []string{"SAGAZ_BROKERS=" + strings.Join(brokers, ",")}
	for k, v := range acc.Environment {
		if k != "SAGAZ_BROKERS" {
			accCmd.Env = append(accCmd.Env, k+"="+v)
		}
	}
	af := logFile("accounts")
	accCmd.Stdout, accCmd.Stderr = af, af
	if err := accCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = accCmd.Process.Signal(os.Interrupt); _ = accCmd.Wait() })
	// The transfer's debit gives up after two 3-second tries: produced before
	// the accounts service serves (on a new broker it creates its state
	// topic and the transaction log first), it would roll back, as the saga
	// says. A user starts the stack, then sends transfers.
	waitGroupServing(t, group+"-accounts")
	kafkatest.WaitFor(t, 90*time.Second, "the accounts service to consume (its producer id taken)", func() bool {
		b, _ := os.ReadFile(af.Name())
		return strings.Contains(string(b), "participant consuming")
	})
	xfer := unique("compose-transfer")
	kcatProduce(t, "transfers.yaml.requested", []string{fmt.Sprintf(`%s|{"transfer_id":%q,"from":"alice","to":"bob","amount":10}`, xfer, xfer)}, "x-test=compose")
	waitCompleted(t, members, "transfer-yaml", xfer)
}

type composeMember = struct {
	name, http string
	env        []string
}

// waitCompleted waits until one of the members lists saga's instance with
// idempotency key id as completed.
func waitCompleted(t *testing.T, members []composeMember, saga, id string) {
	t.Helper()
	done := false
	defer func() {
		if done {
			return
		}
		for _, m := range members { // how each member shows it, for the failure's reader
			resp, err := http.Get("http://" + m.http + "/api/sagas/" + storage.FormatKeyedID(saga, id))
			if err != nil {
				t.Logf("%s: %v", m.name, err)
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%s shows %s: %d %s", m.name, storage.FormatKeyedID(saga, id), resp.StatusCode, b)
		}
	}()
	kafkatest.WaitFor(t, 90*time.Second, "the "+saga+" saga "+id+" to complete", func() bool {
		for _, m := range members {
			resp, err := http.Get("http://" + m.http + "/api/sagas?saga=" + saga + "&status=completed&limit=1000")
			if err != nil {
				continue
			}
			var page struct {
				Sagas []struct {
					IdempotencyKey string `json:"idempotency_key"`
				} `json:"sagas"`
			}
			err = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			for _, s := range page.Sagas {
				if err == nil && s.IdempotencyKey == id {
					return true
				}
			}
		}
		return false
	})
	done = true
}
