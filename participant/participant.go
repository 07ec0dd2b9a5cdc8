// Package participant runs the other side of Sagaz's command steps in a Go
// service: it consumes a command topic in its own consumer group, runs a
// handler for each command and replies to the partition the command names.
//
// It replies once per (saga, step, kind, attempt) and runs an action's
// handler to success at most once per (saga, step), even when the process
// crashes or a command is delivered twice (the saga's owner produces its
// outbox at least once):
//
//   - each poll is one Kafka transaction (kgo.GroupTransactSession) holding
//     the replies, the participant's state records and the consumed offsets:
//     a crash aborts it, nothing of it is visible to read_committed readers
//     (Sagaz reads replies read_committed), and the commands are read again;
//   - the state — per (saga, step, kind): the outcome (ok or refused), its
//     payload and the last attempt answered — lives in a compacted state
//     topic co-partitioned with the command topic, and is read back into
//     memory for the partitions the participant is assigned;
//   - a command for an attempt already answered gets no second reply; a
//     command for a (saga, step) that succeeded or was refused is answered
//     with the recorded outcome without running the handler; a compensation
//     runs its handler only if the action succeeded here (otherwise it
//     answers ok: nothing to undo) and fences the action: an action that
//     comes after its compensation is refused;
//   - a command read after its deadline (sagaz.deadline) is not run: the
//     saga stopped waiting for that attempt.
//
// A refusal (Refuse) must mean that nothing was done for the (saga, step):
// the saga does not compensate a step that was refused. A step whose
// command timed out for good may have run (a handler that started before
// the deadline and ended after it), so the saga compensates it: give every
// command step that can time out a compensation.
//
// Give an action and its compensation the same command topic and record key
// (engine.Command.Key), so they meet in one partition, in order.
package participant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sagaz-go/sagaz/engine"
)

// ErrNoReply, returned by a Handler, sends no reply (the saga's deadline
// fails the attempt) and records nothing: the next attempt runs the
// handler again.
var ErrNoReply = errors.New("participant: no reply")

// ErrConfig: a Config is invalid.
var ErrConfig = errors.New("participant: invalid configuration")

type refused struct{ err error }

func (r *refused) Error() string { return r.err.Error() }
func (r *refused) Unwrap() error { return r.err }

// Refuse wraps err so that the reply refuses the command for good: the
// saga's step (or compensation) fails without retrying. Any other error a
// Handler returns is a failure the saga retries by its policy.
func Refuse(err error) error {
	if err == nil {
		return nil
	}
	return &refused{err}
}

// Command is one command, as the handler sees it.
type Command struct {
	SagaID       string
	Step         string
	Compensation bool
	Attempt      int
	// Deadline is when the saga stops waiting for this attempt.
	Deadline time.Time
	Key      []byte
	Value    []byte
	// ActionDone, for a compensation, says whether the action succeeded
	// here (always true when the handler runs for a compensation).
	ActionDone bool
	// ActionReply is the action's reply value, for a compensation.
	ActionReply []byte
	Topic       string
	Partition   int32
	Offset      int64
}

// Handler runs a command and returns the reply's value (a JSON object, nil
// for none), or an error: Refuse(err) refuses for good, ErrNoReply sends
// nothing, any other error is a failure the saga retries. A nil error is a
// success whatever the value: the reply says ok (the command ran, and is
// not run again for that saga and step). A value that is not a JSON object
// cannot join the saga's context, so the saga fails the step and
// compensates it; the participant logs it as an error. It should finish
// well within a hundredth of Config.TransactionTimeout (one transaction
// answers up to a hundred commands).
type Handler func(ctx context.Context, c *Command) ([]byte, error)

