package httpapi_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/httpapi"
	"github.com/sagaz-go/sagaz/internal/kafkatest"
	"github.com/sagaz-go/sagaz/internal/sagaztest"
	sagazmember "github.com/sagaz-go/sagaz/member"
)

// slowBody opens a connection that sends a webhook request's headers and
// then its body one byte at a time, until stop is closed; it returns the
// status the server answered with (0 if none).
func slowBody(t *testing.T, addr, path string, started chan<- struct{}, stop <-chan struct{}) int {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		started <- struct{}{}
		return 0
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", path)
	started <- struct{}{}
	done := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case code := <-done:
			return code
		case <-stop:
			return 0
		case <-tick.C:
			_, _ = conn.Write([]byte(" "))
		}
	}
}

// A flood of slow-body webhook calls (more than there are webhook slots)
// takes no slot: a webhook call and an admin's fired event sent meanwhile
// are answered 202 at once, and the slow clients are cut off after the
// body read timeout (408).
func TestSlowBodiesStarveNothing(t *testing.T) {
	seeds := kafkatest.NewCluster(t).ListenAddrs()
	m := sagaztest.StartWith(t, seeds, "limits", "", testRegistry(), func(c *sagazmember.Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.API = &httpapi.API{MaxConcurrentWebhooks: 4, BodyReadTimeout: 2 * time.Second}
	})
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	addr := m.HTTP.Addr()
	stop := make(chan struct{})
	defer close(stop)
	codes := make(chan int, 20)
	started := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); codes <- slowBody(t, addr, "/webhooks/payments", started, stop) }()
	}
	for range 10 {
		<-started // every slow client has sent its headers and is trickling its body
	}
	post := func(path, body string) int {
		start := time.Now()
		resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if d := time.Since(start); d > time.Second {
			t.Errorf("POST %s took %s behind the slow clients", path, d)
		}
		return resp.StatusCode
	}
	if code := post("/webhooks/payments", `{"payment_id":"p-1","status":"succeeded"}`); code != http.StatusAccepted {
		t.Fatalf("webhook during the flood: %d", code)
	}
	if code := post("/api/fire", `{"event_type":"user.invited","user":"u"}`); code != http.StatusAccepted {
		t.Fatalf("fire during the flood: %d", code)
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusRequestTimeout {
			t.Errorf("a slow client got %d, want 408", code)
		}
	}
}

// An idempotency key over engine.MaxKeyBytes, in the body or in the
// Idempotency-Key header, is refused with 400 before anything is produced.
func TestOverlongKeysAreRefused(t *testing.T) {
	seeds := kafkatest.NewCluster(t).ListenAddrs()
	m := sagaztest.StartWith(t, seeds, "limits", "", testRegistry(), func(c *sagazmember.Config) {
		c.HTTPAddr = "127.0.0.1:0"
		c.API = &httpapi.API{}
	})
	kafkatest.WaitFor(t, 30*time.Second, "the member to be ready", func() bool { return m.Ready() == nil })
	post := func(path, body, idem string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+m.HTTP.Addr()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if idem != "" {
			req.Header.Set("Idempotency-Key", idem)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	long := strings.Repeat("k", engine.MaxKeyBytes+1)
	if code, body := post("/webhooks/payments", `{"payment_id":"`+long+`","status":"succeeded"}`, ""); code != 400 || !strings.Contains(body, "too long") {
		t.Fatalf("a body key over the limit: %d %s", code, body)
	}
	if code, body := post("/api/fire", `{"event_type":"user.invited"}`, long); code != 400 || !strings.Contains(body, "too long") {
		t.Fatalf("an Idempotency-Key header over the limit: %d %s", code, body)
	}
	if code, _ := post("/webhooks/payments", `{"payment_id":"`+long[1:]+`","status":"succeeded"}`, ""); code != 202 {
		t.Fatalf("a key at the limit: %d", code)
	}
}
