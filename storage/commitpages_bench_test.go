package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// BenchmarkCommitPages measures what a transaction of saga transitions
// writes: the pages of the B-trees it dirties, as bbolt allocates them for
// the commit (WriterStats.PageBytes), per commit and per write. A store of
// 200,000 finished 3-step sagas over its partitions has 1,024 sagas in
// flight at their end; each commit moves the next `writes` of them, contiguous in the
// window as the member's commits are, one step on (executing, each step's
// result, the last one completing it), and a completed saga is replaced by
// a new one started at the end. The figures do not depend on the machine's
// speed, so they compare builds directly: KB/commit is what a commit costs
// (docs/benchmarks.md: a commit's time grows with its pages), KB/write what
// one more transition in it adds.
func BenchmarkCommitPages(b *testing.B) {
	for _, parts := range []int{1, 6, 24} {
		for _, writes := range []int{1, 50, 300, 1000} {
			b.Run(fmt.Sprintf("partitions=%d/writes=%d", parts, writes), func(b *testing.B) {
				benchCommitPages(b, parts, writes)
			})
		}
	}
}

func benchCommitPages(b *testing.B, parts, writes int) {
	const fill, window = 200_000, 1024
	ctx := context.Background()
	s, err := storage.OpenBolt(filepath.Join(b.TempDir(), "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	next := make([]int64, parts)
	now := time.Unix(1_800_000_000, 0).UTC()
	newSagas := func(n int) []*storage.Saga {
		var sb storage.StartBatch
		for i := range n {
			p := i % parts
			g := storagetest.NewSaga("bench", "bench.keys", int32(p), next[p], fmt.Sprintf("c-%d-%d", p, next[p]))
			g.Context = fmt.Appendf(nil, `{"id":"c-%d","amount":12.5,"customer":"c-%d"}`, next[p], next[p]%1000)
			g.Steps = nil // recorded without steps until it runs, as the engine records a pending saga
			next[p]++
			sb.Sagas = append(sb.Sagas, g)
		}
		res, err := s.Start(ctx, sb)
		if err != nil {
			b.Fatal(err)
		}
		out := make([]*storage.Saga, len(res))
		for i, r := range res {
			out[i] = r.Saga
		}
		return out
	}
	// advance moves a saga one transition on: pending → executing (its
	// step records filled in) → each step's result, the last completing it.
	// It reports whether the saga completed.
	advance := func(g *storage.Saga) bool {
		now = now.Add(time.Millisecond)
		g.UpdatedAt = now
		if g.Status == storage.StatusPending {
			g.Status = storage.StatusExecuting
			g.Steps = []storage.Step{{Name: "a"}, {Name: "b"}, {Name: "c"}}
			return false
		}
		for i := range g.Steps {
			if st := &g.Steps[i]; st.Status != storage.StepCompleted {
				st.Status, st.Attempts, st.StartedAt, st.EndedAt = storage.StepCompleted, 1, now, now
				if i == len(g.Steps)-1 {
					g.Status = storage.StatusCompleted
					return true
				}
				return false
			}
		}
		return true
	}
	for done := 0; done < fill; done += 5000 { // the finished sagas before the window
		batch := newSagas(5000)
		for range 4 {
			for _, g := range batch {
				advance(g)
			}
			if err := s.Update(ctx, batch...); err != nil {
				b.Fatal(err)
			}
		}
	}
	live := newSagas(window)
	cursor := 0
	var pageBytes, commits, written uint64
	batch := make([]*storage.Saga, 0, writes)
	for b.Loop() {
		batch = batch[:0]
		for range writes {
			batch = append(batch, live[cursor])
			cursor = (cursor + 1) % len(live)
		}
		for _, g := range batch {
			advance(g)
		}
		before := s.WriterStats()
		if err := s.Update(ctx, batch...); err != nil {
			b.Fatal(err)
		}
		after := s.WriterStats()
		pageBytes += after.PageBytes - before.PageBytes
		commits += after.Commits - before.Commits
		written += uint64(len(batch))
		b.StopTimer()
		var ended int
		for i, g := range live { // completed sagas leave the window; as many new ones join at its end
			if g.Status == storage.StatusCompleted {
				live[i] = nil
				ended++
			}
		}
		if ended > 0 {
			kept := live[:0]
			for _, g := range live {
				if g != nil {
					kept = append(kept, g)
				}
			}
			live = append(kept, newSagas(ended)...)
			cursor %= len(live)
		}
		b.StartTimer()
	}
	if commits > 0 {
		b.ReportMetric(float64(pageBytes)/1024/float64(commits), "KB/commit")
		b.ReportMetric(float64(pageBytes)/float64(written), "B/write")
	}
}
