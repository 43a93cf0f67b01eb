// Package snmp owns SNMP collection: a poller (v2c and v3 with gosnmp, one
// client per target, explicit timeout and retries, a deadline on the whole
// poll, per-target max-repetitions, Get of scalars and BulkWalk of subtrees
// and tables, a concurrency limit, counter wrap and rates, table rows turned
// into path-keyed values) and a trap and inform receiver turning
// notifications into events. Everything it collects leaves as model.Updates.
//
// Lock order: target.pollMu, then target.mu.
package snmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/internal/secretfile"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// ErrNoResponse means the agent did not answer. With v2c a wrong community
// looks exactly like this, so the message says so.
var ErrNoResponse = errors.New("no response")

// Sink receives the updates of one poll or trap. It must not keep the slice.
type Sink func([]model.Update)

// Poller polls the configured targets.
type Poller struct {
	log     *slog.Logger
	sink    Sink
	sem     chan struct{}
	targets []*target
	wg      sync.WaitGroup
	now     func() time.Time
}

type target struct {
	cfg  Target
	snmp *gosnmp.GoSNMP
	log  *slog.Logger

	pollMu   sync.Mutex              // one poll at a time: a GoSNMP is not safe for concurrent use
	counters map[string]counterState // rate state, under pollMu
	present  map[string]string       // paths of the last complete poll (each its own key: one string per path shared by every poll, the store and the gNMI server), under pollMu
	gone     map[string]struct{}     // missing objects (see vanished), under pollMu

	mu     sync.Mutex
	status model.TargetStatus
	behind bool // the last round overran its interval
}

type counterState struct {
	v    uint64
	ts   int64
	rate string // the rate's path
}

// NewPoller builds one gosnmp client per target (reading v3 password
// files); it starts nothing. cfg must have defaults applied.
func NewPoller(cfg Config, sink Sink, log *slog.Logger) (*Poller, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Poller{log: log, sink: sink, sem: make(chan struct{}, max(1, cfg.MaxConcurrent)), now: time.Now}
	for _, tc := range cfg.Targets {
		tc.OIDs = append([]OID(nil), tc.OIDs...)
		tc.Tables = append([]Table(nil), tc.Tables...)
		for i := range tc.OIDs {
			if tc.OIDs[i].Name != "" {
				c, err := model.Canonical(tc.OIDs[i].Name)
				if err != nil {
					return nil, fmt.Errorf("snmp target %s: %w", tc.Name, err)
				}
				tc.OIDs[i].Name = c
			}
		}
		for i := range tc.Tables {
			if tc.Tables[i].Name != "" {
				c, err := model.Canonical(tc.Tables[i].Name)
				if err != nil {
					return nil, fmt.Errorf("snmp target %s: %w", tc.Name, err)
				}
				tc.Tables[i].Name = c
			}
		}
		g, err := newClient(tc)
		if err != nil {
			return nil, fmt.Errorf("snmp target %s: %w", tc.Name, err)
		}
		t := &target{cfg: tc, snmp: g, log: log.With("target", tc.Name), counters: map[string]counterState{}, gone: map[string]struct{}{}}
		t.status = model.TargetStatus{Name: tc.Name, Source: "snmp", Address: g.Target + ":" + strconv.Itoa(int(g.Port))}
		p.targets = append(p.targets, t)
	}
	return p, nil
}

