package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// TestTimeFiltersPageExactly: since and until on top of the listing's
// cursor, with many sagas sharing created_at over many partitions: every
// page of a filtered listing is full until the last, and paging lists each
// matching saga once. until starts the listing at its time (6,000 newer
// sagas are not read), and the first saga older than since ends it.
func TestTimeFiltersPageExactly(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	t0 := time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC)
	groups := []struct {
		at time.Time
		n  int // per partition
	}{{t0, 5}, {t0.Add(time.Second), 5}, {t0.Add(time.Hour), 750}}
	const parts = 8
	status := func(off int64) storage.Status {
		if off%3 == 0 {
			return storage.StatusCompleted
		}
		return storage.StatusPending
	}
	for p := range int32(parts) {
		var changes []storage.Change
		off := int64(0)
		for _, g := range groups {
			for range g.n {
				s := storagetest.NewSaga("payment", "orders", p, off, "")
				s.Version, s.Status, s.CreatedAt, s.UpdatedAt = 1, status(off), g.at, g.at
				changes = append(changes, storage.Change{Key: storage.ChangeKey(s), Value: storage.EncodeSaga(nil, s)})
				off++
			}
		}
		if _, err := st.Apply(ctx, storage.Partition{Topic: "orders", Partition: p}, changes, int64(len(changes))); err != nil {
			t.Fatal(err)
		}
	}
	srv := fullServer(t, st, authRegistry(), httpapi.Auth{AdminTokens: []string{adminTok}})
	base := "http://" + srv.Addr()
	type page struct {
		Sagas []struct {
			ID        string         `json:"id"`
			Status    storage.Status `json:"status"`
			CreatedAt time.Time      `json:"created_at"`
		} `json:"sagas"`
		Next string `json:"next_cursor"`
	}
	list := func(query url.Values) page {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/api/sagas?"+query.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+adminTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p page
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&p) != nil {
			t.Fatalf("GET /api/sagas?%s: %d", query.Encode(), resp.StatusCode)
		}
		return p
	}
	// all pages through a query; every page but the last must be full.
	all := func(query url.Values, limit int) map[string]time.Time {
		t.Helper()
		query.Set("limit", fmt.Sprint(limit))
		seen := map[string]time.Time{}
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatalf("%s: paging does not end", query.Encode())
			}
			p := list(query)
			for _, s := range p.Sagas {
				if _, dup := seen[s.ID]; dup {
					t.Fatalf("%s: %s listed twice", query.Encode(), s.ID)
				}
				seen[s.ID] = s.CreatedAt
			}
			if p.Next == "" {
				return seen
			}
			if len(p.Sagas) != limit {
				t.Fatalf("%s: a page of %d sagas with a next cursor (limit %d)", query.Encode(), len(p.Sagas), limit)
			}
			query.Set("cursor", p.Next)
		}
	}
	rfc := func(t time.Time) string { return t.Format(time.RFC3339Nano) }
	for _, c := range []struct {
		query url.Values
		limit int
		want  int
	}{
		{url.Values{"until": {rfc(t0.Add(time.Second))}}, 7, parts * 5},
		{url.Values{"until": {rfc(t0.Add(time.Hour))}}, 3, parts * 10},
		{url.Values{"until": {rfc(t0.Add(time.Hour))}, "status": {"completed"}}, 4, parts * 4}, // offsets 0, 3, 6, 9
		{url.Values{"since": {rfc(t0.Add(time.Second))}}, 1000, parts * 755},
		{url.Values{"since": {rfc(t0.Add(time.Second))}, "until": {rfc(t0.Add(time.Hour))}}, 6, parts * 5},
		{url.Values{"since": {rfc(t0)}, "until": {rfc(t0.Add(time.Hour))}, "status": {"pending"}}, 5, parts * 6},
	} {
		got := all(c.query, c.limit)
		if len(got) != c.want {
			t.Errorf("%s: %d sagas, want %d", c.query.Encode(), len(got), c.want)
		}
	}
	// until past 6,000 newer sagas: the first page is full (they are not read).
	if p := list(url.Values{"until": {rfc(t0.Add(time.Hour))}, "limit": {"50"}}); len(p.Sagas) != 50 || !p.Sagas[0].CreatedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("until behind 6,000 newer sagas: a first page of %d sagas", len(p.Sagas))
	}
}
