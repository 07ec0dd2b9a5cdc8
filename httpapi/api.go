package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/consumer"
	"github.com/sagaz-go/sagaz/cron"
	"github.com/sagaz-go/sagaz/deadletter"
	"github.com/sagaz-go/sagaz/engine"
	"github.com/sagaz-go/sagaz/storage"
)

// Producer is what the API needs of a Kafka client: *kgo.Client.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// API configures the admin API, manual firing and webhooks. Webhook and
// manual events are produced to EventsTopic with acks=all; a 202 means the
// event is durably in Kafka, and the consumer turns it into sagas like any
// record.
type API struct {
	Engine      *engine.Engine
	Store       storage.Store
	Producer    Producer
	EventsTopic string
	// Webhooks says how each webhook's calls are verified, by webhook name.
	// A webhook without an entry accepts unsigned calls — unless its
	// trigger is declared engine.Signed, in which case New fails (see
	// AllowUnsignedWebhooks).
	Webhooks map[string]WebhookAuth
	// AllowUnsignedWebhooks lets webhooks declared engine.Signed accept
	// unsigned calls when they have no entry in Webhooks (dev mode only).
	AllowUnsignedWebhooks bool
	// MaxBodyBytes bounds webhook and fire bodies (default 1 MiB; 413 past it).
	MaxBodyBytes int64
	// MaxConcurrentWebhooks bounds webhook calls being verified and
	// produced at once, MaxConcurrentFires manual events (POST /api/fire,
	// default 16), MaxConcurrentListings the listings served at once (GET
	// /api/sagas, /api/deadletters, /api/overview; default 8): each has its
	// own slots, so a flood of one cannot starve another (503 when a slot
	// does not free within a second). BodyReadTimeout cuts off a client
	// that does not send its body in time (default 10s, 408).
	MaxConcurrentFires, MaxConcurrentListings int
	BodyReadTimeout                           time.Duration
	// MaxConcurrentWebhooks bounds webhook and fire requests in progress
	// (default 64; 503 when a slot does not free within a second).
	MaxConcurrentWebhooks int
	// ProduceTimeout bounds producing an event (default 10s; 503 past it).
	ProduceTimeout time.Duration
	// Owner, if set, names the group member that owns a partition, for
	// requests about sagas this member does not run.
	Owner func(ctx context.Context, p storage.Partition) string
	// KeyPartition, if set, says which partition of the keys topic owns a
	// keyed saga (consumer.Consumer.KeyPartition).
	KeyPartition func(saga, key string) (storage.Partition, bool)
	// Peers, if set, lists the group's members (group.go): listings and
	// requests about one saga then answer for the whole group. PeerToken is
	// the token this member sends to the others (the group shares its
	// tokens); PeerTimeout bounds a member's answer (default 3s).
	Peers       func(ctx context.Context) ([]Peer, error)
	PeerToken   string
	PeerTimeout time.Duration
	peers       *http.Client // set by register
	// Schedules, if set, serves /api/schedules and its operations.
	Schedules *cron.Scheduler
	CronTopic string

	// The console's endpoints (console.go, overview.go, deadletters.go,
	// session.go).

	// Group, if set, describes the consumer group for GET /api/overview
	// (consumer.Consumer.Describe).
	Group func(ctx context.Context) (consumer.GroupInfo, error)
	// DeadLetters, if set, serves GET /api/deadletters and
	// POST /api/deadletters/replay.
	DeadLetters *deadletter.Reader
	// Counters are summed into the overview's throughput, by name (e.g.
	// "started": sagaz_sagas_started_total, "finished":
	// sagaz_sagas_finished_total).
	Counters map[string]prometheus.Collector
	// OverviewInterval is how long one computed overview is served to every
	// caller (default 5s): the member's cost of any number of open consoles.
	OverviewInterval time.Duration
	// SessionTTL is how long a console login lasts (default 12h).
	SessionTTL time.Duration

	webhooks, fires, listings, readers *pool

	guard    *guard
	verify   map[string]Verifier
	sessions *sessions
	overview *overviewCache
	ready    func() error
}