func readSecret(file string) (string, error) {
	b, err := secretfile.Read(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// newClient returns a GoSNMP value of its own (never gosnmp.Default).
func newClient(tc Target) (*gosnmp.GoSNMP, error) {
	host, port := tc.Address, "161"
	if h, p, err := net.SplitHostPort(tc.Address); err == nil {
		host, port = h, p
	}
	pn, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("bad port in %q", tc.Address)
	}
	g := &gosnmp.GoSNMP{
		Target:             host,
		Port:               uint16(pn),
		Transport:          "udp",
		Timeout:            tc.Timeout.Std(),
		Retries:            tc.Retries,
		ExponentialTimeout: false,
		MaxOids:            gosnmp.MaxOids,
		MaxRepetitions:     uint32(tc.MaxRepetitions),
		Logger:             gosnmp.NewLogger(nil),
	}
	if g.Timeout <= 0 {
		g.Timeout = 2 * time.Second
	}
	switch tc.Version {
	case "3":
		sp, flags, err := usm(tc.V3)
		if err != nil {
			return nil, err
		}
		g.Version = gosnmp.Version3
		g.SecurityModel = gosnmp.UserSecurityModel
		g.MsgFlags = flags
		g.SecurityParameters = sp
		g.ContextName = tc.V3.ContextName
	default:
		g.Version = gosnmp.Version2c
		g.Community = tc.Community
	}
	return g, nil
}

var authProtos = map[string]gosnmp.SnmpV3AuthProtocol{
	"MD5": gosnmp.MD5, "SHA": gosnmp.SHA, "SHA224": gosnmp.SHA224, "SHA256": gosnmp.SHA256, "SHA384": gosnmp.SHA384, "SHA512": gosnmp.SHA512,
}
var privProtos = map[string]gosnmp.SnmpV3PrivProtocol{
	"DES": gosnmp.DES, "AES": gosnmp.AES, "AES192": gosnmp.AES192, "AES256": gosnmp.AES256, "AES192C": gosnmp.AES192C, "AES256C": gosnmp.AES256C,
}

// usm builds fresh USM parameters (never shared between targets, so engine ids never mix).
func usm(v V3) (*gosnmp.UsmSecurityParameters, gosnmp.SnmpV3MsgFlags, error) {
	sp := &gosnmp.UsmSecurityParameters{UserName: v.Username, AuthenticationProtocol: gosnmp.NoAuth, PrivacyProtocol: gosnmp.NoPriv}
	flags := gosnmp.NoAuthNoPriv
	lvl := v.SecurityLevel
	if lvl == "" {
		lvl = "authPriv"
	}
	if lvl != "noAuthNoPriv" {
		ap, ok := authProtos[v.AuthProtocol]
		if !ok {
			return nil, 0, fmt.Errorf("auth protocol %q is not supported", v.AuthProtocol)
		}
		pass, err := readSecret(v.AuthPasswordFile)
		if err != nil {
			return nil, 0, fmt.Errorf("read auth password: %w", err)
		}
		sp.AuthenticationProtocol, sp.AuthenticationPassphrase = ap, pass
		flags = gosnmp.AuthNoPriv
	}
	if lvl == "authPriv" {
		pp, ok := privProtos[v.PrivProtocol]
		if !ok {
			return nil, 0, fmt.Errorf("privacy protocol %q is not supported", v.PrivProtocol)
		}
		pass, err := readSecret(v.PrivPasswordFile)
		if err != nil {
			return nil, 0, fmt.Errorf("read priv password: %w", err)
		}
		sp.PrivacyProtocol, sp.PrivacyPassphrase = pp, pass
		flags = gosnmp.AuthPriv
	}
	return sp, flags, nil
}

// Run polls every target on its interval until ctx ends; it returns when
// every poll has finished. Each target has its own goroutine; a semaphore
// bounds polls in flight so a slow device only ever holds one slot.
func (p *Poller) Run(ctx context.Context) {
	for _, t := range p.targets {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Spread the first polls over a tenth of the interval (at most 10 s).
			iv := t.cfg.Interval.Std()
			if iv <= 0 {
				iv = time.Minute
			}
			first := time.Duration(rand.Int64N(int64(min(iv/10, 10*time.Second)) + 1))
			timer := time.NewTimer(first)
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				start := p.now()
				select {
				case p.sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				slot := p.now()
				_ = p.poll(ctx, t)
				<-p.sem
				if ctx.Err() != nil {
					return // a round cut short by the stop is no figure
				}
				round := p.now().Sub(start)
				t.endRound(round, slot.Sub(start), iv)
				timer.Reset(max(0, iv-round))
			}
		}()
	}
	<-ctx.Done()
	p.wg.Wait()
}

// endRound records how long a round took, from its tick to the end of its
// poll (waiting for a slot included). A round that took the interval or
// longer starts the next at once: the target is polled back to back,
// which is counted and warned about when it starts, and noted when it ends.
func (t *target) endRound(round, wait, iv time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.status.RoundSeconds = round.Seconds()
	switch over := round >= iv; {
	case over:
		t.status.Overruns++
		if !t.behind {
			t.log.Warn("snmp polls run back to back: a round took longer than the interval",
				"round", round, "waited_for_slot", wait, "interval", iv)
		}
		t.behind = true
	case t.behind:
		t.log.Info("snmp polls back within their interval", "round", round, "interval", iv)
		t.behind = false
	}
}

// PollOnce polls one target now (for tests and on-demand reads).
func (p *Poller) PollOnce(ctx context.Context, name string) error {
	for _, t := range p.targets {
		if t.cfg.Name == name {
			return p.poll(ctx, t)
		}
	}
	return fmt.Errorf("no snmp target %q", name)
}

