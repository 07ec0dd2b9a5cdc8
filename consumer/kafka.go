package consumer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaConfig holds the connection settings users need: seeds, client id,
// TLS and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
type KafkaConfig struct {
	Brokers  []string
	ClientID string

	TLS                   bool   // enable TLS (implied by any other TLS field)
	TLSCAFile             string // PEM CA bundle (default: system roots)
	TLSCertFile           string // client certificate (mTLS)
	TLSKeyFile            string
	TLSInsecureSkipVerify bool

	SASLMechanism string // "", "plain", "scram-sha-256", "scram-sha-512"
	SASLUser      string
	SASLPassword  string
}

// Validate reports every bad field at once.
func (k KafkaConfig) Validate() error {
	var errs []error
	if len(k.Brokers) == 0 {
		errs = append(errs, errors.New("no Kafka brokers"))
	}
	for _, b := range k.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			errs = append(errs, fmt.Errorf("broker %q: want host:port", b))
		}
	}
	if (k.TLSCertFile == "") != (k.TLSKeyFile == "") {
		errs = append(errs, errors.New("TLS client certificate and key must be given together"))
	}
	switch strings.ToLower(k.SASLMechanism) {
	case "":
		if k.SASLUser != "" || k.SASLPassword != "" {
			errs = append(errs, errors.New("SASL user/password given without a SASL mechanism"))
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if k.SASLUser == "" || k.SASLPassword == "" {
			errs = append(errs, fmt.Errorf("SASL %s needs a user and a password", k.SASLMechanism))
		}
	default:
		errs = append(errs, fmt.Errorf("SASL mechanism %q: want plain, scram-sha-256 or scram-sha-512", k.SASLMechanism))
	}
	return errors.Join(errs...)
}

// Opts turns the settings into franz-go client options.
func (k KafkaConfig) Opts() ([]kgo.Opt, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(k.Brokers...)}
	if k.ClientID != "" {
		opts = append(opts, kgo.ClientID(k.ClientID))
	}
	if k.TLS || k.TLSCAFile != "" || k.TLSCertFile != "" || k.TLSInsecureSkipVerify {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: k.TLSInsecureSkipVerify} //nolint:gosec // opt-in
		if k.TLSCAFile != "" {
			pem, err := os.ReadFile(k.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("TLS CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", k.TLSCAFile)
			}
			tc.RootCAs = pool
		}
		if k.TLSCertFile != "" {
			cert, err := tls.LoadX509KeyPair(k.TLSCertFile, k.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("TLS client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch strings.ToLower(k.SASLMechanism) {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.SASLUser, Pass: k.SASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}