func (a *API) defaults() {
	if a.MaxBodyBytes <= 0 {
		a.MaxBodyBytes = 1 << 20
	}
	if a.MaxConcurrentFires <= 0 {
		a.MaxConcurrentFires = 16
	}
	if a.MaxConcurrentListings <= 0 {
		a.MaxConcurrentListings = 8
	}
	if a.BodyReadTimeout <= 0 {
		a.BodyReadTimeout = 10 * time.Second
	}
	if a.MaxConcurrentWebhooks <= 0 {
		a.MaxConcurrentWebhooks = 64
	}
	if a.ProduceTimeout <= 0 {
		a.ProduceTimeout = 10 * time.Second
	}
	if a.OverviewInterval <= 0 {
		a.OverviewInterval = 5 * time.Second
	}
	if a.SessionTTL <= 0 {
		a.SessionTTL = 12 * time.Hour
	}
}

func (a *API) register(mux *routeMux, g *guard) error {
	a.defaults()
	a.guard = g
	if err := a.verifiers(); err != nil {
		return err
	}
	a.peers = newPeerClient(a.peerTimeout())
	a.webhooks = newPool(a.MaxConcurrentWebhooks, time.Second, "webhook calls")
	a.fires = newPool(a.MaxConcurrentFires, time.Second, "fired events")
	a.listings = newPool(a.MaxConcurrentListings, time.Second, "listings")
	// Body readers: a slow body holds a reader (memory up to MaxBodyBytes)
	// for at most BodyReadTimeout, but no webhook or fire slot.
	a.readers = newPool(2*(a.MaxConcurrentWebhooks+a.MaxConcurrentFires), time.Second, "request bodies being read")
	// Every /api route is guarded in front of the mux (Auth).
	mux.HandleFunc("GET /api/triggers", a.triggers)
	mux.HandleFunc("GET /api/sagas", a.listings.limit(a.listSagas))
	mux.HandleFunc("GET /api/sagas/{id}", a.getSaga)
	mux.HandleFunc("GET /api/events/{id}", a.getEvent)
	mux.HandleFunc("POST /api/sagas/{id}/retry", operate(a, "retry", `no body, or {"context": {...}, "reason": "..."} (a failed saga), or {"steps": {"<recorded step>": "<step of the current definition>", ...}, "reason": "..."} (a parked saga)`, http.StatusAccepted, "accepted", func(ctx context.Context, id string, req RetryRequest) error {
		return a.Engine.RetryWith(ctx, id, engine.RetryOptions{Context: req.Context, Steps: req.Steps, Audit: engine.Audit{Reason: req.Reason, By: caller(ctx)}})
	}))
	mux.HandleFunc("POST /api/sagas/{id}/cancel", operate(a, "cancel", `no body, or {"reason": "..."}`, http.StatusAccepted, "accepted", func(ctx context.Context, id string, req ReasonRequest) error {
		return a.Engine.CancelWith(ctx, id, engine.Audit{Reason: req.Reason, By: caller(ctx)})
	}))
	mux.HandleFunc("POST /api/sagas/{id}/resolve", operate(a, "resolve", `{"reason": "..."}`, http.StatusOK, "resolved", func(ctx context.Context, id string, req ReasonRequest) error {
		return a.Engine.Resolve(ctx, id, engine.Audit{Reason: req.Reason, By: caller(ctx)})
	}))
	mux.HandleFunc("POST /api/fire", a.fire)
	mux.HandleFunc("POST /webhooks/{name}", a.webhook)
	if a.Schedules != nil {
		a.registerSchedules(mux)
	}
	a.registerConsole(mux)
	return nil
}

