package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"path"
	"strings"
)

// MinTokenLength is the shortest token Auth accepts.
const MinTokenLength = 16

// Auth says who may use the HTTP server.
//
// With AdminTokens set, every /api route needs "Authorization: Bearer
// <token>" (the scheme word in any case): an admin token for everything, a
// read-only token for GET and HEAD. /healthz and /readyz stay open;
// /metrics stays open unless MetricsTokens are set (then it takes a metrics
// or an admin token). Webhooks authenticate by their signature instead.
//
// Without AdminTokens (a loopback listener), the /api routes and unsigned
// webhooks refuse what a web page in the operator's browser could send: a
// Host that is neither a loopback name nor one of AllowedHosts (DNS
// rebinding), a cross-origin request (Origin / Sec-Fetch-Site), and a
// mutating request whose Content-Type is not application/json.
type Auth struct {
	// AdminTokens: each accepted on every route (several for rotation).
	AdminTokens []string
	// ReadTokens: accepted on GET and HEAD /api routes only (needs
	// AdminTokens).
	ReadTokens []string
	// MetricsTokens, if set, guard /metrics.
	MetricsTokens []string
	// AllowedHosts are host names (no port) accepted in the Host header
	// without AdminTokens, besides loopback names and addresses: the
	// advertised address's host.
	AllowedHosts []string
}

