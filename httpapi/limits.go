package httpapi

import (
	"fmt"
	"net/http"
	"time"
)

// Limits under abuse. Each kind of request has its own pool of slots, so
// a flood of one kind cannot starve another: webhook calls, admin events
// (POST /api/fire), and listings (GET /api/sagas, /api/deadletters, the
// overview), whose memory a slot bounds. A slot is taken only once the
// request's headers are in and, for webhooks and fired events, once the
// body has been read (within BodyReadTimeout): a slow client holds no slot
// while it trickles its body, and is cut off when the deadline passes.

// pool is a bounded set of slots; a request that finds none within wait is
// answered 503.
type pool struct {
	slots chan struct{}
	wait  time.Duration
	what  string
}

func newPool(n int, wait time.Duration, what string) *pool {
	return &pool{slots: make(chan struct{}, n), wait: wait, what: what}
}

// acquire takes a slot, or answers 503 (or nothing, when the client left)
// and returns ok false.
func (p *pool) acquire(w http.ResponseWriter, r *http.Request) (release func(), ok bool) {
	select {
	case p.slots <- struct{}{}:
		return func() { <-p.slots }, true
	default:
	}
	t := time.NewTimer(p.wait)
	defer t.Stop()
	select {
	case p.slots <- struct{}{}:
		return func() { <-p.slots }, true
	case <-t.C:
		w.Header().Set("Retry-After", "1")
		WriteError(w, http.StatusServiceUnavailable, "busy", fmt.Sprintf("too many %s in progress (%d); retry later", p.what, cap(p.slots)))
	case <-r.Context().Done():
	}
	return nil, false
}

// limit runs h in a slot of p.
func (p *pool) limit(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, ok := p.acquire(w, r)
		if !ok {
			return
		}
		defer release()
		h(w, r)
	}
}
