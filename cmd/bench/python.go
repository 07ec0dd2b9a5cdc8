package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The Python Sagaz release the "× Sagaz" ratio is measured against, and the
// SQLite driver its SQLite storage needs (not a dependency of the package).
const (
	pySagazVersion = "1.5.0"
	pyAiosqlite    = "aiosqlite==0.22.1"
	pyScript       = "scripts/bench_sagaz.py"
	pyVenvDir      = ".cache/sagaz-py"
)

// pyConfig is how the python phase finds and runs Python Sagaz.
type pyConfig struct {
	// Python is the interpreter that creates the virtualenv (a name looked
	// up on PATH, or a path).
	Python string
	// Venv is the virtualenv holding sagaz; empty: .cache/sagaz-py in the
	// repository that holds the script.
	Venv string
	// Script is the measuring script; empty: scripts/bench_sagaz.py in the
	// repository around the working directory (or the binary).
	Script string
	// Events and MaxTime bound each Python run: whichever comes first.
	Events  int
	MaxTime time.Duration
}

// pythonFlags registers the python phase's flags on fs.
func pythonFlags(fs *flag.FlagSet) *pyConfig {
	c := &pyConfig{}
	fs.StringVar(&c.Python, "python", "python3", "Python (≥ 3.11) that creates the Python Sagaz virtualenv: a name on PATH or a path")
	fs.StringVar(&c.Venv, "python-venv", "", "virtualenv for Python Sagaz (default: "+pyVenvDir+" in the repository)")
	fs.StringVar(&c.Script, "python-script", "", "the Python Sagaz measuring script (default: "+pyScript+" in the repository)")
	fs.IntVar(&c.Events, "python-events", 2000, "events fired at Python Sagaz per storage (bounded by -python-max-time too)")
	fs.DurationVar(&c.MaxTime, "python-max-time", 20*time.Second, "stop firing events at Python Sagaz after this long")
	return c
}

