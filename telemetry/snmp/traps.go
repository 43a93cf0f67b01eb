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

	"github.com/outpost-edge/outpost/coordinator/config"
	"github.com/outpost-edge/outpost/telemetry/model"
)

// snmpTrapOID.0, the varbind naming the notification in v2c and v3 traps.
const snmpTrapOID = ".1.3.6.1.6.3.1.1.4.1.0"

// TrapReceiver receives SNMP v2c and v3 traps and informs (informs that
// are accepted are acknowledged) and turns each into one event update:
// target cfg.Target, path /snmp/traps/<trap oid> (or the configured name),
// value a JSON object {"source", "version", "trap_oid", "inform", "varbinds": {oid: value}}.
// Traps with an unknown community are counted and dropped.
//
// gosnmp decodes and authenticates the messages, but its TrapListener has
// no timeliness check (RFC 3414 3.2 step 7) and answers engine discovery
// with engine boots and time 0, so the receiver runs its own UDP loop (one
// goroutine) around gosnmp's UnmarshalTrap and MarshalMsg: see engine.go.
type TrapReceiver struct {
	cfg       config.SNMPTraps
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
	Rejected        atomic.Uint64
	NotInTimeWindow atomic.Uint64 // authenticated v3 messages outside the time window
}

// NewTrapReceiver builds the receiver (reading v3 password files); Listen
// starts it. bootsFile keeps the local engine's boot counter across starts
// (Listen increments it); "" keeps it in memory (starting at 1).
func NewTrapReceiver(cfg config.SNMPTraps, bootsFile string, sink Sink, log *slog.Logger) (*TrapReceiver, error) {
	r := &TrapReceiver{cfg: cfg, bootsFile: bootsFile, sink: sink, log: log, names: map[string]string{}, comm: map[string]bool{},
		users: map[string]gosnmp.SnmpV3MsgFlags{}, remote: map[string]remoteEngine{}}
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
		eid = config.SNMPEngineID(h)
	}
	var err error
	if r.eid, err = config.ParseEngineID(eid); err != nil {
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
func (r *TrapReceiver) handle(pkt *gosnmp.SnmpPacket, from *net.UDPAddr) bool {
	if pkt.Version != gosnmp.Version3 && !r.comm[pkt.Community] {
		r.Rejected.Add(1)
		r.log.Debug("snmp trap with unknown community dropped", "from", from)
		return false
	}
	if pkt.Version == gosnmp.Version3 {
		sp, _ := pkt.SecurityParameters.(*gosnmp.UsmSecurityParameters)
		need, ok := gosnmp.SnmpV3MsgFlags(0), false
		if sp != nil {
			need, ok = r.users[sp.UserName]
		}
		if !ok || pkt.MsgFlags&need != need {
			r.Rejected.Add(1)
			r.log.Debug("snmp v3 trap from an unknown user or below its security level dropped", "from", from)
			return false
		}
	}
	u, ok := TrapUpdate(pkt, from, r.cfg.Target, r.names, time.Now())
	if !ok {
		r.Rejected.Add(1)
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
		Source   string         `json:"source"`
		Version  string         `json:"version"`
		TrapOID  string         `json:"trap_oid"`
		Inform   bool           `json:"inform,omitempty"`
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
