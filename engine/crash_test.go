package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// The crash test re-runs this test binary as a helper process (the usual
// Go way to test a real process): SAGAZ_CRASH_DIR selects helper mode.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SAGAZ_CRASH_DIR"); dir != "" {
		if err := crashHelper(dir); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashHelper runs saga "crash" (steps a, b, c; events with fail=true fail
// at c and compensate b, then a). Every step entry and completion is
// appended to dir/log. With SAGAZ_CRASH_BLOCK=1, step b and the
// compensation of b block until the process is killed. With
// SAGAZ_CRASH_FIRE=n it first fires n events. It exits once idle.
func crashHelper(dir string) error {
	logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	block := os.Getenv("SAGAZ_CRASH_BLOCK") == "1"
	note := func(r *engine.Run, what string) {
		fmt.Fprintf(logf, "%s %s\n", r.String("n"), what) // one write(2) per line: survives SIGKILL
	}
	step := func(name string, blocking, fails bool) engine.StepFunc {
		return func(ctx context.Context, r *engine.Run) error {
			note(r, "enter "+name)
			if fails && r.Get("fail") == true {
				return engine.Permanent(errors.New("asked to fail"))
			}
			if blocking && block {
				<-ctx.Done()
				return ctx.Err()
			}
			note(r, "done "+name)
			return nil
		}
	}
	reg := engine.NewRegistry()
	reg.Register(engine.Saga{
		Name: "crash",
		Steps: []engine.Step{
			{Name: "a", Action: step("a", false, false), Compensate: step("undo a", false, false)},
			{Name: "b", Action: func(ctx context.Context, r *engine.Run) error {
				if r.Get("fail") == true { // failing sagas pass b and block in its compensation
					return step("b", false, false)(ctx, r)
				}
				return step("b", true, false)(ctx, r)
			}, Compensate: step("undo b", true, false)},
			{Name: "c", Action: step("c", false, true)},
		},
		Triggers: []engine.Trigger{engine.Manual("go", func(ev *engine.Event) (map[string]any, error) {
			m, err := ev.JSON()
			if err != nil {
				return nil, err
			}
			return map[string]any{"n": m["n"], "fail": m["fail"] == true}, nil
		}, engine.WithKey(engine.KeyField("n")))},
	})
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
	n, _ := strconv.Atoi(os.Getenv("SAGAZ_CRASH_FIRE"))
	for i := range n {
		body := fmt.Sprintf(`{"n":"%d","fail":%v}`, i, i%2 == 1)
		if _, err := e.Fire(ctx, engine.SourceManual, engine.Event{Name: "go", Value: []byte(body)}); err != nil {
			return err
		}
	}
	if err := e.WaitIdle(ctx); err != nil {
		return err
	}
	cancel()
	return <-done
}

func runHelper(t *testing.T, dir string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "SAGAZ_CRASH_DIR="+dir)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func logCounts(t *testing.T, dir string) map[string]int {
	b, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	c := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			c[l]++
		}
	}
	return c
}

// TestCrashRecoveryWithRealProcess SIGKILLs a process while sagas are in
// the middle of a step and of a compensation, restarts it, and checks that
// every saga reaches the right end with each recorded step run once.
func TestCrashRecoveryWithRealProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes; skipped with -short")
	}
	dir := t.TempDir()
	const n = 10
	cmd := runHelper(t, dir, "SAGAZ_CRASH_FIRE="+strconv.Itoa(n), "SAGAZ_CRASH_BLOCK=1")
	waitFor(t, func() bool {
		c := logCounts(t, dir)
		for i := range n {
			want := fmt.Sprintf("%d enter b", i)
			if i%2 == 1 {
				want = fmt.Sprintf("%d enter undo b", i)
			}
			if c[want] == 0 {
				return false
			}
		}
		return true
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper was not killed: %v", err)
	}

	cmd = runHelper(t, dir)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("restarted helper: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("restarted helper did not finish the sagas within 60s")
	}

	c := logCounts(t, dir)
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range n {
		id := storage.FormatKeyedID("crash", strconv.Itoa(i)) // the events are keyed by "n"
		s, err := st.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		k := func(what string) int { return c[fmt.Sprintf("%d %s", i, what)] }
		if i%2 == 0 {
			// killed inside b: a recorded before the kill is not run again,
			// b runs again (at least once), c once.
			if s.Status != storage.StatusCompleted || k("done a") != 1 || k("enter b") != 2 || k("done b") != 1 || k("done c") != 1 {
				t.Errorf("saga %d: %s, log a=%d b=%d/%d c=%d", i, s.Status, k("done a"), k("enter b"), k("done b"), k("done c"))
			}
		} else {
			// killed inside the compensation of b: the recorded failure of
			// c is not re-run; undo b runs again, undo a once.
			if s.Status != storage.StatusRolledBack || k("enter c") != 1 || k("enter undo b") != 2 || k("done undo b") != 1 || k("done undo a") != 1 || k("done a") != 1 {
				t.Errorf("saga %d: %s, log c=%d undo b=%d/%d undo a=%d a=%d", i, s.Status, k("enter c"), k("enter undo b"), k("done undo b"), k("done undo a"), k("done a"))
			}
		}
		for _, step := range s.Steps {
			if step.Status == storage.StepCompleted || step.Status == storage.StepCompensated {
				if step.Attempts != 1 {
					t.Errorf("saga %d step %s recorded %d attempts, want 1", i, step.Name, step.Attempts)
				}
			}
		}
	}
}
