package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/sagaz-go/sagaz/storage"
)

// Group-wide answers. Any member answers for the whole group: a listing
// asks every member for the sagas of the partitions it owns (the same
// query and cursor) and merges their pages in the listing order; a request
// about one saga (or one event) goes to the member that owns its partition.
// Members find each other's HTTP API through the roster (each member's
// advertised URL, package roster) and the group's assignment. A member that
// does not answer in time is named in the answer ("unavailable"), never
// left out silently.

// HeaderScope on a request between members: "local" asks the member to
// answer from the partitions it owns, without asking the others.
const HeaderScope = "Sagaz-Scope"

// Peer is one member of the group as the API sees it: its group member id,
// its advertised URL ("" when it has not published one), whether it is
// this member, and the partitions the group assigned it.
type Peer struct {
	MemberID   string              `json:"member_id"`
	URL        string              `json:"url,omitempty"`
	Self       bool                `json:"self,omitempty"`
	Partitions []storage.Partition `json:"-"`
}

// Unavailable names a member whose part of a group-wide answer is missing.
type Unavailable struct {
	MemberID   string `json:"member_id"`
	URL        string `json:"url,omitempty"`
	Partitions int    `json:"partitions"`
	Error      string `json:"error"`
}

// grouped reports whether r is to be answered for the whole group.
func (a *API) grouped(r *http.Request) bool {
	return a.Peers != nil && r.Header.Get(HeaderScope) != "local"
}

// ownedHere restricts a listing to the partitions this member owns, when it
// answers as part of the group (copies of partitions that moved away are
// the new owner's to answer for).
func (a *API) ownedHere(r *http.Request) func(storage.Partition) bool {
	if a.Peers == nil {
		return nil
	}
	return func(p storage.Partition) bool {
		return a.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition})
	}
}

func (a *API) peerTimeout() time.Duration {
	if a.PeerTimeout > 0 {
		return a.PeerTimeout
	}
	return 3 * time.Second
}

// peerRequest sends a request to a peer's API, answered from its own
// partitions.
func (a *API) peerRequest(ctx context.Context, method, base, path, rawQuery string, body []byte, contentType string) (*http.Response, error) {
	u := base + path
	if rawQuery != "" {
		u += "?" + rawQuery
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(HeaderScope, "local")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	} else if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.PeerToken != "" {
		req.Header.Set("Authorization", "Bearer "+a.PeerToken)
	}
	if who := caller(ctx); who != "" {
		req.Header.Set(HeaderOnBehalfOf, who)
	}
	return a.peerClient().Do(req)
}

func (a *API) peerClient() *http.Client { return a.peers }

func newPeerClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// groupList answers a listing for the whole group: every member's page of
// the sagas of its partitions, merged in the listing order.
func (a *API) groupList(w http.ResponseWriter, r *http.Request, limit int, local func() ([]SagaView, string, error)) {
	ctx, cancel := context.WithTimeout(r.Context(), a.peerTimeout())
	defer cancel()
	peers, err := a.Peers(ctx)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "group unknown", "the group's members could not be described: "+err.Error())
		return
	}
	type part struct {
		sagas []SagaView
		next  string
		err   error
	}
	parts := make([]part, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.Self {
				parts[i].sagas, parts[i].next, parts[i].err = local()
				return
			}
			if p.URL == "" {
				parts[i].err = fmt.Errorf("member %s has not published its address (--advertise-url)", p.MemberID)
				return
			}
			resp, err := a.peerRequest(ctx, http.MethodGet, p.URL, r.URL.Path, r.URL.RawQuery, nil, "")
			if err != nil {
				parts[i].err = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			if err != nil {
				parts[i].err = err
				return
			}
			if resp.StatusCode != http.StatusOK {
				parts[i].err = fmt.Errorf("%s answered %d: %s", p.URL, resp.StatusCode, bytes.TrimSpace(body))
				return
			}
			var page struct {
				Sagas []SagaView `json:"sagas"`
				Next  string     `json:"next_cursor"`
			}
			if err := json.Unmarshal(body, &page); err != nil {
				parts[i].err = fmt.Errorf("%s: %w", p.URL, err)
				return
			}
			parts[i].sagas, parts[i].next = page.Sagas, page.Next
		}()
	}
	wg.Wait()
	all := []SagaView{}
	more := false
	unavailable := []Unavailable{}
	for i, p := range parts {
		if p.err != nil {
			if bad, ok := p.err.(badRequest); ok { // the query itself is wrong: every member says so
				WriteError(w, http.StatusBadRequest, bad.msg, bad.detail)
				return
			}
			unavailable = append(unavailable, Unavailable{MemberID: peers[i].MemberID, URL: peers[i].URL, Partitions: len(peers[i].Partitions), Error: p.err.Error()})
			continue
		}
		all = append(all, p.sagas...)
		more = more || p.next != ""
	}
	sort.SliceStable(all, func(i, j int) bool { return storage.ListOrder(orderKey(all[i]), orderKey(all[j])) < 0 })
	next := ""
	if len(all) > limit {
		all, more = all[:limit], true
	}
	if more && len(all) > 0 {
		next = storage.CursorAfter(orderKey(all[len(all)-1]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"sagas": all, "next_cursor": next, "members": len(peers), "unavailable": unavailable})
}

