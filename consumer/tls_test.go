package consumer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
)

// testCA makes a CA and a server certificate for 127.0.0.1; it returns the
// server's tls.Config and the CA's PEM file.
func testCA(t *testing.T) (*tls.Config, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sagaz test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}}, MinVersion: tls.VersionTLS12}, caFile
}

func TestTLSAgainstBroker(t *testing.T) {
	srvTLS, caFile := testCA(t)
	c := kafkatest.NewCluster(t, kfake.SeedTopics(1, topic), kfake.TLS(srvTLS))
	seeds := c.ListenAddrs()
	opts, err := consumer.KafkaConfig{Brokers: seeds, TLSCAFile: caFile}.Opts()
	if err != nil {
		t.Fatal(err)
	}
	kafkatest.Produce(t, kafkatest.Client(t, seeds, opts...), orderRecord("o-1", ""))
	m := startMember(t, seeds, "", newRegistry(), func(cfg *consumer.Config) { cfg.Client = opts })
	kafkatest.WaitFor(t, 30*time.Second, "the saga over TLS", func() bool { return m.Finished.Load() == 1 })

	// Without the CA the broker's certificate is not trusted.
	untrusted, _ := consumer.KafkaConfig{Brokers: seeds, TLS: true}.Opts()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := kafkatest.Client(t, seeds, untrusted...).ProduceSync(ctx, orderRecord("o-2", "")).FirstErr(); err == nil {
		t.Fatal("an untrusted broker certificate was accepted")
	}
}
