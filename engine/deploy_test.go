package engine_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/health"
	"github.com/sagaz-go/sagaz/storage"
)

// Deploys that change a saga while sagas are in flight.

// calls records the steps run, as "<version>:<step>:<order id>" (and
// "<version>:undo <step>:<order id>" for compensations).
type calls struct {
	mu  sync.Mutex
	all []string
}

func (c *calls) add(s string) {
	c.mu.Lock()
	c.all = append(c.all, s)
	c.mu.Unlock()
}

func (c *calls) of(id string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.all {
		if strings.HasSuffix(s, ":"+id) {
			out = append(out, strings.TrimSuffix(s, ":"+id))
		}
	}
	return out
}

// steps declares steps named names, each with a compensation, recording
// their calls under version.
func (c *calls) steps(version string, names ...string) []engine.Step {
	var out []engine.Step
	for _, n := range names {
		out = append(out, engine.Step{Name: n,
			Action: func(_ context.Context, r *engine.Run) error {
				c.add(version + ":" + n + ":" + r.String("order_id"))
				return nil
			},
			Compensate: func(_ context.Context, r *engine.Run) error {
				c.add(version + ":undo " + n + ":" + r.String("order_id"))
				return nil
			}})
	}
	return out
}

func deploySaga(steps []engine.Step, previous ...[]engine.Step) engine.Saga {
	s := engine.Saga{Name: "order", Steps: steps, Triggers: []engine.Trigger{
		engine.Kafka("orders", engine.PassThrough, engine.WithKey(engine.KeyField("order_id")), engine.WithMaxConcurrent(1))}}
	for _, p := range previous {
		s.Previous = append(s.Previous, engine.Saga{Steps: p})
	}
	return s
}

func registry(s engine.Saga) *engine.Registry {
	reg := engine.NewRegistry()
	reg.Register(s)
	return reg
}

