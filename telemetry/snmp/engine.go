package snmp

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gosnmp/gosnmp"
)

// The receiver's SNMPv3 engine (RFC 3414). For a v3 inform the receiver is
// the authoritative engine: senders learn its engine id, boots and time by
// discovery and put them in every message; for a v3 trap the sender is.
// Either way an authenticated message must be timely (section 3.2 step 7):
//
//   - to this engine (informs): msgAuthoritativeEngineBoots equal to the
//     local boots (never 2^31-1) and msgAuthoritativeEngineTime within 150 s
//     of the local engine time, the seconds since Listen;
//   - from another engine (traps): the receiver keeps, per sender engine id,
//     the latest boots and time received and when; a message with lower
//     boots, with boots 2^31-1, or with the same boots and a time more than
//     150 s behind the sender's estimated current time is refused.
//
// A refused message is counted in NotInTimeWindow and dropped; when the
// sender asked for a report (informs do) it gets an authenticated Report
// of usmStatsNotInTimeWindows carrying the local boots and time, with which
// net-snmp resynchronises and resends. So a message captured and replayed
// after a restart (boots advanced) or more than 150 s later is refused.
//
// The boot counter lives in a file (telemetry/snmp_engine_boots under the
// data directory), incremented and synced at every Listen.

// timeWindow is RFC 3414's 150 seconds.
const timeWindow = 150

// maxBoots is 2^31-1: an engine whose boots reached it is out of time for good.
const maxBoots = 1<<31 - 1

const (
	oidNotInTimeWindows = ".1.3.6.1.6.3.15.1.1.2.0"
	oidUnknownEngineIDs = ".1.3.6.1.6.3.15.1.1.4.0"
)

// engine is the local snmpEngineBoots and the start of snmpEngineTime.
type engine struct {
	boots uint32
	start time.Time
}

func (e engine) time(now time.Time) uint32 { return uint32(now.Sub(e.start) / time.Second) }

// remoteEngine is what a trap sender's engine last told: boots and time,
// and when that arrived.
type remoteEngine struct {
	boots, time uint32
	at          time.Time
}

// maxRemoteEngines bounds the senders remembered; past it the table starts
// again (each sender is then re-learnt from its next message).
const maxRemoteEngines = 10000

// nextBoots reads the boot counter in file, increments it and writes it
// back (temporary file, sync, rename). A missing file starts at 1; file ""
// keeps nothing (1). The counter stays at 2^31-1 once there.
func nextBoots(file string) (uint32, error) {
	if file == "" {
		return 1, nil
	}
	var boots uint64
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("engine boots: %w", err)
	default:
		if boots, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 31); err != nil {
			return 0, fmt.Errorf("engine boots in %s: %w", file, err)
		}
	}
	boots = min(boots+1, maxBoots)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return 0, fmt.Errorf("engine boots: %w", err)
	}
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("engine boots: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(boots, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		return 0, fmt.Errorf("engine boots: %w", err)
	}
	return uint32(boots), nil
}

// serve reads datagrams until Close.
func (r *TrapReceiver) serve() error {
	buf := make([]byte, 65535)
	for {
		n, from, err := r.conn.ReadFromUDP(buf)
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			r.log.Debug("snmp trap read", "err", err)
			continue
		}
		now := time.Now()
		pkt, err := r.params.UnmarshalTrap(buf[:n], false)
		if err != nil {
			reason := RejectMalformed
			if r.params.Version == gosnmp.Version3 {
				reason = v3RejectReason(err)
			}
			r.reject(reason, from, "", err, now)
			continue
		}
		if !r.timely(pkt, from, now) {
			continue
		}
		if r.handle(pkt, from, now) && pkt.PDUType == gosnmp.InformRequest {
			r.acknowledge(pkt, from)
		}
	}
}