// verifiers builds each webhook's verifier and checks that every webhook
// declared engine.Signed has one.
func (a *API) verifiers() error {
	a.verify = map[string]Verifier{}
	var errs []error
	names := make([]string, 0, len(a.Webhooks))
	for name := range a.Webhooks {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v, err := a.Webhooks[name].Verifier()
		if err != nil {
			errs = append(errs, fmt.Errorf("webhook %q: %w", name, err))
			continue
		}
		a.verify[name] = v
	}
	for _, rt := range a.Engine.Routes().All() {
		name := rt.Trigger.Webhook()
		if rt.Trigger.Source() == engine.SourceWebhook && rt.Trigger.SignatureRequired() && a.verify[name] == nil && !a.AllowUnsignedWebhooks {
			errs = append(errs, fmt.Errorf("%w: webhook %q (saga %q) is declared engine.Signed but has no secret", ErrInvalidConfig, name, rt.Saga.Name))
		}
	}
	return errors.Join(errs...)
}

func (a *API) triggers(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"triggers": a.Engine.Routes().Table()})
}

// SagaView is a saga as the API shows it.
type SagaView struct {
	ID      string         `json:"id"`
	Saga    string         `json:"saga"`
	Trigger string         `json:"trigger"`
	Status  storage.Status `json:"status"`
	// Source is where the saga lives (its partition); Origin, for a keyed
	// saga, is the position of the event that started it.
	Source         storage.Position `json:"source"`
	Origin         storage.Position `json:"origin,omitzero"`
	ConcurrencyKey string           `json:"concurrency_key,omitempty"`
	EventTime      time.Time        `json:"event_time,omitzero"`
	IdempotencyKey string           `json:"idempotency_key,omitempty"`
	Context        json.RawMessage  `json:"context,omitempty"`
	Steps          []storage.Step   `json:"steps"`
	Error          string           `json:"error,omitempty"`
	CreatedAt      time.Time        `json:"created_at"`
	UpdatedAt      time.Time        `json:"updated_at"`
	Version        uint64           `json:"version"`
	// Definition is the fingerprint of the definition the saga runs with
	// (recorded when its first step starts); Parked says why a parked saga
	// waits (its reason, since when, and the status it resumes in).
	Definition string        `json:"definition,omitempty"`
	Parked     *storage.Park `json:"parked,omitempty"`
	// History is what operators did to the saga, oldest first (in the
	// saga's own view, not in listings).
	History []HistoryView `json:"history,omitempty"`
	// OwnedHere is false when another member runs the saga's partition now:
	// this copy may be behind; Owner names that member when known.
	OwnedHere bool   `json:"owned_here"`
	Owner     string `json:"owner,omitempty"`
	// Waiting says what the saga waits for, when it waits (a command's
	// reply, an event, a sleep, a retry back-off).
	Waiting *WaitView `json:"waiting,omitempty"`
}

// WaitView is what a waiting saga waits for.
type WaitView struct {
	// Kind is command, event, sleep or retry.
	Kind         storage.WaitKind `json:"kind"`
	Step         string           `json:"step"`
	Compensating bool             `json:"compensating,omitempty"`
	Attempt      uint32           `json:"attempt"`
	Since        time.Time        `json:"since"`
	Deadline     time.Time        `json:"deadline,omitzero"`
	// For says it in words.
	For string `json:"for"`
	// Topic is the command's or the awaited event's topic; Field and Value
	// the awaited correlation.
	Topic string `json:"topic,omitempty"`
	Field string `json:"field,omitempty"`
	Value string `json:"value,omitempty"`
}

