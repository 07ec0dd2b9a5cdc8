package declarative

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sagaz-go/sagaz/engine"
)

// TestDialTimeCheckCatchesResolvedAddress: the address is checked when it
// is dialed, after DNS, not only in the URL's text. A name that passes
// every text check but resolves to a refused address (DNS rebinding) is
// stopped. The test treats loopback as refused (it cannot make a name
// resolve to 169.254.169.254), so "localhost" plays the rebinding name.
func TestDialTimeCheckCatchesResolvedAddress(t *testing.T) {
	var hit atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit.Store(true) }))
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)

	pol, errs := newHostPolicy(nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	c := &httpCall{method: "GET", url: constT{url}, policy: pol, maxResponse: 1 << 10, client: newClient(pol, nil, false)}
	run := &engine.Run{ID: "x", Saga: "s", Step: "a"}
	if err := c.do(context.Background(), run, "k"); err != nil {
		t.Fatalf("before: %v", err)
	}

	old := refusedByDefault
	refusedByDefault = append(append([]netip.Prefix(nil), old...), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
	defer func() { refusedByDefault = old }()
	if err := pol.checkHost("localhost"); err != nil {
		t.Fatalf("the name passes the text check: %v", err)
	}
	hit.Store(false)
	c.client = newClient(pol, nil, false) // no pooled connection
	err := c.do(context.Background(), run, "k")
	if !errors.Is(err, ErrDestinationRefused) || !engine.IsPermanent(err) || hit.Load() {
		t.Fatalf("want the resolved address refused at dial time, got %v (request reached the server: %v)", err, hit.Load())
	}

	// listed by address, it is allowed again
	pol2, _ := newHostPolicy([]string{"127.0.0.1", "::1"})
	c.policy, c.client = pol2, newClient(pol2, nil, false)
	c.url = constT{srv.URL}
	if err := c.do(context.Background(), run, "k"); err != nil {
		t.Fatalf("listed address: %v", err)
	}
}
