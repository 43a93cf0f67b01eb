package snmp

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/internal/ratelog"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// snmpTrapOID.0, the varbind naming the notification in v2c and v3 traps.
const snmpTrapOID = ".1.3.6.1.6.3.1.1.4.1.0"

// TrapReceiver receives SNMP v2c and v3 traps and informs (informs that
// are accepted are acknowledged) and turns each into one event update:
// target cfg.Target, path /snmp/traps/<trap oid> (or the configured name),
// value a JSON object {"source", "version", "trap_oid", "inform", "varbinds": {oid: value}}.
// Messages with an unknown community or v3 user, failing authentication or
// decryption, or below their user's security level are dropped and counted
// by reason (Rejected), with a warning at most once a minute per reason.
//
// gosnmp decodes and authenticates the messages, but its TrapListener has
// no timeliness check (RFC 3414 3.2 step 7) and answers engine discovery
// with engine boots and time 0, so the receiver runs its own UDP loop (one
// goroutine) around gosnmp's UnmarshalTrap and MarshalMsg: see engine.go.
type TrapReceiver struct {
	cfg       Traps
	bootsFile string
	sink      Sink
	log       *slog.Logger
	params    *gosnmp.GoSNMP
	names     map[string]string
	comm      map[string]bool
	eid       []byte                           // local snmpEngineID
	users     map[string]gosnmp.SnmpV3MsgFlags // v3 user → flags its messages must carry
	engine    engine                           // local boots and time, set by Listen
	remote    map[string]remoteEngine          // senders' engines (traps), serve's goroutine only
	conn      *net.UDPConn

	Received        atomic.Uint64
	NotInTimeWindow atomic.Uint64 // authenticated v3 messages outside the time window

	rejected map[string]*atomic.Uint64   // reason → messages dropped; keys fixed at construction
	warned   map[string]*ratelog.Limiter // reason → its warnings
}

// Reasons a trap or inform is dropped: the values of the reason label of
// outpost_telemetry_traps_rejected_total (the v3 ones are named after
// RFC 3414's usmStats counters).
const (
	RejectUnknownCommunity = "unknown_community" // v1/v2c community not listed
	RejectUnknownUser      = "unknown_user"      // v3 user not configured
	RejectWrongDigest      = "wrong_digest"      // v3 authentication failed: wrong auth password or protocol
	RejectDecryption       = "decryption_error"  // v3 authenticated but not decrypted: wrong priv password or protocol
	RejectSecurityLevel    = "security_level"    // v3 message below its user's security level
	RejectNoTrapOID        = "no_trap_oid"       // no snmpTrapOID.0 varbind
	RejectMalformed        = "malformed"         // not an SNMP message gosnmp decodes
)

// RejectReasons lists every reason, in the order metrics show them.
var RejectReasons = []string{RejectUnknownCommunity, RejectUnknownUser, RejectWrongDigest, RejectDecryption, RejectSecurityLevel, RejectNoTrapOID, RejectMalformed}

// rejectWarnEvery bounds the warnings of dropped messages: one per reason
// per period, telling how many more were dropped since the last one.
const rejectWarnEvery = time.Minute

// Rejected returns how many messages were dropped for reason.
func (r *TrapReceiver) Rejected(reason string) uint64 {
	if c := r.rejected[reason]; c != nil {
		return c.Load()
	}
	return 0
}

// reject counts a dropped message and warns at most once per reason per
// rejectWarnEvery. It runs in serve's goroutine.
func (r *TrapReceiver) reject(reason string, from *net.UDPAddr, user string, err error, now time.Time) {
	defer r.rejected[reason].Add(1) // after the warning: tests wait for the count
	suppressed, ok := r.warned[reason].Allow(now)
	if !ok {
		return
	}
	attrs := []any{"reason", reason, "from", from}
	if user != "" {
		attrs = append(attrs, "user", user)
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if suppressed > 0 {
		attrs = append(attrs, "more_dropped_since_last_warning", suppressed)
	}
	r.log.Warn("snmp trap or inform dropped", attrs...)
}

// v3RejectReason names why gosnmp refused a v3 message. gosnmp's errors
// are text only; each case is tested against net-snmp's snmptrap and
// snmpinform (TestTrapRejectReasons).
func v3RejectReason(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no security parameters found"), strings.Contains(msg, "unknown user name"):
		return RejectUnknownUser
	case strings.Contains(msg, "is not authenticated but user"):
		return RejectSecurityLevel
	case strings.Contains(msg, "not authentic"):
		return RejectWrongDigest
	case strings.HasPrefix(msg, "no credentials successfully unmarshaled trap"):
		// A configured user whose message authenticated (or needed no
		// authentication) but did not decode: decrypted with the wrong key.
		return RejectDecryption
	}
	return RejectMalformed
}

