package declarative

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sagaz-go/sagaz/engine"
)

// Defaults of HTTP steps.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxResponseBytes = 1 << 20
	maxRedirects            = 10
)

// defaultRetryOn are the statuses retried when a call does not list its own
// retry_on: 408, 425, 429 and every 5xx.
func defaultRetryOn(status int) bool {
	return status == 408 || status == 425 || status == 429 || status >= 500
}

// IdempotencyKey is the Idempotency-Key header an HTTP step sends: the
// saga ID and the step name ("/compensation" appended for compensations).
// It is the same on every attempt, also after a restart.
func IdempotencyKey(sagaID, step string, compensation bool) string {
	k := sagaID + "/" + step
	if compensation {
		k += "/compensation"
	}
	return k
}

// header is one request header: a name and a string template.
type header struct {
	name  string
	value template
}

// saveField stores a value computed from the response into the context.
type saveField struct {
	key   string
	value template
}

// httpCall is a compiled HTTP action or compensation.
type httpCall struct {
	method      string
	urlSrc      string
	url         template
	headers     []header
	body        template // nil: no body
	expect      []int    // nil: any 2xx
	retryOn     []int    // nil: defaultRetryOn
	save        []saveField
	timeout     time.Duration
	maxResponse int64
	follow      bool
	policy      *hostPolicy
	client      *http.Client
	vars        map[string]string // env
}

// newClient builds the client of a call: its own dialer checks every
// address dialed, no proxy (a proxy would dial for us, unchecked), and
// redirects are followed only when asked, each target checked.
func newClient(pol *hostPolicy, tlsCfg *tls.Config, follow bool) *http.Client {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           pol.dialer(),
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if !follow {
			return http.ErrUseLastResponse
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("%w: more than %d redirects", ErrRedirectRefused, maxRedirects)
		}
		if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: redirect to %s (want http or https)", ErrRedirectRefused, req.URL.Redacted())
		}
		return pol.checkHost(req.URL.Hostname())
	}}
}

// stepFunc returns the engine step function running the call.
func (c *httpCall) stepFunc(step string, compensation bool) engine.StepFunc {
	return func(ctx context.Context, r *engine.Run) error {
		return c.do(ctx, r, IdempotencyKey(r.ID, step, compensation))
	}
}