// seed records sagas in the store at dir in the states given (as a member
// running an earlier build left them), at orders/0 offsets 0, 1, ...
func seed(t *testing.T, dir string, recs ...*storage.Saga) {
	t.Helper()
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	var b storage.StartBatch
	want := make([]storage.Saga, len(recs))
	for i, r := range recs {
		want[i] = *r
		b.Sagas = append(b.Sagas, &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Offset: int64(i)},
			IdempotencyKey: r.IdempotencyKey, Context: []byte(fmt.Sprintf(`{"order_id":%q}`, r.IdempotencyKey))})
	}
	if _, err := st.Start(ctx, b); err != nil {
		t.Fatal(err)
	}
	for i, s := range b.Sagas {
		if want[i].Status == storage.StatusPending {
			continue
		}
		s.Status, s.Steps, s.Definition, s.Error = want[i].Status, want[i].Steps, want[i].Definition, want[i].Error
		if err := st.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

func rec(key string, status storage.Status, definition string, steps ...storage.Step) *storage.Saga {
	return &storage.Saga{IdempotencyKey: key, Status: status, Definition: definition, Steps: steps}
}

func step(name string, st storage.StepStatus) storage.Step {
	return storage.Step{Name: name, Status: st, Attempts: 1}
}

func id(off int64) string {
	return storage.FormatID(storage.Position{Topic: "orders", Offset: off}, "order")
}

// A deploy changes the saga (a step added, removed, renamed, or the steps
// reordered) while sagas of the old definition are pending, executing and
// compensating, and one was recorded by a release that did not record
// definitions. Without the old definition declared, the pending saga runs
// with the new one, and the others are parked with the reason — not failed
// — while the rest of the partition goes on. With the old definition in
// Previous, every saga ends: the old ones the old way.
func TestChangedDefinitionWithSagasInFlight(t *testing.T) {
	v1 := []string{"a", "b", "c"}
	for _, change := range []struct {
		name string
		v2   []string
	}{
		{"step added", []string{"a", "b", "c", "d"}},
		{"step removed", []string{"a", "c"}},
		{"step renamed", []string{"a", "b2", "c"}},
		{"steps reordered", []string{"a", "c", "b"}},
	} {
		for _, withPrevious := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/previous=%v", change.name, withPrevious), func(t *testing.T) {
				var c calls
				old := engine.Fingerprint(&engine.Saga{Steps: c.steps("v1", v1...)})
				dir := t.TempDir()
				seed(t, dir,
					rec("pending", storage.StatusPending, ""),
					rec("executing", storage.StatusExecuting, old, step("a", storage.StepCompleted), step("b", storage.StepPending), step("c", storage.StepPending)),
					rec("compensating", storage.StatusCompensating, old, step("a", storage.StepCompleted), step("b", storage.StepFailed), step("c", storage.StepPending)),
					rec("legacy", storage.StatusExecuting, "", step("a", storage.StepCompleted), step("b", storage.StepCompleted), step("c", storage.StepPending)),
				)
				s := deploySaga(c.steps("v2", change.v2...))
				if withPrevious {
					s = deploySaga(c.steps("v2", change.v2...), c.steps("v1", v1...))
				}
				h := start(t, registry(s), dir)
				h.idle()
				// A new saga of the partition is not held up by parked ones
				// (the trigger runs one saga at a time).
				h.fire(engine.SourceKafka, "orders", `{"order_id":"new"}`)
				h.idle()

				var wantNew []string
				for _, n := range change.v2 {
					wantNew = append(wantNew, "v2:"+n)
				}
				if got := c.of("pending"); !slices.Equal(got, wantNew) {
					t.Errorf("pending saga ran %v, want the new definition %v", got, wantNew)
				}
				if got := c.of("new"); !slices.Equal(got, wantNew) {
					t.Errorf("new saga ran %v, want %v", got, wantNew)
				}
				if g := h.get(id(0)); g.Status != storage.StatusCompleted || g.Definition != engine.Fingerprint(&s) {
					t.Errorf("pending saga: %s, definition %q", g.Status, g.Definition)
				}
				exe, comp, legacy := h.get(id(1)), h.get(id(2)), h.get(id(3))
				if !withPrevious {
					for _, g := range []struct {
						s    *storage.Saga
						from storage.Status
					}{{exe, storage.StatusExecuting}, {comp, storage.StatusCompensating}, {legacy, storage.StatusExecuting}} {
						if g.s.Status != storage.StatusParked || g.s.Park == nil || g.s.Park.From != g.from || g.s.Error != "" {
							t.Fatalf("%s: %s %+v, want parked from %s", g.s.IdempotencyKey, g.s.Status, g.s.Park, g.from)
						}
					}
					if !strings.Contains(exe.Park.Reason, old) || !strings.Contains(exe.Park.Reason, engine.Fingerprint(&s)) {
						t.Errorf("reason %q names neither the recorded definition nor the declared one", exe.Park.Reason)
					}
					if !strings.Contains(legacy.Park.Reason, "[a b c]") {
						t.Errorf("legacy reason %q does not name the recorded steps", legacy.Park.Reason)
					}
					for _, key := range []string{"executing", "compensating", "legacy"} {
						if got := c.of(key); len(got) != 0 {
							t.Errorf("parked saga %s ran %v", key, got)
						}
					}
					if n := h.count(storage.Query{Status: storage.StatusParked}); n != 3 {
						t.Errorf("%d sagas listed as parked, want 3", n)
					}
					return
				}
				if exe.Status != storage.StatusCompleted || exe.Definition != old || !slices.Equal(c.of("executing"), []string{"v1:b", "v1:c"}) {
					t.Errorf("executing saga: %s %q, ran %v; want completed the old way (v1:b v1:c)", exe.Status, exe.Definition, c.of("executing"))
				}
				if comp.Status != storage.StatusRolledBack || !slices.Equal(c.of("compensating"), []string{"v1:undo a"}) {
					t.Errorf("compensating saga: %s, ran %v; want rolled back with v1's compensation", comp.Status, c.of("compensating"))
				}
				if legacy.Status != storage.StatusCompleted || legacy.Definition != old || !slices.Equal(c.of("legacy"), []string{"v1:c"}) {
					t.Errorf("legacy saga: %s %q, ran %v; want completed with v1 (matched by its step names)", legacy.Status, legacy.Definition, c.of("legacy"))
				}
			})
		}
	}
}