// Status returns the state of every target.
func (p *Poller) Status() []model.TargetStatus {
	out := make([]model.TargetStatus, 0, len(p.targets))
	for _, t := range p.targets {
		t.mu.Lock()
		out = append(out, t.status)
		t.mu.Unlock()
	}
	return out
}

func (p *Poller) poll(ctx context.Context, t *target) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PollTimeout.Std())
	defer cancel()
	ts := p.now().UnixNano()
	t.pollMu.Lock()
	h, err := t.collect(ctx, ts)
	if err != nil && len(h.us) == 0 && t.forgetEngine() {
		// The agent may have restarted (a new engine id, or its boots
		// counted up): discover its engine again and try once more.
		t.log.Info("snmp v3 engine rediscovery", "err", err)
		h, err = t.collect(ctx, ts)
	}
	us, values, missing := h.us, len(h.us), -1
	if err == nil {
		us, missing = t.vanished(h, ts)
	}
	t.release()
	t.pollMu.Unlock()
	if len(us) > 0 && p.sink != nil {
		p.sink(us)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if values > 0 {
		t.status.LastUpdate = p.now()
		t.status.Updates += uint64(values)
	}
	if missing >= 0 {
		t.status.Missing = missing
	}
	if err != nil {
		t.status.Connected = false
		t.status.Errors++
		t.status.LastError, t.status.ErrorTime = err.Error(), p.now()
		t.log.Warn("snmp poll", "err", err)
		return err
	}
	t.status.Connected = true
	return nil
}

// maxMissing bounds the missing objects remembered per target.
const maxMissing = 10_000

// vanished follows the objects a target stops returning. After a poll
// that completed without error it appends a delete (model.Deleted) for
// every path the previous complete poll returned and this one did not (a
// table row gone, an object now answering noSuchObject), and returns the
// count of missing objects: paths deleted and not back since, and scalars
// that answer noSuchObject or noSuchInstance. A rate goes with its
// counter. Under pollMu.
func (t *target) vanished(h harvest, ts int64) ([]model.Update, int) {
	us := h.us
	now := make(map[string]string, len(h.paths))
	for _, p := range h.paths {
		now[p] = p
	}
	miss := func(p string) {
		if len(t.gone) < maxMissing {
			t.gone[p] = struct{}{}
		}
	}
	for p := range t.present {
		if _, ok := now[p]; !ok {
			us = append(us, model.Update{Target: t.cfg.Name, Path: p, Time: ts, Value: model.Deleted()})
			if c, rated := t.counters[p]; rated {
				us = append(us, model.Update{Target: t.cfg.Name, Path: c.rate, Time: ts, Value: model.Deleted()})
				delete(t.counters, p)
			}
			miss(p)
		}
	}
	for _, p := range h.absent {
		miss(p)
	}
	for p := range t.gone {
		if _, back := now[p]; back {
			delete(t.gone, p)
		}
	}
	t.present = now
	return us, len(t.gone)
}

// harvest is what one poll got: the updates, the paths of the values
// among them (rates left out), and the paths of scalars the agent answered
// noSuchObject or noSuchInstance.
type harvest struct {
	us     []model.Update
	paths  []string
	absent []string
}