// NewTrapReceiver builds the receiver (reading v3 password files); Listen
// starts it. bootsFile keeps the local engine's boot counter across starts
// (Listen increments it); "" keeps it in memory (starting at 1).
func NewTrapReceiver(cfg Traps, bootsFile string, sink Sink, log *slog.Logger) (*TrapReceiver, error) {
	r := &TrapReceiver{cfg: cfg, bootsFile: bootsFile, sink: sink, log: log, names: map[string]string{}, comm: map[string]bool{},
		users: map[string]gosnmp.SnmpV3MsgFlags{}, remote: map[string]remoteEngine{},
		rejected: map[string]*atomic.Uint64{}, warned: map[string]*ratelog.Limiter{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for _, reason := range RejectReasons {
		r.rejected[reason], r.warned[reason] = new(atomic.Uint64), &ratelog.Limiter{Every: rejectWarnEvery}
	}
	for _, c := range cfg.Communities {
		r.comm[c] = true
	}
	for _, n := range cfg.Names {
		name := n.Name
		if name != "" {
			c, err := model.Canonical(name)
			if err != nil {
				return nil, err
			}
			name = c
		}
		r.names[normOID(n.OID)] = name
	}
	params := &gosnmp.GoSNMP{
		Port: 162, Transport: "udp", Version: gosnmp.Version2c, Timeout: 2 * time.Second,
		Logger: gosnmp.NewLogger(nil),
	}
	eid := cfg.EngineID
	if eid == "" { // config built in code: the daemon's config derives it from node.id
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "outpost"
		}
		eid = EngineIDFor(h)
	}
	var err error
	if r.eid, err = ParseEngineID(eid); err != nil {
		return nil, fmt.Errorf("trap receiver: %w", err)
	}
	if len(cfg.Users) > 0 {
		table := gosnmp.NewSnmpV3SecurityParametersTable(gosnmp.NewLogger(nil))
		for _, u := range cfg.Users {
			sp, flags, err := usm(u)
			if err != nil {
				return nil, fmt.Errorf("trap user %s: %w", u.Username, err)
			}
			r.users[u.Username] = flags
			if err := table.Add(u.Username, sp); err != nil {
				return nil, fmt.Errorf("trap user %s: %w", u.Username, err)
			}
		}
		// Engine discovery (the first message of a v3 inform) comes from the
		// empty user without authentication: it must decode to be answered.
		// handle drops anything else from users not configured.
		if err := table.Add("", &gosnmp.UsmSecurityParameters{AuthenticationProtocol: gosnmp.NoAuth, PrivacyProtocol: gosnmp.NoPriv}); err != nil {
			return nil, fmt.Errorf("trap engine discovery: %w", err)
		}
		params.Version = gosnmp.Version3
		params.SecurityModel = gosnmp.UserSecurityModel
		params.SetTrapSecurityParametersTable(table)
	}
	r.params = params
	return r, nil
}

// Listen increments the engine boot counter, binds the address and serves
// until Close. It returns once the socket is bound (or failed to bind);
// serving continues in a goroutine whose end (nil after Close) is sent on
// the returned channel.
func (r *TrapReceiver) Listen(addr string) (<-chan error, error) {
	boots, err := nextBoots(r.bootsFile)
	if err != nil {
		return nil, fmt.Errorf("trap receiver: %w", err)
	}
	r.engine = engine{boots: boots, start: time.Now()}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for traps on %s: %w", addr, err)
	}
	if r.conn, err = net.ListenUDP("udp", ua); err != nil {
		return nil, fmt.Errorf("listen for traps on %s: %w", addr, err)
	}
	done := make(chan error, 1)
	go func() { done <- r.serve() }()
	r.log.Info("snmp trap receiver listening", "addr", r.conn.LocalAddr().String(), "engine_id", r.EngineID(), "engine_boots", boots)
	return done, nil
}