// Validate reports every unusable token at once (never the token itself).
func (a Auth) Validate() error {
	var errs []error
	seen := map[string]string{}
	check := func(kind string, toks []string) {
		for i, t := range toks {
			switch {
			case strings.TrimSpace(t) == "":
				errs = append(errs, fmt.Errorf("%s token %d of %d is blank", kind, i+1, len(toks)))
			case strings.ContainsFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f }):
				errs = append(errs, fmt.Errorf("%s token %d of %d contains whitespace or control characters", kind, i+1, len(toks)))
			case len(t) < MinTokenLength:
				errs = append(errs, fmt.Errorf("%s token %d of %d has %d characters: want at least %d (e.g. openssl rand -hex 16)", kind, i+1, len(toks), len(t), MinTokenLength))
			}
			if prev, dup := seen[t]; dup && prev != kind {
				errs = append(errs, fmt.Errorf("one token is both a %s and a %s token", prev, kind))
			}
			seen[t] = kind
		}
	}
	check("admin", a.AdminTokens)
	check("read-only", a.ReadTokens)
	check("metrics", a.MetricsTokens)
	if len(a.ReadTokens) > 0 && len(a.AdminTokens) == 0 {
		errs = append(errs, errors.New("a read-only token needs an admin token as well (without one the API is served unauthenticated on loopback)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// guard enforces Auth in front of the server's routes.
type guard struct {
	admin, read, metrics [][32]byte // SHA-256 of the tokens: equal-length constant-time compares
	hosts                map[string]bool
	cop                  *http.CrossOriginProtection
	// sessions, if set (the API serves the console), are logins that stand
	// for the token they were opened with.
	sessions *sessions
}

// role is what a token (or a session opened with it) may do.
type role int

const (
	roleNone  role = iota
	roleRead       // GET and HEAD on /api
	roleAdmin      // everything
)

// role returns what tok may do.
func (g *guard) role(tok string) role {
	switch {
	case match(g.admin, tok):
		return roleAdmin
	case match(g.read, tok):
		return roleRead
	}
	return roleNone
}

func newGuard(a Auth) *guard {
	hash := func(toks []string) [][32]byte {
		out := make([][32]byte, len(toks))
		for i, t := range toks {
			out[i] = sha256.Sum256([]byte(t))
		}
		return out
	}
	g := &guard{admin: hash(a.AdminTokens), read: hash(a.ReadTokens), metrics: hash(a.MetricsTokens),
		hosts: map[string]bool{}, cop: http.NewCrossOriginProtection()}
	for _, h := range a.AllowedHosts {
		g.hosts[normalHost(h)] = true
	}
	return g
}

// tokensRequired reports whether the API is token-protected.
func (g *guard) tokensRequired() bool { return len(g.admin) > 0 }

// wrap guards /api/* and /metrics; other routes pass.
func (g *guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := path.Clean("/" + r.URL.Path)
		switch {
		case p == "/api" || strings.HasPrefix(p, "/api/"):
			who, ok := g.api(w, r)
			if !ok {
				return
			}
			if who != "" {
				r = r.WithContext(context.WithValue(r.Context(), callerKey{}, who))
			}
		case p == "/metrics" && len(g.metrics) > 0:
			tok, ok := bearer(r)
			if !ok || !match(g.metrics, tok) && !match(g.admin, tok) {
				unauthorized(w, "/metrics needs Authorization: Bearer <metrics token>")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// api authorizes an /api request and says who its credentials name
// (caller); false means it answered.
func (g *guard) api(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !g.tokensRequired() {
		return "", g.browser(w, r)
	}
	tok, ok := bearer(r)
	rl := g.role(tok)
	who := ""
	if rl != roleNone {
		who = "token:" + tokenID(tok)
	}
	if !ok && g.sessions != nil {
		if path.Clean("/"+r.URL.Path) == "/api/session" {
			return "", true // the login itself: it checks the token it is given
		}
		if se, ok := g.sessions.sessionRole(r); ok {
			rl, who = se.role, se.by
		}
	}
	switch {
	case rl == roleAdmin:
		// A member forwarding a request to the saga's owner (group.go)
		// says whom it acts for.
		if by := r.Header.Get(HeaderOnBehalfOf); by != "" && ok && r.Header.Get(HeaderScope) == "local" && len(by) <= 256 {
			who = by
		}
		return who, true
	case rl == roleRead:
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return who, true
		}
		WriteError(w, http.StatusForbidden, "read-only token", r.Method+" needs an admin token; this token may only read")
		return "", false
	case !ok:
		unauthorized(w, "the API needs Authorization: Bearer <token> (or a console login)")
		return "", false
	default:
		unauthorized(w, "the token is not accepted")
		return "", false
	}
}

// HeaderOnBehalfOf, on a request one member forwards to another, names the
// caller of the member that forwards it, so that the saga's history names
// the operator rather than the group's token. The receiving member takes
// it from a request between members (Sagaz-Scope: local) carrying an admin
// token only.
const HeaderOnBehalfOf = "Sagaz-On-Behalf-Of"

type callerKey struct{}

// caller returns who the request's credentials name, for a saga's history:
// "token:<id>" for an admin or read-only token, "console:<id>" for a
// console login opened with one, where <id> is the first 8 hex digits of
// the token's SHA-256 (printf %s "$TOKEN" | sha256sum | cut -c1-8); "" when
// the API takes no token.
func caller(ctx context.Context) string {
	who, _ := ctx.Value(callerKey{}).(string)
	return who
}

// tokenID names a token without revealing it: the first 8 hex digits of
// its SHA-256.
func tokenID(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:4])
}

// browser applies the checks of the token-less (loopback) mode; false
// means it answered.
func (g *guard) browser(w http.ResponseWriter, r *http.Request) bool {
	if !g.hostAllowed(r.Host) {
		WriteError(w, http.StatusForbidden, "host not allowed",
			fmt.Sprintf("Host %q is neither a loopback name nor the advertised address (--advertise-url); without an admin token only those are served", r.Host))
		return false
	}
	// Cross-origin checks for every method: a read from another origin is
	// refused too. (CrossOriginProtection lets safe methods through, so
	// reads are checked as if they were POSTs.)
	check := r
	if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
		c := *r
		c.Method = http.MethodPost
		check = &c
	}
	if err := g.cop.Check(check); err != nil {
		WriteError(w, http.StatusForbidden, "cross-origin request", "requests from another origin (a web page) are refused: "+err.Error())
		return false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !jsonContent(r) {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported media type",
			fmt.Sprintf("Content-Type %q: send Content-Type: application/json (also with an empty body)", r.Header.Get("Content-Type")))
		return false
	}
	return true
}

func (g *guard) hostAllowed(hostport string) bool {
	h := normalHost(hostport)
	if h == "" {
		return false
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") || g.hosts[h] {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// normalHost is the lower-cased host name of a Host value, without port,
// brackets or trailing dot.
func normalHost(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(h, "."), "["), "]")
	return strings.ToLower(h)
}

func jsonContent(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// bearer returns the request's bearer token ("Bearer" in any case).
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// match compares tok with every token, in constant time whatever the
// lengths and whichever matches.
func match(hashes [][32]byte, tok string) bool {
	h := sha256.Sum256([]byte(tok))
	found := 0
	for i := range hashes {
		found |= subtle.ConstantTimeCompare(hashes[i][:], h[:])
	}
	return found == 1
}

func unauthorized(w http.ResponseWriter, detail string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="sagaz"`)
	WriteError(w, http.StatusUnauthorized, "unauthorized", detail)
}
