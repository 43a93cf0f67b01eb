package snmp

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/snmptest"
)

// notInTimeWindowsOID is usmStatsNotInTimeWindows.0 BER-encoded, as it
// appears in a Report sent at authNoPriv (not encrypted).
var notInTimeWindowsOID = []byte{0x06, 0x0a, 0x2b, 0x06, 0x01, 0x06, 0x03, 0x0f, 0x01, 0x01, 0x02, 0x00}

// relay forwards UDP datagrams from clients to dst and back, keeping a copy
// of each client datagram.
type relay struct {
	conn *net.UDPConn
	mu   sync.Mutex
	sent [][]byte
}

func startRelay(t *testing.T, dst string) *relay {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	da, _ := net.ResolveUDPAddr("udp", dst)
	r := &relay{conn: c}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		var client *net.UDPAddr
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			b := append([]byte(nil), buf[:n]...)
			if from.String() == da.String() {
				if client != nil {
					c.WriteToUDP(b, client)
				}
				continue
			}
			client = from
			r.mu.Lock()
			r.sent = append(r.sent, b)
			r.mu.Unlock()
			c.WriteToUDP(b, da)
		}
	}()
	return r
}

func (r *relay) last() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[len(r.sent)-1]
}

// waitFor polls cond until it holds or 10 s passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The local engine's boots counter is kept in a file and counts starts;
// an inform captured from snmpinform and replayed after a restart is
// refused as outside the time window (counted, answered with a
// usmStatsNotInTimeWindows Report, no event); snmpinform sent with wrong
// boots is refused once, resynchronises from the authenticated Report and
// is then acknowledged; v3 traps (sender authoritative) with boots going
// back or a time more than 150 s behind are refused.
func TestV3TimeWindow(t *testing.T) {
	need(t, "snmpinform")
	const eid = "80001f8805aabbccdd0022"
	tcfg := Traps{Target: "traps", EngineID: "0x" + eid,
		Users: []V3{{Username: "informuser", SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, "informauth123"), PrivProtocol: "AES", PrivPasswordFile: secret(t, "informpriv123")}},
	}
	boots := filepath.Join(t.TempDir(), "telemetry", "snmp_engine_boots")
	rec := &recorder{}
	listen := func() (*TrapReceiver, string) {
		t.Helper()
		r, err := NewTrapReceiver(tcfg, boots, rec.sink, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
		done, err := r.Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); <-done })
		return r, addr
	}
	inform := func(addr string, extra ...string) ([]byte, error) {
		args := append([]string{"-v3", "-l", "authPriv", "-u", "informuser", "-a", "SHA", "-A", "informauth123", "-x", "AES", "-X", "informpriv123", "-t", "2", "-r", "1"}, extra...)
		cmd := exec.Command("snmpinform", append(args, addr, "", "1.3.6.1.4.1.99.0.3", "1.3.6.1.4.1.99.1", "s", "timely")...)
		cmd.Env = append(os.Environ(), "MIBS=", "SNMP_PERSISTENT_DIR="+t.TempDir(), "SNMPCONFPATH="+t.TempDir())
		return cmd.CombinedOutput()
	}

	r1, addr1 := listen()
	if r1.EngineBoots() != 1 {
		t.Fatalf("first start: boots %d, want 1", r1.EngineBoots())
	}
	// snmpinform through a relay that keeps the datagrams.
	rl := startRelay(t, addr1)
	if out, err := inform(rl.conn.LocalAddr().String()); err != nil {
		t.Fatalf("v3 inform not acknowledged: %v %s", err, out)
	}
	captured := rl.last()
	if n := len(rec.all()); n != 1 {
		t.Fatalf("%d events after the inform, want 1", n)
	}
	r1.Close()

	r2, addr2 := listen()
	if b, _ := os.ReadFile(boots); r2.EngineBoots() != 2 || strings.TrimSpace(string(b)) != "2" {
		t.Fatalf("second start: boots %d, file %q, want 2", r2.EngineBoots(), b)
	}
	// The captured inform (boots 1) replayed to the restarted receiver.
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a2, _ := net.ResolveUDPAddr("udp", addr2)
	if _, err := c.WriteToUDP(captured, a2); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65535)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer to the replayed inform: %v", err)
	}
	if !bytes.Contains(buf[:n], notInTimeWindowsOID) {
		t.Errorf("answer to the replayed inform is not a usmStatsNotInTimeWindows report: %x", buf[:n])
	}
	if got := r2.NotInTimeWindow.Load(); got != 1 || len(rec.all()) != 1 {
		t.Fatalf("replayed inform: not-in-time-window %d, events %d; want 1 and still 1", got, len(rec.all()))
	}

	// snmpinform told wrong boots (-Z) skips discovery: refused once, then
	// resynchronised by the report and acknowledged.
	if out, err := inform(addr2, "-e", "0x"+eid, "-Z", "7,100"); err != nil {
		t.Fatalf("inform with wrong boots not acknowledged after the report: %v %s", err, out)
	}
	if got := r2.NotInTimeWindow.Load(); got != 2 || len(rec.all()) != 2 {
		t.Fatalf("inform with wrong boots: not-in-time-window %d, events %d; want 2 and 2", got, len(rec.all()))
	}

	// v3 traps: the sender's engine is authoritative.
	trap := func(bootsTime string) {
		t.Helper()
		cmd := exec.Command("snmptrap", "-v3", "-e", "0x8000000001020305", "-Z", bootsTime, "-l", "authPriv", "-u", "informuser", "-a", "SHA", "-A", "informauth123",
			"-x", "AES", "-X", "informpriv123", addr2, "", "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.2", "i", "2")
		cmd.Env = append(os.Environ(), "MIBS=", "SNMP_PERSISTENT_DIR="+t.TempDir(), "SNMPCONFPATH="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("snmptrap: %v %s", err, out)
		}
	}
	for i, tc := range []struct {
		bootsTime string
		ok        bool
	}{
		{"5,1000", true},  // first contact: learnt
		{"4,5000", false}, // boots went back
		{"5,700", false},  // 300 s behind
		{"5,900", true},   // 100 s behind: within the window
		{"6,10", true},    // a reboot of the sender
	} {
		events, refused := len(rec.all()), r2.NotInTimeWindow.Load()
		trap(tc.bootsTime)
		if tc.ok {
			waitFor(t, fmt.Sprintf("trap %d (%s) recorded", i, tc.bootsTime), func() bool { return len(rec.all()) == events+1 })
		} else {
			waitFor(t, fmt.Sprintf("trap %d (%s) refused", i, tc.bootsTime), func() bool { return r2.NotInTimeWindow.Load() == refused+1 })
		}
	}
	if n := len(rec.all()); n != 5 {
		t.Errorf("%d events, want 5 (2 informs, 3 traps)", n)
	}
}

// nextBoots counts starts in its file, stays at 2^31-1 and names the file
// when its content is not a counter.
func TestNextBoots(t *testing.T) {
	for _, tc := range []struct {
		name, content string // content "-": no file
		want          uint32
		err           string
	}{
		{"missing file", "-", 1, ""},
		{"counted", "41\n", 42, ""},
		{"at the maximum", "2147483647\n", maxBoots, ""},
		{"garbage", "many\n", 0, "engine boots in "},
		{"negative", "-3\n", 0, "engine boots in "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "d", "boots")
			if tc.content != "-" {
				os.MkdirAll(filepath.Dir(f), 0o700)
				os.WriteFile(f, []byte(tc.content), 0o600)
			}
			got, err := nextBoots(f)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err+f) {
					t.Fatalf("nextBoots = %d, %v; want an error naming %s", got, err, f)
				}
				return
			}
			b, _ := os.ReadFile(f)
			if err != nil || got != tc.want || strings.TrimSpace(string(b)) != fmt.Sprint(tc.want) {
				t.Fatalf("nextBoots = %d, %v, file %q; want %d", got, err, b, tc.want)
			}
		})
	}
}
