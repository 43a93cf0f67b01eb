package snmp

import (
	"encoding/hex"
	"encoding/json"
	"errors"
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

// TrapReceiver receives SNMP v2c and v3 traps and informs (informs are
// acknowledged by gosnmp) and turns each into one event update: target
// cfg.Target, path /snmp/traps/<trap oid> (or the configured name), value
// a JSON object {"source", "version", "trap_oid", "inform", "varbinds": {oid: value}}.
// Traps with an unknown community are counted and dropped.
type TrapReceiver struct {
	cfg   config.SNMPTraps
	sink  Sink
	log   *slog.Logger
	tl    *gosnmp.TrapListener
	names map[string]string
	comm  map[string]bool
	eid   []byte                           // local snmpEngineID
	users map[string]gosnmp.SnmpV3MsgFlags // v3 user → flags its messages must carry

	Received atomic.Uint64
	Rejected atomic.Uint64
}

// NewTrapReceiver builds the receiver (reading v3 password files); Listen starts it.
func NewTrapReceiver(cfg config.SNMPTraps, sink Sink, log *slog.Logger) (*TrapReceiver, error) {
	r := &TrapReceiver{cfg: cfg, sink: sink, log: log, names: map[string]string{}, comm: map[string]bool{}, users: map[string]gosnmp.SnmpV3MsgFlags{}}
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
		// The local engine id makes the listener answer engine discovery
		// (a Report carrying it), so v3 informs, for which the receiver is
		// the authoritative engine, are accepted and acknowledged.
		params.SecurityParameters = &gosnmp.UsmSecurityParameters{AuthoritativeEngineID: string(r.eid)}
	}
	tl := gosnmp.NewTrapListener()
	tl.Params = params
	tl.OnNewTrap = r.handle
	r.tl = tl
	return r, nil
}

// Listen binds the address and serves until Close. It returns once the
// socket is bound (or failed to bind); serving continues in a goroutine
// whose end Close waits for.
func (r *TrapReceiver) Listen(addr string) (<-chan error, error) {
	done := make(chan error, 1)
	go func() { done <- r.tl.Listen(addr) }()
	select {
	case <-r.tl.Listening():
		r.log.Info("snmp trap receiver listening", "addr", addr, "engine_id", r.EngineID())
		return done, nil
	case err := <-done:
		if err == nil {
			err = errors.New("trap listener stopped")
		}
		return nil, fmt.Errorf("listen for traps on %s: %w", addr, err)
	case <-time.After(5 * time.Second):
		r.tl.Close()
		return nil, fmt.Errorf("listen for traps on %s: timed out", addr)
	}
}

// EngineID is the receiver's local snmpEngineID in hex.
func (r *TrapReceiver) EngineID() string { return hex.EncodeToString(r.eid) }

// Close stops the listener.
func (r *TrapReceiver) Close() { r.tl.Close() }

func (r *TrapReceiver) handle(pkt *gosnmp.SnmpPacket, from *net.UDPAddr) {
	if pkt.Version != gosnmp.Version3 && !r.comm[pkt.Community] {
		r.Rejected.Add(1)
		r.log.Debug("snmp trap with unknown community dropped", "from", from)
		return
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
			return
		}
	}
	u, ok := TrapUpdate(pkt, from, r.cfg.Target, r.names, time.Now())
	if !ok {
		r.Rejected.Add(1)
		return
	}
	r.Received.Add(1)
	if r.sink != nil {
		r.sink([]model.Update{u})
	}
}

// TrapUpdate converts a trap packet into an event update.
func TrapUpdate(pkt *gosnmp.SnmpPacket, from *net.UDPAddr, target string, names map[string]string, now time.Time) (model.Update, bool) {
	ev := struct {
		Source   string         `json:"source"`
		Version  string         `json:"version"`
		TrapOID  string         `json:"trap_oid"`
		Inform   bool           `json:"inform,omitempty"`
		Varbinds map[string]any `json:"varbinds"`
	}{Varbinds: map[string]any{}, Inform: pkt.PDUType == gosnmp.InformRequest}
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
		var j any = val.String()
		if n, ok := val.Number(); ok && val.Kind != model.KindBool {
			j = json.Number(val.String())
			_ = n
		}
		ev.Varbinds[strings.TrimPrefix(v.Name, ".")] = j
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
