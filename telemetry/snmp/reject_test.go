package snmp

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// Every trap or inform the receiver drops is counted under its reason, as
// sent by net-snmp's snmptrap and snmpinform, and warned about at most once
// per reason and minute.
func TestTrapRejectReasons(t *testing.T) {
	need(t, "snmptrap")
	logs := &syncbuf.Buffer{}
	rec := &recorder{}
	tcfg := Traps{Communities: []string{"trapcomm"}, Target: "traps",
		Users: []V3{{Username: "trapuser", SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, "trapauth123"), PrivProtocol: "AES", PrivPasswordFile: secret(t, "trappriv123")}},
	}
	r, err := NewTrapReceiver(tcfg, "", rec.sink, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
	done, err := r.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Close(); <-done }()
	run := func(bin string, args ...string) ([]byte, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "MIBS=", "SNMP_PERSISTENT_DIR="+t.TempDir(), "SNMPCONFPATH="+t.TempDir())
		return cmd.CombinedOutput()
	}
	v3 := func(user, level, auth, priv string) []string {
		a := []string{"-v3", "-l", level, "-u", user}
		if level != "noAuthNoPriv" {
			a = append(a, "-a", "SHA", "-A", auth)
		}
		if level == "authPriv" {
			a = append(a, "-x", "AES", "-X", priv)
		}
		return a
	}
	linkDown := []string{"", "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.2", "i", "2"}
	trap := func(args ...string) {
		t.Helper()
		args = append(append(append([]string{"-e", "0x8000000001020306"}, args...), addr), linkDown...)
		if out, err := run("snmptrap", args...); err != nil {
			t.Fatalf("snmptrap %v: %v %s", args, err, out)
		}
	}
	for _, tc := range []struct {
		name, reason string
		send         func()
	}{
		{"wrong auth password", RejectWrongDigest, func() { trap(v3("trapuser", "authPriv", "wrongauth12", "trappriv123")...) }},
		{"wrong priv password", RejectDecryption, func() { trap(v3("trapuser", "authPriv", "trapauth123", "wrongpriv12")...) }},
		{"unknown user", RejectUnknownUser, func() { trap(v3("nobody", "authPriv", "trapauth123", "trappriv123")...) }},
		{"no authentication", RejectSecurityLevel, func() { trap(v3("trapuser", "noAuthNoPriv", "", "")...) }},
		{"no privacy", RejectSecurityLevel, func() { trap(v3("trapuser", "authNoPriv", "trapauth123", "")...) }},
		{"unknown community", RejectUnknownCommunity, func() { trap("-v2c", "-c", "other") }},
		{"wrong auth inform", RejectWrongDigest, func() {
			args := append(v3("trapuser", "authPriv", "wrongauth12", "trappriv123"), "-t", "1", "-r", "0", addr, "", "1.3.6.1.4.1.99.0.1", "1.3.6.1.4.1.99.1", "s", "x")
			if out, err := run("snmpinform", args...); err == nil {
				t.Errorf("inform with a wrong auth password acknowledged: %s", out)
			}
		}},
		{"not snmp", RejectMalformed, func() { sendUDP(t, addr, []byte("hello, not a message")) }},
		{"no trap oid", RejectNoTrapOID, func() {
			pkt := gosnmp.SnmpPacket{Version: gosnmp.Version2c, Community: "trapcomm", PDUType: gosnmp.SNMPv2Trap, RequestID: 7,
				Variables: []gosnmp.SnmpPDU{{Name: ".1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(5)}}}
			b, err := pkt.MarshalMsg()
			if err != nil {
				t.Fatal(err)
			}
			sendUDP(t, addr, b)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := map[string]uint64{}
			for _, reason := range RejectReasons {
				before[reason] = r.Rejected(reason)
			}
			tc.send()
			waitFor(t, tc.reason+" counted", func() bool { return r.Rejected(tc.reason) > before[tc.reason] })
			for _, reason := range RejectReasons {
				want := before[reason]
				if reason == tc.reason {
					want++
				}
				if got := r.Rejected(reason); got != want {
					t.Errorf("%s: %d, want %d", reason, got, want)
				}
			}
		})
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("%d events recorded from refused messages", n)
	}
	// Two wrong digests and two security level drops: one warning each.
	out := logs.String()
	for _, reason := range RejectReasons {
		if n := strings.Count(out, "level=WARN msg=\"snmp trap or inform dropped\" reason="+reason+" "); n != 1 {
			t.Errorf("%d warnings for %s, want 1:\n%s", n, reason, out)
		}
	}
}

func sendUDP(t *testing.T, addr string, b []byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}
