package sagaztest

import (
	"bufio"
	"encoding/base64"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// BuildBinary builds the sagaz command (the package in dir) and returns
// the binary's path.
func BuildBinary(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sagaz")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Proc is a running sagaz process.
type Proc struct {
	Cmd     *exec.Cmd
	HTTP    string // its --http-addr
	Log     string // its combined output
	done    chan struct{}
	exitErr error
}

// DemoWebhookKey is the HMAC key of the demo `payments` webhook in the
// binaries StartBinary runs (unless the environment sets
// SAGAZ_WEBHOOK_SECRET_PAYMENTS): the webhook must be signed against a real
// cluster. Its Standard Webhooks secret is "whsec_" + base64(DemoWebhookKey).
var DemoWebhookKey = []byte("sagaz test webhook key")

// StartBinary runs `bin run --http-addr <free> args...` with output to a
// log file in logDir, with the demo webhook's secret (DemoWebhookKey) in
// its environment. The process is killed at the end of the test, and the
// tail of its log printed if the test failed (LogTail).
func StartBinary(t testing.TB, bin, logDir string, args ...string) *Proc {
	t.Helper()
	f, err := os.CreateTemp(logDir, "sagaz-*.log")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{HTTP: FreeAddr(t), Log: f.Name(), done: make(chan struct{})}
	p.Cmd = exec.Command(bin, append([]string{"run", "--http-addr", p.HTTP}, args...)...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	if os.Getenv("SAGAZ_WEBHOOK_SECRET_PAYMENTS") == "" {
		p.Cmd.Env = append(os.Environ(), "SAGAZ_WEBHOOK_SECRET_PAYMENTS=whsec_"+base64.StdEncoding.EncodeToString(DemoWebhookKey))
	}
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.Cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.Cmd.Process.Kill()
		_ = p.Wait()
		if t.Failed() {
			LogTail(t, p.Log, 60)
		}
	})
	return p
}

// LogTail logs the last n lines of the log file at path, leaving out the
// HTTP request lines (a test polling a member's API fills its log with
// them; what the member did is in the others), and how many it left out.
func LogTail(t testing.TB, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("--- %s: %v ---", path, err)
		return
	}
	var kept []string
	skipped := 0
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(line, `msg="http request"`) || strings.Contains(line, `"msg":"http request"`) {
			skipped++
			continue
		}
		kept = append(kept, line)
	}
	t.Logf("--- tail of %s (%d http request lines left out) ---\n%s", path, skipped, strings.Join(kept[max(0, len(kept)-n):], "\n"))
}

// Wait returns the exit error once the process has exited.
func (p *Proc) Wait() error {
	<-p.done
	return p.exitErr
}

// Metric reads one sample (name with its labels, as exposed) from the
// process's /metrics; -1 when it cannot.
func (p *Proc) Metric(name string) float64 { return Metric(p.HTTP, name) }

// Metric reads one sample from http://addr/metrics; -1 when it cannot.
func Metric(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}