// timely answers engine discovery and applies the time window to v3
// messages; it reports whether pkt goes on to handle.
func (r *TrapReceiver) timely(pkt *gosnmp.SnmpPacket, from *net.UDPAddr, now time.Time) bool {
	if pkt.Version != gosnmp.Version3 {
		return true
	}
	sp, ok := pkt.SecurityParameters.(*gosnmp.UsmSecurityParameters)
	if !ok || sp == nil {
		return false
	}
	ours := sp.AuthoritativeEngineID == string(r.eid)
	if sp.AuthoritativeEngineID == "" || pkt.PDUType == gosnmp.InformRequest && !ours {
		// Discovery (RFC 3414 section 4), or an inform for another engine:
		// tell the sender this engine's id, boots and time.
		r.report(pkt, sp, from, oidUnknownEngineIDs, 0, now)
		return false
	}
	if pkt.MsgFlags&gosnmp.AuthNoPriv == 0 {
		return true // no authentication, no timeliness (RFC 3414 3.2 step 7 applies to authenticated messages)
	}
	var in bool
	if ours {
		d := int64(sp.AuthoritativeEngineTime) - int64(r.engine.time(now))
		in = r.engine.boots < maxBoots && sp.AuthoritativeEngineBoots == r.engine.boots && d >= -timeWindow && d <= timeWindow
	} else {
		in = r.remoteTimely(sp, now)
	}
	if in {
		return true
	}
	r.NotInTimeWindow.Add(1)
	r.log.Debug("snmp v3 message outside the time window dropped", "from", from, "user", sp.UserName,
		"boots", sp.AuthoritativeEngineBoots, "time", sp.AuthoritativeEngineTime, "local_boots", r.engine.boots, "local_time", r.engine.time(now))
	if ours && pkt.MsgFlags&gosnmp.Reportable != 0 {
		r.report(pkt, sp, from, oidNotInTimeWindows, gosnmp.AuthNoPriv, now)
	}
	return false
}

// remoteTimely is step 7b for a message whose sender is authoritative.
func (r *TrapReceiver) remoteTimely(sp *gosnmp.UsmSecurityParameters, now time.Time) bool {
	id, boots, t := sp.AuthoritativeEngineID, sp.AuthoritativeEngineBoots, sp.AuthoritativeEngineTime
	if boots >= maxBoots {
		return false
	}
	last, known := r.remote[id]
	if known {
		est := int64(last.time) + int64(now.Sub(last.at)/time.Second)
		if boots < last.boots || boots == last.boots && int64(t) < est-timeWindow {
			return false
		}
	}
	if !known || boots > last.boots || boots == last.boots && t > last.time {
		if !known && len(r.remote) >= maxRemoteEngines {
			clear(r.remote)
		}
		r.remote[id] = remoteEngine{boots: boots, time: t, at: now}
	}
	return true
}

// report sends a Report PDU with one counter varbind, carrying the local
// engine id, boots and time, at security level flags (noAuthNoPriv for
// discovery, authNoPriv for time window reports, RFC 3414 3.1.1 and 3.2).
func (r *TrapReceiver) report(pkt *gosnmp.SnmpPacket, sp *gosnmp.UsmSecurityParameters, from *net.UDPAddr, oid string, flags gosnmp.SnmpV3MsgFlags, now time.Time) {
	var count uint
	if oid == oidNotInTimeWindows {
		count = uint(r.NotInTimeWindow.Load())
	}
	rsp, ok := sp.Copy().(*gosnmp.UsmSecurityParameters)
	if !ok {
		return
	}
	rsp.AuthoritativeEngineID = string(r.eid)
	rsp.AuthoritativeEngineBoots, rsp.AuthoritativeEngineTime = r.engine.boots, r.engine.time(now)
	rep := *pkt
	rep.PDUType = gosnmp.Report
	rep.MsgFlags = flags
	rep.SecurityParameters = rsp
	rep.Variables = []gosnmp.SnmpPDU{{Name: oid, Type: gosnmp.Counter32, Value: count}}
	r.send(&rep, from)
}

// acknowledge answers an accepted inform with its varbinds (RFC 3416 4.2.7).
func (r *TrapReceiver) acknowledge(pkt *gosnmp.SnmpPacket, from *net.UDPAddr) {
	ack := *pkt
	ack.PDUType = gosnmp.GetResponse
	ack.Error, ack.ErrorIndex = gosnmp.NoError, 0
	ack.MsgFlags &^= gosnmp.Reportable
	r.send(&ack, from)
}

func (r *TrapReceiver) send(pkt *gosnmp.SnmpPacket, to *net.UDPAddr) {
	b, err := pkt.MarshalMsg()
	if err == nil {
		_, err = r.conn.WriteToUDP(b, to)
	}
	if err != nil {
		r.log.Debug("snmp trap receiver reply", "to", to, "pdu", pkt.PDUType, "err", err)
	}
}
