package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The guard names the caller for a saga's history: the token (by its
// SHA-256 prefix, never the token), the console login and the token it was
// opened with, or whom a member forwarding the request acts for — taken
// only from a request between members with an admin token.
func TestCallerNamesTheToken(t *testing.T) {
	const admin, reader = "admin-token-0123456", "read-token-01234567"
	g := newGuard(Auth{AdminTokens: []string{admin}, ReadTokens: []string{reader}})
	g.sessions = newSessions(time.Hour)
	seen := ""
	h := g.wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = caller(r.Context()) }))
	do := func(method string, headers ...string) string {
		t.Helper()
		seen = "(not reached)"
		r := httptest.NewRequest(method, "/api/sagas", nil)
		r.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Set(headers[i], headers[i+1])
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		return seen
	}
	id := tokenID(admin)
	if len(id) != 8 || id == admin[:8] {
		t.Fatalf("token id %q", id)
	}
	for _, c := range []struct {
		name    string
		method  string
		headers []string
		want    string
	}{
		{"admin token", "POST", []string{"Authorization", "Bearer " + admin}, "token:" + id},
		{"read-only token", "GET", []string{"Authorization", "Bearer " + reader}, "token:" + tokenID(reader)},
		{"forwarded by a member", "POST", []string{"Authorization", "Bearer " + admin, HeaderScope, "local", HeaderOnBehalfOf, "token:cafebabe"}, "token:cafebabe"},
		{"on behalf of, not between members", "POST", []string{"Authorization", "Bearer " + admin, HeaderOnBehalfOf, "token:cafebabe"}, "token:" + id},
		{"on behalf of, read-only token", "GET", []string{"Authorization", "Bearer " + reader, HeaderScope, "local", HeaderOnBehalfOf, "token:cafebabe"}, "token:" + tokenID(reader)},
		{"no token", "GET", nil, "(not reached)"},
	} {
		if got := do(c.method, c.headers...); got != c.want {
			t.Errorf("%s: caller %q, want %q", c.name, got, c.want)
		}
	}
	sid, _ := g.sessions.create(roleAdmin, "console:"+id)
	if got := do("GET", "Cookie", SessionCookie+"="+sid, HeaderScope, "local", HeaderOnBehalfOf, "token:cafebabe"); got != "console:"+id {
		t.Errorf("console login: caller %q, want console:%s", got, id)
	}

	open := newGuard(Auth{})
	seen = "(not reached)"
	r := httptest.NewRequest("POST", "http://127.0.0.1/api/sagas", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(HeaderOnBehalfOf, "token:cafebabe")
	open.wrap(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = caller(r.Context()) })).ServeHTTP(httptest.NewRecorder(), r)
	if seen != "" {
		t.Errorf("without tokens: caller %q, want none", seen)
	}
}
