package member_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/member"
	"github.com/sagaz-go/sagaz/sagas"
	"github.com/sagaz-go/sagaz/storage"
)

func registry() *engine.Registry {
	reg := engine.NewRegistry()
	reg.Register(sagas.Order)
	return reg
}

func config(dir string, seeds []string) member.Config {
	return member.Config{DataDir: dir, Registry: registry(), Logger: slog.New(slog.DiscardHandler), HTTPAddr: "127.0.0.1:0",
		Consumer: consumer.Config{Client: []kgo.Opt{kgo.SeedBrokers(seeds...)}, Group: "member-test", CreateTopics: true, SessionTimeout: 10 * time.Second}}
}

// A member runs a saga end to end, reports ready over HTTP, and on stop
// mirrors its sagas' last state into the changelog before it closes the
// store: a new member with an empty data directory restores the finished
// saga from the changelog alone.
func TestMemberRunsAndStopsInOrder(t *testing.T) {
	c := kafkatest.NewCluster(t, kfake.SeedTopics(2, sagas.OrderTopic))
	seeds := c.ListenAddrs()
	m, err := member.New(context.Background(), config(t.TempDir(), seeds))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	kafkatest.WaitFor(t, 30*time.Second, "/readyz to answer 200", func() bool {
		resp, err := http.Get("http://" + m.HTTP.Addr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	kafkatest.Produce(t, kafkatest.Client(t, seeds), &kgo.Record{Topic: sagas.OrderTopic, Key: []byte("o-1"), Value: []byte(`{"order_id":"o-1"}`)})
	var id string
	kafkatest.WaitFor(t, 30*time.Second, "the order saga to complete", func() bool {
		page, err := m.Store.List(context.Background(), storage.Query{Status: storage.StatusCompleted})
		if err != nil || len(page.Sagas) != 1 {
			return false
		}
		id = page.Sagas[0].ID()
		return true
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := m.Store.Get(context.Background(), id); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("store after Run returned: %v, want ErrClosed", err)
	}
	if err := m.Run(context.Background()); err == nil {
		t.Fatal("a second Run was accepted")
	}

	// A fresh member (empty data directory) in the same group restores the
	// completed saga from the changelog.
	m2, err := member.New(context.Background(), config(t.TempDir(), seeds))
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- m2.Run(ctx2) }()
	defer func() { cancel2(); <-done2 }()
	kafkatest.WaitFor(t, 30*time.Second, "the saga restored from the changelog", func() bool {
		s, err := m2.Store.Get(context.Background(), id)
		return err == nil && s.Status == storage.StatusCompleted
	})
}

// A member that fails to assemble releases what it opened: the data
// directory can be used again at once (the store's file lock is free).
func TestNewReleasesWhatItOpenedOnError(t *testing.T) {
	dir := t.TempDir()
	bad := config(dir, []string{"127.0.0.1:1"})
	bad.HTTPAddr = "not an address"
	if _, err := member.New(context.Background(), bad); err == nil {
		t.Fatal("New accepted a bad HTTP address")
	}
	good := config(dir, []string{"127.0.0.1:1"})
	good.Store.LockTimeout = 100 * time.Millisecond
	m, err := member.New(context.Background(), good)
	if err != nil {
		t.Fatalf("the data directory stayed locked: %v", err)
	}
	m.Close()
	m.Close() // idempotent
}
