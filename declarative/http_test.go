package declarative_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/declarative"
	"github.com/sagaz-go/sagaz/engine"
)

// loadOne loads a one-saga document and returns its declaration.
func loadOne(t *testing.T, doc string) engine.Saga {
	t.Helper()
	defs, err := declarative.Load(write(t, t.TempDir(), "s.yaml", doc))
	if err != nil {
		t.Fatal(err)
	}
	return defs[0].Saga()
}

// oneStep is a saga with one step whose http block is given (indented by
// 8 spaces), after an optional saga-level http block.
func oneStep(sagaHTTP, call string) string {
	return "name: s\ntriggers: [{manual: go}]\n" + sagaHTTP + "steps:\n  - name: a\n    action:\n      timeout: 2s\n      http:\n" + call
}

// runAction runs step i's action once with the given context.
func runAction(t *testing.T, s engine.Saga, i int, data map[string]any) (*engine.Run, error) {
	t.Helper()
	r := &engine.Run{ID: "~manual:0:7:s", Saga: s.Name, Step: s.Steps[i].Name, Attempt: 1}
	for k, v := range data {
		r.Set(k, v)
	}
	return r, s.Steps[i].Action(context.Background(), r)
}

type recorded struct {
	method, path, key, ctype, body string
	header                         http.Header
}

type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (rc *recorder) add(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.Path, r.Header.Get("Idempotency-Key"), r.Header.Get("Content-Type"), string(b), r.Header.Clone()})
}

func (rc *recorder) all() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

// TestHTTPStepRequestAndSave: method, URL, headers and body come from the
// templates; the Idempotency-Key is saga ID + step; saved fields land in
// the context.
func TestHTTPStepRequestAndSave(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.add(r)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "rq-1")
		w.WriteHeader(201)
		fmt.Fprint(w, `{"id": "ch-9", "amount": 12345678901234, "nested": {"ok": true}}`)
	}))
	defer srv.Close()
	t.Setenv("SAGAZ_VAR_TOKEN", "tok-1") // env.TOKEN, read at load time
	s := loadOne(t, oneStep("http:\n  headers:\n    X-Team: payments\n    X-Order: ${{ context.order_id }}\n", `        method: PUT
        url: `+srv.URL+`/orders/${{ pathEscape(context.order_id) }}?amount=${{ context.amount }}
        headers:
          X-Team: billing
          Authorization: Bearer ${{ env.TOKEN }}
        body:
          order: ${{ context.order_id }}
          cents: ${{ context.amount * 100 }}
          items: ${{ context.items.map(i, i.sku) }}
          note: order ${{ context.order_id }} for ${{ context.amount }}
          fixed: [1, true, null, "x"]
        expect: 201
        save:
          charge_id: ${{ response.body.id }}
          big: ${{ response.body.amount }}
          ok: ${{ response.body.nested.ok && response.status == 201 }}
          request_id: ${{ response.headers["x-request-id"] }}
          key: ${{ saga.idempotency_key }}
`))
	r, err := runAction(t, s, 0, map[string]any{"order_id": "o/1", "amount": json.Number("42"),
		"items": []any{map[string]any{"sku": "A"}, map[string]any{"sku": "B"}}})
	if err != nil {
		t.Fatal(err)
	}
	reqs := rc.all()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	q := reqs[0]
	if q.method != "PUT" || q.path != "/orders/o/1" || q.header.Get("X-Team") != "billing" || q.header.Get("X-Order") != "o/1" ||
		q.header.Get("Authorization") != "Bearer tok-1" || q.ctype != "application/json" {
		t.Errorf("request: %s %s headers %v", q.method, q.path, q.header)
	}
	if want := declarative.IdempotencyKey("~manual:0:7:s", "a", false); q.key != want || want != "~manual:0:7:s/a" {
		t.Errorf("Idempotency-Key %q, want %q", q.key, want)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(q.body), &body); err != nil {
		t.Fatal(err)
	}
	wantBody := `{"cents":4200,"fixed":[1,true,null,"x"],"items":["A","B"],"note":"order o/1 for 42","order":"o/1"}`
	if b, _ := json.Marshal(body); string(b) != wantBody {
		t.Errorf("body %s, want %s", b, wantBody)
	}
	got, _ := json.Marshal(r.Data())
	for _, w := range []string{`"charge_id":"ch-9"`, `"big":12345678901234`, `"ok":true`, `"request_id":"rq-1"`, `"key":"~manual:0:7:s/a"`} {
		if !strings.Contains(string(got), w) {
			t.Errorf("context %s lacks %s", got, w)
		}
	}
}

