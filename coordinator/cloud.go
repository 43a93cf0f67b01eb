package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/ratelog"
)

// cloudPart owns the call journal and the cloud link. The journal runs
// whether or not cloud.url is set (it is what `outpost calls` reads); the
// link runs only with a url.
//
// Stop order (see New): the link stops polling first, so no call is taken
// that the drain would cut; the scheduler drains, and each drained call's
// FINISHED lands in the journal; then the link flushes the outbox while it
// is still up (for the rest of the stop deadline; what is left goes after
// the next start); the journal closes after the last writer.
type cloudPart struct {
	c       *Coordinator
	journal *calls.Journal
	durable *calls.Durable
	link    *remote.Client
	replies *mqttReplier
	snaps   *calls.Snapshots // states of suspended calls; set at start
	spool   *remote.Spool    // device messages for the cloud (cloudroute.go); nil without cloud.url
	// refusals bounds the warnings of messages the spool refuses.
	refusals ratelog.Limiter

	// mu guards ready and pending: QoS 1 messages that arrived before the
	// journal was open (the MQTT client starts first). They are journaled,
	// and acknowledged, once it is.
	mu      sync.Mutex
	ready   *calls.Durable
	pending []pendingMessage
	opened  chan struct{} // closed by open; made by the first waitOpen
}

// pendingMessage is a QoS 1 message waiting for the journal to open.
type pendingMessage struct {
	calls []*calls.Call
	ack   func()
	topic string
}

// maxPending bounds the messages held before the journal opens; the
// broker's in-flight window usually bounds them first. Past it a message
// is not acknowledged: the broker delivers it again in the next session.
const maxPending = 4096

func (p *cloudPart) start(ctx context.Context) error {
	c := p.c
	cfg := c.cfg.Load()
	log := c.log.With("part", "journal")
	j, err := calls.OpenJournal(c.db, calls.JournalOptions{Retention: cfg.Cloud.DedupeRetention.Std()}, log, c.reg)
	if err != nil {
		return err
	}
	p.journal = j
	if cfg.Cloud.Enabled() {
		tlsCfg, err := remote.ClientTLS(cfg.Node.ID, cfg.Cloud.TLS.CAFile, cfg.Cloud.TLS.CertFile, cfg.Cloud.TLS.KeyFile)
		if err != nil {
			return err
		}
		p.link = remote.New(remote.Config{
			URL: cfg.Cloud.URL, NodeID: cfg.Node.ID, TokenFile: cfg.Cloud.TokenFile, TLS: tlsCfg,
			PollWait: cfg.Cloud.PollWait.Std(), BackoffBase: cfg.Cloud.BackoffBase.Std(), BackoffMax: cfg.Cloud.BackoffMax.Std(),
			BatchSize: cfg.Cloud.BatchSize, MaxInflight: cfg.Cloud.MaxInflight, OutboxMaxBytes: int64(cfg.Cloud.OutboxMaxBytes),
			Queues: queueNames(cfg.Cloud), QueueWeights: queueWeights(cfg.Cloud), AgingAfter: cfg.Cloud.AgingAfter.Std(),
		}, nil, c.log.With("part", "cloud"), c.reg)
	}
	if p.link != nil {
		p.spool = remote.NewSpool(int64(cfg.Cloud.MessagesMaxBytes), c.log, c.reg)
		p.link.SetSpool(p.spool)
		if err := p.spool.Open(ctx, c.db, c.db.Bucket("cloudmsgs")); err != nil {
			return err
		}
	}
	link := p.link
	p.replies = newMQTTReplier(c, p.journal, c.log.With("part", "mqtt-replies"))
	replies, journal := p.replies, p.journal
	p.durable = calls.NewDurable(p.journal, c.sched, log, func(r *calls.Record) {
		switch r.Source.Kind {
		case remote.SourceKind:
			if link != nil {
				link.Notify()
			}
		case mqttSource:
			replies.notify()
		case adminSource:
			// The result is read with GET /v1/calls/{id}: it is delivered
			// once it is in the journal, and kept for the retention. A
			// run's result is journaled REPORTED at once (ReadInJournal
			// below); a replay, or a result recovered from an older
			// version's journal, is marked here.
			if err := journal.MarkReported(r.ID); err != nil {
				log.Warn("journal: mark admin call reported", "call", r.ID, "err", err)
			}
		}
	})
	snaps, err := calls.OpenSnapshots(filepath.Join(cfg.DataDir, "snapshots", "sha256"))
	if err != nil {
		return err
	}
	p.durable.UseSnapshots(snaps)
	p.durable.ReadInJournal(adminSource)
	p.snaps = snaps
	if link != nil {
		link.SetNode(remote.NewNode(p.durable))
	}
	p.replies.start()
	if err := p.durable.Recover(ctx); err != nil {
		return fmt.Errorf("recover journal: %w", err)
	}
	p.open()
	c.admin.Handle("GET /v1/calls", http.HandlerFunc(p.listCalls))
	c.admin.Handle("GET /v1/calls/{id}", http.HandlerFunc(p.showCall))
	if link != nil {
		return link.Start(ctx)
	}
	return nil
}