// collect runs one poll: Get of scalars (in groups of MaxOids), BulkWalk of
// subtrees and tables. It returns what it got even when a part failed.
func (t *target) collect(ctx context.Context, ts int64) (h harvest, _ error) {
	g := t.snmp
	g.Context = ctx
	if g.Conn == nil {
		if err := g.Connect(); err != nil {
			return h, fmt.Errorf("connect %s: %w", t.status.Address, err)
		}
	}
	// Sized from the last poll: growing by doubling is most of a poll's garbage.
	h.us = make([]model.Update, 0, len(t.present)+len(t.counters))
	h.paths = make([]string, 0, len(t.present))
	var errs []error
	emit := func(path string, pdu gosnmp.SnmpPDU, rate bool) {
		v, ok := Convert(pdu)
		if !ok {
			if pdu.Type == gosnmp.NoSuchObject || pdu.Type == gosnmp.NoSuchInstance {
				h.absent = append(h.absent, path)
			}
			return
		}
		if c, ok := t.present[path]; ok {
			path = c // the string of the earlier polls, not one more copy
		}
		h.paths = append(h.paths, path)
		h.us = append(h.us, model.Update{Target: t.cfg.Name, Path: path, Time: ts, Value: v})
		if rate {
			if bits, ok := Counter(pdu.Type); ok {
				cur := v.AsUint()
				prev, seen := t.counters[path]
				if !seen {
					prev.rate = ratePath(path)
				}
				if seen && ts > prev.ts {
					if d, ok := Delta(prev.v, cur, bits); ok {
						r := float64(d) / (float64(ts-prev.ts) / 1e9)
						h.us = append(h.us, model.Update{Target: t.cfg.Name, Path: prev.rate, Time: ts, Value: model.Float(r)})
					}
				}
				t.counters[path] = counterState{cur, ts, prev.rate}
			}
		}
	}

	// Scalars.
	var scalars []OID
	for _, o := range t.cfg.OIDs {
		if !o.Walk {
			scalars = append(scalars, o)
		}
	}
	for i := 0; i < len(scalars); i += g.MaxOids {
		grp := scalars[i:min(len(scalars), i+g.MaxOids)]
		oids := make([]string, len(grp))
		for j, o := range grp {
			oids[j] = normOID(o.OID)
		}
		pkt, err := g.Get(oids)
		if err != nil {
			errs = append(errs, t.explain("get", err))
			if errors.Is(errs[len(errs)-1], ErrNoResponse) {
				return h, errors.Join(errs...)
			}
			continue
		}
		for j, pdu := range pkt.Variables {
			if j < len(grp) {
				emit(pathFor(grp[j]), pdu, grp[j].Rate)
			}
		}
	}
	// Subtrees.
	for _, o := range t.cfg.OIDs {
		if !o.Walk {
			continue
		}
		root := normOID(o.OID)
		base := o.Name
		err := g.BulkWalk(root, func(pdu gosnmp.SnmpPDU) error {
			suffix := strings.TrimPrefix(strings.TrimPrefix(pdu.Name, root), ".")
			path := OIDPath(pdu.Name)
			if base != "" {
				path = base + "[oid=" + suffix + "]"
			}
			emit(path, pdu, o.Rate)
			return nil
		})
		if err != nil {
			errs = append(errs, t.explain("walk "+o.OID, err))
			if errors.Is(errs[len(errs)-1], ErrNoResponse) {
				return h, errors.Join(errs...)
			}
		}
	}
	// Tables.
	for _, tb := range t.cfg.Tables {
		rows, err := walkTable(g, tb)
		if err != nil {
			errs = append(errs, t.explain("walk table "+tb.OID, err))
			if errors.Is(errs[len(errs)-1], ErrNoResponse) {
				return h, errors.Join(errs...)
			}
		}
		for _, r := range rows {
			emit(r.path, r.pdu, r.rate)
		}
	}
	if ctx.Err() != nil && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("poll deadline (%s) passed: %w", t.cfg.PollTimeout.Std(), ctx.Err()))
	}
	return h, errors.Join(errs...)
}

// release closes the target's socket after a poll and replaces its client
// by one that has what the target learnt (v3 engine and keys) but no
// socket and no receive buffer: gosnmp keeps a 64 KiB buffer per client
// from Connect on, which for a site of targets polled a few at a time
// would be most of the poller's memory. The next poll connects again (one
// socket, a new source port). Under pollMu.
func (t *target) release() {
	g := t.snmp
	g.Close()
	t.snmp = &gosnmp.GoSNMP{Target: g.Target, Port: g.Port, Transport: g.Transport, Community: g.Community, Version: g.Version,
		Timeout: g.Timeout, Retries: g.Retries, ExponentialTimeout: g.ExponentialTimeout, MaxOids: g.MaxOids, MaxRepetitions: g.MaxRepetitions,
		Logger: g.Logger, SecurityModel: g.SecurityModel, MsgFlags: g.MsgFlags, SecurityParameters: g.SecurityParameters,
		ContextName: g.ContextName, ContextEngineID: g.ContextEngineID}
}

// forgetEngine drops what a v3 target learnt of its agent's engine (id,
// boots, time, context engine id), so the next request discovers it again
// (RFC 3414 section 4), as net-snmp's tools do at every run. An agent that
// restarted answers with a new engine id (snmpsim), or with the same id and
// more boots (snmpd): neither recovers by gosnmp's report handling alone.
// It reports whether there was an engine to forget: a target whose
// discovery itself fails is not retried within the poll.
func (t *target) forgetEngine() bool {
	g := t.snmp
	sp, ok := g.SecurityParameters.(*gosnmp.UsmSecurityParameters)
	if g.Version != gosnmp.Version3 || !ok || sp.AuthoritativeEngineID == "" {
		return false
	}
	fresh, _, err := usm(t.cfg.V3)
	if err != nil {
		t.log.Warn("snmp v3 engine rediscovery", "err", err)
		return false
	}
	g.SecurityParameters, g.ContextEngineID = fresh, ""
	return true
}

