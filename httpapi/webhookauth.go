package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scheme is how a webhook's calls are signed.
type Scheme string

// The signature schemes a webhook can use.
const (
	// SchemeStandard is Standard Webhooks 1.0: headers webhook-id,
	// webhook-timestamp (Unix seconds) and webhook-signature (space-separated
	// "v1,<base64 HMAC-SHA256>" entries); the signed content is
	// "<id>.<timestamp>.<body>"; a secret is "whsec_<base64>" and its
	// decoded bytes are the HMAC key. The timestamp must be within the
	// tolerance; webhook-id is the delivery id.
	SchemeStandard Scheme = "standard"
	// SchemeGitHub is GitHub's: X-Hub-Signature-256: sha256=<hex HMAC-SHA256
	// of the body>; X-GitHub-Delivery is the delivery id. GitHub signs no
	// timestamp and not the delivery id.
	SchemeGitHub Scheme = "github"
	// SchemeStripe is Stripe's: Stripe-Signature: t=<Unix seconds>,v1=<hex
	// HMAC-SHA256 of "<t>.<body>">[,v1=...]; the secret (whsec_...) is the
	// HMAC key as it is. t must be within the tolerance; the event's "id"
	// field is the delivery id.
	SchemeStripe Scheme = "stripe"
	// SchemeHMACSHA256 is Sagaz's original scheme: X-Sagaz-Signature:
	// sha256=<hex HMAC-SHA256 of the body>. It signs neither a time nor a
	// delivery id: a captured call can be replayed.
	SchemeHMACSHA256 Scheme = "hmac-sha256"
)

// Schemes lists every scheme.
var Schemes = []Scheme{SchemeStandard, SchemeGitHub, SchemeStripe, SchemeHMACSHA256}

// ParseScheme parses a scheme name (case-insensitive).
func ParseScheme(s string) (Scheme, error) {
	sc, err := parseScheme(s)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return sc, nil
}

func parseScheme(s string) (Scheme, error) {
	for _, sc := range Schemes {
		if strings.EqualFold(s, string(sc)) {
			return sc, nil
		}
	}
	return "", fmt.Errorf("signature scheme %q: want standard, github, stripe or hmac-sha256", s)
}

// DefaultTolerance is how far a signed timestamp may be from the server's
// clock (Standard Webhooks' and Stripe's recommendation).
const DefaultTolerance = 5 * time.Minute

// MaxDeliveryIDBytes bounds a delivery id (it becomes part of a stored
// idempotency key).
const MaxDeliveryIDBytes = 256

// WebhookAuth says how one webhook's calls are verified. Secrets never
// appear in its String or log forms.
type WebhookAuth struct {
	// Scheme; empty means SchemeStandard when the first secret starts
	// with "whsec_", SchemeHMACSHA256 otherwise. (Stripe's secrets start
	// with "whsec_" too: say SchemeStripe outright.)
	Scheme Scheme
	// Secrets: a call signed with any of them is accepted, so a secret can
	// be rotated by adding the new one, switching the sender, then
	// removing the old one.
	Secrets []string
	// Tolerance bounds the signed timestamp's distance from the server's
	// clock, both ways (standard and stripe; default DefaultTolerance).
	Tolerance time.Duration
}

// Resolved is the scheme in effect (Scheme, or the one the secrets imply).
func (a WebhookAuth) Resolved() Scheme {
	if a.Scheme != "" {
		return a.Scheme
	}
	if len(a.Secrets) > 0 && strings.HasPrefix(a.Secrets[0], "whsec_") {
		return SchemeStandard
	}
	return SchemeHMACSHA256
}

// String describes the configuration without its secrets.
func (a WebhookAuth) String() string {
	return fmt.Sprintf("%s (%d secrets, tolerance %s)", a.Resolved(), len(a.Secrets), a.tolerance())
}

// GoString is String: %#v never prints the secrets either.
func (a WebhookAuth) GoString() string { return a.String() }

// LogValue keeps the secrets out of logs.
func (a WebhookAuth) LogValue() slog.Value { return slog.StringValue(a.String()) }

func (a WebhookAuth) tolerance() time.Duration {
	if a.Tolerance == 0 {
		return DefaultTolerance
	}
	return a.Tolerance
}

// Verifier checks the signature of a webhook call.
type Verifier interface {
	// Verify checks a call's headers and raw body at time now. It returns
	// the call's delivery id — the sender's id of the delivery, the same on
	// each retry of it — or "" when the scheme has none. An error (wrapping
	// ErrBadSignature or ErrStaleTimestamp) says what is wrong with the
	// call, never what the secret is.
	Verify(h http.Header, body []byte, now time.Time) (string, error)
}

// Verifier validates the configuration and returns the scheme's verifier.
func (a WebhookAuth) Verifier() (Verifier, error) {
	var errs []error
	if len(a.Secrets) == 0 {
		errs = append(errs, errors.New("no secret"))
	}
	for i, s := range a.Secrets {
		if strings.TrimSpace(s) == "" {
			errs = append(errs, fmt.Errorf("secret %d of %d is blank", i+1, len(a.Secrets)))
		}
	}
	if a.Tolerance < 0 {
		errs = append(errs, fmt.Errorf("tolerance %s: want a positive duration", a.Tolerance))
	}
	if a.Scheme != "" {
		if _, err := parseScheme(string(a.Scheme)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	keys := make([][]byte, len(a.Secrets))
	for i, s := range a.Secrets {
		keys[i] = []byte(s)
	}
	switch sc, _ := parseScheme(string(a.Resolved())); sc {
	case SchemeStandard:
		for i, s := range a.Secrets {
			k, err := standardKey(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("secret %d of %d: %w", i+1, len(a.Secrets), err))
			}
			keys[i] = k
		}
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		return &standardVerifier{keys: keys, tolerance: a.tolerance()}, nil
	case SchemeGitHub:
		return &githubVerifier{keys: keys}, nil
	case SchemeStripe:
		return &stripeVerifier{keys: keys, tolerance: a.tolerance()}, nil
	default:
		return &hmacVerifier{keys: keys}, nil
	}
}

// standardKey decodes a Standard Webhooks secret, whsec_<base64>.
func standardKey(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`a Standard Webhooks secret is "whsec_" followed by base64`)
	}
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(k) == 0 {
		return nil, errors.New(`a Standard Webhooks secret is "whsec_" followed by base64, and its base64 part does not decode`)
	}
	return k, nil
}

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// anyMatch compares every candidate signature with every expected MAC in
// constant time per comparison.
func anyMatch(expected, got [][]byte) bool {
	ok := false
	for _, e := range expected {
		for _, g := range got {
			if hmac.Equal(e, g) {
				ok = true
			}
		}
	}
	return ok
}