// orderKey is what the listing order reads of a saga's view.
func orderKey(v SagaView) *storage.Saga {
	return &storage.Saga{Name: v.Saga, Source: v.Source, CreatedAt: v.CreatedAt}
}

// badRequest is a listing query the local store refused (the same query
// fails on every member).
type badRequest struct{ msg, detail string }

func (b badRequest) Error() string { return b.msg + ": " + b.detail }

// toOwner sends a request about one partition's saga (or event) to the
// member that owns the partition, relaying its answer; it reports false
// when this member owns it (the caller answers) or when the group is not
// asked (a request between members, or no group).
func (a *API) toOwner(w http.ResponseWriter, r *http.Request, p storage.Partition, body []byte) bool {
	if !a.grouped(r) || a.Engine.Owns(storage.Position{Topic: p.Topic, Partition: p.Partition}) {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.peerTimeout())
	defer cancel()
	peers, err := a.Peers(ctx)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "group unknown", "the group's members could not be described: "+err.Error())
		return true
	}
	var owner *Peer
	for i := range peers {
		for _, q := range peers[i].Partitions {
			if q == p {
				owner = &peers[i]
			}
		}
	}
	switch {
	case owner == nil:
		WriteError(w, http.StatusServiceUnavailable, "partition not assigned",
			fmt.Sprintf("no member of the group owns %s right now (a rebalance?); retry shortly", p))
		return true
	case owner.Self:
		return false // the assignment says so; the engine will own it in a moment
	case owner.URL == "":
		WriteError(w, http.StatusServiceUnavailable, "owner unreachable",
			fmt.Sprintf("member %s owns %s but has not published its address (--advertise-url)", owner.MemberID, p))
		return true
	}
	resp, err := a.peerRequest(ctx, r.Method, owner.URL, r.URL.Path, r.URL.RawQuery, body, r.Header.Get("Content-Type"))
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "owner unreachable",
			fmt.Sprintf("member %s (%s) owns %s and did not answer: %v", owner.MemberID, owner.URL, p, err))
		return true
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Header().Set("Sagaz-Answered-By", owner.MemberID)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
	return true
}

// peerURL checks an advertised URL.
func peerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("want http(s)://host:port, got %q", s)
	}
	return nil
}

// errPlacedByConcurrency: a keyed saga placed by its concurrency key's
// value, which its ID does not carry: the member that has it is found by
// asking them all.
var errPlacedByConcurrency = errors.New("placed by a concurrency key")

// scatter sends a request about a saga whose partition the ID does not
// tell to the members in turn until one has it, relaying that answer; it
// reports false when this member has it (the caller answers) or when the
// group is not asked.
func (a *API) scatter(w http.ResponseWriter, r *http.Request, id string, body []byte) bool {
	if !a.grouped(r) {
		return false
	}
	if s, err := a.Store.Get(r.Context(), id); err == nil && a.Engine.Owns(s.Source) {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.peerTimeout())
	defer cancel()
	peers, err := a.Peers(ctx)
	if err != nil {
		WriteError(w, http.StatusServiceUnavailable, "group unknown", "the group's members could not be described: "+err.Error())
		return true
	}
	var missing []string
	for _, p := range peers {
		if p.Self {
			continue
		}
		if p.URL == "" {
			missing = append(missing, p.MemberID)
			continue
		}
		resp, err := a.peerRequest(ctx, r.Method, p.URL, r.URL.Path, r.URL.RawQuery, body, r.Header.Get("Content-Type"))
		if err != nil {
			missing = append(missing, p.MemberID)
			continue
		}
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusConflict && r.Method != http.MethodGet {
			resp.Body.Close()
			continue
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Header().Set("Sagaz-Answered-By", p.MemberID)
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
		return true
	}
	if len(missing) > 0 {
		WriteError(w, http.StatusServiceUnavailable, "members unreachable",
			fmt.Sprintf("%s was not found on the members that answered; these did not: %v", id, missing))
		return true
	}
	return false // nobody else has it: answer here (404, or this member's copy)
}
