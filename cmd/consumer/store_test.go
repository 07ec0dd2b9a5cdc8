package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/storage"
	"github.com/sagaz-go/sagaz/storage/storagetest"
)

// sagaz sagas retry ID --map OLD=NEW sends the mapping as the retry's
// body; --map is refused elsewhere and when malformed.
func TestRetryWithMapping(t *testing.T) {
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body = r.Method + " " + r.URL.Path + " " + string(b)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"x","status":"accepted"}`)
	}))
	defer srv.Close()
	out, code := sagaz(t, noEnv, "sagas", "retry", "orders:0:1:order", "--map", "charge=capture", "--map", "audit=", "--api", srv.URL)
	if code != exitOK || !strings.HasPrefix(body, "POST /api/sagas/orders:0:1:order/retry ") {
		t.Fatalf("exit %d %q, request %q", code, out, body)
	}
	var req struct{ Steps map[string]string }
	if err := json.Unmarshal([]byte(body[strings.Index(body, "{"):]), &req); err != nil || req.Steps["charge"] != "capture" || req.Steps["audit"] != "" || len(req.Steps) != 2 {
		t.Fatalf("body %q: %+v %v", body, req, err)
	}
	body = ""
	if _, code := sagaz(t, noEnv, "sagas", "retry", "orders:0:1:order", "--api", srv.URL); code != exitOK || body != "POST /api/sagas/orders:0:1:order/retry " {
		t.Fatalf("retry without a mapping: exit %d, request %q (want no body)", code, body)
	}
	for _, args := range [][]string{
		{"sagas", "cancel", "orders:0:1:order", "--map", "a=b"},
		{"sagas", "retry", "orders:0:1:order", "--map", "nonsense"},
		{"sagas", "retry", "orders:0:1:order", "--map", "a=b", "--map", "a=c"},
		{"store"}, {"store", "frobnicate"}, {"store", "check", "-o", "yaml"},
	} {
		if out, code := sagaz(t, noEnv, append(args, "--api", srv.URL)...); code != exitUsage {
			t.Errorf("sagaz %s: exit %d, want %d: %s", strings.Join(args, " "), code, exitUsage, out)
		}
	}
}

// sagaz store check reports schema, counts and problems (exit 1 with
// any); sagaz store migrate says there is nothing to do at this schema and
// refuses a newer one, naming the guide.
func TestStoreCommands(t *testing.T) {
	dir := t.TempDir()
	st, err := storage.OpenBolt(filepath.Join(dir, "sagaz.db"), storage.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b storage.StartBatch
	for i := range 3 {
		b.Sagas = append(b.Sagas, storagetest.NewSaga("order", "orders", 0, int64(i), ""))
	}
	if _, err := st.Start(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	_ = st.Close()

	out, code := sagaz(t, noEnv, "store", "check", "--data-dir", dir)
	if code != exitOK || !strings.Contains(out, "Schema      2") || !strings.Contains(out, "3 (pending 3)") || !strings.Contains(out, "Check       ok") {
		t.Fatalf("check: exit %d\n%s", code, out)
	}
	out, code = sagaz(t, noEnv, "store", "check", "--data-dir", dir, "-o", "json")
	var rep storage.Report
	if err := json.Unmarshal([]byte(out), &rep); code != exitOK || err != nil || rep.Sagas != 3 || rep.Schema != 2 {
		t.Fatalf("check -o json: exit %d %v\n%s", code, err, out)
	}
	out, code = sagaz(t, func(k string) string {
		if k == "SAGAZ_DATA_DIR" {
			return dir
		}
		return ""
	}, "store", "migrate")
	if code != exitOK || !strings.Contains(out, "nothing to do") {
		t.Fatalf("migrate: exit %d\n%s", code, out)
	}

	// A newer schema: check says so (exit 1), migrate refuses naming the guide.
	db, err := bolt.Open(filepath.Join(dir, "sagaz.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("3")) })
	_ = db.Close()
	out, code = sagaz(t, noEnv, "store", "check", "--data-dir", dir)
	if code != exitError || !strings.Contains(out, "newer than this release reads") {
		t.Fatalf("check of schema 3: exit %d\n%s", code, out)
	}
	out, code = sagaz(t, noEnv, "store", "migrate", "--data-dir", dir)
	if code != exitError || !strings.Contains(out, "store schema 3") || !strings.Contains(out, "docs/upgrading.md") {
		t.Fatalf("migrate of schema 3: exit %d\n%s", code, out)
	}
	if _, code := sagaz(t, noEnv, "store", "check", "--data-dir", t.TempDir()); code != exitError {
		t.Fatalf("check of a missing store: exit %d", code)
	}
}

// A parked saga, shown and listed: why it waits and how to move it on.
func TestParkedSagaInTheCLI(t *testing.T) {
	since := time.Date(2026, 12, 1, 10, 4, 12, 0, time.UTC)
	v := httpapi.SagaView{ID: "orders.created:3:1207:order", Saga: "order", Trigger: "kafka:orders.created", Status: storage.StatusParked,
		Definition: "sha256:6f1e00000000aaaa", CreatedAt: since, UpdatedAt: since,
		Parked: &storage.Park{Reason: `saga "order" started with definition sha256:6f1e00000000aaaa`, Since: since, From: storage.StatusExecuting},
		Steps:  []storage.Step{{Name: "reserve", Status: storage.StepCompleted, Attempts: 1}, {Name: "charge", Status: storage.StepPending}}, OwnedHere: true}
	var out strings.Builder
	if err := showSaga(&out, &v); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Status   parked", "definition sha256:6f1e00000000aaaa", "(was executing): saga \"order\" started with definition",
		"sagaz sagas retry orders.created:3:1207:order [--map OLD=NEW]", "sagaz sagas cancel orders.created:3:1207:order"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := sagaTable(&out, &sagaPage{Sagas: []httpapi.SagaView{v}}); err != nil || !strings.Contains(out.String(), "parked: saga \"order\" started with") {
		t.Fatalf("list: %v\n%s", err, out.String())
	}
}
