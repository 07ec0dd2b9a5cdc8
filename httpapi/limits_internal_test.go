package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// A pool serves at most its size at once; a request that finds no slot
// within the wait is answered 503 with Retry-After, and a slot freed lets
// the next one in.
func TestPoolBoundsConcurrency(t *testing.T) {
	p := newPool(1, 20*time.Millisecond, "listings")
	entered, leave := make(chan struct{}), make(chan struct{})
	h := p.limit(func(w http.ResponseWriter, _ *http.Request) {
		entered <- struct{}{}
		<-leave
		w.WriteHeader(http.StatusOK)
	})
	first := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { h(first, httptest.NewRequest("GET", "/api/sagas", nil)); close(done) }()
	<-entered
	busy := httptest.NewRecorder()
	h(busy, httptest.NewRequest("GET", "/api/sagas", nil))
	if busy.Code != http.StatusServiceUnavailable || busy.Header().Get("Retry-After") == "" {
		t.Fatalf("a request beyond the pool: %d %v", busy.Code, busy.Header())
	}
	close(leave)
	<-done
	go func() { <-entered }()
	again := httptest.NewRecorder()
	h(again, httptest.NewRequest("GET", "/api/sagas", nil))
	if first.Code != http.StatusOK || again.Code != http.StatusOK {
		t.Fatalf("answers %d, %d", first.Code, again.Code)
	}
}
