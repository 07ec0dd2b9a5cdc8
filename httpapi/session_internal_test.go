package httpapi

import (
	"net/http"
	"testing"
	"time"
)

func TestSessionsExpireAndAreBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSessions(time.Hour)
	s.now = func() time.Time { return now }
	req := func(id string) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		r.AddCookie(&http.Cookie{Name: SessionCookie, Value: id})
		return r
	}
	id, exp := s.create(roleAdmin, "")
	if !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("expiry %v", exp)
	}
	if _, ok := s.lookup(req(id)); !ok {
		t.Fatal("a new session is not valid")
	}
	now = now.Add(time.Hour)
	if _, ok := s.lookup(req(id)); ok {
		t.Fatal("an expired session is still valid")
	}
	first, _ := s.create(roleAdmin, "")
	for range maxSessions {
		now = now.Add(time.Second)
		s.create(roleAdmin, "")
	}
	if len(s.byHash) != maxSessions {
		t.Fatalf("%d sessions kept, want at most %d", len(s.byHash), maxSessions)
	}
	if _, ok := s.lookup(req(first)); ok {
		t.Fatal("the oldest session survived the bound")
	}
}
