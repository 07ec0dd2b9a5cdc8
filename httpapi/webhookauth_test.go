package httpapi_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sagaz-go/sagaz/httpapi"
)

// The signers below follow each provider's documentation, written apart
// from the verifiers under test.

// Standard Webhooks 1.0: the key is the base64 after "whsec_"; the signed
// content is "<id>.<timestamp>.<body>"; the header holds "v1,<base64>".
func standardSign(secret, id string, ts int64, body string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func standardHeaders(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	return h
}

// GitHub: X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>.
func githubSign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Stripe: Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(endpoint secret as
// is, "<ts>.<body>")>.
func stripeV1(secret string, ts int64, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ts, body)
	return hex.EncodeToString(m.Sum(nil))
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// TestVerifierConformance runs every scheme against the published vectors
// (Standard Webhooks' reference libraries, GitHub's documentation), vectors
// signed as the documentation says, and what must fail: another secret, a
// changed byte, a missing header, a stale or future timestamp.
func TestVerifierConformance(t *testing.T) {
	const (
		swSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the Standard Webhooks reference tests' secret
		swID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		swBody   = `{"test": 2432232314}`
		swTS     = int64(1614265330)
		swSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" // published with them
		newSW    = "whsec_" + "bmV3LXN0YW5kYXJkLXdlYmhvb2tzLWtleQ==" // "new-standard-webhooks-key"
		ghSecret = "It's a Secret to Everybody"                      // GitHub's documented test values
		ghBody   = "Hello, World!"
		ghSig    = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
		stSecret = "whsec_stripe_endpoint_secret"
		stBody   = `{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded"}`
	)
	swAt := time.Unix(swTS, 0)
	stTS := int64(1700000000)
	stAt := time.Unix(stTS, 0)
	std := httpapi.WebhookAuth{Secrets: []string{swSecret}} // scheme implied by whsec_
	stdRotating := httpapi.WebhookAuth{Secrets: []string{newSW, swSecret}}
	gh := httpapi.WebhookAuth{Scheme: httpapi.SchemeGitHub, Secrets: []string{ghSecret}}
	st := httpapi.WebhookAuth{Scheme: httpapi.SchemeStripe, Secrets: []string{stSecret}}
	stB64 := httpapi.WebhookAuth{Scheme: httpapi.SchemeStripe, Secrets: []string{"whsec_c3RyaXBl"}} // base64 of "stripe"
	hm := httpapi.WebhookAuth{Secrets: []string{"plain-secret"}}                                    // scheme implied: hmac-sha256
	stripeHeader := func(parts ...string) http.Header { return hdr("Stripe-Signature", strings.Join(parts, ",")) }
	v1 := stripeV1(stSecret, stTS, stBody)
	noID := `{"object":"event"}`

	cases := []struct {
		name     string
		auth     httpapi.WebhookAuth
		h        http.Header
		body     string
		now      time.Time
		delivery string // wanted delivery id ("" and no error: none)
		err      error  // wanted error
	}{
		// Standard Webhooks.
		{"standard: published vector", std, standardHeaders(swID, swTS, swSig), swBody, swAt, swID, nil},
		{"standard: signed per the spec", std, standardHeaders("msg_1", swTS, standardSign(swSecret, "msg_1", swTS, "{}")), "{}", swAt, "msg_1", nil},
		{"standard: one good signature among several", std, standardHeaders(swID, swTS, "v1,Zm9v v1a,bm90LWNoZWNrZWQ= "+swSig+" v2,eA=="), swBody, swAt, swID, nil},
		{"standard: rotation, the old secret still verifies", stdRotating, standardHeaders(swID, swTS, swSig), swBody, swAt, swID, nil},
		{"standard: rotation, the new secret verifies", stdRotating, standardHeaders("m", swTS, standardSign(newSW, "m", swTS, "{}")), "{}", swAt, "m", nil},
		{"standard: within the tolerance (4m late)", std, standardHeaders(swID, swTS, swSig), swBody, swAt.Add(4 * time.Minute), swID, nil},
		{"standard: another secret", std, standardHeaders("m", swTS, standardSign(newSW, "m", swTS, "{}")), "{}", swAt, "", httpapi.ErrBadSignature},
		{"standard: a changed body", std, standardHeaders(swID, swTS, swSig), `{"test": 2432232315}`, swAt, "", httpapi.ErrBadSignature},
		{"standard: a changed id", std, standardHeaders("msg_other", swTS, swSig), swBody, swAt, "", httpapi.ErrBadSignature},
		{"standard: a changed timestamp", std, standardHeaders(swID, swTS+1, swSig), swBody, swAt, "", httpapi.ErrBadSignature},
		{"standard: signature without v1", std, standardHeaders(swID, swTS, strings.TrimPrefix(swSig, "v1,")), swBody, swAt, "", httpapi.ErrBadSignature},
		{"standard: no webhook-id", std, hdr("webhook-timestamp", strconv.FormatInt(swTS, 10), "webhook-signature", swSig), swBody, swAt, "", httpapi.ErrBadSignature},
		{"standard: no signature", std, hdr("webhook-id", swID, "webhook-timestamp", strconv.FormatInt(swTS, 10)), swBody, swAt, "", httpapi.ErrBadSignature},
		{"standard: 6 minutes old", std, standardHeaders(swID, swTS, swSig), swBody, swAt.Add(6 * time.Minute), "", httpapi.ErrStaleTimestamp},
		{"standard: 6 minutes ahead", std, standardHeaders(swID, swTS, swSig), swBody, swAt.Add(-6 * time.Minute), "", httpapi.ErrStaleTimestamp},
		{"standard: a tighter tolerance", httpapi.WebhookAuth{Secrets: []string{swSecret}, Tolerance: time.Minute}, standardHeaders(swID, swTS, swSig), swBody, swAt.Add(2 * time.Minute), "", httpapi.ErrStaleTimestamp},
		{"standard: timestamp not in seconds", std, hdr("webhook-id", "m", "webhook-timestamp", "2023-01-01T00:00:00Z", "webhook-signature",
			"v1,"+base64.StdEncoding.EncodeToString(mustMAC(swSecret, "m.2023-01-01T00:00:00Z.{}"))), "{}", swAt, "", httpapi.ErrBadSignature},

		// GitHub.
		{"github: documented test values", gh, hdr("X-Hub-Signature-256", ghSig, "X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"), ghBody, time.Now(), "72d3162e-cc78-11e3-81ab-4c9367dc0958", nil},
		{"github: signed per the docs, no time limit", gh, hdr("X-Hub-Signature-256", githubSign(ghSecret, "{}"), "X-GitHub-Delivery", "d"), "{}", time.Now().Add(1000 * time.Hour), "d", nil},
		{"github: another secret", gh, hdr("X-Hub-Signature-256", githubSign("other", ghBody), "X-GitHub-Delivery", "d"), ghBody, time.Now(), "", httpapi.ErrBadSignature},
		{"github: a changed body", gh, hdr("X-Hub-Signature-256", ghSig, "X-GitHub-Delivery", "d"), "Hello, World?", time.Now(), "", httpapi.ErrBadSignature},
		{"github: the old SHA-1 header only", gh, hdr("X-Hub-Signature", "sha1=0000", "X-GitHub-Delivery", "d"), ghBody, time.Now(), "", httpapi.ErrBadSignature},
		{"github: no delivery id", gh, hdr("X-Hub-Signature-256", ghSig), ghBody, time.Now(), "", httpapi.ErrBadSignature},

		// Stripe.
		{"stripe: signed per the docs; the event id is the delivery", st, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+v1), stBody, stAt, "evt_1NG8Du2eZvKYlo2CUI79vXWy", nil},
		{"stripe: several v1 and a v0", st, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+strings.Repeat("0", 64), "v1="+v1, "v0="+strings.Repeat("1", 64)), stBody, stAt, "evt_1NG8Du2eZvKYlo2CUI79vXWy", nil},
		{"stripe: the secret is the key as it is", stB64, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+stripeV1("whsec_c3RyaXBl", stTS, stBody)), stBody, stAt, "evt_1NG8Du2eZvKYlo2CUI79vXWy", nil},
		{"stripe: not base64-decoded like Standard Webhooks", stB64, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+stripeV1("stripe", stTS, stBody)), stBody, stAt, "", httpapi.ErrBadSignature},
		{"stripe: another secret", st, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+stripeV1("whsec_other", stTS, stBody)), stBody, stAt, "", httpapi.ErrBadSignature},
		{"stripe: a changed timestamp", st, stripeHeader("t="+strconv.FormatInt(stTS+1, 10), "v1="+v1), stBody, stAt, "", httpapi.ErrBadSignature},
		{"stripe: no timestamp", st, stripeHeader("v1=" + v1), stBody, stAt, "", httpapi.ErrBadSignature},
		{"stripe: 10 minutes old", st, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+v1), stBody, stAt.Add(10 * time.Minute), "", httpapi.ErrStaleTimestamp},
		{"stripe: a body without id", st, stripeHeader("t="+strconv.FormatInt(stTS, 10), "v1="+stripeV1(stSecret, stTS, noID)), noID, stAt, stripeFallback(stTS, noID), nil},

		// Sagaz's original body HMAC (no delivery id: replayable).
		{"hmac-sha256: signed", hm, hdr("X-Sagaz-Signature", githubSign("plain-secret", "{}")), "{}", time.Now(), "", nil},
		{"hmac-sha256: rotation", httpapi.WebhookAuth{Secrets: []string{"new-secret", "plain-secret"}}, hdr("X-Sagaz-Signature", githubSign("plain-secret", "{}")), "{}", time.Now(), "", nil},
		{"hmac-sha256: another secret", hm, hdr("X-Sagaz-Signature", githubSign("other", "{}")), "{}", time.Now(), "", httpapi.ErrBadSignature},
		{"hmac-sha256: no prefix", hm, hdr("X-Sagaz-Signature", strings.TrimPrefix(githubSign("plain-secret", "{}"), "sha256=")), "{}", time.Now(), "", httpapi.ErrBadSignature},
		{"hmac-sha256: not hex", hm, hdr("X-Sagaz-Signature", "sha256=zz"), "{}", time.Now(), "", httpapi.ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tc.auth.Verifier()
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.Verify(tc.h, []byte(tc.body), tc.now)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Verify = %q, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.delivery {
				t.Fatalf("Verify = %q, %v; want %q", got, err, tc.delivery)
			}
		})
	}
}