// Config configures a Participant.
type Config struct {
	// Client holds the connection options (seed brokers, TLS, SASL). Required.
	Client []kgo.Opt
	// Group is the participant's consumer group. Required.
	Group string
	// Topic is the command topic. Required.
	Topic string
	// StateTopic keeps the outcomes (default "<group>-state-<topic>"); it is
	// compacted and has the command topic's partition count.
	StateTopic string
	// InstanceID names this process, stable across its restarts (default:
	// the host name). It is its static group membership (KIP-345: a
	// restarted process gets its partitions back at once) and its
	// transactional id is "<group>-<instance id>" (a restart aborts what the
	// crashed process left open). Give each process of the group its own.
	InstanceID string
	// SessionTimeout: a process that stops heartbeating for this long loses
	// its partitions to the others (default 10s).
	SessionTimeout time.Duration
	// CreateTopics creates the state topic when it is missing.
	CreateTopics bool
	// TransactionTimeout bounds a transaction (default 60s): one poll's
	// commands (at most 100) are answered within it, so a Handler must be
	// well quicker than a hundredth of it. A process that dies leaves its
	// transaction open this long, holding back read_committed readers of
	// its partitions, unless it restarts with the same InstanceID first.
	TransactionTimeout time.Duration
	Logger             *slog.Logger
}

// Validate reports every invalid field at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Client) == 0 {
		errs = append(errs, fmt.Errorf("%w: no Kafka client options (seed brokers)", ErrConfig))
	}
	if c.Group == "" {
		errs = append(errs, fmt.Errorf("%w: no Group", ErrConfig))
	}
	if c.Topic == "" {
		errs = append(errs, fmt.Errorf("%w: no command Topic", ErrConfig))
	}
	return errors.Join(errs...)
}

// State record kinds (the state topic's key is saga, step and kind).
const (
	outcomeOK      = "ok"
	outcomeRefused = "refused"
)

// outcome is one state record: what a (saga, step, kind) came to.
type outcome struct {
	Saga    string          `json:"saga"`
	Step    string          `json:"step"`
	Kind    string          `json:"kind"`
	Outcome string          `json:"outcome,omitempty"` // "" while not final (failures are retried)
	Payload json.RawMessage `json:"payload,omitempty"`
	Error   string          `json:"error,omitempty"`
	Replied int             `json:"replied"` // the last attempt answered
	At      time.Time       `json:"at"`
}

func stateKey(saga, step, kind string) string { return saga + "\x00" + step + "\x00" + kind }

// Participant consumes commands and replies.
type Participant struct {
	cfg Config
	h   Handler
	log *slog.Logger

	mu    sync.Mutex
	state map[int32]map[string]*outcome // per command partition
}

// Partitions returns how many command partitions this participant owns
// now (their state read back): 0 before it has joined its group.
func (p *Participant) Partitions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.state)
}

// New validates cfg and returns a participant running h.
func New(cfg Config, h Handler) (*Participant, error) {
	if cfg.StateTopic == "" {
		cfg.StateTopic = cfg.Group + "-state-" + cfg.Topic
	}
	if cfg.InstanceID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "participant"
		}
		cfg.InstanceID = host
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = time.Minute
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("%w: no Handler", ErrConfig)
	}
	return &Participant{cfg: cfg, h: h, log: cfg.Logger, state: map[int32]map[string]*outcome{}}, nil
}

