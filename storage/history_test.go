package storage_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

func historySaga() *storage.Saga {
	s := sampleSaga()
	t0 := s.CreatedAt
	s.Status, s.Version = storage.StatusResolved, 7
	s.History = []storage.HistoryEntry{
		{At: t0.Add(time.Minute), Action: storage.ActionRetry, By: "token:0123abcd"},
		{At: t0.Add(2 * time.Minute), Action: storage.ActionRetryWithContext, Reason: "fix the amount", By: "console:0123abcd",
			PreviousContext: []byte(`{"order_id":"o-1","amount":"x"}`), PreviousContextSize: 31},
		{At: t0.Add(3 * time.Minute), Action: storage.ActionRetryWithContext, PreviousContext: []byte(`{"big":"`), PreviousContextSize: 1 << 20},
		{At: t0.Add(4 * time.Minute), Action: storage.ActionResolve, Reason: "refunded by hand"},
	}
	return s
}

// The history and the resolution round-trip; a resolved saga is recorded
// with the status byte of failed (what releases that do not know resolved
// read), and a record without history carries no extension for it.
func TestHistoryRoundTrip(t *testing.T) {
	in := historySaga()
	enc := storage.EncodeSaga(nil, in)
	out, err := storage.DecodeSaga(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}
	if enc[1] != byte(storage.StatusFailed) {
		t.Errorf("a resolved saga's status byte is %d, want %d (failed)", enc[1], storage.StatusFailed)
	}
	if !out.History[2].PreviousContextTruncated() || out.History[1].PreviousContextTruncated() {
		t.Errorf("truncated flags: %v %v", out.History[1].PreviousContextTruncated(), out.History[2].PreviousContextTruncated())
	}
	failed := historySaga()
	failed.Status = storage.StatusFailed
	if out, err := storage.DecodeSaga(storage.EncodeSaga(nil, failed)); err != nil || out.Status != storage.StatusFailed || len(out.History) != 4 {
		t.Fatalf("failed with history: %v %+v", err, out)
	}
	// Every damaged byte is still detected.
	for i := range enc {
		bad := append([]byte(nil), enc...)
		bad[i] ^= 0x10
		if s, err := storage.DecodeSaga(bad); err == nil {
			t.Fatalf("byte %d damaged: decoded as %+v", i, s)
		}
	}
}

// AppendHistory keeps the history bounded: the last MaxHistoryEntries
// entries, reasons and previous contexts cut (at a rune boundary), and the
// whole within MaxHistoryBytes, dropping old previous contexts first.
func TestAppendHistoryBounds(t *testing.T) {
	s := sampleSaga()
	for i := range storage.MaxHistoryEntries + 10 {
		storage.AppendHistory(s, storage.HistoryEntry{Action: storage.ActionRetry, Reason: fmt.Sprint(i)})
	}
	if len(s.History) != storage.MaxHistoryEntries || s.History[0].Reason != "10" || s.History[len(s.History)-1].Reason != fmt.Sprint(storage.MaxHistoryEntries+9) {
		t.Fatalf("%d entries from %q to %q, want the last %d", len(s.History), s.History[0].Reason, s.History[len(s.History)-1].Reason, storage.MaxHistoryEntries)
	}

	s = sampleSaga()
	long := strings.Repeat("é", storage.MaxReasonBytes) // 2 bytes a rune
	storage.AppendHistory(s, storage.HistoryEntry{Action: storage.ActionResolve, Reason: long + "x", By: strings.Repeat("b", 1000)})
	if e := s.History[0]; len(e.Reason) > storage.MaxReasonBytes || !utf8.ValidString(e.Reason) || len(e.By) != storage.MaxByBytes {
		t.Fatalf("reason of %d bytes (valid UTF-8: %v), by of %d", len(e.Reason), utf8.ValidString(e.Reason), len(e.By))
	}

	s = sampleSaga()
	base := len(storage.EncodeSaga(nil, s))
	ctxOf := func(i int) []byte { return []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("p", 20<<10))) }
	for i := range 8 {
		storage.AppendHistory(s, storage.HistoryEntry{Action: storage.ActionRetryWithContext, PreviousContext: ctxOf(i)})
	}
	if got := len(storage.EncodeSaga(nil, s)) - base; got > storage.MaxHistoryBytes {
		t.Fatalf("history of %d bytes, over MaxHistoryBytes (%d)", got, storage.MaxHistoryBytes)
	}
	last := s.History[len(s.History)-1]
	if len(s.History) != 8 || string(last.PreviousContext) != string(ctxOf(7)) || last.PreviousContextTruncated() {
		t.Fatalf("%d entries, the newest keeps %d bytes of its previous context; want 8 and all of it", len(s.History), len(last.PreviousContext))
	}
	if first := s.History[0]; len(first.PreviousContext) != 0 || first.PreviousContextSize != len(ctxOf(0)) || !first.PreviousContextTruncated() {
		t.Errorf("the oldest entry keeps %d bytes (size %d), want its previous context dropped, its size kept", len(first.PreviousContext), first.PreviousContextSize)
	}

	huge := []byte(`{"pad":"` + strings.Repeat("€", 40<<10) + `"}`)
	storage.AppendHistory(s, storage.HistoryEntry{Action: storage.ActionRetryWithContext, PreviousContext: huge})
	last = s.History[len(s.History)-1]
	if len(last.PreviousContext) > storage.MaxPreviousContextBytes || !utf8.Valid(last.PreviousContext) || last.PreviousContextSize != len(huge) || !last.PreviousContextTruncated() {
		t.Fatalf("a huge previous context kept as %d bytes (size %d)", len(last.PreviousContext), last.PreviousContextSize)
	}
}