// pyResult is the JSON line scripts/bench_sagaz.py prints.
type pyResult struct {
	Sagas   int     `json:"sagas"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	Storage string  `json:"storage"`
	Version string  `json:"version"`
}

// parsePyResult reads the script's result: the last non-empty line of its
// output, a JSON object with every field set.
func parsePyResult(out []byte, storage string) (pyResult, error) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return pyResult{}, errors.New("no output; expected a JSON line {\"sagas\":…,\"seconds\":…,\"rate\":…,\"storage\":…,\"version\":…}")
	}
	var r pyResult
	dec := json.NewDecoder(strings.NewReader(last))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return pyResult{}, fmt.Errorf("result line %q is not the expected JSON object: %w", last, err)
	}
	var bad []string
	if r.Sagas <= 0 {
		bad = append(bad, "sagas must be > 0")
	}
	if r.Seconds <= 0 {
		bad = append(bad, "seconds must be > 0")
	}
	if r.Rate <= 0 {
		bad = append(bad, "rate must be > 0")
	}
	if r.Storage != storage {
		bad = append(bad, fmt.Sprintf("storage is %q, expected %q", r.Storage, storage))
	}
	if r.Version != pySagazVersion {
		bad = append(bad, fmt.Sprintf("version is %q, expected %q", r.Version, pySagazVersion))
	}
	if len(bad) > 0 {
		return pyResult{}, fmt.Errorf("result line %q: %s", last, strings.Join(bad, "; "))
	}
	return r, nil
}

// pyFigure names the Python Sagaz row of one storage.
func pyFigure(storage string) string {
	name := map[string]string{"sqlite": "SQLite", "memory": "in memory"}[storage]
	return "Python Sagaz " + pySagazVersion + " trigger path (3 no-op steps, " + name + ")"
}

const pyRatioFigure = "× Sagaz: Sagaz for Go completion ÷ Python Sagaz (same run)"

// pythonSagaz is the python phase: it sets up Python Sagaz in a cached
// virtualenv, runs its trigger path with SQLite and in-memory storage, and
// returns their rows and the "× Sagaz" row against goRate (the completion
// phase's sagas/s of this run; 0 if it did not run). Anything missing
// (python3, venv, the network for pip) gives a row saying why it was
// skipped: this phase never fails the bench.
func pythonSagaz(ctx context.Context, c *pyConfig, goRate float64, logf func(string, ...any)) []Row {
	venvPython, err := c.setup(ctx, logf)
	if err != nil {
		logf("python: skipped: %v", err)
		return []Row{{Figure: pyFigure("sqlite"), Text: "skipped: " + err.Error(), Target: "—"}}
	}
	var rows []Row
	var sqlite pyResult
	for _, storage := range []string{"sqlite", "memory"} {
		r, err := c.run(ctx, venvPython, storage)
		if err != nil {
			logf("python: %s: %v", storage, err)
			rows = append(rows, Row{Figure: pyFigure(storage), Text: "failed: " + err.Error(), Target: "—"})
			continue
		}
		logf("python: %s: %d sagas in %.2fs: %.1f sagas/s", storage, r.Sagas, r.Seconds, r.Rate)
		rows = append(rows, Row{Figure: pyFigure(storage), Value: r.Rate, Unit: "sagas/s",
			Text: fmt.Sprintf("%s sagas/s (%s sagas in %.1f s)", humanize(r.Rate), thousands(r.Sagas), r.Seconds), Target: "— (reported)"})
		if storage == "sqlite" {
			sqlite = r
		}
	}
	if sqlite.Rate > 0 {
		rows = append(rows, sagazRatio(goRate, sqlite.Rate))
	}
	return rows
}

// sagazRatio is the "× Sagaz" row: Sagaz for Go's completion rate over
// Python Sagaz's SQLite trigger path, both of this run.
func sagazRatio(goRate, pyRate float64) Row {
	if goRate <= 0 {
		return Row{Figure: pyRatioFigure, Text: "— (completion not measured in this run: -only completion,python)", Target: "≥ 100×"}
	}
	x := goRate / pyRate
	return Row{Figure: pyRatioFigure, Value: x, Unit: "×", Target: "≥ 100×", Met: met(x >= 100),
		Text: fmt.Sprintf("%.1f× (%s ÷ %s sagas/s)", x, humanize(goRate), humanize(pyRate))}
}

// setup returns the virtualenv's python with sagaz installed, creating the
// virtualenv and installing into it only when they are not there yet.
func (c *pyConfig) setup(ctx context.Context, logf func(string, ...any)) (string, error) {
	python, err := exec.LookPath(c.Python)
	if err != nil {
		return "", fmt.Errorf("%s not found", c.Python)
	}
	script, err := c.scriptPath()
	if err != nil {
		return "", err
	}
	c.Script = script
	if c.Venv == "" {
		c.Venv = filepath.Join(filepath.Dir(filepath.Dir(script)), pyVenvDir)
	}
	venvPython := filepath.Join(c.Venv, "bin", "python")
	check := `import importlib.metadata as m, aiosqlite, sys; v = m.version("sagaz"); sys.exit(0 if v == "` + pySagazVersion + `" else "sagaz " + v)`
	if _, err := os.Stat(venvPython); err == nil {
		if _, err := command(ctx, time.Minute, venvPython, "-c", check); err == nil {
			return venvPython, nil
		}
	}
	logf("python: setting up Python Sagaz %s in %s", pySagazVersion, c.Venv)
	if _, err := command(ctx, time.Minute, python, "-c", "import sys; sys.exit(0 if sys.version_info >= (3, 11) else '%s is %d.%d; sagaz %s needs ≥ 3.11' % (sys.executable, *sys.version_info[:2], '"+pySagazVersion+"'))"); err != nil {
		return "", err
	}
	if _, err := command(ctx, 2*time.Minute, python, "-m", "venv", c.Venv); err != nil {
		return "", fmt.Errorf("%s -m venv %s failed: %w", c.Python, c.Venv, err)
	}
	pkgs := []string{"sagaz==" + pySagazVersion, pyAiosqlite}
	if _, err := command(ctx, 5*time.Minute, venvPython, append([]string{"-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--retries", "1", "--timeout", "20"}, pkgs...)...); err != nil {
		return "", fmt.Errorf("pip install %s failed: %w", strings.Join(pkgs, " "), err)
	}
	if _, err := command(ctx, time.Minute, venvPython, "-c", check); err != nil {
		return "", fmt.Errorf("sagaz %s not importable after pip install: %w", pySagazVersion, err)
	}
	return venvPython, nil
}

// scriptPath finds the measuring script: -python-script, else
// scripts/bench_sagaz.py in the working directory or a parent, else beside
// the binary's directory (bin/bench → scripts/).
func (c *pyConfig) scriptPath() (string, error) {
	if c.Script != "" {
		if _, err := os.Stat(c.Script); err != nil {
			return "", fmt.Errorf("-python-script: %w", err)
		}
		return filepath.Abs(c.Script)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, pyScript)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("%s not found (run from the repository, or pass -python-script)", pyScript)
}

// run measures one storage.
func (c *pyConfig) run(ctx context.Context, venvPython, storage string) (pyResult, error) {
	out, err := command(ctx, c.MaxTime+90*time.Second, venvPython, c.Script, "--storage", storage,
		"--events", strconv.Itoa(c.Events), "--max-seconds", strconv.FormatFloat(c.MaxTime.Seconds(), 'f', -1, 64))
	if err != nil {
		return pyResult{}, err
	}
	return parsePyResult(out, storage)
}

// command runs name with args (bounded by timeout) and returns its stdout;
// its error carries the most telling line of its output.
func command(ctx context.Context, timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		return nil, fmt.Errorf("timed out after %s", timeout)
	}
	if msg := tellingLine(stderr.String() + "\n" + stdout.String()); msg != "" {
		return nil, errors.New(msg)
	}
	return nil, err
}

// tellingLine picks the line of a tool's output that says what went wrong:
// pip's first "ERROR:" line, else the last non-empty line (a Python
// traceback ends with the exception), cut to 200 characters.
func tellingLine(out string) string {
	var last string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "ERROR:") {
			last = l
			break
		}
		if l != "" {
			last = l
		}
	}
	if len(last) > 200 {
		last = last[:200] + "…"
	}
	return last
}
