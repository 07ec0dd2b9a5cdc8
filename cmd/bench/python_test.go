package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePyResult(t *testing.T) {
	good := "some warning\n" + `{"sagas": 2000, "seconds": 7.5, "rate": 266.7, "storage": "sqlite", "version": "1.5.0"}` + "\n\n"
	r, err := parsePyResult([]byte(good), "sqlite")
	if err != nil {
		t.Fatal(err)
	}
	if r != (pyResult{Sagas: 2000, Seconds: 7.5, Rate: 266.7, Storage: "sqlite", Version: "1.5.0"}) {
		t.Errorf("parsed %+v", r)
	}
	for name, c := range map[string]struct{ out, storage, want string }{
		"empty":         {"", "sqlite", "no output"},
		"not json":      {"Traceback (most recent call last):\nValueError: x", "sqlite", "not the expected JSON"},
		"unknown field": {`{"sagas": 1, "seconds": 1, "rate": 1, "storage": "sqlite", "version": "1.5.0", "x": 1}`, "sqlite", "unknown field"},
		"no sagas":      {`{"sagas": 0, "seconds": 1, "rate": 1, "storage": "sqlite", "version": "1.5.0"}`, "sqlite", "sagas must be > 0"},
		"no seconds":    {`{"sagas": 1, "rate": 1, "storage": "sqlite", "version": "1.5.0"}`, "sqlite", "seconds must be > 0"},
		"other storage": {`{"sagas": 1, "seconds": 1, "rate": 1, "storage": "memory", "version": "1.5.0"}`, "sqlite", `expected "sqlite"`},
		"other version": {`{"sagas": 1, "seconds": 1, "rate": 1, "storage": "sqlite", "version": "1.4.0"}`, "sqlite", `expected "1.5.0"`},
	} {
		if _, err := parsePyResult([]byte(c.out), c.storage); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, c.want)
		}
	}
}

func TestSagazRatio(t *testing.T) {
	r := sagazRatio(30_000, 250)
	if r.Value != 120 || r.Met == nil || !*r.Met || r.Text != "120.0× (30,000 ÷ 250.00 sagas/s)" {
		t.Errorf("30,000 ÷ 250: %+v", r)
	}
	if r := sagazRatio(12_000, 250); r.Value != 48 || r.Met == nil || *r.Met {
		t.Errorf("12,000 ÷ 250 must miss the target: %+v", r)
	}
	if r := sagazRatio(0, 250); r.Met != nil || !strings.Contains(r.Text, "completion not measured") {
		t.Errorf("without a completion figure: %+v", r)
	}
}

func quietLog(string, ...any) {}

// TestPythonSkippedWithoutPython: no python3 on PATH gives one row saying
// so, and nothing else is attempted.
func TestPythonSkippedWithoutPython(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	c := &pyConfig{Python: "python3", Venv: filepath.Join(t.TempDir(), "venv"), Events: 10, MaxTime: time.Second}
	rows := pythonSagaz(context.Background(), c, 30_000, quietLog)
	if len(rows) != 1 || rows[0].Figure != pyFigure("sqlite") || rows[0].Text != "skipped: python3 not found" || rows[0].Met != nil {
		t.Fatalf("rows = %+v", rows)
	}
	if _, err := os.Stat(c.Venv); !os.IsNotExist(err) {
		t.Errorf("a virtualenv was created: %v", err)
	}
}

// fakePython writes an executable shell script standing in for python3
// (run by /bin/sh, which the harness's Linux-only phases assume anyway).
func fakePython(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\nPATH=/usr/bin:/bin\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestPythonSkippedWhenPipFails: a stand-in python3 whose virtualenv's pip
// fails as offline pip does; the phase gives a row with pip's error.
func TestPythonSkippedWhenPipFails(t *testing.T) {
	dir := t.TempDir()
	venv := filepath.Join(dir, "venv")
	venvPython := `case "$1" in
-c) exit 1 ;;
-m) echo "WARNING: Retrying after connection broken" >&2
    echo "ERROR: Could not find a version that satisfies the requirement sagaz==1.5.0 (from versions: none)" >&2
    echo "ERROR: No matching distribution found for sagaz==1.5.0" >&2; exit 1 ;;
esac
exit 2
`
	fakePython(t, filepath.Join(dir, "bin", "python3"), `case "$1" in
-c) exit 0 ;;
-m) mkdir -p "$3/bin" && cat > "$3/bin/python" <<'EOF'
#!/bin/sh
`+venvPython+`EOF
chmod +x "$3/bin/python"; exit 0 ;;
esac
exit 2
`)
	script := filepath.Join(dir, "bench_sagaz.py")
	if err := os.WriteFile(script, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(dir, "bin"))
	c := &pyConfig{Python: "python3", Venv: venv, Script: script, Events: 10, MaxTime: time.Second}
	rows := pythonSagaz(context.Background(), c, 30_000, quietLog)
	want := "skipped: pip install sagaz==1.5.0 " + pyAiosqlite + " failed: ERROR: Could not find a version that satisfies the requirement sagaz==1.5.0 (from versions: none)"
	if len(rows) != 1 || rows[0].Text != want {
		t.Fatalf("rows = %+v\nwant one row with text %q", rows, want)
	}
}

// TestPythonRowsFromScript: with a virtualenv already set up (the cached
// path), the phase runs the script per storage and builds the rows and the
// ratio from its JSON lines.
func TestPythonRowsFromScript(t *testing.T) {
	dir := t.TempDir()
	venv := filepath.Join(dir, "venv")
	fakePython(t, filepath.Join(dir, "bin", "python3"), "exit 1\n") // must not be needed: the venv is there
	fakePython(t, filepath.Join(venv, "bin", "python"), `case "$1" in
-c) exit 0 ;;
esac
case "$3" in
sqlite) echo '{"sagas": 2000, "seconds": 8, "rate": 250, "storage": "sqlite", "version": "1.5.0"}' ;;
memory) echo "boom" >&2; exit 1 ;;
esac
`)
	script := filepath.Join(dir, "bench_sagaz.py")
	if err := os.WriteFile(script, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", filepath.Join(dir, "bin"))
	c := &pyConfig{Python: "python3", Venv: venv, Script: script, Events: 10, MaxTime: time.Second}
	rows := pythonSagaz(context.Background(), c, 30_000, quietLog)
	if len(rows) != 3 {
		t.Fatalf("rows = %+v", rows)
	}
	if r := rows[0]; r.Figure != pyFigure("sqlite") || r.Value != 250 || r.Unit != "sagas/s" {
		t.Errorf("sqlite row %+v", r)
	}
	if r := rows[1]; r.Figure != pyFigure("memory") || r.Text != "failed: boom" {
		t.Errorf("memory row %+v", r)
	}
	if r := rows[2]; r.Figure != pyRatioFigure || r.Value != 120 || r.Met == nil || !*r.Met {
		t.Errorf("ratio row %+v", r)
	}
}
