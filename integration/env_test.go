// Package integration runs the invariants of docs/architecture.md against real Apache
// Kafka, with kcat (a client nobody here wrote) producing and reading.
//
// The broker comes from SAGAZ_KAFKA_BROKERS (make test-integration starts
// one from the Apache Kafka jars and sets it), or else from the
// testcontainers-go Kafka module when a Docker engine answers. With
// neither, every test skips and says why.
package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tckafka "github.com/testcontainers/testcontainers-go/modules/kafka"
)

var (
	brokers    []string
	skipReason string
)

func TestMain(m *testing.M) {
	cleanup := resolveBroker()
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// resolveBroker picks the broker: SAGAZ_KAFKA_BROKERS, or a testcontainers
// Kafka when Docker answers.
func resolveBroker() func() {
	if b := os.Getenv("SAGAZ_KAFKA_BROKERS"); b != "" {
		brokers = strings.Split(b, ",")
		return func() {}
	}
	if err := dockerHealthy(); err != nil {
		skipReason = fmt.Sprintf("SAGAZ_KAFKA_BROKERS is unset and no Docker engine answers (%v): run `make test-integration`, which starts Apache Kafka from Maven Central", err)
		return func() {}
	}
	c, err := tckafka.Run(context.Background(), "confluentinc/confluent-local:7.5.0", tckafka.WithClusterID("sagaz-integration"))
	if err != nil {
		skipReason = fmt.Sprintf("SAGAZ_KAFKA_BROKERS is unset and the testcontainers Kafka did not start: %v", err)
		return func() {}
	}
	brokers, err = c.Brokers(context.Background())
	if err != nil {
		skipReason = fmt.Sprintf("testcontainers Kafka: %v", err)
	}
	return func() { _ = testcontainers.TerminateContainer(c) }
}

// dockerHealthy reports whether a Docker engine answers. testcontainers
// panics when it finds no Docker host; that is an answer too.
func dockerHealthy() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	return provider.Health(ctx)
}

// needKafka returns the brokers, or skips the test naming the reason
// (no broker configured in the environment).
func needKafka(t *testing.T) []string {
	t.Helper()
	if len(brokers) == 0 {
		t.Skip("no Kafka broker in this environment: " + skipReason)
	}
	if _, err := exec.LookPath("kcat"); err != nil {
		t.Fatal("kcat not found: install the Debian package kcat (make test-integration does)")
	}
	return brokers
}

// unique returns a name unused on this broker so far (the broker may be
// shared across runs).
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%04d", prefix, time.Now().UnixNano()%1e9, rand.IntN(10000))
}

// kcatProduce produces lines "key|value" to topic with kcat (acks=all),
// each with the given headers.
func kcatProduce(t *testing.T, topic string, lines []string, headers ...string) {
	t.Helper()
	args := []string{"-P", "-b", strings.Join(brokers, ","), "-t", topic, "-K", "|", "-X", "acks=all", "-z", "none"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	cmd := exec.Command("kcat", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}
}

// kcatRecord is one record read back with kcat.
type kcatRecord struct {
	Key, Value string
	Partition  string
	Offset     string
	Headers    map[string]string
}

// kcatRead reads a whole topic with kcat, from the beginning to its end.
func kcatRead(t *testing.T, topic string) []kcatRecord {
	t.Helper()
	const sep = "\x1e"
	out, err := exec.Command("kcat", "-C", "-b", strings.Join(brokers, ","), "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", "%k"+sep+"%s"+sep+"%p"+sep+"%o"+sep+"%h\x1f").Output()
	if err != nil {
		t.Fatalf("kcat consume %s: %v", topic, err)
	}
	var recs []kcatRecord
	for _, raw := range strings.Split(string(out), "\x1f") {
		if strings.TrimSpace(raw) == "" {
			continue
		}
		f := strings.Split(strings.TrimPrefix(raw, "\n"), sep)
		if len(f) != 5 {
			t.Fatalf("unexpected kcat output %q", raw)
		}
		r := kcatRecord{Key: f[0], Value: f[1], Partition: f[2], Offset: f[3], Headers: map[string]string{}}
		for _, kv := range strings.Split(f[4], ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				r.Headers[k] = v
			}
		}
		recs = append(recs, r)
	}
	return recs
}