// waitView describes a saga's wait (nil when it does not wait).
func waitView(s *storage.Saga) *WaitView {
	w := s.Wait
	if w == nil || s.Status.Terminal() {
		return nil
	}
	v := &WaitView{Kind: w.Kind, Compensating: w.Compensating, Attempt: w.Attempt, Since: w.Since, Deadline: w.Deadline, Topic: w.Topic, Field: w.Field, Value: w.Value}
	if w.Step < len(s.Steps) {
		v.Step = s.Steps[w.Step].Name
	}
	what := "command"
	if w.Compensating {
		what = "compensation command"
	}
	switch w.Kind {
	case storage.WaitCommand:
		v.For = fmt.Sprintf("the reply to step %s's %s on %s (attempt %d)", v.Step, what, w.Topic, w.Attempt)
	case storage.WaitEvent:
		v.For = fmt.Sprintf("an event on %s whose %s is %q (attempt %d)", w.Topic, w.Field, w.Value, w.Attempt)
	case storage.WaitSleep:
		v.For = "the end of step " + v.Step + "'s sleep"
	case storage.WaitRetry:
		a := "attempt"
		if w.Compensating {
			a = "compensation attempt"
		}
		v.For = fmt.Sprintf("the back-off before %s %d of step %s", a, w.Attempt+1, v.Step)
	}
	return v
}

// HistoryView is one entry of a saga's history: when, what (retry,
// retry_with_context, resolve, cancel), why and by whom ("token:<id>" or
// "console:<id>", the first 8 hex digits of the SHA-256 of the token used;
// "" when the API takes no token).
type HistoryView struct {
	At     time.Time      `json:"at"`
	Action storage.Action `json:"action"`
	Reason string         `json:"reason,omitempty"`
	By     string         `json:"by,omitempty"`
	// For retry_with_context: the context the edit replaced, as JSON
	// (sensitive fields masked) when the entry keeps all of it, and its
	// size. PreviousContextTruncated says the entry keeps less (its first
	// bytes, or none once the history outgrew its bound);
	// PreviousContextPrefix then shows the bytes kept, as text, unless the
	// saga declares sensitive fields.
	PreviousContext          json.RawMessage `json:"previous_context,omitempty"`
	PreviousContextBytes     int             `json:"previous_context_bytes,omitempty"`
	PreviousContextTruncated bool            `json:"previous_context_truncated,omitempty"`
	PreviousContextPrefix    string          `json:"previous_context_prefix,omitempty"`
}

// RetryRequest is the optional body of POST /api/sagas/{id}/retry.
type RetryRequest struct {
	// Context, if set, replaces a failed saga's context before it resumes:
	// a JSON object within the member's context size limit (see
	// engine.Engine.RetryWith for where the saga resumes).
	Context json.RawMessage `json:"context,omitempty"`
	// Reason is recorded in the saga's history.
	Reason string `json:"reason,omitempty"`
	// Steps, for a parked saga, maps its recorded steps onto the steps of
	// the current definition (old name -> new name; "" leaves a step's
	// effect uncompensated). Steps not named keep their name.
	Steps map[string]string `json:"steps,omitempty"`
}

// ReasonRequest is the body of POST /api/sagas/{id}/resolve (the reason
// is required) and the optional body of POST /api/sagas/{id}/cancel.
type ReasonRequest struct {
	Reason string `json:"reason"`
}

// OperateAnswer answers an operator action on a saga: accepted (retry,
// cancel: the saga goes on in the background) or resolved, with the saga
// as it stands once the action is recorded (its history included).
type OperateAnswer struct {
	ID     string    `json:"id"`
	Status string    `json:"status"`
	Saga   *SagaView `json:"saga,omitempty"`
}