// EngineID is the receiver's local snmpEngineID in hex.
func (r *TrapReceiver) EngineID() string { return hex.EncodeToString(r.eid) }

// EngineBoots is the local snmpEngineBoots of this start (after Listen).
func (r *TrapReceiver) EngineBoots() uint32 { return r.engine.boots }

// Close stops the listener; the channel Listen returned then gets nil.
func (r *TrapReceiver) Close() {
	if r.conn != nil {
		r.conn.Close()
	}
}

// handle checks community or user and hands the event to the sink; it
// reports whether the message was accepted (an inform is acknowledged
// only then).
func (r *TrapReceiver) handle(pkt *gosnmp.SnmpPacket, from *net.UDPAddr, now time.Time) bool {
	if pkt.Version != gosnmp.Version3 && !r.comm[pkt.Community] {
		r.reject(RejectUnknownCommunity, from, "", nil, now)
		return false
	}
	if pkt.Version == gosnmp.Version3 {
		sp, _ := pkt.SecurityParameters.(*gosnmp.UsmSecurityParameters)
		var user string
		need, ok := gosnmp.SnmpV3MsgFlags(0), false
		if sp != nil {
			user = sp.UserName
			need, ok = r.users[user]
		}
		if !ok {
			r.reject(RejectUnknownUser, from, user, nil, now)
			return false
		}
		if pkt.MsgFlags&need != need {
			r.reject(RejectSecurityLevel, from, user, nil, now)
			return false
		}
	}
	u, ok := TrapUpdate(pkt, from, r.cfg.Target, r.names, now)
	if !ok {
		r.reject(RejectNoTrapOID, from, "", nil, now)
		return false
	}
	r.Received.Add(1)
	if r.sink != nil {
		r.sink([]model.Update{u})
	}
	return true
}

// TrapUpdate converts a trap packet into an event update.
func TrapUpdate(pkt *gosnmp.SnmpPacket, from *net.UDPAddr, target string, names map[string]string, now time.Time) (model.Update, bool) {
	ev := struct {
		Source   string                     `json:"source"`
		Version  string                     `json:"version"`
		TrapOID  string                     `json:"trap_oid"`
		Inform   bool                       `json:"inform,omitempty"`
		Varbinds map[string]json.RawMessage `json:"varbinds"`
	}{Varbinds: map[string]json.RawMessage{}, Inform: pkt.PDUType == gosnmp.InformRequest}
	if from != nil {
		ev.Source = from.IP.String()
	}
	switch pkt.Version {
	case gosnmp.Version1:
		ev.Version = "1"
		ev.TrapOID = strings.TrimPrefix(pkt.Enterprise, ".") + ".0." + fmt.Sprint(pkt.SpecificTrap)
	case gosnmp.Version2c:
		ev.Version = "2c"
	case gosnmp.Version3:
		ev.Version = "3"
	}
	for _, v := range pkt.Variables {
		if normOID(v.Name) == snmpTrapOID {
			if s, ok := v.Value.(string); ok {
				ev.TrapOID = strings.TrimPrefix(s, ".")
			}
			continue
		}
		val, ok := Convert(v)
		if !ok {
			continue
		}
		// The value's own JSON, as the admin API writes polled values:
		// numbers as numbers, text as strings, octet strings that are not
		// text as base64 of their bytes.
		j, err := val.MarshalJSON()
		if err != nil {
			continue
		}
		ev.Varbinds[strings.TrimPrefix(v.Name, ".")] = json.RawMessage(j)
	}
	if ev.TrapOID == "" {
		return model.Update{}, false
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return model.Update{}, false
	}
	path := names[normOID(ev.TrapOID)]
	if path == "" {
		path = "/snmp/traps/" + ev.TrapOID
	}
	return model.Update{Target: target, Path: path, Time: now.UnixNano(), Value: model.JSON(b)}, true
}