// TestHTTPStepTemplateErrorsArePermanent: a template that does not
// evaluate (a missing field or variable) fails the step without retries,
// before anything is sent.
func TestHTTPStepTemplateErrorsArePermanent(t *testing.T) {
	rc := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rc.add(r) }))
	defer srv.Close()
	for _, call := range []string{
		"        method: GET\n        url: " + srv.URL + "/${{ context.missing }}\n",
		"        method: GET\n        url: " + srv.URL + "\n        headers: {X-A: '${{ env.NOT_SET_ANYWHERE }}'}\n",
		"        method: POST\n        url: " + srv.URL + "\n        body: {n: '${{ context.n / 0 }}'}\n",
		"        method: GET\n        url: ${{ context.n }}\n",
	} {
		s := loadOne(t, oneStep("", call))
		_, err := runAction(t, s, 0, map[string]any{"n": 1})
		if err == nil || !engine.IsPermanent(err) {
			t.Errorf("%s: want a permanent error, got %v", call, err)
		}
	}
	if n := len(rc.all()); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// TestHTTPStepStatuses: expected statuses pass; 4xx fail for good; 5xx,
// 429 and retry_on statuses are retried.
func TestHTTPStepStatuses(t *testing.T) {
	status := 200
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprint(w, `{"error":"nope"}`)
	}))
	defer srv.Close()
	set := func(s int) { mu.Lock(); status = s; mu.Unlock() }
	def := loadOne(t, oneStep("", "        method: POST\n        url: "+srv.URL+"/x\n"))
	withRetryOn := loadOne(t, oneStep("", "        method: POST\n        url: "+srv.URL+"/x\n        expect: [200, 409]\n        retry_on: [404]\n"))
	cases := []struct {
		s         engine.Saga
		status    int
		ok, retry bool
	}{
		{def, 200, true, false}, {def, 204, true, false},
		{def, 400, false, false}, {def, 422, false, false}, {def, 404, false, false},
		{def, 500, false, true}, {def, 503, false, true}, {def, 429, false, true}, {def, 408, false, true},
		{withRetryOn, 409, true, false}, {withRetryOn, 201, false, false}, {withRetryOn, 404, false, true}, {withRetryOn, 503, false, false},
	}
	for _, c := range cases {
		set(c.status)
		_, err := runAction(t, c.s, 0, nil)
		switch {
		case c.ok && err != nil:
			t.Errorf("%d: %v", c.status, err)
		case !c.ok && err == nil:
			t.Errorf("%d: no error", c.status)
		case !c.ok && engine.IsPermanent(err) == c.retry:
			t.Errorf("%d: permanent=%v, want retry=%v: %v", c.status, engine.IsPermanent(err), c.retry, err)
		case !c.ok && (!errors.Is(err, declarative.ErrUnexpectedStatus) || !strings.Contains(err.Error(), `"{\"error\":\"nope\"}`)):
			t.Errorf("%d: error does not name the status and body: %v", c.status, err)
		}
	}
}

// TestHTTPStepTimeout: an attempt that gets no answer within the timeout
// fails (retryable), and does not hang.
func TestHTTPStepTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	s := loadOne(t, strings.Replace(oneStep("", "        method: GET\n        url: "+srv.URL+"/slow\n"), "timeout: 2s", "timeout: 150ms", 1))
	start := time.Now()
	_, err := runAction(t, s, 0, nil)
	if err == nil || engine.IsPermanent(err) || !strings.Contains(err.Error(), "no response within the timeout (150ms)") {
		t.Fatalf("want a retryable timeout error, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

// TestHTTPStepRedirects: redirects are refused by default; with
// follow_redirects each target is checked against the allow-list.
func TestHTTPStepRedirects(t *testing.T) {
	final := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "final") }))
	defer final.Close()
	var target string
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusFound)
	}))
	defer redir.Close()

	target = final.URL + "/here"
	off := loadOne(t, oneStep("", "        method: GET\n        url: "+redir.URL+"/go\n"))
	_, err := runAction(t, off, 0, nil)
	if !errors.Is(err, declarative.ErrRedirectRefused) || !engine.IsPermanent(err) || !strings.Contains(err.Error(), "302 Found to "+target+" (follow_redirects is off)") {
		t.Fatalf("redirect with follow_redirects off: %v", err)
	}
	on := loadOne(t, oneStep("", "        method: GET\n        url: "+redir.URL+"/go\n        follow_redirects: true\n        save: {got: '${{ response.body }}'}\n"))
	r, err := runAction(t, on, 0, nil)
	if err != nil || r.Get("got") != "final" {
		t.Fatalf("followed redirect: %v, got %v", err, r.Get("got"))
	}
	// a redirect to a host outside allow_hosts is refused
	target = strings.Replace(final.URL, "127.0.0.1", "localhost", 1) + "/here"
	restricted := loadOne(t, oneStep("http:\n  allow_hosts: [127.0.0.1]\n", "        method: GET\n        url: "+redir.URL+"/go\n        follow_redirects: true\n"))
	_, err = runAction(t, restricted, 0, nil)
	if !errors.Is(err, declarative.ErrDestinationRefused) || !engine.IsPermanent(err) {
		t.Fatalf("redirect to a host not allowed: %v", err)
	}
	// and a redirect to the metadata address even without allow_hosts
	target = "http://169.254.169.254/latest/meta-data/"
	_, err = runAction(t, on, 0, nil)
	if !errors.Is(err, declarative.ErrDestinationRefused) || !strings.Contains(err.Error(), "169.254.169.254 is a link-local or cloud metadata address") {
		t.Fatalf("redirect to the metadata address: %v", err)
	}
}