// Run consumes and replies until ctx ends (then it leaves the group). A
// transaction that cannot be ended (the broker timed it out, the producer
// was fenced) ends the session: its commands are read again by a new
// session, which Run starts after a second.
func (p *Participant) Run(ctx context.Context) error {
	if err := p.ensureStateTopic(ctx); err != nil {
		return err
	}
	for {
		err := p.session(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var ce *configError
		if errors.As(err, &ce) {
			return err
		}
		p.log.Error("participant session ended; starting a new one (its uncommitted commands are handled again)", "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// maxPollRecords bounds one transaction: every command polled is answered
// inside it, well within TransactionTimeout.
const maxPollRecords = 100

// session is one group session: one transaction per poll.
func (p *Participant) session(ctx context.Context) error {
	txnID := p.cfg.Group + "-" + p.cfg.InstanceID
	sess, err := kgo.NewGroupTransactSession(append(append([]kgo.Opt(nil), p.cfg.Client...),
		kgo.ConsumerGroup(p.cfg.Group),
		kgo.ConsumeTopics(p.cfg.Topic),
		kgo.TransactionalID(txnID),
		kgo.InstanceID(p.cfg.InstanceID),
		kgo.SessionTimeout(p.cfg.SessionTimeout),
		kgo.TransactionTimeout(p.cfg.TransactionTimeout),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.OnPartitionsAssigned(p.assigned),
		kgo.OnPartitionsRevoked(p.dropped),
		kgo.OnPartitionsLost(p.dropped),
	)...)
	if err != nil {
		return &configError{fmt.Errorf("participant: client: %w", err)}
	}
	defer func() {
		sess.Close()
		p.mu.Lock()
		clear(p.state) // a new session reads the state back for what it is assigned
		p.mu.Unlock()
	}()
	// Fence the predecessor with this transactional id (this process's
	// previous run, killed) before polling: the broker aborts the
	// transaction it left open. The client would otherwise ask for its
	// producer id only at its first produce, and if that transaction had
	// committed the group's offsets, the group's offsets stay unstable
	// (KIP-447) until it ends — the session would not get past its offset
	// fetch, and its replies would hold back the replies partitions' last
	// stable offset, until the transaction timed out.
	if _, _, err := sess.Client().ProducerID(ctx); err != nil {
		return fmt.Errorf("participant: fence the previous transaction of %s: %w", txnID, err)
	}
	p.log.Info("participant consuming", "group", p.cfg.Group, "topic", p.cfg.Topic, "state_topic", p.cfg.StateTopic, "instance", p.cfg.InstanceID)
	for ctx.Err() == nil {
		fs := sess.PollRecords(ctx, maxPollRecords)
		if fs.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fs.EachError(func(t string, pt int32, err error) {
			p.log.Warn("fetch error (the client retries)", "topic", t, "partition", pt, "err", err)
		})
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("participant: begin transaction: %w", err)
		}
		pending := map[int32]map[string]*outcome{}
		fs.EachRecord(func(r *kgo.Record) { p.handle(ctx, sess, r, pending) })
		committed, err := sess.End(ctx, kgo.TryCommit)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("participant: end transaction: %w", err)
		}
		if !committed { // a rebalance: the commands are read again by whoever owns them
			p.log.Info("transaction aborted by a rebalance; its commands are handled again")
			continue
		}
		p.mu.Lock()
		for part, m := range pending {
			if st := p.state[part]; st != nil {
				for k, o := range m {
					st[k] = o
				}
			}
		}
		p.mu.Unlock()
	}
	return nil
}

// lookup returns the state of key: this transaction's, else the committed.
func (p *Participant) lookup(part int32, key string, pending map[int32]map[string]*outcome) *outcome {
	if o := pending[part][key]; o != nil {
		c := *o
		return &c
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if o := p.state[part][key]; o != nil {
		c := *o
		return &c
	}
	return nil
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// handle answers one command inside the poll's transaction.
func (p *Participant) handle(ctx context.Context, sess *kgo.GroupTransactSession, r *kgo.Record, pending map[int32]map[string]*outcome) {
	c := &Command{SagaID: header(r, engine.HeaderSagaID), Step: header(r, engine.HeaderStep), Compensation: header(r, engine.HeaderKind) == engine.KindCompensation,
		Key: r.Key, Value: r.Value, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
	c.Attempt, _ = strconv.Atoi(header(r, engine.HeaderAttempt))
	c.Deadline, _ = time.Parse(time.RFC3339Nano, header(r, engine.HeaderDeadline))
	replyTopic := header(r, engine.HeaderReplyTopic)
	replyPart, perr := strconv.ParseInt(header(r, engine.HeaderReplyPartition), 10, 32)
	if c.SagaID == "" || c.Step == "" || c.Attempt < 1 || replyTopic == "" || perr != nil || header(r, engine.HeaderSagaRef) == "" {
		p.log.Warn("not a command of a saga (headers missing); skipped", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset)
		return
	}
	kind := engine.KindAction
	if c.Compensation {
		kind = engine.KindCompensation
	}
	key := stateKey(c.SagaID, c.Step, kind)
	o := p.lookup(r.Partition, key, pending)
	if o == nil {
		o = &outcome{Saga: c.SagaID, Step: c.Step, Kind: kind}
	}
	if c.Attempt <= o.Replied {
		return // answered already (a command delivered twice)
	}
	if o.Outcome == "" && !c.Deadline.IsZero() && time.Now().After(c.Deadline) {
		// The saga stopped waiting for this attempt: running it now would
		// only have to be undone. Its next attempt (or its compensation)
		// comes as a command of its own.
		p.log.Debug("command past its deadline: not run", "saga_id", c.SagaID, "step", c.Step, "kind", kind, "attempt", c.Attempt, "deadline", c.Deadline)
		return
	}
	if o.Outcome == "" {
		p.decide(ctx, c, o, r.Partition, pending)
		if o.Outcome == "" && o.Error == errNoReply {
			return // the handler stays silent
		}
	}
	o.Replied, o.At = c.Attempt, time.Now().UTC()
	if pending[r.Partition] == nil {
		pending[r.Partition] = map[string]*outcome{}
	}
	pending[r.Partition][key] = o
	state, _ := json.Marshal(o)
	sess.Produce(ctx, &kgo.Record{Topic: p.cfg.StateTopic, Partition: r.Partition, Key: []byte(key), Value: state}, p.failed)
	res := o.Outcome
	if res == "" {
		res = string(engine.OutcomeFailed)
	}
	hs := []kgo.RecordHeader{{Key: engine.HeaderOutcome, Value: []byte(res)}}
	for _, k := range []string{engine.HeaderSagaID, engine.HeaderSagaRef, engine.HeaderStep, engine.HeaderKind, engine.HeaderAttempt} {
		hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(header(r, k))})
	}
	if o.Error != "" {
		hs = append(hs, kgo.RecordHeader{Key: engine.HeaderError, Value: []byte(o.Error)})
	}
	var value []byte
	if res == outcomeOK {
		value = o.Payload
	}
	sess.Produce(ctx, &kgo.Record{Topic: replyTopic, Partition: int32(replyPart), Key: r.Key, Value: value, Headers: hs}, p.failed)
}

const errNoReply = "\x00no reply"

// decide runs the handler (or not) for a (saga, step, kind) with no final
// outcome, filling o in.
func (p *Participant) decide(ctx context.Context, c *Command, o *outcome, part int32, pending map[int32]map[string]*outcome) {
	o.Error = ""
	if !c.Compensation {
		if comp := p.lookup(part, stateKey(c.SagaID, c.Step, engine.KindCompensation), pending); comp != nil && comp.Outcome != "" {
			o.Outcome, o.Error = outcomeRefused, "compensated before the action arrived"
			return
		}
	} else {
		action := p.lookup(part, stateKey(c.SagaID, c.Step, engine.KindAction), pending)
		if action == nil || action.Outcome != outcomeOK {
			o.Outcome, o.Payload = outcomeOK, nil // nothing to undo; the action is fenced from now on
			return
		}
		c.ActionDone, c.ActionReply = true, action.Payload
	}
	payload, err := p.call(ctx, c)
	switch {
	case err == nil:
		if len(bytes.TrimSpace(payload)) > 0 && !isObject(payload) {
			// It ran: the reply says so (a failure would run it again). The
			// saga cannot merge the value, so it compensates the step.
			p.log.Error("the handler's reply is not a JSON object: the saga will compensate the step", "saga_id", c.SagaID, "step", c.Step, "attempt", c.Attempt)
		}
		o.Outcome, o.Payload = outcomeOK, payload
	case errors.Is(err, ErrNoReply):
		o.Error = errNoReply
	case errors.As(err, new(*refused)):
		o.Outcome, o.Error = outcomeRefused, err.Error()
	default:
		o.Error = err.Error()
	}
}

// call runs the handler, a panic turned into a failure.
func (p *Participant) call(ctx context.Context, c *Command) (payload []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
			p.log.Error("handler panicked", "saga_id", c.SagaID, "step", c.Step, "panic", r)
		}
	}()
	return p.h(ctx, c)
}

func (p *Participant) failed(r *kgo.Record, err error) {
	if err != nil {
		p.log.Warn("produce in a transaction failed (the transaction aborts)", "topic", r.Topic, "err", err)
	}
}

// assigned reads the state of the assigned partitions back into memory,
// before their commands are fetched.
func (p *Participant) assigned(ctx context.Context, cl *kgo.Client, parts map[string][]int32) {
	for _, pt := range parts[p.cfg.Topic] {
		for {
			st, err := p.restore(ctx, pt)
			if err == nil {
				p.mu.Lock()
				p.state[pt] = st
				p.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			p.log.Error("reading a partition's state failed; retrying", "partition", pt, "err", err)
			time.Sleep(time.Second)
		}
	}
}

func (p *Participant) dropped(_ context.Context, _ *kgo.Client, parts map[string][]int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pt := range parts[p.cfg.Topic] {
		delete(p.state, pt)
	}
}

// restore reads state partition pt up to its last stable offset.
func (p *Participant) restore(ctx context.Context, pt int32) (map[string]*outcome, error) {
	adm, err := kgo.NewClient(p.cfg.Client...)
	if err != nil {
		return nil, err
	}
	ends, err := kadm.NewClient(adm).ListCommittedOffsets(ctx, p.cfg.StateTopic)
	adm.Close()
	if err != nil {
		return nil, err
	}
	end, ok := ends.Lookup(p.cfg.StateTopic, pt)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("state topic %s/%d: end offset: %v", p.cfg.StateTopic, pt, end.Err)
	}
	st := map[string]*outcome{}
	if end.Offset == 0 {
		return st, nil
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), p.cfg.Client...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.cfg.StateTopic: {pt: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // the last record up to the stable offset may be a commit marker
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return nil, fmt.Errorf("state topic %s/%d: read to %d: %w", p.cfg.StateTopic, pt, end.Offset, err)
		}
		var last int64 = -1
		fs.EachRecord(func(r *kgo.Record) {
			last = r.Offset
			if r.Attrs.IsControl() {
				return
			}
			if r.Value == nil {
				delete(st, string(r.Key))
				return
			}
			var o outcome
			if json.Unmarshal(r.Value, &o) == nil {
				st[string(r.Key)] = &o
			}
		})
		if last >= end.Offset-1 {
			return st, nil
		}
	}
}