func (a *API) view(ctx context.Context, s *storage.Saga, withContext bool) SagaView {
	v := SagaView{ID: s.ID(), Saga: s.Name, Trigger: s.Trigger, Status: s.Status, Source: s.Source, Origin: s.Origin, ConcurrencyKey: s.ConcurrencyKey, EventTime: s.EventTime,
		IdempotencyKey: s.IdempotencyKey, Steps: s.Steps, Error: s.Error, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt, Version: s.Version,
		Definition: s.Definition, Parked: s.Park, OwnedHere: a.Engine.Owns(s.Source), Waiting: waitView(s)}
	decl := a.Engine.Routes().Saga(s.Name)
	if len(v.Steps) == 0 && decl != nil && s.Status == storage.StatusPending { // recorded before it ran
		v.Steps = engine.PendingSteps(decl)
	}
	if withContext && json.Valid(s.Context) {
		v.Context = s.Context
		if decl != nil {
			v.Context = decl.MaskContext(s.Context) // fields the saga marks sensitive
		}
	}
	if decl != nil && v.IdempotencyKey != "" && decl.SensitiveKey(s.Trigger) {
		v.IdempotencyKey = engine.Masked
	}
	if !v.OwnedHere && a.Owner != nil {
		v.Owner = a.Owner(ctx, s.Source.TopicPartition())
	}
	if withContext {
		v.History = historyView(s.History, decl)
	}
	return v
}

// historyView shows a saga's history, its previous contexts masked like
// the context.
func historyView(h []storage.HistoryEntry, decl *engine.Saga) []HistoryView {
	if len(h) == 0 {
		return nil
	}
	out := make([]HistoryView, len(h))
	for i, e := range h {
		v := HistoryView{At: e.At, Action: e.Action, Reason: e.Reason, By: e.By, PreviousContextBytes: e.PreviousContextSize}
		switch {
		case !e.PreviousContextTruncated() && len(e.PreviousContext) > 0 && json.Valid(e.PreviousContext):
			v.PreviousContext = e.PreviousContext
			if decl != nil {
				v.PreviousContext = decl.MaskContext(e.PreviousContext)
			}
		case e.PreviousContextSize > 0:
			v.PreviousContextTruncated = true
			if decl == nil || len(decl.Sensitive) == 0 {
				v.PreviousContextPrefix = string(e.PreviousContext)
			}
		}
		out[i] = v
	}
	return out
}

func (a *API) listSagas(w http.ResponseWriter, r *http.Request) {
	q := storage.Query{Name: r.URL.Query().Get("saga"), Cursor: r.URL.Query().Get("cursor")}
	if st := r.URL.Query().Get("status"); st != "" {
		s, err := storage.ParseStatus(st)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "bad status", err.Error())
			return
		}
		q.Status = s
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			WriteError(w, http.StatusBadRequest, "bad limit", "limit must be 1 to 1000")
			return
		}
		q.Limit = n
	}
	q.Partitions = a.ownedHere(r)
	local := func() ([]SagaView, string, error) {
		page, err := a.list(r, q) // and the filters of list.go
		var fe filterError
		switch {
		case errors.As(err, &fe):
			return nil, "", badRequest{"bad filter", fe.Error()}
		case errors.Is(err, storage.ErrInvalidCursor):
			return nil, "", badRequest{"bad cursor", err.Error()}
		case err != nil:
			return nil, "", err
		}
		out := make([]SagaView, 0, len(page.Sagas))
		for _, s := range page.Sagas {
			out = append(out, a.view(r.Context(), s, false))
		}
		return out, page.Next, nil
	}
	if a.grouped(r) {
		limit := q.Limit
		if limit == 0 {
			limit = 50
		}
		a.groupList(w, r, limit, local)
		return
	}
	out, next, err := local()
	var bad badRequest
	switch {
	case errors.As(err, &bad):
		WriteError(w, http.StatusBadRequest, bad.msg, bad.detail)
		return
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "store error", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sagas": out, "next_cursor": next})
}

