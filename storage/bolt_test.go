package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

func openBolt(t testing.TB, dir string) *storage.Bolt {
	t.Helper()
	path := filepath.Join(dir, "sagaz.db")
	s, err := storage.OpenBolt(path, storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		// Check the file's consistency, as bbolt's own test helpers do.
		if err := checkFile(path); err != nil {
			t.Errorf("consistency check of %s: %v", path, err)
		}
	})
	return s
}

func TestBoltConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, dir string) storage.Store { return openBolt(t, dir) })
}

func TestBoltLockedByOtherOpener(t *testing.T) {
	dir := t.TempDir()
	openBolt(t, dir)
	_, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{LockTimeout: 50 * time.Millisecond})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("locked by another process")) {
		t.Fatalf("second open: %v, want a clear 'locked' error", err)
	}
}

func sampleSaga() *storage.Saga {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 123, time.UTC)
	return &storage.Saga{
		Name: "order", Trigger: "kafka:orders.created", Status: storage.StatusCompensating,
		Source:    storage.Position{Topic: "orders.created", Partition: 5, Offset: 1 << 40},
		EventTime: t0, IdempotencyKey: "o-1", Context: []byte(`{"order_id":"o-1"}`),
		Error: "charge: card declined", CreatedAt: t0, UpdatedAt: t0.Add(time.Second),
		Steps: []storage.Step{
			{Name: "reserve", Status: storage.StepCompensated, Attempts: 1, StartedAt: t0, EndedAt: t0.Add(time.Millisecond), CompAttempts: 2, CompError: "x", CompEndedAt: t0.Add(3 * time.Millisecond)},
			{Name: "charge", Status: storage.StepFailed, Attempts: 3, Error: "card declined", StartedAt: t0, EndedAt: t0},
			{Name: "ship", Status: storage.StepPending},
		},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	in := sampleSaga()
	out, err := storage.DecodeSaga(storage.EncodeSaga(nil, in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}
	for _, bad := range [][]byte{nil, {}, {1}, {2, 1}, {1, 9, 0}, storage.EncodeSaga(nil, in)[:20], append(storage.EncodeSaga(nil, in), 0)} {
		if _, err := storage.DecodeSaga(bad); err == nil {
			t.Errorf("DecodeSaga(%x) accepted garbage", bad)
		}
	}
}

// Every damaged byte of a stored record is detected (CRC-32C), records of
// version 1 (no checksum, no extensions) are still read, extensions a newer
// release wrote survive a round trip, and a record of a newer version is
// refused as such.
func TestRecordIntegrityAndCompatibility(t *testing.T) {
	in := sampleSaga()
	enc := storage.EncodeSaga(nil, in)
	for i := range enc {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			bad := append([]byte(nil), enc...)
			bad[i] ^= flip
			if s, err := storage.DecodeSaga(bad); err == nil {
				t.Fatalf("byte %d ^ %#x: damaged record decoded as %+v", i, flip, s)
			}
		}
	}
	// Version 1: the same fields without the extension count and checksum.
	v1 := append([]byte{1}, enc[1:len(enc)-5]...)
	if enc[len(enc)-5] != 0 {
		t.Fatal("sample has extensions")
	}
	got, err := storage.DecodeSaga(v1)
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("version 1 record: %+v, %v", got, err)
	}
	// Unknown extensions are kept and written back.
	ext := sampleSaga()
	ext.Extensions = []storage.Extension{{Tag: 7, Value: []byte("from a newer release")}, {Tag: 300, Value: nil}}
	got, err = storage.DecodeSaga(storage.EncodeSaga(nil, ext))
	if err != nil || len(got.Extensions) != 2 || got.Extensions[0].Tag != 7 || string(got.Extensions[0].Value) != "from a newer release" || got.Extensions[1].Tag != 300 {
		t.Fatalf("extensions: %+v, %v", got, err)
	}
	newer := append([]byte(nil), enc...)
	newer[0] = 3
	if _, err := storage.DecodeSaga(newer); !errors.Is(err, storage.ErrNewerRecord) {
		t.Fatalf("newer record: %v, want ErrNewerRecord", err)
	}
}

// FuzzDecodeSaga: decoding stored bytes never panics, and whatever decodes
// re-encodes to something that decodes to the same saga.
func FuzzDecodeSaga(f *testing.F) {
	f.Add(storage.EncodeSaga(nil, sampleSaga()))
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	ext := sampleSaga()
	ext.Extensions = []storage.Extension{{Tag: 1, Value: []byte("x")}}
	f.Add(storage.EncodeSaga(nil, ext))
	f.Add(storage.EncodeSaga(nil, historySaga())) // a resolved saga with its history
	w := sampleSaga()
	w.Wait, w.Uncertain = &storage.Wait{Kind: storage.WaitCommand, Step: 1, Attempt: 2, Topic: "c"}, []int{1}
	f.Add(storage.EncodeSaga(nil, w))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := storage.DecodeSaga(b)
		if err != nil {
			return
		}
		again, err := storage.DecodeSaga(storage.EncodeSaga(nil, s))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("not stable:\n%+v\n%+v", s, again)
		}
	})
}