// ensureStateTopic checks (or creates) the state topic, with the command
// topic's partition count.
func (p *Participant) ensureStateTopic(ctx context.Context) error {
	// Metadata no older than 100 ms: the client caches what it learns (5 s
	// by default), and a state topic just created would stay "missing"
	// that long.
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), p.cfg.Client...), kgo.MetadataMinAge(100*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	created, waited := false, 0
	for {
		td, err := adm.ListTopics(ctx, p.cfg.Topic, p.cfg.StateTopic)
		if err == nil {
			cmd, st := td[p.cfg.Topic], td[p.cfg.StateTopic]
			switch {
			case cmd.Err != nil || len(cmd.Partitions) == 0:
				err = fmt.Errorf("command topic %s: not found", p.cfg.Topic)
			case st.Err == nil && len(st.Partitions) > 0:
				if len(st.Partitions) != len(cmd.Partitions) {
					return fmt.Errorf("%w: state topic %s has %d partitions, command topic %s has %d: they must match",
						ErrConfig, p.cfg.StateTopic, len(st.Partitions), p.cfg.Topic, len(cmd.Partitions))
				}
				return nil
			case !p.cfg.CreateTopics:
				return fmt.Errorf("%w: state topic %s is missing (create it compacted with %d partitions, or set CreateTopics)", ErrConfig, p.cfg.StateTopic, len(cmd.Partitions))
			case !created:
				compact := "compact"
				resp, cerr := adm.CreateTopic(ctx, int32(len(cmd.Partitions)), -1, map[string]*string{"cleanup.policy": &compact}, p.cfg.StateTopic)
				if cerr == nil {
					cerr = resp.Err
				}
				if cerr == nil || errors.Is(cerr, kerr.TopicAlreadyExists) {
					p.log.Info("created the state topic", "topic", p.cfg.StateTopic, "partitions", len(cmd.Partitions))
					created = true
					continue
				}
				err = cerr
			default:
				err = fmt.Errorf("state topic %s: created, not visible yet", p.cfg.StateTopic)
			}
		}
		if waited++; !created || waited%25 == 0 { // a topic just created can take a few seconds to show
			p.log.Warn("waiting for the command and state topics", "err", err)
		}
		wait := time.Second
		if created {
			wait = 200 * time.Millisecond // it shows within moments: look again soon
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// isObject reports whether v is one JSON object.
func isObject(v []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(v, &m) == nil && m != nil
}