// do makes the call once. Errors that a retry cannot fix (a refused
// destination, an unexpected 4xx, a template that does not evaluate, a
// response too large) are engine.Permanent; network errors, timeouts and
// the retry_on statuses are retried by the engine's policy.
func (c *httpCall) do(ctx context.Context, r *engine.Run, key string) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	data := toCEL(r.Data())
	saga := map[string]any{"id": r.ID, "name": r.Saga, "step": r.Step, "attempt": int64(r.Attempt),
		"compensating": r.Compensating, "idempotency_key": key}
	vars := map[string]any{"context": data, "saga": saga, "env": c.vars}

	uv, err := c.url.eval(ctx, vars)
	if err != nil {
		return engine.Permanent(fmt.Errorf("url: %w", err))
	}
	us, _ := uv.(string)
	u, err := url.Parse(us)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return engine.Permanent(fmt.Errorf("url %q: want an absolute http:// or https:// URL", us))
	}
	if err := c.policy.checkHost(u.Hostname()); err != nil {
		return engine.Permanent(err)
	}
	var body io.Reader
	var isJSON bool
	if c.body != nil {
		bv, err := c.body.eval(ctx, vars)
		if err != nil {
			return engine.Permanent(fmt.Errorf("body: %w", err))
		}
		if s, ok := bv.(string); ok {
			body = strings.NewReader(s)
		} else {
			b, err := json.Marshal(bv)
			if err != nil {
				return engine.Permanent(fmt.Errorf("body: %w", err))
			}
			body, isJSON = bytes.NewReader(b), true
		}
	}
	req, err := http.NewRequestWithContext(ctx, c.method, u.String(), body)
	if err != nil {
		return engine.Permanent(err)
	}
	req.Header.Set("User-Agent", "sagaz")
	req.Header.Set("Idempotency-Key", key)
	if isJSON {
		req.Header.Set("Content-Type", "application/json")
	} else if body != nil {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	for _, h := range c.headers {
		v, err := h.value.eval(ctx, vars)
		if err != nil {
			return engine.Permanent(fmt.Errorf("header %s: %w", h.name, err))
		}
		s := text(v)
		if strings.ContainsAny(s, "\r\n\x00") {
			return engine.Permanent(fmt.Errorf("header %s: value has a line break or NUL", h.name))
		}
		req.Header.Set(h.name, s)
	}

	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, ErrDestinationRefused), errors.Is(err, ErrRedirectRefused):
			return engine.Permanent(fmt.Errorf("%s %s: %w", c.method, u.Redacted(), err))
		case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("%s %s: no response within the timeout (%s)", c.method, u.Redacted(), c.timeout)
		}
		return fmt.Errorf("%s %s: %w", c.method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResponse+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading the response after %s: %w", c.method, u.Redacted(), time.Since(start).Round(time.Millisecond), err)
	}
	if int64(len(raw)) > c.maxResponse {
		return engine.Permanent(fmt.Errorf("%s %s: %w: more than max_response_bytes (%d)", c.method, u.Redacted(), ErrResponseTooLarge, c.maxResponse))
	}
	if !c.expected(resp.StatusCode) {
		return c.statusError(u, resp, raw)
	}
	if len(c.save) == 0 {
		return nil
	}
	vars["response"] = map[string]any{"status": int64(resp.StatusCode), "headers": responseHeaders(resp.Header), "body": responseBody(resp.Header, raw)}
	for _, s := range c.save {
		v, err := s.value.eval(ctx, vars)
		if err != nil {
			return engine.Permanent(fmt.Errorf("save %s: %w", s.key, err))
		}
		r.Set(s.key, v)
	}
	return nil
}

func (c *httpCall) expected(status int) bool {
	if c.expect == nil {
		return status >= 200 && status < 300
	}
	return slices.Contains(c.expect, status)
}

func (c *httpCall) statusError(u *url.URL, resp *http.Response, raw []byte) error {
	if resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "" && !c.follow {
		return engine.Permanent(fmt.Errorf("%s %s: %w: %s to %s (follow_redirects is off)", c.method, u.Redacted(), ErrRedirectRefused, resp.Status, resp.Header.Get("Location")))
	}
	err := fmt.Errorf("%s %s: %w %s%s", c.method, u.Redacted(), ErrUnexpectedStatus, resp.Status, snippet(raw))
	retry := defaultRetryOn(resp.StatusCode)
	if c.retryOn != nil {
		retry = slices.Contains(c.retryOn, resp.StatusCode)
	}
	if !retry {
		return engine.Permanent(err)
	}
	return err
}

// snippet quotes the start of a response body for an error message.
func snippet(raw []byte) string {
	const n = 200
	if len(raw) == 0 {
		return ""
	}
	s := raw
	if len(s) > n {
		s = s[:n]
	}
	if !utf8.Valid(s) {
		return fmt.Sprintf(" (%d bytes of body)", len(raw))
	}
	more := ""
	if len(raw) > n {
		more = "..."
	}
	return fmt.Sprintf(": %q%s", string(s), more)
}

func responseHeaders(h http.Header) map[string]any {
	out := make(map[string]any, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[strings.ToLower(k)] = v[0]
		}
	}
	return out
}

// responseBody is the JSON value of a JSON response, the text otherwise
// (null when empty).
func responseBody(h http.Header, raw []byte) any {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if mt == "application/json" || strings.HasSuffix(mt, "+json") {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var v any
		if d.Decode(&v) == nil {
			return toCEL(v)
		}
	}
	return string(raw)
}