// Park, then roll back: the saga parked by the new build resumes by itself
// under the build that declares its definition — at start, and when a
// group member acquires its partition — and finishes from its recorded
// step.
func TestParkedSagaResumesOnRollback(t *testing.T) {
	for _, partitioned := range []bool{false, true} {
		t.Run(fmt.Sprintf("partitioned=%v", partitioned), func(t *testing.T) {
			var c calls
			v1 := deploySaga(c.steps("v1", "a", "b", "c"))
			v2 := deploySaga(c.steps("v2", "a", "b2", "c"))
			dir := t.TempDir()
			seed(t, dir, rec("o-1", storage.StatusExecuting, engine.Fingerprint(&v1), step("a", storage.StepCompleted), step("b", storage.StepPending), step("c", storage.StepPending)))
			var opts []opt
			if partitioned {
				opts = append(opts, withPartitions)
			}
			acquire := func(h *harness) {
				if !partitioned {
					return
				}
				if _, err := h.eng.Acquire(context.Background(), storage.Partition{Topic: "orders"}); err != nil {
					t.Fatal(err)
				}
			}
			h := start(t, registry(v2), dir, opts...)
			acquire(h)
			h.idle()
			if g := h.get(id(0)); g.Status != storage.StatusParked {
				t.Fatalf("under the new build: %s, want parked", g.Status)
			}
			h.stop()
			// Started again without the definition: still parked, unchanged.
			h = start(t, registry(v2), dir, opts...)
			acquire(h)
			h.idle()
			before := h.get(id(0))
			h.stop()

			h = start(t, registry(v1), dir, opts...) // the rollback
			if partitioned {
				if g := h.get(id(0)); g.Status != storage.StatusParked {
					t.Fatalf("before its partition is acquired: %s, want still parked", g.Status)
				}
			}
			acquire(h)
			h.idle()
			g := h.get(id(0))
			if g.Status != storage.StatusCompleted || g.Park != nil || !slices.Equal(c.of("o-1"), []string{"v1:b", "v1:c"}) {
				t.Fatalf("after the rollback: %s %+v, ran %v; want completed from step b", g.Status, g.Park, c.of("o-1"))
			}
			if before.Version != 3 { // started, executing, parked: looking again wrote nothing
				t.Errorf("parked saga version %d after a second look, want 3", before.Version)
			}
		})
	}
}

func parkedRenamed(t *testing.T, c *calls, status storage.Status, steps ...storage.Step) (*harness, engine.Saga) {
	t.Helper()
	v1 := deploySaga(c.steps("v1", "a", "b", "c"))
	v2 := deploySaga(c.steps("v2", "a", "b2", "c"))
	dir := t.TempDir()
	seed(t, dir, rec("o-1", status, engine.Fingerprint(&v1), steps...))
	h := start(t, registry(v2), dir)
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusParked {
		t.Fatalf("%s, want parked", g.Status)
	}
	return h, v2
}

