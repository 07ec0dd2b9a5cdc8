package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// sagas retry --context-file --reason, resolve --reason and cancel --reason
// send what they were given; bad input is a usage error that sends
// nothing; sagas show prints the history.
func TestSagasRetryResolveAndHistory(t *testing.T) {
	var mu sync.Mutex
	var got []string // "METHOD path body"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+string(body))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET":
			io.WriteString(w, `{"id":"orders.created:0:5:order","saga":"order","trigger":"kafka:orders.created","status":"resolved",
				"source":{"topic":"orders.created","partition":0,"offset":5},"context":{"amount":12.5},
				"steps":[{"name":"charge","status":"completed","attempts":2}],"error":"",
				"created_at":"2026-11-26T10:00:00Z","updated_at":"2026-11-26T10:05:00Z","version":9,"owned_here":true,
				"history":[
				 {"at":"2026-11-26T10:01:00Z","action":"retry_with_context","reason":"amount was a string","by":"token:0123abcd",
				  "previous_context":{"amount":"12.5"},"previous_context_bytes":17},
				 {"at":"2026-11-26T10:02:00Z","action":"retry_with_context","previous_context_bytes":90000,"previous_context_truncated":true,"previous_context_prefix":"{\"pad\":\"xx"},
				 {"at":"2026-11-26T10:03:00Z","action":"resolve","reason":"refunded by hand","by":"console:0123abcd"}]}`)
		case strings.HasSuffix(r.URL.Path, "/resolve"):
			io.WriteString(w, `{"id":"x","status":"resolved","saga":{"id":"x","status":"resolved"}}`)
		default:
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, `{"id":"x","status":"accepted"}`)
		}
	}))
	defer srv.Close()
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return ""
		}
		return got[len(got)-1]
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	dir := t.TempDir()
	good, bad, null := filepath.Join(dir, "ctx.json"), filepath.Join(dir, "bad.json"), filepath.Join(dir, "null.json")
	for p, c := range map[string]string{good: "{\n  \"amount\": 12.5\n}\n", bad: `[1, 2]`, null: `null`} {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	id := "orders.created:0:5:order"
	api := []string{"--api", srv.URL}

	out, code := sagaz(t, noEnv, append([]string{"sagas", "retry", id, "--context-file", good, "--reason", "amount was a string"}, api...)...)
	if code != exitOK || out != id+": retry accepted\n" {
		t.Fatalf("retry with a context: exit %d %q", code, out)
	}
	var body struct {
		Context map[string]any `json:"context"`
		Reason  string         `json:"reason"`
	}
	req := last()
	if !strings.HasPrefix(req, "POST /api/sagas/"+id+"/retry ") || json.Unmarshal([]byte(strings.SplitN(req, " ", 3)[2]), &body) != nil ||
		body.Context["amount"] != 12.5 || body.Reason != "amount was a string" {
		t.Fatalf("retry request %q", req)
	}
	if _, code := sagaz(t, noEnv, append([]string{"sagas", "retry", id, "--map", "charge=capture", "--reason", "renamed"}, api...)...); code != exitOK ||
		last() != "POST /api/sagas/"+id+`/retry {"reason":"renamed","steps":{"charge":"capture"}}` {
		t.Fatalf("a parked saga's retry with a mapping and a reason: exit %d %q", code, last())
	}
	if _, code := sagaz(t, noEnv, append([]string{"sagas", "retry", id}, api...)...); code != exitOK || last() != "POST /api/sagas/"+id+"/retry " {
		t.Fatalf("a plain retry sends no body: exit %d %q", code, last())
	}
	out, code = sagaz(t, noEnv, append([]string{"sagas", "resolve", id, "--reason", "refunded by hand"}, api...)...)
	if code != exitOK || out != id+": resolved\n" || last() != "POST /api/sagas/"+id+`/resolve {"reason":"refunded by hand"}` {
		t.Fatalf("resolve: exit %d %q, request %q", code, out, last())
	}
	if _, code := sagaz(t, noEnv, append([]string{"sagas", "cancel", id, "--reason", "duplicate"}, api...)...); code != exitOK ||
		last() != "POST /api/sagas/"+id+`/cancel {"reason":"duplicate"}` {
		t.Fatalf("cancel with a reason: exit %d, request %q", code, last())
	}

	// Usage errors (exit 2) send nothing.
	before := count()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"sagas", "resolve", id}, "needs --reason"},
		{[]string{"sagas", "resolve", id, "--reason", "  "}, "needs --reason"},
		{[]string{"sagas", "retry", id, "--context-file", bad}, "want a JSON object"},
		{[]string{"sagas", "retry", id, "--context-file", null}, "want a JSON object"},
		{[]string{"sagas", "retry", id, "--context-file", filepath.Join(dir, "missing.json")}, "no such file"},
		{[]string{"sagas", "cancel", id, "--context-file", good}, "--context-file: only for sagas retry"},
		{[]string{"sagas", "list", "--reason", "x"}, "--reason: only for sagas retry, cancel, resolve"},
		{[]string{"sagas", "resolve", id, "--reason", "x", "--map", "a=b"}, "--map: only for sagas retry"},
		{[]string{"sagas", "resolve", "--reason", "x"}, "usage: sagaz sagas resolve ID"},
	} {
		out, code := sagaz(t, noEnv, append(c.args, api...)...)
		if code != exitUsage || !strings.Contains(out, c.want) {
			t.Errorf("sagaz %s: exit %d %q, want %d saying %q", strings.Join(c.args, " "), code, out, exitUsage, c.want)
		}
	}
	if count() != before {
		t.Errorf("usage errors sent %d requests", count()-before)
	}

	// show prints the history.
	out, code = sagaz(t, noEnv, append([]string{"sagas", "show", id}, api...)...)
	if code != exitOK {
		t.Fatalf("show: exit %d %s", code, out)
	}
	for _, re := range []string{
		`(?m)^Status\s+resolved$`,
		`(?m)^History$`,
		`(?m)^AT\s+ACTION\s+BY\s+REASON$`,
		`(?m)^2026-11-26T10:01:00.000Z\s+retry_with_context\s+token:0123abcd\s+amount was a string$`,
		`(?m)^\s+↳ replaced context: \{"amount":"12.5"\}$`,
		`(?m)^2026-11-26T10:02:00.000Z\s+retry_with_context\s+-$`,
		`(?m)^\s+↳ replaced context \(90000 bytes, the first kept\): \{"pad":"xx…$`,
		`(?m)^2026-11-26T10:03:00.000Z\s+resolve\s+console:0123abcd\s+refunded by hand$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("sagas show: no match for %s:\n%s", re, out)
		}
	}
}