func (a *API) getSaga(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	home, err := a.home(id)
	if errors.Is(err, errPlacedByConcurrency) && a.scatter(w, r, id, nil) {
		return
	}
	if err == nil && a.toOwner(w, r, home.TopicPartition(), nil) {
		return
	}
	s, err := a.Store.Get(r.Context(), id)
	if err != nil {
		a.sagaError(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, a.view(r.Context(), s, true))
}

// sagaError answers for an ID this member cannot serve.
func (a *API) sagaError(w http.ResponseWriter, r *http.Request, id string, err error) {
	pos, perr := a.home(id)
	switch {
	case errors.Is(err, storage.ErrInvalidID):
		WriteError(w, http.StatusBadRequest, "bad saga id", err.Error())
	case errors.Is(err, engine.ErrNotOwned), errors.Is(err, storage.ErrNotFound) && perr == nil && !a.Engine.Owns(pos):
		detail := fmt.Sprintf("partition %s is run by another member of the group", pos.TopicPartition())
		if a.Owner != nil {
			if o := a.Owner(r.Context(), pos.TopicPartition()); o != "" {
				detail += ": " + o
			}
		}
		code := http.StatusConflict
		if errors.Is(err, storage.ErrNotFound) {
			code = http.StatusNotFound
		}
		WriteError(w, code, "not on this member", detail)
	case errors.Is(err, storage.ErrNotFound):
		WriteError(w, http.StatusNotFound, "saga not found", id)
	case errors.Is(err, engine.ErrConflict):
		WriteError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, engine.ErrInvalidMapping):
		WriteError(w, http.StatusBadRequest, "bad step mapping", err.Error())
	case errors.Is(err, engine.ErrInvalidContext):
		WriteError(w, http.StatusBadRequest, "bad context", err.Error())
	case errors.Is(err, engine.ErrInvalidReason):
		WriteError(w, http.StatusBadRequest, "bad reason", err.Error())
	default:
		WriteError(w, http.StatusInternalServerError, "error", err.Error())
	}
}

// operate serves an operator action on one saga (retry, cancel, resolve):
// its optional JSON body (a Req; unknown fields refused) is checked here,
// then the member that owns the saga does it (act) — this one, or the one
// the request is forwarded to — and answers code with an OperateAnswer.
func operate[Req any](a *API, action, example string, code int, status string, act func(ctx context.Context, id string, req Req) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		body, ok := a.readBody(w, r)
		if !ok {
			return
		}
		var req Req
		if len(bytes.TrimSpace(body)) > 0 {
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			err := dec.Decode(&req)
			if err == nil && dec.More() {
				err = errors.New("data after the JSON object")
			}
			if err != nil {
				WriteError(w, http.StatusBadRequest, "bad "+action+" request", fmt.Sprintf("want %s: %v", example, err))
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		home, err := a.home(id)
		if errors.Is(err, errPlacedByConcurrency) && a.scatter(w, r, id, body) {
			return
		}
		if err == nil && a.toOwner(w, r, home.TopicPartition(), body) {
			return
		}
		if err := act(r.Context(), id, req); err != nil {
			a.sagaError(w, r, id, err)
			return
		}
		out := OperateAnswer{ID: id, Status: status}
		if s, err := a.Store.Get(r.Context(), id); err == nil {
			v := a.view(r.Context(), s, true)
			out.Saga = &v
		}
		writeJSON(w, code, out)
	}
}

// readBody reads at most MaxBodyBytes within BodyReadTimeout, answering
// 413 past the size and 408 past the time.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if a.readers != nil {
		release, ok := a.readers.acquire(w, r)
		if !ok {
			return nil, false
		}
		defer release()
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(a.BodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.MaxBodyBytes))
	var mbe *http.MaxBytesError
	var nerr net.Error
	switch {
	case errors.As(err, &mbe):
		WriteError(w, http.StatusRequestEntityTooLarge, "body too large", fmt.Sprintf("the limit is %d bytes", a.MaxBodyBytes))
		return nil, false
	case errors.As(err, &nerr) && nerr.Timeout():
		WriteError(w, http.StatusRequestTimeout, "body too slow", fmt.Sprintf("the body must arrive within %s", a.BodyReadTimeout))
		return nil, false
	case err != nil:
		WriteError(w, http.StatusBadRequest, "cannot read body", err.Error())
		return nil, false
	}
	return body, true
}