// The store lists, counts, scans, expires and restores resolved sagas as
// their own status: the failed listing and counts leave them out.
func TestResolvedSagasInTheStore(t *testing.T) {
	dir := t.TempDir()
	s := openBolt(t, dir)
	ctx := context.Background()
	var sagas []*storage.Saga
	for i := range 6 {
		sagas = append(sagas, storagetest.NewSaga("order", "t", int32(i%2), int64(i), ""))
	}
	if _, err := s.Start(ctx, storage.StartBatch{Sagas: sagas}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []storage.Status{storage.StatusFailed, storage.StatusFailed, storage.StatusResolved, storage.StatusResolved, storage.StatusCompleted, storage.StatusResolved} {
		sagas[i].Status = st
		if st == storage.StatusResolved {
			storage.AppendHistory(sagas[i], storage.HistoryEntry{At: time.Now().UTC(), Action: storage.ActionResolve, Reason: "done by hand"})
		}
	}
	if err := s.Update(ctx, sagas...); err != nil {
		t.Fatal(err)
	}
	sagas[5].Status = storage.StatusFailed // a resolution undone by a later write
	if err := s.Update(ctx, sagas[5]); err != nil {
		t.Fatal(err)
	}
	want := map[storage.Status][]string{
		storage.StatusFailed:    {sagas[5].ID(), sagas[1].ID(), sagas[0].ID()},
		storage.StatusResolved:  {sagas[3].ID(), sagas[2].ID()},
		storage.StatusCompleted: {sagas[4].ID()},
	}
	check := func(st storage.Store, when string) {
		t.Helper()
		for status, ids := range want {
			var got []string
			page, err := st.List(ctx, storage.Query{Status: status})
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range page.Sagas {
				got = append(got, g.ID())
				if g.Status != status {
					t.Errorf("%s: listing %s gave a saga in %s", when, status, g.Status)
				}
			}
			if !slices.Equal(got, ids) {
				t.Errorf("%s: %s lists %v, want %v", when, status, got, ids)
			}
			n, err := st.(*storage.Bolt).CountStatus(ctx, status, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n["order"] != len(ids) {
				t.Errorf("%s: CountStatus(%s) = %v, want %d", when, status, n, len(ids))
			}
		}
		counts, err := st.(*storage.Bolt).Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		by := map[storage.Status]int{}
		for _, c := range counts {
			by[c.Status] += c.N
		}
		if by[storage.StatusFailed] != 3 || by[storage.StatusResolved] != 2 || by[storage.StatusCompleted] != 1 || len(by) != 3 {
			t.Errorf("%s: counts %v", when, by)
		}
		n := 0
		if err := st.Scan(ctx, storage.Statuses, func(g *storage.Saga) error {
			n++
			if g.Status == storage.StatusResolved && (len(g.History) != 1 || g.History[0].Reason != "done by hand") {
				t.Errorf("%s: resolved saga %s without its history: %+v", when, g.ID(), g.History)
			}
			return nil
		}); err != nil || n != 6 {
			t.Errorf("%s: a scan of every status saw %d sagas (%v), want 6", when, n, err)
		}
	}
	check(s, "after update")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openBolt(t, dir)
	check(s, "after reopen")

	// A member that takes the partitions over restores them from the
	// changelog: the same records, applied.
	other := openBolt(t, t.TempDir())
	for p := range int32(2) {
		var changes []storage.Change
		if err := s.ScanPartition(ctx, storage.Partition{Topic: "t", Partition: p}, storage.Statuses, func(g *storage.Saga) error {
			changes = append(changes, storage.Change{Key: storage.ChangeKey(g), Value: storage.EncodeSaga(nil, g)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Apply(ctx, storage.Partition{Topic: "t", Partition: p}, changes, int64(len(changes))); err != nil {
			t.Fatal(err)
		}
	}
	check(other, "restored from the changelog")

	// Expiry removes resolved sagas like other finished ones.
	gone := 0
	for p := range int32(2) {
		out, err := s.Expire(ctx, storage.Partition{Topic: "t", Partition: p}, time.Now().Add(time.Hour), 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		gone += len(out)
	}
	if gone != 6 {
		t.Fatalf("expired %d sagas, want 6", gone)
	}
	if n, _ := s.CountStatus(ctx, storage.StatusResolved, nil); len(n) != 0 {
		t.Errorf("resolved after expiry: %v", n)
	}
}