// fresh checks a signed Unix timestamp against now and the tolerance.
func fresh(header, ts string, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s %q: want Unix seconds", ErrBadSignature, header, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s is %s away from this server's clock; the tolerance is %s (a replayed call, or a clock that is off)",
			ErrStaleTimestamp, header, d.Abs().Round(time.Second), tolerance)
	}
	return nil
}

type standardVerifier struct {
	keys      [][]byte
	tolerance time.Duration
}

func (v *standardVerifier) Verify(h http.Header, body []byte, now time.Time) (string, error) {
	id, ts, sig := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sig == "" {
		return "", fmt.Errorf("%w: Standard Webhooks calls carry the webhook-id, webhook-timestamp and webhook-signature headers", ErrBadSignature)
	}
	var got [][]byte
	for _, entry := range strings.Fields(sig) {
		version, b64, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue // other versions (v1a: asymmetric) are not ours to check
		}
		if s, err := base64.StdEncoding.DecodeString(b64); err == nil {
			got = append(got, s)
		}
	}
	expected := make([][]byte, len(v.keys))
	for i, k := range v.keys {
		expected[i] = mac(k, []byte(id), []byte("."), []byte(ts), []byte("."), body)
	}
	if !anyMatch(expected, got) {
		return "", fmt.Errorf(`%w: webhook-signature has no "v1,<base64>" entry made with a configured secret over "<webhook-id>.<webhook-timestamp>.<body>"`, ErrBadSignature)
	}
	if err := fresh("webhook-timestamp", ts, now, v.tolerance); err != nil {
		return "", err
	}
	return id, nil
}

type githubVerifier struct{ keys [][]byte }

func (v *githubVerifier) Verify(h http.Header, body []byte, _ time.Time) (string, error) {
	if !hexBodySignature(v.keys, body, h.Get("X-Hub-Signature-256")) {
		return "", fmt.Errorf("%w: X-Hub-Signature-256 must be sha256=<hex HMAC-SHA256 of the raw body> made with a configured secret", ErrBadSignature)
	}
	id := h.Get("X-GitHub-Delivery")
	if id == "" {
		return "", fmt.Errorf("%w: GitHub calls carry X-GitHub-Delivery", ErrBadSignature)
	}
	return id, nil
}

type hmacVerifier struct{ keys [][]byte }

func (v *hmacVerifier) Verify(h http.Header, body []byte, _ time.Time) (string, error) {
	if !hexBodySignature(v.keys, body, h.Get("X-Sagaz-Signature")) {
		return "", fmt.Errorf("%w: X-Sagaz-Signature must be sha256=<hex HMAC-SHA256 of the raw body> made with a configured secret", ErrBadSignature)
	}
	return "", nil
}

// hexBodySignature checks "sha256=<hex>" against HMAC-SHA256(key, body)
// for every key.
func hexBodySignature(keys [][]byte, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sig, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	expected := make([][]byte, len(keys))
	for i, k := range keys {
		expected[i] = mac(k, body)
	}
	return anyMatch(expected, [][]byte{sig})
}

type stripeVerifier struct {
	keys      [][]byte
	tolerance time.Duration
}

func (v *stripeVerifier) Verify(h http.Header, body []byte, now time.Time) (string, error) {
	var ts string
	var got [][]byte
	for _, item := range strings.Split(h.Get("Stripe-Signature"), ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(item), "=")
		switch k {
		case "t":
			if ts != "" {
				return "", fmt.Errorf("%w: Stripe-Signature has two timestamps", ErrBadSignature)
			}
			ts = val
		case "v1":
			if s, err := hex.DecodeString(val); err == nil {
				got = append(got, s)
			}
		}
	}
	if ts == "" || len(got) == 0 {
		return "", fmt.Errorf("%w: Stripe-Signature must be t=<Unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">", ErrBadSignature)
	}
	expected := make([][]byte, len(v.keys))
	for i, k := range v.keys {
		expected[i] = mac(k, []byte(ts), []byte("."), body)
	}
	if !anyMatch(expected, got) {
		return "", fmt.Errorf(`%w: Stripe-Signature has no v1 signature made with a configured secret over "<t>.<body>"`, ErrBadSignature)
	}
	if err := fresh("Stripe-Signature t", ts, now, v.tolerance); err != nil {
		return "", err
	}
	// The event's id is signed with the body: Stripe sends it again on each
	// retry of the event. A body without one is identified by what was
	// signed, so only a replay of this very call matches it.
	var ev struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &ev) == nil && ev.ID != "" {
		return ev.ID, nil
	}
	sum := sha256.Sum256(append([]byte(ts+"."), body...))
	return "sha256:" + hex.EncodeToString(sum[:16]), nil
}
