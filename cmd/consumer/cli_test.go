package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestCLISendsTheTokenEverywhere: every CLI request carries the token —
// reads too — and every POST says it is JSON (the loopback mode takes
// nothing else). Of a rotation list, the first token is sent.
func TestCLISendsTheTokenEverywhere(t *testing.T) {
	type seen struct{ method, path, auth, ctype string }
	var mu sync.Mutex
	var got []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/api/triggers":
			_, _ = w.Write([]byte(`{"triggers":[]}`))
		case r.URL.Path == "/api/sagas":
			_, _ = w.Write([]byte(`{"sagas":[]}`))
		case r.URL.Path == "/api/schedules":
			_, _ = w.Write([]byte(`{"schedules":[]}`))
		case r.Method == "GET":
			_, _ = w.Write([]byte(`{"id":"x","status":"completed"}`))
		default:
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"id":"x"}`))
		}
	}))
	defer srv.Close()
	env := func(k string) string {
		return map[string]string{"SAGAZ_API": srv.URL, "SAGAZ_ADMIN_TOKEN": " newest-admin-token-01  older-admin-token-02 "}[k]
	}
	for _, args := range [][]string{
		{"triggers"}, {"sagas", "list"}, {"sagas", "show", "t:0:1:s"}, {"sagas", "retry", "t:0:1:s"}, {"sagas", "cancel", "t:0:1:s"},
		{"fire", "order.requested", `{"order_id":"o-1"}`}, {"schedules", "list"}, {"schedules", "pause", "a:b"}, {"schedules", "trigger", "a:b"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}, env); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if len(got) != 9 {
		t.Fatalf("%d requests: %+v", len(got), got)
	}
	for _, s := range got {
		if s.auth != "Bearer newest-admin-token-01" {
			t.Errorf("%s %s: Authorization %q", s.method, s.path, s.auth)
		}
		if s.method == "POST" && s.ctype != "application/json" {
			t.Errorf("%s %s: Content-Type %q", s.method, s.path, s.ctype)
		}
	}

	// A read-only token serves the reads when no admin token is set.
	mu.Lock()
	got = nil
	mu.Unlock()
	readEnv := func(k string) string {
		return map[string]string{"SAGAZ_API": srv.URL, "SAGAZ_READ_TOKEN": "reader-token-000001"}[k]
	}
	if err := run(context.Background(), []string{"sagas", "list"}, &bytes.Buffer{}, readEnv); err != nil || len(got) != 1 || got[0].auth != "Bearer reader-token-000001" {
		t.Fatalf("read token: %v %+v", err, got)
	}
}

// TestTriggersCommandReportsRefusal: a service that answers 401 is not
// mistaken for no service (the binary's own table is shown only when
// nothing answers).
func TestTriggersCommandReportsRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"unauthorized","detail":"the API needs Authorization: Bearer <token>"}`))
	}))
	defer srv.Close()
	var out bytes.Buffer
	err := run(context.Background(), []string{"triggers", "--api", srv.URL}, &out, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "unauthorized (401)") || strings.Contains(out.String(), "compiled into this binary") {
		t.Fatalf("err %v, output %q", err, out.String())
	}
}
