package telemetry

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// hub fans updates out, in the collector's goroutine: to the store
// (buffered; back-pressure when the disk is slow), the gNMI server cache,
// MQTT (rate-limited per series, queued for a publisher goroutine, dropped
// and counted when the queue is full) and triggers (non-blocking Submit).
type hub struct {
	db     *tsdb.DB
	server *gnmiserver.Server
	sinks  Sinks
	log    *slog.Logger
	pubs   []pubRule
	trigs  []trigRule

	mu      sync.Mutex
	lastPub map[string]int64 // rule index + series → last publish time (ns)
	lastTrg map[string]trigState
	match   map[string]bool // rule id + series → matches

	queue chan mqttMsg
	done  chan struct{}

	mUpdates  prometheus.Counter
	mDropped  prometheus.Counter
	mRefused  prometheus.Counter
	mTriggers prometheus.Counter
}

type pubRule struct {
	cfg  PublishRule
	pats []model.Pattern
}

type trigRule struct {
	cfg  TriggerRule
	pat  model.Pattern
	op   string
	arg  string
	argN float64
	num  bool
}

type trigState struct {
	last  int64
	value model.Value
	seen  bool
}

type mqttMsg struct {
	topic   string
	qos     byte
	payload []byte
}

func newHub(cfg Config, db *tsdb.DB, server *gnmiserver.Server, sinks Sinks, log *slog.Logger, reg prometheus.Registerer) (*hub, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &hub{db: db, server: server, sinks: sinks, log: log,
		lastPub: map[string]int64{}, lastTrg: map[string]trigState{}, match: map[string]bool{},
		queue: make(chan mqttMsg, 4096), done: make(chan struct{})}
	for _, p := range cfg.MQTT {
		r := pubRule{cfg: p}
		for _, s := range p.Paths {
			pat, err := model.ParsePattern(s)
			if err != nil {
				return nil, err
			}
			r.pats = append(r.pats, pat)
		}
		h.pubs = append(h.pubs, r)
	}
	for _, t := range cfg.Triggers {
		pat, err := model.ParsePattern(t.Path)
		if err != nil {
			return nil, err
		}
		r := trigRule{cfg: t, pat: pat}
		r.op, r.arg = parseCondition(t.Condition)
		if f, err := strconv.ParseFloat(r.arg, 64); err == nil {
			r.argN, r.num = f, true
		}
		h.trigs = append(h.trigs, r)
	}
	h.mUpdates = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_updates_total", Help: "Updates received from all telemetry sources."})
	h.mDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_mqtt_dropped_total", Help: "Telemetry MQTT messages dropped because the publish queue was full or publishing failed."})
	h.mRefused = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_triggers_refused_total", Help: "Telemetry trigger calls the scheduler refused."})
	h.mTriggers = prometheus.NewCounter(prometheus.CounterOpts{Name: "outpost_telemetry_triggers_total", Help: "Telemetry trigger calls submitted."})
	if reg != nil {
		for _, c := range []prometheus.Collector{h.mUpdates, h.mDropped, h.mRefused, h.mTriggers} {
			if err := reg.Register(c); err != nil {
				log.Warn("register metric", "err", err)
			}
		}
	}
	return h, nil
}

func parseCondition(c string) (op, arg string) {
	c = strings.TrimSpace(c)
	if c == "" || c == "changed" {
		return c, ""
	}
	for _, o := range []string{">=", "<=", "==", "!=", ">", "<"} {
		if rest, ok := strings.CutPrefix(c, o); ok {
			return o, strings.TrimSpace(rest)
		}
	}
	return "", ""
}

func (h *hub) start() {
	go func() {
		defer close(h.done)
		for m := range h.queue {
			if h.sinks.Publisher == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := h.sinks.Publisher.Publish(ctx, m.topic, m.qos, m.payload); err != nil {
				h.mDropped.Inc()
				h.log.Debug("telemetry publish", "topic", m.topic, "err", err)
			}
			cancel()
		}
	}()
}

func (h *hub) stop() {
	close(h.queue)
	<-h.done
}

