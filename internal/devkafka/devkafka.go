// Package devkafka runs the embedded Kafka-compatible broker of dev mode:
// kfake, one broker on a loopback port, its log persisted under a
// directory so a restart keeps the topics and offsets.
package devkafka

import (
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Start starts the broker on 127.0.0.1:port with its data in dir.
func Start(dir string, port int) (*kfake.Cluster, error) {
	// kfake listens on 127.0.0.1; check the port first for a clear error.
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("embedded broker: port %d is taken (is another Kafka or sagaz running? set --brokers to use it): %w", port, err)
	}
	_ = ln.Close()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(dir),
		kfake.DefaultNumPartitions(6),
	)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return c, nil
}