func mustMAC(secret, content string) []byte {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(content))
	return m.Sum(nil)
}

func stripeFallback(ts int64, body string) string {
	sum := sha256.Sum256([]byte(strconv.FormatInt(ts, 10) + "." + body))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

func TestWebhookAuthConfig(t *testing.T) {
	for _, tc := range []struct {
		auth httpapi.WebhookAuth
		want httpapi.Scheme
		err  string
	}{
		{httpapi.WebhookAuth{Secrets: []string{"whsec_c2VjcmV0"}}, httpapi.SchemeStandard, ""},
		{httpapi.WebhookAuth{Secrets: []string{"plain"}}, httpapi.SchemeHMACSHA256, ""},
		{httpapi.WebhookAuth{Scheme: "GitHub", Secrets: []string{"whsec_c2VjcmV0"}}, "GitHub", ""},
		{httpapi.WebhookAuth{}, "", "no secret"},
		{httpapi.WebhookAuth{Secrets: []string{"first-secret", " "}}, "", "secret 2 of 2 is blank"},
		{httpapi.WebhookAuth{Scheme: httpapi.SchemeStandard, Secrets: []string{"plain-not-whsec"}}, "", `secret 1 of 1: a Standard Webhooks secret is "whsec_"`},
		{httpapi.WebhookAuth{Secrets: []string{"whsec_c2VjcmV0", "whsec_!!!"}}, "", "secret 2 of 2"},
		{httpapi.WebhookAuth{Scheme: "md5", Secrets: []string{"md5-secret"}}, "", `signature scheme "md5"`},
		{httpapi.WebhookAuth{Secrets: []string{"some-secret"}, Tolerance: -time.Second}, "", "tolerance -1s"},
	} {
		_, err := tc.auth.Verifier()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: %v", tc.auth, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, httpapi.ErrInvalidConfig)):
			t.Errorf("%v: error %v, want one mentioning %q", tc.auth, err, tc.err)
		case tc.err == "" && tc.auth.Resolved() != tc.want:
			t.Errorf("%v: scheme %s, want %s", tc.auth, tc.auth.Resolved(), tc.want)
		}
		for _, s := range tc.auth.Secrets {
			if err != nil && strings.TrimSpace(s) != "" && strings.Contains(err.Error(), s) {
				t.Errorf("the error shows a secret: %v", err)
			}
		}
	}
	// Secrets never print.
	a := httpapi.WebhookAuth{Secrets: []string{"whsec_c3VwZXItc2VjcmV0"}}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "webhook", a)
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a), logged.String()} {
		if strings.Contains(s, "c3VwZXItc2VjcmV0") || !strings.Contains(s, "standard (1 secrets") {
			t.Errorf("printed as %q", s)
		}
	}
}
