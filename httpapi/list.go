package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// keyFinder finds sagas by idempotency key (storage.Bolt).
type keyFinder interface {
	FindKey(ctx context.Context, names []string, key string) ([]*storage.Saga, error)
}

// maxListScan bounds the sagas one filtered listing reads before it
// answers with what it found and a cursor to go on from.
const maxListScan = 5000

type filterError string

func (e filterError) Error() string { return string(e) }

// list answers GET /api/sagas: the store's listing, narrowed by the
// optional filters key (an idempotency key: an index lookup, one page),
// since and until (RFC 3339 times, on created_at: since inclusive, until
// exclusive). The listing is newest first by created_at (storage.Store.List),
// so until is where it starts (storage.CursorBefore, an index seek) and the
// first saga older than since ends it. Other filters (status, saga) on top of
// a time filter read store pages until the page is full, the listing ends,
// or maxListScan sagas were read: a page may then hold fewer sagas than asked
// and still have a next cursor.
func (a *API) list(r *http.Request, q storage.Query) (storage.Page, error) {
	ctx := r.Context()
	var since, until time.Time
	for name, t := range map[string]*time.Time{"since": &since, "until": &until} {
		v := r.URL.Query().Get(name)
		if v == "" {
			continue
		}
		var err error
		if *t, err = time.Parse(time.RFC3339, v); err != nil {
			return storage.Page{}, filterError(fmt.Sprintf("%s=%q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", name, v))
		}
	}
	keep := func(s *storage.Saga) bool {
		return (q.Status == 0 || s.Status == q.Status) && (q.Name == "" || s.Name == q.Name) &&
			(since.IsZero() || !s.CreatedAt.Before(since)) && (until.IsZero() || s.CreatedAt.Before(until))
	}
	if key := r.URL.Query().Get("key"); key != "" {
		kf, ok := a.Store.(keyFinder)
		if !ok {
			return storage.Page{}, filterError("this store cannot look sagas up by idempotency key")
		}
		names := []string{q.Name}
		if q.Name == "" {
			names = names[:0]
			for _, rt := range a.Engine.Routes().All() {
				names = append(names, rt.Saga.Name)
			}
		}
		found, err := kf.FindKey(ctx, dedupe(names), key)
		if err != nil {
			return storage.Page{}, err
		}
		// A key from a sensitive field is kept as its hash.
		hashed, err := kf.FindKey(ctx, dedupe(names), engine.HashKey(key))
		if err != nil {
			return storage.Page{}, err
		}
		found = append(found, hashed...)
		page := storage.Page{}
		for _, s := range found {
			if keep(s) {
				page.Sagas = append(page.Sagas, s)
			}
		}
		sort.Slice(page.Sagas, func(i, j int) bool { return storage.ListOrder(page.Sagas[i], page.Sagas[j]) < 0 })
		return page, nil
	}
	if since.IsZero() && until.IsZero() {
		return a.Store.List(ctx, q)
	}
	if !until.IsZero() && q.Cursor == "" {
		q.Cursor = storage.CursorBefore(until)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 50
	}
	out := storage.Page{}
	scanned := 0
	for {
		q.Limit = limit - len(out.Sagas) // a page never holds more than the slots left, so its cursor is exact
		page, err := a.Store.List(ctx, q)
		if err != nil {
			return storage.Page{}, err
		}
		for _, s := range page.Sagas {
			if !since.IsZero() && s.CreatedAt.Before(since) {
				out.Next = "" // newest first: every saga after this one is older too
				return out, nil
			}
			if keep(s) {
				out.Sagas = append(out.Sagas, s)
			}
		}
		scanned += len(page.Sagas)
		out.Next = page.Next
		if out.Next == "" || len(out.Sagas) >= limit || scanned >= maxListScan {
			return out, nil
		}
		q.Cursor = out.Next
	}
}

func dedupe(names []string) []string {
	seen := map[string]bool{}
	out := names[:0]
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
