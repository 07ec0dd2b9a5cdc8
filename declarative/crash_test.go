package declarative_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/storage"
)

// The crash test re-runs this test binary as a helper process:
// SAGAZ_DECL_CRASH_DIR selects helper mode.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SAGAZ_DECL_CRASH_DIR"); dir != "" {
		if err := crashHelper(dir, os.Getenv("SAGAZ_DECL_CRASH_YAML"), os.Getenv("SAGAZ_DECL_CRASH_FIRE") == "1"); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashHelper runs the YAML sagas at path on the store in dir, fires one
// event when asked, and exits once no saga is left to run.
func crashHelper(dir, path string, fireOne bool) error {
	reg := engine.NewRegistry()
	if err := declarative.Register(reg, path); err != nil {
		return err
	}
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		return err
	}
	defer st.Close()
	e, err := engine.New(engine.Config{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	<-e.Ready()
	if fireOne {
		if _, err := e.Fire(ctx, engine.SourceManual, engine.Event{Name: "go", Value: []byte(`{"id":"o-1"}`)}); err != nil {
			return err
		}
	}
	if err := e.WaitIdle(ctx); err != nil {
		return err
	}
	cancel()
	return <-done
}

// TestKillDuringHTTPStep: the process is SIGKILLed while an HTTP step
// waits for its answer. After a restart the step is sent again with the
// same Idempotency-Key, the steps before it are not, and the saga ends
// once (completed, its last step called once).
func TestKillDuringHTTPStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	var block atomic.Bool
	block.Store(true)
	var mu sync.Mutex
	var calls []string // "path key"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls = append(calls, r.URL.Path+" "+r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		if r.URL.Path == "/b" && block.Load() {
			<-r.Context().Done() // the caller dies mid-request
			return
		}
		fmt.Fprint(w, "{}")
	}))
	defer srv.Close()
	seen := func(path string) []string {
		mu.Lock()
		defer mu.Unlock()
		var keys []string
		for _, c := range calls {
			if p, k, _ := strings.Cut(c, " "); p == path {
				keys = append(keys, k)
			}
		}
		return keys
	}

	dir := t.TempDir()
	yaml := write(t, dir, "crash.yaml", fmt.Sprintf(`name: crash
triggers: [{manual: go, idempotency_key: id}]
steps:
  - name: a
    action: {http: {method: POST, url: "%[1]s/a"}}
  - name: b
    action:
      http: {method: POST, url: "%[1]s/b"}
      timeout: 60s
  - name: c
    action: {http: {method: POST, url: "%[1]s/c"}}
`, srv.URL))
	start := func(fireOne bool) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SAGAZ_DECL_CRASH_DIR="+dir, "SAGAZ_DECL_CRASH_YAML="+yaml)
		if fireOne {
			cmd.Env = append(cmd.Env, "SAGAZ_DECL_CRASH_FIRE=1")
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}

	cmd := start(true)
	kafkatest.WaitFor(t, 30*time.Second, "step b to be called", func() bool { return len(seen("/b")) == 1 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper was not killed: %v", err)
	}
	block.Store(false)

	cmd = start(false)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("restarted helper: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("restarted helper did not finish the saga within 60s")
	}

	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	page, err := st.List(context.Background(), storage.Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Sagas) != 1 || page.Sagas[0].Status != storage.StatusCompleted {
		t.Fatalf("want one completed saga, got %+v", page.Sagas)
	}
	id := page.Sagas[0].ID()
	a, b, c := seen("/a"), seen("/b"), seen("/c")
	if len(a) != 1 || len(c) != 1 {
		t.Errorf("a called %d times, c %d times; want once each", len(a), len(c))
	}
	if len(b) != 2 || b[0] != b[1] || b[0] != id+"/b" {
		t.Errorf("b calls with keys %q; want two, both %q", b, id+"/b")
	}
}