// explain turns gosnmp's timeouts into ErrNoResponse with a hint.
func (t *target) explain(op string, err error) error {
	var ne net.Error
	if strings.Contains(err.Error(), "timeout") || errors.As(err, &ne) && ne.Timeout() {
		if t.cfg.Version == "3" {
			return fmt.Errorf("%s %s: %w (check address and port)", op, t.status.Address, ErrNoResponse)
		}
		return fmt.Errorf("%s %s: %w (check community)", op, t.status.Address, ErrNoResponse)
	}
	return fmt.Errorf("%s %s: %w", op, t.status.Address, err)
}

func normOID(s string) string {
	if !strings.HasPrefix(s, ".") {
		return "." + s
	}
	return s
}

func pathFor(o OID) string {
	if o.Name != "" {
		return o.Name
	}
	return OIDPath(o.OID)
}

func ratePath(p string) string {
	if strings.HasSuffix(p, "]") {
		return p + "/rate"
	}
	return p + "-rate"
}

type rowValue struct {
	path string
	pdu  gosnmp.SnmpPDU
	rate bool
}

// walkTable walks a table entry and turns its cells into path-keyed values:
// <name>[<index_key>=<index>]/<column>, the index being the OID suffix
// after the column number, or the value of the index_from column.
func walkTable(g *gosnmp.GoSNMP, tb Table) ([]rowValue, error) {
	root := normOID(tb.OID)
	type cell struct {
		col int
		idx string
		pdu gosnmp.SnmpPDU
	}
	var cells []cell
	walk := func(oid string) error {
		return g.BulkWalk(oid, func(pdu gosnmp.SnmpPDU) error {
			c, ok := splitCell(root, pdu.Name)
			if ok {
				cells = append(cells, cell{c.col, c.idx, pdu})
			}
			return nil
		})
	}
	var err error
	if len(tb.Columns) == 0 {
		err = walk(root)
	} else {
		// Only the configured columns (and the one naming the rows).
		cols := map[int]bool{}
		if tb.IndexFrom > 0 {
			cols[tb.IndexFrom] = true
		}
		for _, c := range tb.Columns {
			cols[c.Column] = true
		}
		order := make([]int, 0, len(cols))
		for c := range cols {
			order = append(order, c)
		}
		sort.Ints(order)
		for _, c := range order {
			if err = walk(root + "." + strconv.Itoa(c)); err != nil {
				break
			}
		}
	}
	return tableRows(tb, func(fn func(col int, idx string, pdu gosnmp.SnmpPDU)) {
		for _, c := range cells {
			fn(c.col, c.idx, c.pdu)
		}
	}), err
}

type cellID struct {
	col int
	idx string
}

func splitCell(root, name string) (cellID, bool) {
	rest, ok := strings.CutPrefix(normOID(name), root+".")
	if !ok {
		return cellID{}, false
	}
	colS, idx, ok := strings.Cut(rest, ".")
	col, err := strconv.Atoi(colS)
	if !ok || err != nil {
		return cellID{}, false
	}
	return cellID{col, idx}, true
}

// tableRows applies the table's column names and index mapping.
func tableRows(tb Table, each func(func(col int, idx string, pdu gosnmp.SnmpPDU))) []rowValue {
	name := tb.Name
	if name == "" {
		name = OIDPath(tb.OID)
	}
	key := tb.IndexKey
	if key == "" {
		key = "index"
	}
	cols := map[int]Column{}
	for _, c := range tb.Columns {
		cols[c.Column] = c
	}
	keyOf := map[string]string{}
	if tb.IndexFrom > 0 {
		each(func(col int, idx string, pdu gosnmp.SnmpPDU) {
			if col == tb.IndexFrom {
				if v, ok := Convert(pdu); ok {
					keyOf[idx] = v.String()
				}
			}
		})
	}
	var out []rowValue
	rowPath := map[string]string{} // index → "<name>[<key>=<value>]/"
	each(func(col int, idx string, pdu gosnmp.SnmpPDU) {
		c, ok := cols[col]
		if len(cols) > 0 && !ok {
			return
		}
		cname := c.Name
		if cname == "" {
			cname = strconv.Itoa(col)
		}
		row, ok := rowPath[idx]
		if !ok {
			kv := idx
			if k, ok := keyOf[idx]; ok {
				kv = k
			}
			p := model.Path{{Name: "x", Keys: []model.Key{{Name: key, Value: kv}}}}
			// Escape the key value as the canonical form does.
			row = name + strings.TrimPrefix(p.String(), "/x") + "/"
			rowPath[idx] = row
		}
		out = append(out, rowValue{path: row + cname, pdu: pdu, rate: c.Rate})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}