// An operator moves a parked saga on with the current definition: its
// completed steps mapped to the new steps (old name -> new name; by name
// by default; "" drops one). A mapping that does not fit is refused,
// naming what does not fit, and changes nothing.
func TestRetryParkedWithMapping(t *testing.T) {
	executing := []storage.Step{step("a", storage.StepCompleted), step("b", storage.StepCompleted), step("c", storage.StepPending)}
	for _, bad := range []struct {
		mapping map[string]string
		says    string
	}{
		{nil, `recorded step "b" (completed) has no step of that name`},
		{map[string]string{"zz": "b2"}, `"zz" is not a recorded step`},
		{map[string]string{"b": "nope"}, `"nope" is not a step of definition`},
		{map[string]string{"a": "b2", "b": "b2"}, `both map to "b2"`},
	} {
		var c calls
		h, _ := parkedRenamed(t, &c, storage.StatusExecuting, executing...)
		err := h.eng.RetryWith(context.Background(), id(0), engine.RetryOptions{Steps: bad.mapping})
		if !errors.Is(err, engine.ErrInvalidMapping) || !strings.Contains(err.Error(), bad.says) {
			t.Fatalf("mapping %v: %v, want ErrInvalidMapping saying %q", bad.mapping, err, bad.says)
		}
		if g := h.get(id(0)); g.Status != storage.StatusParked {
			t.Fatalf("a refused mapping changed the saga: %s", g.Status)
		}
	}

	var c calls
	h, v2 := parkedRenamed(t, &c, storage.StatusExecuting, executing...)
	if err := h.eng.RetryWith(context.Background(), id(0), engine.RetryOptions{Steps: map[string]string{"b": "b2"}}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	g := h.get(id(0))
	if g.Status != storage.StatusCompleted || g.Definition != engine.Fingerprint(&v2) || !slices.Equal(c.of("o-1"), []string{"v2:c"}) {
		t.Fatalf("after retry b->b2: %s %q, ran %v; want completed running only c", g.Status, g.Definition, c.of("o-1"))
	}
	if g.Steps[1].Name != "b2" || g.Steps[1].Status != storage.StepCompleted || g.Steps[1].Attempts != 1 {
		t.Fatalf("mapped step %+v, want b's record under b2", g.Steps[1])
	}

	// Dropped: b's effect stays, b2 runs.
	c = calls{}
	h, _ = parkedRenamed(t, &c, storage.StatusExecuting, executing...)
	if err := h.eng.RetryWith(context.Background(), id(0), engine.RetryOptions{Steps: map[string]string{"b": ""}}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusCompleted || !slices.Equal(c.of("o-1"), []string{"v2:b2", "v2:c"}) {
		t.Fatalf("after retry with b dropped: %s, ran %v", g.Status, c.of("o-1"))
	}

	// Parked while compensating: the compensation goes on with the new
	// definition's compensations.
	c = calls{}
	h, _ = parkedRenamed(t, &c, storage.StatusCompensating, step("a", storage.StepCompleted), step("b", storage.StepCompleted), step("c", storage.StepFailed))
	if err := h.eng.Retry(context.Background(), id(0)); !errors.Is(err, engine.ErrInvalidMapping) {
		t.Fatalf("retry by name: %v, want b refused", err)
	}
	if err := h.eng.RetryWith(context.Background(), id(0), engine.RetryOptions{Steps: map[string]string{"b": "b2"}}); err != nil {
		t.Fatal(err)
	}
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusRolledBack || !slices.Equal(c.of("o-1"), []string{"v2:undo b2", "v2:undo a"}) {
		t.Fatalf("after retry of a compensating saga: %s, ran %v", g.Status, c.of("o-1"))
	}
	// Only failed and parked sagas can be retried.
	if err := h.eng.Retry(context.Background(), id(0)); !errors.Is(err, engine.ErrConflict) {
		t.Fatalf("retry of a rolled back saga: %v", err)
	}
}

// Cancelling a parked saga compensates what its record says was done, with
// the compensations of a definition that knows those steps; with none, it
// is refused clearly; with nothing done, it ends at once.
func TestCancelParked(t *testing.T) {
	t.Run("a previous version knows the steps", func(t *testing.T) {
		var c calls
		// Recorded with v0 (b had no compensation then); declared now: v2,
		// and v1 as previous (b has one).
		v0steps := c.steps("v0", "a", "b")
		v0steps[1].Compensate = nil
		v0 := deploySaga(v0steps)
		cur := deploySaga(c.steps("v2", "a", "b2"), c.steps("v1", "a", "b"))
		dir := t.TempDir()
		seed(t, dir, rec("o-1", storage.StatusExecuting, engine.Fingerprint(&v0), step("a", storage.StepCompleted), step("b", storage.StepCompleted)))
		h := start(t, registry(cur), dir)
		h.idle()
		if g := h.get(id(0)); g.Status != storage.StatusParked {
			t.Fatalf("%s, want parked", g.Status)
		}
		if err := h.eng.Cancel(context.Background(), id(0)); err != nil {
			t.Fatal(err)
		}
		h.idle()
		if g := h.get(id(0)); g.Status != storage.StatusRolledBack || g.Error != "cancelled" || !slices.Equal(c.of("o-1"), []string{"v1:undo b", "v1:undo a"}) {
			t.Fatalf("cancelled: %s %q, ran %v; want v1's compensations in reverse order", g.Status, g.Error, c.of("o-1"))
		}
	})
	t.Run("no definition knows the steps", func(t *testing.T) {
		var c calls
		h, _ := parkedRenamed(t, &c, storage.StatusExecuting, step("a", storage.StepCompleted), step("b", storage.StepCompleted), step("c", storage.StepPending))
		err := h.eng.Cancel(context.Background(), id(0))
		if !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), `["a" "b"]`) {
			t.Fatalf("cancel: %v, want a conflict naming the steps no definition knows", err)
		}
		if g := h.get(id(0)); g.Status != storage.StatusParked || len(c.of("o-1")) != 0 {
			t.Fatalf("after a refused cancel: %s, ran %v", g.Status, c.of("o-1"))
		}
	})
	t.Run("nothing was done", func(t *testing.T) {
		dir := t.TempDir()
		seed(t, dir, rec("o-1", storage.StatusPending, ""))
		var c calls
		reg := engine.NewRegistry()
		other := deploySaga(c.steps("x", "x"))
		other.Name = "other"
		reg.Register(other)
		h := start(t, reg, dir)
		h.idle()
		if g := h.get(id(0)); g.Status != storage.StatusParked {
			t.Fatalf("%s, want parked (saga order is not declared)", g.Status)
		}
		if err := h.eng.Retry(context.Background(), id(0)); !errors.Is(err, engine.ErrConflict) || !strings.Contains(err.Error(), "not declared") {
			t.Fatalf("retry of an undeclared saga: %v", err)
		}
		if err := h.eng.Cancel(context.Background(), id(0)); err != nil {
			t.Fatal(err)
		}
		if g := h.get(id(0)); g.Status != storage.StatusRolledBack {
			t.Fatalf("cancelled: %s, want rolled back", g.Status)
		}
	})
}

