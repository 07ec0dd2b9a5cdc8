package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "sagaz_session"

// maxSessions bounds the sessions kept in memory; past it the session
// closest to its expiry is dropped.
const maxSessions = 1000

// sessions are the console's logins: server-side, in memory, each with an
// absolute expiry. A member restart logs everyone out. The cookie holds a
// random id; the server keeps only its SHA-256.
type sessions struct {
	mu     sync.Mutex
	ttl    time.Duration
	byHash map[[32]byte]session
	csrf   *http.CrossOriginProtection
	now    func() time.Time
}

// session is one login: its expiry, what the token it was opened with
// may do, and who that token names in a saga's history (see caller).
type session struct {
	expires time.Time
	role    role
	by      string
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, byHash: map[[32]byte]session{}, csrf: http.NewCrossOriginProtection(), now: time.Now}
}

func (s *sessions) create(r role, by string) (id string, expires time.Time) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	id = hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	expires = now.Add(s.ttl)
	for h, se := range s.byHash {
		if !now.Before(se.expires) {
			delete(s.byHash, h)
		}
	}
	for len(s.byHash) >= maxSessions {
		var oldest [32]byte
		var first time.Time
		for h, se := range s.byHash {
			if first.IsZero() || se.expires.Before(first) {
				oldest, first = h, se.expires
			}
		}
		delete(s.byHash, oldest)
	}
	s.byHash[sha256.Sum256([]byte(id))] = session{expires: expires, role: r, by: by}
	return id, expires
}

// lookup returns the request's session, or false.
func (s *sessions) lookup(r *http.Request) (session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return session{}, false
	}
	h := sha256.Sum256([]byte(c.Value))
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.byHash[h]
	if !ok {
		return session{}, false
	}
	if !s.now().Before(se.expires) {
		delete(s.byHash, h)
		return session{}, false
	}
	return se, true
}

func (s *sessions) end(r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		h := sha256.Sum256([]byte(c.Value))
		s.mu.Lock()
		delete(s.byHash, h)
		s.mu.Unlock()
	}
}

// sessionRole returns the request's console session (what it may do, whom
// it names), if it carries a valid one and, for a state-changing method,
// comes from the console's own origin (the browser's Sec-Fetch-Site or
// Origin header; http.CrossOriginProtection). The guard accepts such a
// request as if it carried the token the session was opened with.
func (s *sessions) sessionRole(r *http.Request) (session, bool) {
	se, ok := s.lookup(r)
	if !ok || s.csrf.Check(r) != nil {
		return session{}, false
	}
	return se, true
}

// secureRequest reports whether the browser reached us over TLS (directly,
// or through a proxy that says so): the cookie is then marked Secure.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// SessionInfo answers GET /api/session.
type SessionInfo struct {
	// TokenRequired is false when the member has no admin token: every
	// action is allowed without logging in (loopback only).
	TokenRequired bool `json:"token_required"`
	Authenticated bool `json:"authenticated"`
	// ReadOnly: the session was opened with a read-only token.
	ReadOnly bool      `json:"read_only,omitempty"`
	Expires  time.Time `json:"expires,omitzero"`
}

func (a *API) registerSessions(mux *routeMux) {
	mux.HandleFunc("GET /api/session", func(w http.ResponseWriter, r *http.Request) {
		info := SessionInfo{TokenRequired: a.guard.tokensRequired()}
		if !info.TokenRequired {
			info.Authenticated = true
		} else if se, ok := a.sessions.lookup(r); ok {
			info.Authenticated, info.Expires, info.ReadOnly = true, se.expires, se.role == roleRead
		}
		writeJSON(w, http.StatusOK, info)
	})
	// Login: {"token": "..."} (or a form field "token") for a session cookie.
	mux.HandleFunc("POST /api/session", func(w http.ResponseWriter, r *http.Request) {
		if err := a.sessions.csrf.Check(r); err != nil {
			WriteError(w, http.StatusForbidden, "cross-origin request", "log in from the console's own page")
			return
		}
		if !a.guard.tokensRequired() {
			writeJSON(w, http.StatusOK, SessionInfo{Authenticated: true})
			return
		}
		body, ok := a.readBody(w, r)
		if !ok {
			return
		}
		var in struct {
			Token string `json:"token"`
		}
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
			in.Token = formValue(string(body), "token")
		} else if err := json.Unmarshal(body, &in); err != nil {
			WriteError(w, http.StatusBadRequest, "bad login", `want {"token": "<admin or read-only token>"}`)
			return
		}
		tok := strings.TrimSpace(in.Token)
		rl := a.guard.role(tok)
		if rl == roleNone {
			WriteError(w, http.StatusUnauthorized, "wrong token", "the token is not an admin or a read-only token of this member")
			return
		}
		id, exp := a.sessions.create(rl, "console:"+tokenID(tok))
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", Expires: exp, MaxAge: int(a.SessionTTL / time.Second),
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
		writeJSON(w, http.StatusOK, SessionInfo{TokenRequired: true, Authenticated: true, ReadOnly: rl == roleRead, Expires: exp})
	})
	// Logout.
	mux.HandleFunc("DELETE /api/session", func(w http.ResponseWriter, r *http.Request) {
		if err := a.sessions.csrf.Check(r); err != nil {
			WriteError(w, http.StatusForbidden, "cross-origin request", "log out from the console's own page")
			return
		}
		a.sessions.end(r)
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
		writeJSON(w, http.StatusOK, SessionInfo{TokenRequired: a.guard.tokensRequired()})
	})
}

// formValue reads one field of an application/x-www-form-urlencoded body.
func formValue(body, key string) string {
	v, err := url.ParseQuery(body)
	if err != nil {
		return ""
	}
	return v.Get(key)
}
