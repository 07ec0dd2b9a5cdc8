package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
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
	byHash map[[32]byte]time.Time // expiry
	csrf   *http.CrossOriginProtection
	now    func() time.Time
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, byHash: map[[32]byte]time.Time{}, csrf: http.NewCrossOriginProtection(), now: time.Now}
}

func (s *sessions) create() (id string, expires time.Time) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	id = hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	expires = now.Add(s.ttl)
	for h, exp := range s.byHash {
		if !now.Before(exp) {
			delete(s.byHash, h)
		}
	}
	for len(s.byHash) >= maxSessions {
		var oldest [32]byte
		var first time.Time
		for h, exp := range s.byHash {
			if first.IsZero() || exp.Before(first) {
				oldest, first = h, exp
			}
		}
		delete(s.byHash, oldest)
	}
	s.byHash[sha256.Sum256([]byte(id))] = expires
	return id, expires
}

// lookup returns the expiry of the request's session, or false.
func (s *sessions) lookup(r *http.Request) (time.Time, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return time.Time{}, false
	}
	h := sha256.Sum256([]byte(c.Value))
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.byHash[h]
	if !ok {
		return time.Time{}, false
	}
	if !s.now().Before(exp) {
		delete(s.byHash, h)
		return time.Time{}, false
	}
	return exp, true
}

func (s *sessions) end(r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil {
		h := sha256.Sum256([]byte(c.Value))
		s.mu.Lock()
		delete(s.byHash, h)
		s.mu.Unlock()
	}
}

// hasSession reports whether r carries a valid console session and, for a
// state-changing method, comes from the console's own origin (the browser's
// Sec-Fetch-Site or Origin header; http.CrossOriginProtection). The admin
// check accepts such a request without the bearer token.
func (a *API) hasSession(r *http.Request) bool {
	if a.sessions == nil {
		return false
	}
	if _, ok := a.sessions.lookup(r); !ok {
		return false
	}
	return a.sessions.csrf.Check(r) == nil
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
	TokenRequired bool      `json:"token_required"`
	Authenticated bool      `json:"authenticated"`
	Expires       time.Time `json:"expires,omitzero"`
}

func (a *API) registerSessions(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/session", func(w http.ResponseWriter, r *http.Request) {
		info := SessionInfo{TokenRequired: a.AdminToken != ""}
		if !info.TokenRequired {
			info.Authenticated = true
		} else if exp, ok := a.sessions.lookup(r); ok {
			info.Authenticated, info.Expires = true, exp
		}
		writeJSON(w, http.StatusOK, info)
	})
	// Login: {"token": "..."} (or a form field "token") for a session cookie.
	mux.HandleFunc("POST /api/session", func(w http.ResponseWriter, r *http.Request) {
		if err := a.sessions.csrf.Check(r); err != nil {
			WriteError(w, http.StatusForbidden, "cross-origin request", "log in from the console's own page")
			return
		}
		if a.AdminToken == "" {
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
			WriteError(w, http.StatusBadRequest, "bad login", `want {"token": "<admin token>"}`)
			return
		}
		if subtle.ConstantTimeCompare([]byte(in.Token), []byte(a.AdminToken)) != 1 {
			WriteError(w, http.StatusUnauthorized, "wrong token", "the admin token does not match")
			return
		}
		id, exp := a.sessions.create()
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", Expires: exp, MaxAge: int(a.SessionTTL / time.Second),
			HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r)})
		writeJSON(w, http.StatusOK, SessionInfo{TokenRequired: true, Authenticated: true, Expires: exp})
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
		writeJSON(w, http.StatusOK, SessionInfo{TokenRequired: a.AdminToken != ""})
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