func (a *API) webhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	routes := a.Engine.Routes().Match(engine.SourceWebhook, name)
	if len(routes) == 0 {
		WriteError(w, http.StatusNotFound, "unknown webhook", name)
		return
	}
	v := a.verify[name]
	// An unsigned webhook served without tokens (loopback) gets the checks
	// that keep web pages in the operator's browser out.
	if v == nil && !a.guard.tokensRequired() && !a.guard.browser(w, r) {
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	release, ok := a.webhooks.acquire(w, r)
	if !ok {
		return
	}
	defer release()
	delivery := ""
	if v != nil {
		d, err := v.Verify(r.Header, body, time.Now())
		if err != nil {
			WriteError(w, http.StatusUnauthorized, "bad signature", err.Error())
			return
		}
		if len(d) > MaxDeliveryIDBytes {
			WriteError(w, http.StatusBadRequest, "delivery id too long", fmt.Sprintf("the delivery id has %d bytes; at most %d are accepted", len(d), MaxDeliveryIDBytes))
			return
		}
		delivery = d
	}
	a.publish(w, r, engine.SourceWebhook, name, body, routes, delivery)
}

// DeliveryKey is the idempotency key of a signed webhook delivery, for
// triggers that declare none: a replay of the delivery finds the saga the
// first call started.
func DeliveryKey(webhook, delivery string) string { return "webhook:" + webhook + ":" + delivery }

// DeliveryEventID is the event_id answered for a signed webhook delivery:
// the same for every replay of it.
func DeliveryEventID(webhook, delivery string) string {
	sum := sha256.Sum256([]byte("webhook\x00" + webhook + "\x00" + delivery))
	return hex.EncodeToString(sum[:16])
}