// Previous versions are checked like declarations.
func TestPreviousVersionsAreValidated(t *testing.T) {
	var c calls
	cur := c.steps("v2", "a", "b")
	for _, bad := range []struct {
		prev engine.Saga
		says string
	}{
		{engine.Saga{Steps: c.steps("v1", "a", "b")}, "same steps and compensations as the current declaration"},
		{engine.Saga{Name: "refund", Steps: c.steps("v1", "a")}, `is named "refund"`},
		{engine.Saga{Steps: []engine.Step{{Name: "a"}}}, `step "a" has no action`},
		{engine.Saga{Steps: c.steps("v1", "a"), Previous: []engine.Saga{{Steps: c.steps("v0", "z")}}}, "previous versions of its own"},
		{engine.Saga{}, "has no steps"},
	} {
		s := deploySaga(cur)
		s.Previous = []engine.Saga{bad.prev}
		_, err := registry(s).Routes()
		if !errors.Is(err, engine.ErrInvalidSaga) || !strings.Contains(err.Error(), bad.says) {
			t.Errorf("previous %+v: %v, want an error saying %q", bad.prev, err, bad.says)
		}
	}
	s := deploySaga(cur, c.steps("v1", "a"))
	routes, err := registry(s).Routes()
	if err != nil {
		t.Fatal(err)
	}
	if v := routes.Versions("order"); len(v) != 2 || v[0] != engine.Fingerprint(&s) || v[1] != engine.Fingerprint(&engine.Saga{Steps: c.steps("v1", "a")}) {
		t.Fatalf("versions %v", v)
	}
}

// A store holding a record of a newer release (a rollback onto the data
// directory of a newer member): that partition is left alone and said to
// be incompatible; the engine starts, and the other partitions' sagas run.
func TestNewerRecordLeavesItsPartitionAlone(t *testing.T) {
	var c calls
	dir := t.TempDir()
	seed(t, dir, rec("o-0", storage.StatusPending, ""))
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := &storage.Saga{Name: "order", Trigger: "kafka:orders", Source: storage.Position{Topic: "orders", Partition: 1}, Context: []byte(`{"order_id":"o-1"}`)}
	if _, err := st.Start(context.Background(), storage.StartBatch{Sagas: []*storage.Saga{other}}); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	db, err := bolt.Open(filepath.Join(dir, "sagaz.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("parts")).Bucket([]byte("orders/0")).Bucket([]byte("s"))
		k := append(binary.BigEndian.AppendUint64(nil, 0), "order"...)
		v := append([]byte(nil), b.Get(k)...)
		v[0] = 3 // a record format of a newer release
		return b.Put(k, v)
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	hc := health.New(nil)
	h := start(t, registry(deploySaga(c.steps("v1", "a"))), dir, func(cfg *engine.Config) { cfg.Health = hc })
	h.idle()
	if g := h.get(other.ID()); g.Status != storage.StatusCompleted {
		t.Fatalf("the other partition's saga: %s, want completed", g.Status)
	}
	if !hc.Holds(health.Incompatible) || !strings.Contains(hc.Err().Error(), "orders/0") {
		t.Fatalf("readiness %v, want incompatible naming orders/0", hc.Err())
	}
}

// A saga parked before its first step (its saga was not declared) resumes
// as pending where it is declared, runs with the current definition, and
// the engine's counts come back to zero.
func TestParkedPendingSagaResumes(t *testing.T) {
	var c calls
	dir := t.TempDir()
	seed(t, dir, rec("o-1", storage.StatusPending, ""))
	other := deploySaga(c.steps("x", "x"))
	other.Name = "other"
	h := start(t, registry(other), dir)
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusParked || g.Park.From != storage.StatusPending {
		t.Fatalf("%s %+v, want parked from pending", g.Status, g.Park)
	}
	h.stop()
	h = start(t, registry(deploySaga(c.steps("v1", "a", "b"))), dir)
	h.idle()
	if g := h.get(id(0)); g.Status != storage.StatusCompleted || !slices.Equal(c.of("o-1"), []string{"v1:a", "v1:b"}) {
		t.Fatalf("%s, ran %v", g.Status, c.of("o-1"))
	}
	if q, r := h.eng.Stats(); q != 0 || r != 0 {
		t.Fatalf("Stats() = %d pending, %d executing after the resumed saga completed, want 0, 0", q, r)
	}
}
