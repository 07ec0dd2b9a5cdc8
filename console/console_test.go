package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sagaz-go/sagaz/console"
)

func TestHandlerServesEmbeddedFiles(t *testing.T) {
	h := console.Handler()
	get := func(path string, hdr ...string) *http.Response {
		req := httptest.NewRequest("GET", path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	for path, want := range map[string]string{"/ui/": "text/html", "/ui/app.js": "javascript", "/ui/style.css": "text/css"} {
		resp := get(path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), want) || len(body) == 0 {
			t.Fatalf("%s: %d %q (%d bytes)", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s: security headers %v", path, resp.Header)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Fatalf("%s: no ETag", path)
		}
		if again := get(path, "If-None-Match", etag); again.StatusCode != http.StatusNotModified {
			t.Fatalf("%s with its ETag: %d, want 304", path, again.StatusCode)
		}
	}
	// Nothing comes from elsewhere: no absolute URLs in the page or script.
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		body, _ := io.ReadAll(get(path).Body)
		body = []byte(strings.ReplaceAll(string(body), `"http://www.w3.org/2000/svg"`, "")) // a namespace name, not a download
		for _, bad := range []string{"http://", "https://cdn", "//unpkg", "//cdn"} {
			if strings.Contains(string(body), bad) {
				t.Fatalf("%s refers to %q: the console must not load anything from elsewhere", path, bad)
			}
		}
	}
	if resp := get("/ui/nope.js"); resp.StatusCode != 404 {
		t.Fatalf("missing file: %d", resp.StatusCode)
	}
}