func (a *API) fire(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	var ev struct {
		EventType string `json:"event_type"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		WriteError(w, http.StatusBadRequest, "body is not a JSON object", err.Error())
		return
	}
	if ev.EventType == "" {
		WriteError(w, http.StatusBadRequest, "missing event_type", `the body must be a JSON object with "event_type"`)
		return
	}
	routes := a.Engine.Routes().Match(engine.SourceManual, ev.EventType)
	if len(routes) == 0 {
		WriteError(w, http.StatusNotFound, "unknown event type", ev.EventType)
		return
	}
	release, ok := a.fires.acquire(w, r)
	if !ok {
		return
	}
	defer release()
	a.publish(w, r, engine.SourceManual, ev.EventType, body, routes, "")
}

// EventAccepted is the 202 answer to a webhook call or a fired event.
type EventAccepted struct {
	EventID   string `json:"event_id"`
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// SagaIDs name, per trigger the event reaches, the saga it starts or
	// joins: for a keyed trigger (a declared key, an Idempotency-Key, a
	// signed delivery) the one saga of that key in the group
	// ("<saga>:key:<key>", whichever event started it); otherwise the saga
	// at the event's position. A transformer may still ignore the event or
	// send it to the dead-letter topic.
	SagaIDs []string `json:"saga_ids"`
	// Event links to what the event did once consumed (GET on any member):
	// the saga each trigger started or joined, or why it started none.
	Event string `json:"event"`
}

// publish produces the event to the events topic (acks=all) and answers
// 202 once it is durable in Kafka, or 503. A signed webhook's delivery id
// (when its scheme has one) gives the event_id and, for triggers without a
// declared key, the idempotency key — in place of the Idempotency-Key
// header, which no scheme signs.
func (a *API) publish(w http.ResponseWriter, r *http.Request, src engine.Source, name string, body []byte, routes []*engine.Route, delivery string) {
	id := newEventID()
	idem := r.Header.Get("Idempotency-Key")
	if len(idem) > engine.MaxKeyBytes {
		WriteError(w, http.StatusBadRequest, "idempotency key too long", fmt.Sprintf("the Idempotency-Key header has %d bytes; at most %d are accepted", len(idem), engine.MaxKeyBytes))
		return
	}
	if delivery != "" {
		id, idem = DeliveryEventID(name, delivery), DeliveryKey(name, delivery)
	}
	key := ""
	headers := []kgo.RecordHeader{
		{Key: engine.HeaderSource, Value: []byte(src)},
		{Key: engine.HeaderName, Value: []byte(name)},
		{Key: engine.HeaderEventID, Value: []byte(id)},
	}
	if idem != "" {
		headers = append(headers, kgo.RecordHeader{Key: engine.HeaderIdempotencyKey, Value: []byte(idem)})
	}
	// A declared key must be in the body (the saga would reject the event
	// otherwise). The record is keyed by it (or else by the delivery's key
	// or the Idempotency-Key header), so events with equal keys share a
	// partition and de-duplicate.
	keys := make([]string, len(routes)) // each route's idempotency key, as the engine will find it
	for i, rt := range routes {
		if rt.Trigger.Key().IsZero() {
			keys[i] = idem
			continue
		}
		k, err := rt.Trigger.Key().Value(rt.Saga.Name, &engine.Event{Source: src, Name: name, Value: body})
		var de *engine.DecodeError
		switch {
		case errors.As(err, &de):
			WriteError(w, http.StatusBadRequest, "body is not a JSON object", err.Error())
			return
		case err != nil:
			WriteError(w, http.StatusBadRequest, "missing idempotency key", err.Error())
			return
		case len(k) > engine.MaxKeyBytes:
			WriteError(w, http.StatusBadRequest, "idempotency key too long", fmt.Sprintf("saga %q: the key %s has %d bytes; at most %d are accepted", rt.Saga.Name, rt.Trigger.Key(), len(k), engine.MaxKeyBytes))
			return
		}
		keys[i] = k
		if key == "" {
			key = k
		}
	}
	if key == "" {
		key = idem
	}
	if key == "" {
		key = id
	}
	rec := &kgo.Record{Topic: a.EventsTopic, Key: []byte(key), Value: body, Headers: headers}
	ctx, cancel := context.WithTimeout(r.Context(), a.ProduceTimeout)
	defer cancel()
	if err := a.Producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		WriteError(w, http.StatusServiceUnavailable, "kafka unavailable", "the event was not accepted: "+err.Error())
		return
	}
	pos := storage.Position{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset}
	out := EventAccepted{EventID: id, Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Event: eventLink(pos)}
	for i, rt := range routes {
		if keys[i] != "" { // keyed: the one saga of this key in the group, whichever event started it
			out.SagaIDs = append(out.SagaIDs, storage.FormatKeyedID(rt.Saga.Name, rt.StoredKey(keys[i])))
		} else {
			out.SagaIDs = append(out.SagaIDs, storage.FormatID(pos, rt.Saga.Name))
		}
	}
	writeJSON(w, http.StatusAccepted, out)
}

func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// home returns the position whose partition a saga ID lives in: the ID's
// own position, or for a keyed ID the start of the keys-topic partition
// that owns its key.
func (a *API) home(id string) (storage.Position, error) {
	ref, err := storage.ParseRef(id)
	if err != nil {
		return storage.Position{}, err
	}
	if !ref.Keyed {
		return ref.Pos, nil
	}
	if decl := a.Engine.Routes().Saga(ref.Name); decl != nil {
		for i := range decl.Triggers {
			if k, _ := decl.Triggers[i].ConcurrencyKey(); !k.IsZero() {
				return storage.Position{}, errPlacedByConcurrency // placed by a value the ID does not carry
			}
		}
	}
	if a.KeyPartition == nil {
		return storage.Position{}, errors.New("no keys topic")
	}
	p, ok := a.KeyPartition(ref.Name, ref.Key)
	if !ok {
		return storage.Position{}, errors.New("the keys topic is not known yet")
	}
	return storage.Position{Topic: p.Topic, Partition: p.Partition}, nil
}