// stopPolling is the first step of the stop order.
func (p *cloudPart) stopPolling(context.Context) error {
	if p.link != nil {
		p.link.StopPolling()
	}
	return nil
}

// stop flushes the outbox while the link and the MQTT client are up,
// within ctx: cloud results are uploaded, MQTT replies published.
func (p *cloudPart) stop(ctx context.Context) error {
	if p.replies != nil {
		if err := p.replies.stop(ctx); err != nil {
			p.c.log.Warn("mqtt replies still in the journal (published after restart)", "err", err)
		}
	}
	if p.link == nil {
		return nil
	}
	if err := p.link.Stop(ctx); err != nil {
		p.c.log.Warn("cloud link stopped with results still in the outbox (sent after restart)", "err", err)
	}
	return nil
}

// open makes the journal take MQTT calls, first those that waited for it.
func (p *cloudPart) open() {
	p.mu.Lock()
	p.ready = p.durable
	pending := p.pending
	p.pending = nil
	if p.opened != nil {
		close(p.opened)
	}
	p.mu.Unlock()
	for _, m := range pending {
		p.journalMQTT(p.durable, m)
	}
}

// acceptMQTT journals the calls of a QoS 1 message and acknowledges it
// once they are on disk. It never blocks (the MQTT client's goroutine).
func (p *cloudPart) acceptMQTT(m devices.Message, cs []*calls.Call) {
	pm := pendingMessage{calls: cs, ack: m.Ack, topic: m.Topic}
	p.mu.Lock()
	d := p.ready
	if d == nil {
		if len(p.pending) >= maxPending {
			p.mu.Unlock()
			p.c.dropped(m.Topic, cs[0].Task, "not_ready")
			return
		}
		p.pending = append(p.pending, pm)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.journalMQTT(d, pm)
}

// openWait bounds how long a message from a device waits, in the embedded
// broker, for the journal to open (startup); past it the device is
// disconnected and sends the message again.
const openWait = 10 * time.Second

// waitOpen returns the journal once it takes MQTT calls, waiting for it
// up to openWait or ctx.
func (p *cloudPart) waitOpen(ctx context.Context) (*calls.Durable, error) {
	p.mu.Lock()
	d := p.ready
	if d != nil {
		p.mu.Unlock()
		return d, nil
	}
	if p.opened == nil {
		p.opened = make(chan struct{})
	}
	opened := p.opened
	p.mu.Unlock()
	t := time.NewTimer(openWait)
	defer t.Stop()
	select {
	case <-opened:
	case <-t.C:
		return nil, fmt.Errorf("call journal not open after %s: %w", openWait, calls.ErrDraining)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready, nil
}

// acceptPublish journals the calls of a QoS 1 message held by the
// embedded broker (journalPublish) and calls done once they are on disk
// (or could not be written): the same Durable.AcceptAsync as every durable
// MQTT call, the replies published by the same mqttReplier. An error,
// returned or through done, leaves the message unacknowledged.
func (p *cloudPart) acceptPublish(ctx context.Context, topic string, cs []*calls.Call, done func(error)) error {
	d, err := p.waitOpen(ctx)
	if err != nil {
		p.c.dropped(topic, cs[0].Task, "not_ready")
		return err
	}
	if p.c.sched.Stats().Draining {
		// Sent again by the device after the restart, where it runs.
		p.c.dropped(topic, cs[0].Task, "draining")
		return calls.ErrDraining
	}
	d.AcceptAsync(cs, func(_ []calls.Outcome, err error) {
		if err != nil {
			p.c.dropped(topic, cs[0].Task, "journal")
			err = fmt.Errorf("journal: %w", err)
		}
		done(err)
	})
	return nil
}

func (p *cloudPart) journalMQTT(d *calls.Durable, m pendingMessage) {
	if p.c.sched.Stats().Draining {
		// Not acknowledged: a broker that keeps the session delivers it
		// again after the restart, where it runs.
		p.c.dropped(m.topic, m.calls[0].Task, "draining")
		return
	}
	d.AcceptAsync(m.calls, func(_ []calls.Outcome, err error) {
		if err != nil {
			p.c.log.Error("mqtt message not journaled: not acknowledged", "topic", m.topic, "err", err)
			p.c.dropped(m.topic, m.calls[0].Task, "journal")
			return
		}
		m.ack()
	})
}

// CallAsync implements admin.AsyncNode: it journals c (synced) and queues
// it; the caller answers once it returns. The result is read from the
// journal (GET /v1/calls/{id}).
func (c *Coordinator) CallAsync(call *calls.Call) error {
	p := c.cloud
	p.mu.Lock()
	d := p.ready
	p.mu.Unlock()
	if d == nil {
		return fmt.Errorf("call journal not open: %w", calls.ErrDraining)
	}
	if _, ok := (executor{c.engine}).Concurrency(call.Task); !ok {
		return fmt.Errorf("%w %q", calls.ErrUnknownTask, call.Task)
	}
	if st := c.sched.Stats(); st.Draining {
		return calls.ErrDraining
	} else if st.Queued >= st.QueueSize {
		return calls.ErrQueueFull
	}
	call.Source.Kind = adminSource
	if call.Effect == "" {
		call.Effect = calls.AtMostOnce
	}
	_, err := d.Accept([]*calls.Call{call})
	return err
}

// adminSource is the source kind of admin API calls.
const adminSource = "admin"

func (p *cloudPart) closeJournal(context.Context) error {
	if p.spool != nil {
		p.spool.Close()
	}
	if p.journal == nil {
		return nil
	}
	return p.journal.Close()
}

// CallInfo is one journaled call as `outpost calls` shows it.
type CallInfo = calls.Record

func (p *cloudPart) listCalls(w http.ResponseWriter, r *http.Request) {
	q, err := parseCallsQuery(r.URL.Query())
	if err != nil {
		writeCallsJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	limit := q.limit
	if q.filtered() || q.newest {
		limit = 0 // the state is that of the in-memory view: filter after it
	}
	recs, err := p.journal.List(r.Context(), limit)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if q.newest {
		slices.Reverse(recs)
	}
	out := make([]*calls.Record, 0, len(recs))
	for _, rec := range recs {
		if !q.match(rec) {
			continue
		}
		if q.limit > 0 && len(out) == q.limit {
			break
		}
		rec.Input = nil
		out = append(out, rec)
	}
	writeCallsJSON(w, http.StatusOK, map[string]any{"calls": out})
}

// callsQuery is what GET /v1/calls selects: at most limit records (0:
// all) in state (nil: any), of task, from a source of kind ("": any) and
// with every one of labels, in id order, the newest first if newest.
type callsQuery struct {
	limit        int
	state        *calls.State
	task, source string
	labels       map[string]string
	newest       bool
}

// filtered says whether q selects on more than the limit.
func (q callsQuery) filtered() bool {
	return q.state != nil || q.task != "" || q.source != "" || len(q.labels) > 0
}

// match says whether rec passes q's filters.
func (q callsQuery) match(rec *calls.Record) bool {
	for k, v := range q.labels {
		if got, ok := rec.Labels[k]; !ok || got != v {
			return false
		}
	}
	return (q.state == nil || rec.State == *q.state) && (q.task == "" || rec.Task == q.task) &&
		(q.source == "" || rec.Source.Kind == q.source)
}

// maxCallsLimit bounds the limit of GET /v1/calls.
const maxCallsLimit = 100000

// parseCallsQuery reads the query of GET /v1/calls; an unknown parameter,
// a repeated one (but label, KEY=VALUE, which may be) or a bad value is an
// error naming it.
func parseCallsQuery(v url.Values) (callsQuery, error) {
	var q callsQuery
	for _, k := range slices.Sorted(maps.Keys(v)) { // the same error for the same query
		vals := v[k]
		if k == "label" {
			var err error
			if q.labels, err = confval.ParseLabels(vals); err != nil {
				return q, fmt.Errorf("query parameter label: %w", err)
			}
			continue
		}
		if len(vals) != 1 {
			return q, fmt.Errorf("query parameter %q given %d times", k, len(vals))
		}
		switch val := vals[0]; k {
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > maxCallsLimit {
				return q, fmt.Errorf("query parameter limit=%q: want an integer from 0 (all) to %d", val, maxCallsLimit)
			}
			q.limit = n
		case "state":
			st := new(calls.State)
			if err := st.UnmarshalText([]byte(val)); err != nil {
				return q, fmt.Errorf("query parameter state: %w (want received, started, suspended, finished or reported)", err)
			}
			q.state = st
		case "task", "source":
			if val == "" {
				return q, fmt.Errorf("query parameter %s is empty", k)
			}
			if k == "task" {
				q.task = val
			} else {
				q.source = val
			}
		case "order":
			if val != "oldest" && val != "newest" {
				return q, fmt.Errorf("query parameter order=%q: want oldest or newest", val)
			}
			q.newest = val == "newest"
		default:
			return q, fmt.Errorf("unknown query parameter %q (want limit, state, task, source, label, order)", k)
		}
	}
	return q, nil
}

func (p *cloudPart) showCall(w http.ResponseWriter, r *http.Request) {
	rec, err := p.journal.Get(r.PathValue("id"))
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	case rec == nil:
		writeCallsJSON(w, http.StatusNotFound, map[string]string{"error": "no call " + r.PathValue("id") + " in the journal"})
	default:
		writeCallsJSON(w, http.StatusOK, rec)
	}
}

func writeCallsJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // a client gone mid-answer is not the daemon's problem
}

// queueNames lists the node's queues in priority order: control, default,
// then the configured ones.
func queueNames(cl remote.CloudConfig) []string {
	out := []string{"control", "default"}
	for _, q := range cl.Queues {
		out = append(out, q.Name)
	}
	return out
}

// queueWeights are the weighted queues' weights, default included.
func queueWeights(cl remote.CloudConfig) map[string]int {
	out := map[string]int{"default": 1}
	for _, q := range cl.Queues {
		out[q.Name] = q.Weight
	}
	return out
}

func cloudQueues(cl remote.CloudConfig) []calls.QueueSpec {
	out := make([]calls.QueueSpec, len(cl.Queues))
	for i, q := range cl.Queues {
		out[i] = calls.QueueSpec{Name: q.Name, Weight: q.Weight}
	}
	return out
}
