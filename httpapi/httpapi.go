// Package httpapi serves Sagaz's HTTP endpoints: health, readiness,
// Prometheus metrics, the admin API, webhooks and manual firing. Errors are
// JSON: {"error": ..., "detail": ...}. Auth says who may call what; webhook
// calls are verified by their signature (WebhookAuth, Verifier).
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sagaz-go/sagaz/health"
)

// Config configures the server.
type Config struct {
	Addr string
	// Ready returns nil when the service is ready, or why it is not.
	Ready    func() error
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
	// API, if set, adds the admin API, manual firing and webhooks.
	API *API
	// Auth guards the /api routes and /metrics (see Auth).
	Auth Auth
	// UI, if set, serves the operator console under /ui/ (console.Handler);
	// / and /ui redirect to it.
	UI http.Handler
	// ReadHeaderTimeout cuts off clients that do not finish their headers
	// (default 5s).
	ReadHeaderTimeout time.Duration
}

// Server is the HTTP server.
type Server struct {
	cfg Config
	srv *http.Server
	ln  net.Listener
	mux *routeMux
}

// routeMux is the server's ServeMux, remembering the patterns it serves.
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) Handle(pattern string, h http.Handler) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.Handle(pattern, h)
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(h))
}

// ServeHTTP serves the matching route. What the ServeMux answers itself —
// 404 for a path no route serves, 405 with an Allow header for a method the
// path's routes do not take — is written as the JSON error contract.
func (m *routeMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := m.Handler(r)
	if pattern != "" {
		m.ServeMux.ServeHTTP(w, r) // sets the path values
		return
	}
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.code {
	case http.StatusNotFound:
		WriteError(w, http.StatusNotFound, "not found", r.Method+" "+r.URL.Path)
	case http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		WriteError(w, http.StatusMethodNotAllowed, "method not allowed", fmt.Sprintf("%s %s: this route takes %s", r.Method, r.URL.Path, allow))
	default: // a redirect to the canonical path: as the ServeMux wrote it
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.code)
		_, _ = w.Write(rec.body.Bytes())
	}
}

// recorder keeps what the ServeMux's own handlers write (short answers).
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// New listens on cfg.Addr (so the caller learns of a busy port at once).
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 5 * time.Second
	}
	if err := cfg.Auth.Validate(); err != nil {
		return nil, err
	}
	g := newGuard(cfg.Auth)
	mux := &routeMux{ServeMux: http.NewServeMux()}
	if cfg.API != nil {
		cfg.API.ready = cfg.Ready
		if err := cfg.API.register(mux, g); err != nil {
			return nil, err
		}
	}
	if cfg.UI != nil {
		mux.Handle("GET /ui/", cfg.UI)
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: ln, mux: mux}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	s.srv = &http.Server{
		Handler:           logRequests(cfg.Logger, g.wrap(mux)),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	return s, nil
}

// Routes lists the patterns the server serves ("GET /api/sagas", ...), in
// the order they were registered. A request for one of their paths with
// another method is answered 405 with an Allow header.
func (s *Server) Routes() []string { return slices.Clone(s.mux.patterns) }

// Close stops listening (for a server that never ran; Run shuts down by
// itself).
func (s *Server) Close() error { return s.ln.Close() }

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully (bounded).
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// readyz answers 200 {"status":"ready"}, or 503 with the reasons: the
// error contract's "error" and "detail", and, from a member, "conditions"
// (each with its condition, reason and since).
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			body := map[string]any{"error": "not ready", "detail": err.Error()}
			var nr *health.NotReady
			if errors.As(err, &nr) {
				body["conditions"] = nr.Conditions
			}
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// logRequests logs one line per request: no bodies, no headers.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		lvl := slog.LevelInfo
		if r.URL.Path == "/metrics" || r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			lvl = slog.LevelDebug // probes and scrapes every few seconds
		}
		log.Log(r.Context(), lvl, "http request", "method", r.Method, "path", r.URL.Path, "status", sw.code,
			"took", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (read
// deadlines, flushing).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteError writes the JSON error body of the HTTP contract.
func WriteError(w http.ResponseWriter, code int, msg, detail string) {
	writeJSON(w, code, map[string]string{"error": msg, "detail": detail})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