// BenchmarkStartBatch measures Start with one poll-sized batch per call.
// sagas/s = batch * ops / time.
func BenchmarkStartBatch(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := openBolt(b, b.TempDir())
			ctx := context.Background()
			off := int64(0)
			b.ResetTimer()
			for range b.N {
				batch := storage.StartBatch{Sagas: make([]*storage.Saga, size)}
				for i := range batch.Sagas {
					batch.Sagas[i] = storagetest.NewSaga("order", "orders.created", 0, off, fmt.Sprintf("o-%d", off))
					off++
				}
				batch.Offsets = []storage.Offset{{Topic: "orders.created", Partition: 0, Next: off}}
				if _, err := s.Start(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(off)/b.Elapsed().Seconds(), "sagas/s")
		})
	}
}

// The release of mapped pages must leave every record readable and the
// file consistent (it only drops this process's page mappings).
func TestReleaseMappedKeepsData(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{ReleaseInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 50 {
		var batch storage.StartBatch
		for j := range 200 {
			batch.Sagas = append(batch.Sagas, storagetest.NewSaga("order", "t", int32(j%3), int64(i*200+j), ""))
		}
		if _, err := s.Start(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	if err := s.Scan(ctx, storage.Statuses, func(*storage.Saga) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 10000 {
		t.Fatalf("%d sagas readable, want 10000", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := checkFile(filepath.Join(dir, "sagaz.db")); err != nil {
		t.Fatal(err)
	}
}

// Encoding a saga costs one allocation (the record), whatever it holds:
// the hot path encodes every transition.
func TestEncodeSagaAllocatesOnce(t *testing.T) {
	s := sampleSaga()
	s.Origin = storage.Position{Topic: strings.Repeat("t", 300), Partition: 7, Offset: 1 << 50}
	s.ConcurrencyKey = "customer-1"
	s.Definition = "sha256:0123456789abcdef"
	s.Status, s.Park = storage.StatusParked, &storage.Park{Reason: strings.Repeat("r", 400), Since: s.UpdatedAt, From: storage.StatusCompensating}
	s.Extensions = []storage.Extension{{Tag: 99, Value: []byte("future")}}
	s.Wait = &storage.Wait{Kind: storage.WaitEvent, Step: 1, Attempt: 2, Since: s.UpdatedAt, Deadline: s.UpdatedAt.Add(time.Hour),
		Topic: "payments", Field: "order_id", Value: strings.Repeat("v", 200)}
	s.Uncertain = []int{0, 1}
	s.Context = []byte(strings.Repeat("x", 5000))
	if n := testing.AllocsPerRun(100, func() { storage.EncodeSaga(nil, s) }); n > 2 {
		t.Fatalf("EncodeSaga made %.0f allocations, want at most 2 (record, long origin topic)", n)
	}
	s.Origin.Topic = "orders.created"
	if n := testing.AllocsPerRun(100, func() { storage.EncodeSaga(nil, s) }); n != 1 {
		t.Fatalf("EncodeSaga made %.0f allocations, want 1", n)
	}
}

// A record's wait (extension 2) and uncertain steps (extension 3) survive a
// round trip next to an unknown extension; a release that does not know the
// two tags keeps them as extensions and writes them back unchanged; damage
// inside them is refused.
func TestWaitExtensions(t *testing.T) {
	in := sampleSaga()
	in.Origin = storage.Position{Topic: "orders", Partition: 1, Offset: 9}
	in.Wait = &storage.Wait{Kind: storage.WaitEvent, Step: 2, Attempt: 3, Compensating: true, Since: time.Unix(1700000000, 5).UTC(),
		Deadline: time.Unix(1700000600, 0).UTC(), Topic: "payments", Field: "order_id", Value: "o-\x00-1"}
	in.Uncertain = []int{0, 2}
	in.Extensions = []storage.Extension{{Tag: 9, Value: []byte("newer")}}
	enc := storage.EncodeSaga(nil, in)
	out, err := storage.DecodeSaga(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v %+v\nout %+v %+v", in, in.Wait, out, out.Wait)
	}
	if c := in.Clone(); c.Wait == in.Wait || !reflect.DeepEqual(c.Wait, in.Wait) || !reflect.DeepEqual(c.Uncertain, in.Uncertain) {
		t.Fatal("Clone shares or loses the wait")
	}
	// The same record as an older release sees it: tags 2 and 3 unknown.
	older := sampleSaga()
	older.Extensions = []storage.Extension{{Tag: 2, Value: []byte{1, 0, 1, 0, 0, 0, 0, 0, 0}}, {Tag: 3, Value: []byte{1, 1}}}
	got, err := storage.DecodeSaga(storage.EncodeSaga(nil, older))
	if err != nil || got.Wait == nil || got.Wait.Kind != storage.WaitCommand || got.Wait.Attempt != 1 || !reflect.DeepEqual(got.Uncertain, []int{1}) || len(got.Extensions) != 0 {
		t.Fatalf("tags 2 and 3 from raw extensions: %+v %+v, %v", got, got.Wait, err)
	}
	for _, bad := range [][]byte{{0, 0, 1, 0, 0, 0, 0, 0, 0}, {9, 0, 1, 0, 0, 0, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0, 0, 7}, {1}} {
		b := sampleSaga()
		b.Extensions = []storage.Extension{{Tag: 2, Value: bad}}
		if s, err := storage.DecodeSaga(storage.EncodeSaga(nil, b)); !errors.Is(err, storage.ErrCorrupt) {
			t.Errorf("wait %x decoded as %+v, %v", bad, s, err)
		}
	}
}

// BenchmarkUpdateBatch measures Update with 1,000 transitions per call
// (sagas moving to executing, then completed) in a partition that has
// parked and resolved sagas too, as a production store soon does.
// transitions/s = 1000 * ops / time.
func BenchmarkUpdateBatch(b *testing.B) {
	for _, set := range []int{0, 1, 5000} {
		b.Run(fmt.Sprintf("parked=%d", set), func(b *testing.B) { benchmarkUpdateBatch(b, set) })
	}
}

// benchmarkUpdateBatch: set sagas of the partition are parked and as many
// resolved (0: the partition has neither set).
func benchmarkUpdateBatch(b *testing.B, set int) {
	s := openBolt(b, b.TempDir())
	ctx := context.Background()
	const n = 100_000
	sagas := make([]*storage.Saga, 0, n)
	for off := int64(0); off < n; off += 1000 {
		batch := storage.StartBatch{}
		for i := range int64(1000) {
			batch.Sagas = append(batch.Sagas, storagetest.NewSaga("order", "orders.created", 0, off+i, fmt.Sprintf("o-%d", off+i)))
		}
		res, err := s.Start(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			sagas = append(sagas, r.Saga)
		}
	}
	for i := range set { // spread over the partition, as they come
		p, r := sagas[i*(n/set)], sagas[i*(n/set)+1]
		storagetest.SetStatus(p, storage.StatusParked)
		r.Status, r.Error = storage.StatusResolved, "resolved by an operator"
		if err := s.Update(ctx, p, r); err != nil {
			b.Fatal(err)
		}
	}
	var live []*storage.Saga
	for _, g := range sagas {
		if g.Status == storage.StatusPending {
			live = append(live, g)
		}
	}
	sagas = live
	next := 0
	done := 0
	b.ResetTimer()
	for range b.N {
		batch := make([]*storage.Saga, 0, 1000)
		for len(batch) < 1000 {
			g := sagas[next]
			switch g.Status {
			case storage.StatusPending:
				g.Status = storage.StatusExecuting
			default:
				g.Status = storage.StatusCompleted
			}
			batch = append(batch, g)
			if next++; next == len(sagas) {
				next = 0
				for _, g := range sagas {
					g.Status = storage.StatusPending
				}
			}
		}
		if err := s.Update(ctx, batch...); err != nil {
			b.Fatal(err)
		}
		done += len(batch)
	}
	b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "transitions/s")
}

// WriterStats counts what the writer committed: a transaction per batch
// of queued writes, only writes that committed, the time it ran and the
// pages it wrote (sagaz_store_* metrics, docs/operations.md).
func TestWriterStatsCountCommittedWrites(t *testing.T) {
	ctx := context.Background()
	s := openBolt(t, t.TempDir())
	before := s.WriterStats()
	if before.Writes != 0 || before.Busy != 0 {
		t.Fatalf("a new store's writer stats = %+v, want no writes and no busy time", before)
	}
	g := storagetest.NewSaga("order", "orders", 0, 7, "k7")
	if _, err := s.Start(ctx, storage.StartBatch{Sagas: []*storage.Saga{g}}); err != nil {
		t.Fatal(err)
	}
	g.Status = storage.StatusExecuting
	if err := s.Update(ctx, g); err != nil {
		t.Fatal(err)
	}
	// A write that fails inside its transaction (the saga was never
	// started) is answered with its error; its rolled-back transaction is
	// neither a commit nor a write.
	bad := storagetest.NewSaga("order", "orders", 0, 8, "")
	bad.Status = storage.StatusExecuting
	if err := s.Update(ctx, bad); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("an update of a saga that was never started: %v, want ErrNotFound", err)
	}
	st := s.WriterStats()
	if got := st.Writes - before.Writes; got != 2 {
		t.Errorf("writes counted = %d, want 2 (the start and the update; not the failed update)", got)
	}
	if c := st.Commits - before.Commits; c != 2 {
		t.Errorf("commits = %d, want 2 (one per write, each waited for; not the rolled-back one)", c)
	}
	if st.Busy <= before.Busy {
		t.Errorf("busy %v, was %v: the writer's time was not counted", st.Busy, before.Busy)
	}
	if st.PageBytes < before.PageBytes+4096 {
		t.Errorf("page bytes %d, was %d: the commits' pages were not counted", st.PageBytes, before.PageBytes)
	}
}