// publish is the Sink of every source.
func (h *hub) publish(us []model.Update) {
	if len(us) == 0 {
		return
	}
	h.mUpdates.Add(float64(len(us)))
	if h.db != nil {
		if err := h.db.Append(us); err != nil {
			h.log.Warn("telemetry store append", "err", err)
		}
	}
	if h.server != nil {
		h.server.Update(us)
	}
	if len(h.pubs) == 0 && len(h.trigs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.match) > 200_000 { // bound the memo
		h.match = map[string]bool{}
	}
	for i := range us {
		u := &us[i]
		for ri := range h.pubs {
			h.maybePublish(ri, u)
		}
		if u.Value.Kind == model.KindDeleted {
			continue // a delete is no value a condition could hold for
		}
		for ri := range h.trigs {
			h.maybeTrigger(ri, u)
		}
	}
}

func (h *hub) matches(kind byte, ri int, target string, pats []model.Pattern, u *model.Update) bool {
	if !model.Glob(target, u.Target) {
		return false
	}
	key := string(kind) + strconv.Itoa(ri) + "\x00" + u.Target + "\x00" + u.Path
	m, ok := h.match[key]
	if !ok {
		for _, p := range pats {
			if p.MatchString(u.Path) {
				m = true
				break
			}
		}
		h.match[key] = m
	}
	return m
}

func (h *hub) maybePublish(ri int, u *model.Update) {
	r := &h.pubs[ri]
	if !h.matches('p', ri, r.cfg.Target, r.pats, u) {
		return
	}
	key := strconv.Itoa(ri) + "\x00" + u.Target + "\x00" + u.Path
	// A delete is never held back: it may be the series' last message.
	if last, ok := h.lastPub[key]; ok && u.Time-last < int64(r.cfg.MinInterval) && u.Value.Kind != model.KindDeleted {
		return
	}
	h.lastPub[key] = u.Time
	payload, _ := json.Marshal(u.Point())
	topic := strings.NewReplacer("{target}", u.Target, "{path}", topicPath(u.Path)).Replace(r.cfg.Topic)
	select {
	case h.queue <- mqttMsg{topic, r.cfg.QoS, payload}:
	default:
		h.mDropped.Inc()
	}
}

// topicPath makes a path safe as MQTT topic levels: keys become "name=value"
// levels' suffixes and the wildcard characters are replaced.
func topicPath(p string) string {
	return strings.NewReplacer("+", "_", "#", "_", "[", "/", "]", "").Replace(p)
}

func (h *hub) maybeTrigger(ri int, u *model.Update) {
	r := &h.trigs[ri]
	if !h.matches('t', ri, r.cfg.Target, []model.Pattern{r.pat}, u) {
		return
	}
	key := strconv.Itoa(ri) + "\x00" + u.Target + "\x00" + u.Path
	st := h.lastTrg[key]
	fire := r.holds(st, u.Value)
	prevSeen := st.seen
	st.value, st.seen = u.Value, true
	if fire && prevSeen && r.cfg.MinInterval > 0 && u.Time-st.last < int64(r.cfg.MinInterval) {
		fire = false
	}
	if fire {
		st.last = u.Time
	}
	h.lastTrg[key] = st
	if !fire || h.sinks.Trigger == nil {
		return
	}
	input, _ := json.Marshal(u.Point())
	if err := h.sinks.Trigger.Submit(r.cfg.Task, input, "telemetry"); err != nil {
		h.mRefused.Inc()
		h.log.Warn("telemetry trigger refused", "task", r.cfg.Task, "err", err)
		return
	}
	h.mTriggers.Inc()
}

func (r *trigRule) holds(st trigState, v model.Value) bool {
	switch r.op {
	case "":
		return true
	case "changed":
		return !st.seen || st.value != v
	}
	if f, ok := v.Number(); ok && r.num {
		switch r.op {
		case ">":
			return f > r.argN
		case ">=":
			return f >= r.argN
		case "<":
			return f < r.argN
		case "<=":
			return f <= r.argN
		case "==":
			return f == r.argN
		case "!=":
			return f != r.argN
		}
	}
	s := v.String()
	switch r.op {
	case "==":
		return s == r.arg
	case "!=":
		return s != r.arg
	}
	return false
}