// TestHTTPStepAllowList: a URL computed at run time is checked against
// allow_hosts, and link-local / metadata destinations are refused unless
// listed by address.
func TestHTTPStepAllowList(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	cases := []struct {
		allow   string // saga-level http block
		url     string // context.url
		refused string // "" = allowed
	}{
		{"", srv.URL, ""},
		{"http:\n  allow_hosts: [127.0.0.1]\n", srv.URL, ""},
		{"http:\n  allow_hosts: [127.0.0.0/8]\n", srv.URL, ""},
		{"http:\n  allow_hosts: [localhost]\n", "http://localhost:" + port, ""},
		{"http:\n  allow_hosts: ['*.example.com', 10.0.0.1]\n", srv.URL, "127.0.0.1 is not in allow_hosts"},
		{"http:\n  allow_hosts: ['*.example.com']\n", "http://localhost:" + port, "host localhost is not in allow_hosts"},
		{"", "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local or cloud metadata address"},
		{"", "http://169.254.10.1:" + port, "169.254.10.1 is a link-local"},
		{"", "http://[fe80::1]:" + port, "fe80::1 is a link-local"},
		{"", "http://[fd00:ec2::254]/latest", "fd00:ec2::254 is a link-local or cloud metadata address"},
		{"", "http://[::ffff:169.254.169.254]/", "169.254.169.254 is a link-local"},
		{"", "http://metadata.google.internal/computeMetadata/v1/", "metadata.google.internal is a cloud metadata host"},
		{"", "http://METADATA.google.internal./x", "metadata.google.internal is a cloud metadata host"},
		{"http:\n  allow_hosts: [metadata.google.internal]\n", "http://169.254.169.254/", "169.254.169.254 is not in allow_hosts"},
	}
	for _, c := range cases {
		s := loadOne(t, oneStep(c.allow, "        method: GET\n        url: ${{ context.url }}\n"))
		_, err := runAction(t, s, 0, map[string]any{"url": c.url})
		if c.refused == "" {
			if err != nil {
				t.Errorf("%s with %q: %v", c.url, c.allow, err)
			}
			continue
		}
		if !errors.Is(err, declarative.ErrDestinationRefused) || !engine.IsPermanent(err) || !strings.Contains(err.Error(), c.refused) {
			t.Errorf("%s with %q: want refused (%s), got %v", c.url, c.allow, c.refused, err)
		}
	}
}

// TestHTTPStepResponseLimit: a body larger than max_response_bytes fails
// for good; one of exactly the limit passes.
func TestHTTPStepResponseLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 1024))
	}))
	defer srv.Close()
	exact := loadOne(t, oneStep("http:\n  max_response_bytes: 1024\n", "        method: GET\n        url: "+srv.URL+"\n"))
	if _, err := runAction(t, exact, 0, nil); err != nil {
		t.Fatalf("body of exactly the limit: %v", err)
	}
	small := loadOne(t, oneStep("http:\n  max_response_bytes: 2048\n", "        method: GET\n        url: "+srv.URL+"\n        max_response_bytes: 1023\n"))
	_, err := runAction(t, small, 0, nil)
	if !errors.Is(err, declarative.ErrResponseTooLarge) || !engine.IsPermanent(err) || !strings.Contains(err.Error(), "more than max_response_bytes (1023)") {
		t.Fatalf("want ErrResponseTooLarge, got %v", err)
	}
}

// TestHTTPStepTLS: a CA file makes a private server trusted; without it
// the call fails; insecure_skip_verify skips the check.
func TestHTTPStepTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(tlsBlock string) engine.Saga {
		defs, err := declarative.Load(write(t, dir, "tls.yaml", oneStep("", "        method: GET\n        url: "+srv.URL+"\n"+tlsBlock)))
		if err != nil {
			t.Fatal(err)
		}
		return defs[0].Saga()
	}
	if _, err := runAction(t, load("        tls: {ca_file: ca.pem}\n"), 0, nil); err != nil {
		t.Errorf("with the CA file (relative to the saga file): %v", err)
	}
	if _, err := runAction(t, load(""), 0, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: want a certificate error, got %v", err)
	}
	if _, err := runAction(t, load("        tls: {insecure_skip_verify: true}\n"), 0, nil); err != nil {
		t.Errorf("insecure_skip_verify: %v", err)
	}
	_ = tls.VersionTLS12
}
