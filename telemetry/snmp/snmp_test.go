package snmp

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
	"go.uber.org/goleak"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/telemetry/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorder struct {
	mu sync.Mutex
	us []model.Update
}

func (r *recorder) sink(us []model.Update) {
	r.mu.Lock()
	r.us = append(r.us, us...)
	r.mu.Unlock()
}

func (r *recorder) all() []model.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]model.Update(nil), r.us...)
}

func secret(t testing.TB, s string) string {
	f := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(f, []byte(s+"\n"), 0o600)
	return f
}

func snmpCollect(targets ...Target) Config {
	return Config{Targets: targets}.WithDefaults()
}

// hexOf renders a value as snmpbulkwalk -Ox does.
func cliValue(v model.Value) string {
	switch v.Kind {
	case model.KindString, model.KindBytes:
		if v.Text() == "" {
			return `""`
		}
		return strings.ToUpper(strings.Join(splitHex(hex.EncodeToString([]byte(v.Text()))), " "))
	}
	return v.String()
}

func splitHex(h string) []string {
	var out []string
	for i := 0; i+2 <= len(h); i += 2 {
		out = append(out, h[i:i+2])
	}
	return out
}

// Walks of net-snmp's snmpd through the poller equal snmpbulkwalk's,
// value for value (volatile counters, gauges and timeticks by type only),
// over v2c and v3 authPriv.
func TestPollerMatchesSnmpbulkwalk(t *testing.T) {
	addr := startSnmpd(t)
	roots := []string{"1.3.6.1.2.1.1", "1.3.6.1.2.1.2", "1.3.6.1.2.1.4.20"}
	var oids []OID
	for _, r := range roots {
		oids = append(oids, OID{OID: r, Walk: true})
	}
	v3 := V3{Username: "testv3user", SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, "authpass123"), PrivProtocol: "AES", PrivPasswordFile: secret(t, "privpass123")}
	for _, tc := range []struct {
		name string
		cfg  Target
		cli  []string
	}{
		{"v2c", Target{Name: "d1", Address: addr, Version: "2c", Community: "testcomm", OIDs: oids}, []string{"-v2c", "-c", "testcomm"}},
		{"v3authPriv", Target{Name: "d1", Address: addr, Version: "3", V3: v3, OIDs: oids}, []string{"-v3", "-l", "authPriv", "-u", "testv3user", "-a", "SHA", "-A", "authpass123", "-x", "AES", "-X", "privpass123"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			p, err := NewPoller(snmpCollect(tc.cfg), rec.sink, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.PollOnce(context.Background(), "d1"); err != nil {
				t.Fatal(err)
			}
			got := map[string]model.Value{}
			for _, u := range rec.all() {
				got[strings.TrimPrefix(u.Path, "/snmp/")] = u.Value
			}
			want := map[string][2]string{}
			for _, r := range roots {
				for k, v := range walkCLI(t, append(tc.cli, addr, r)...) {
					want[k] = v
				}
			}
			if len(want) < 50 || len(got) != len(want) {
				t.Fatalf("poller got %d values, snmpbulkwalk %d", len(got), len(want))
			}
			compared := 0
			for oid, w := range want {
				g, ok := got[oid]
				if !ok {
					t.Errorf("%s: missing (snmpbulkwalk: %v)", oid, w)
					continue
				}
				switch w[0] {
				case "Counter32", "Counter64", "Gauge32", "":
					if g.Kind != model.KindUint && !(w[0] == "" && w[1] == `""`) {
						t.Errorf("%s: kind %v, snmpbulkwalk %v", oid, g.Kind, w)
					}
					continue
				case "OID":
					w[1] = strings.TrimPrefix(w[1], ".")
				}
				cv := g.String()
				if w[0] == "Hex-STRING" || w[1] == `""` {
					cv = cliValue(g)
				}
				if cv != w[1] {
					t.Errorf("%s: got %q, snmpbulkwalk %s %q", oid, cv, w[0], w[1])
				}
				compared++
			}
			t.Logf("%d values, %d compared exactly", len(want), compared)
			if st := p.Status()[0]; !st.Connected || st.Updates != uint64(len(got)) {
				t.Errorf("status %+v", st)
			}
		})
	}
}

// Tables become path-keyed values; counters get rates across polls.
func TestTableRowsAndRates(t *testing.T) {
	addr := startSnmpd(t)
	cfg := Target{Name: "sw1", Address: addr, Community: "testcomm", Tables: []Table{{
		OID: "1.3.6.1.2.1.2.2.1", Name: "/interfaces/interface", IndexKey: "name", IndexFrom: 2,
		Columns: []Column{{Column: 4, Name: "mtu"}, {Column: 10, Name: "in-octets", Rate: true}},
	}}, OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}, {OID: "1.3.6.1.2.1.1.3.0", Name: "/system/uptime"}}}
	rec := &recorder{}
	p, err := NewPoller(snmpCollect(cfg), rec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.PollOnce(ctx, "sw1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := p.PollOnce(ctx, "sw1"); err != nil {
		t.Fatal(err)
	}
	// Between polls a target keeps no socket (nor gosnmp's receive buffer).
	if c := p.targets[0].snmp.Conn; c != nil {
		t.Errorf("socket %v kept between polls", c.LocalAddr())
	}
	paths := map[string]model.Value{}
	for _, u := range rec.all() {
		paths[u.Path] = u.Value
	}
	for _, want := range []string{"/system/name", "/system/uptime", "/interfaces/interface[name=lo]/mtu", "/interfaces/interface[name=lo]/in-octets", "/interfaces/interface[name=lo]/in-octets-rate"} {
		if _, ok := paths[want]; !ok {
			t.Errorf("missing %s in %v", want, keys(paths))
		}
	}
	if v := paths["/system/name"]; v.Text() != "snmp-peer-1" {
		t.Errorf("sysName %v", v)
	}
	if v := paths["/interfaces/interface[name=lo]/in-octets-rate"]; v.Kind != model.KindFloat {
		t.Errorf("rate %v", v)
	}
}

func keys(m map[string]model.Value) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A wrong community only times out: the error says to check it, and a
// poll ends within its deadline.
func TestWrongCommunity(t *testing.T) {
	addr := startSnmpd(t)
	cfg := Target{Name: "d1", Address: addr, Community: "wrong", Timeout: confval.Duration(200 * time.Millisecond), Retries: 1,
		OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0"}}}
	p, err := NewPoller(snmpCollect(cfg), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.PollOnce(context.Background(), "d1")
	if !errors.Is(err, ErrNoResponse) || !strings.Contains(err.Error(), "no response (check community)") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("poll took %v", d)
	}
	if st := p.Status()[0]; st.Connected || st.Errors != 1 || !strings.Contains(st.LastError, "check community") {
		t.Errorf("status %+v", st)
	}
}

func TestCounterDelta(t *testing.T) {
	for _, tc := range []struct {
		prev, cur uint64
		bits      int
		want      uint64
		ok        bool
	}{{10, 15, 32, 5, true}, {4294967290, 4, 32, 10, true}, {10, 15, 64, 5, true}, {20, 5, 64, 0, false}} {
		got, ok := Delta(tc.prev, tc.cur, tc.bits)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Delta(%d,%d,%d) = %d,%v", tc.prev, tc.cur, tc.bits, got, ok)
		}
	}
}

// Traps and informs sent with net-snmp's snmptrap become events; unknown
// communities are dropped.
func TestTrapsFromSnmptrap(t *testing.T) {
	need(t, "snmptrap")
	rec := &recorder{}
	tcfg := Traps{Communities: []string{"trapcomm"}, Target: "traps",
		Names: []TrapName{{OID: "1.3.6.1.6.3.1.1.5.3", Name: "/events/link-down"}},
		Users: []V3{{Username: "trapuser", SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, "trapauth123"), PrivProtocol: "AES", PrivPasswordFile: secret(t, "trappriv123")}},
	}
	r, err := NewTrapReceiver(tcfg, "", rec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	port := snmptest.FreeUDP(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	done, err := r.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Close(); <-done }()
	send := func(args ...string) {
		cmd := exec.Command("snmptrap", args...)
		cmd.Env = append(os.Environ(), "MIBS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("snmptrap %v: %v %s", args, err, out)
		}
	}
	linkDown := []string{"", "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.2.1.2.2.1.1.2", "i", "2", "1.3.6.1.2.1.2.2.1.2.2", "s", "eth1"}
	send(append([]string{"-v2c", "-c", "trapcomm", addr}, linkDown...)...)
	send(append([]string{"-v2c", "-c", "other", addr}, linkDown...)...)
	// An inform waits for the acknowledgement: it fails if none comes.
	cmd := exec.Command("snmpinform", append([]string{"-v2c", "-c", "trapcomm", "-t", "2", "-r", "0", addr}, "", "1.3.6.1.4.1.99.0.1", "1.3.6.1.4.1.99.1", "s", "hello")...)
	cmd.Env = append(os.Environ(), "MIBS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("snmpinform not acknowledged: %v %s", err, out)
	}
	send(append([]string{"-v3", "-e", "0x8000000001020304", "-l", "authPriv", "-u", "trapuser", "-a", "SHA", "-A", "trapauth123", "-x", "AES", "-X", "trappriv123", addr}, linkDown...)...)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && len(rec.all()) < 3 {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	us := rec.all()
	if len(us) != 3 {
		t.Fatalf("got %d events: %+v", len(us), us)
	}
	if us[0].Path != "/events/link-down" || us[0].Target != "traps" || !strings.Contains(us[0].Value.Text(), `"1.3.6.1.2.1.2.2.1.2.2":"eth1"`) || !strings.Contains(us[0].Value.Text(), `"version":"2c"`) {
		t.Errorf("v2c trap event %s %s", us[0].Path, us[0].Value.Text())
	}
	if us[1].Path != "/snmp/traps/1.3.6.1.4.1.99.0.1" || !strings.Contains(us[1].Value.Text(), `"inform":true`) {
		t.Errorf("inform event %s %s", us[1].Path, us[1].Value.Text())
	}
	if us[2].Path != "/events/link-down" || !strings.Contains(us[2].Value.Text(), `"version":"3"`) {
		t.Errorf("v3 trap event %s %s", us[2].Path, us[2].Value.Text())
	}
	if n := r.Rejected(RejectUnknownCommunity); n != 1 {
		t.Errorf("rejected %d, want 1", n)
	}
}

// FuzzConvert decodes arbitrary bytes as an SNMP message and converts every
// value; nothing may panic and converted numbers must keep their kind.
func FuzzConvert(f *testing.F) {
	g := &gosnmp.GoSNMP{Version: gosnmp.Version2c, Community: "public", Logger: gosnmp.NewLogger(nil)}
	seeds, _ := filepath.Glob("testdata/packets/*.bin")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pkt, err := g.SnmpDecodePacket(b)
		if err != nil || pkt == nil {
			return
		}
		for _, v := range pkt.Variables {
			val, ok := Convert(v)
			if !ok {
				continue
			}
			if _, bits := Counter(v.Type); bits && val.Kind != model.KindUint {
				t.Fatalf("counter %s became %v", formatPDU(v), val.Kind)
			}
			_, _ = val.MarshalJSON()
		}
	})
}

// The whole poll has a deadline even when timeout × retries is longer.
func TestPollDeadline(t *testing.T) {
	addr := startSnmpd(t)
	cfg := Target{Name: "d1", Address: addr, Community: "wrong", Timeout: confval.Duration(time.Second), Retries: 5,
		PollTimeout: confval.Duration(300 * time.Millisecond), OIDs: []OID{{OID: "1.3.6.1.2.1.1.5.0"}}}
	p, err := NewPoller(snmpCollect(cfg), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.PollOnce(context.Background(), "d1")
	if err == nil {
		t.Fatal("poll succeeded")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("poll took %v past its 300ms deadline (%v)", d, err)
	}
}

// A v3 inform (authPriv) from net-snmp's snmpinform is acknowledged: the
// sender discovers the receiver's local engine id, localizes its keys with
// it, and snmpinform only exits 0 once the response came.
func TestV3InformFromSnmpinform(t *testing.T) {
	need(t, "snmpinform")
	rec := &recorder{}
	tcfg := Traps{Target: "traps", EngineID: "0x80001f8805aabbccdd0011",
		Users: []V3{{Username: "informuser", SecurityLevel: "authPriv", AuthProtocol: "SHA", AuthPasswordFile: secret(t, "informauth123"), PrivProtocol: "AES", PrivPasswordFile: secret(t, "informpriv123")}},
	}
	r, err := NewTrapReceiver(tcfg, "", rec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if r.EngineID() != "80001f8805aabbccdd0011" {
		t.Errorf("engine id %s", r.EngineID())
	}
	addr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
	done, err := r.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Close(); <-done }()
	inform := func(authPass string) ([]byte, error) {
		cmd := exec.Command("snmpinform", "-v3", "-l", "authPriv", "-u", "informuser", "-a", "SHA", "-A", authPass, "-x", "AES", "-X", "informpriv123",
			"-t", "2", "-r", "0", addr, "", "1.3.6.1.4.1.99.0.2", "1.3.6.1.4.1.99.1", "s", "v3 hello")
		// A private persistent dir: net-snmp caches engine boots there.
		cmd.Env = append(os.Environ(), "MIBS=", "SNMP_PERSISTENT_DIR="+t.TempDir(), "SNMPCONFPATH="+t.TempDir())
		return cmd.CombinedOutput()
	}
	if out, err := inform("informauth123"); err != nil {
		t.Fatalf("v3 inform not acknowledged: %v %s", err, out)
	}
	us := rec.all()
	if len(us) != 1 || us[0].Path != "/snmp/traps/1.3.6.1.4.1.99.0.2" || !strings.Contains(us[0].Value.Text(), `"inform":true`) ||
		!strings.Contains(us[0].Value.Text(), `"version":"3"`) || !strings.Contains(us[0].Value.Text(), `"v3 hello"`) {
		t.Fatalf("v3 inform events %+v", us)
	}
	// A wrong password is neither recorded nor acknowledged.
	if out, err := inform("wrongpass123"); err == nil {
		t.Errorf("inform with a wrong auth password acknowledged: %s", out)
	}
	if n := len(rec.all()); n != 1 {
		t.Errorf("%d events after a wrong password, want 1", n)
	}
}

// An octet string that is not text has one encoding whether it was polled
// or came in a trap: the bytes (base64 in JSON), never a quoted Go string.
func TestBinaryOctetStringsPolledAndTrapped(t *testing.T) {
	need(t, "snmptrap")
	raw := []byte{0xde, 0xad, 0xbe, 0xef, 0x00}
	sim := simPeer(t, map[string]string{"dev001": "1.3.6.1.4.1.99999.2.1.0|4x|deadbeef00\n"})
	prec := &recorder{}
	p, err := NewPoller(snmpCollect(Target{Name: "d1", Address: sim.addr, Community: "dev001",
		OIDs: []OID{{OID: "1.3.6.1.4.1.99999.2.1.0"}}}), prec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.PollOnce(context.Background(), "d1"); err != nil {
		t.Fatal(err)
	}
	polled := prec.all()
	if len(polled) != 1 || polled[0].Value != model.Bytes(raw) {
		t.Fatalf("polled %+v, want bytes %x", polled, raw)
	}

	trec := &recorder{}
	r, err := NewTrapReceiver(Traps{Communities: []string{"trapcomm"}, Target: "traps"}, "", trec.sink, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t))
	done, err := r.Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { r.Close(); <-done }()
	cmd := exec.Command("snmptrap", "-v2c", "-c", "trapcomm", addr, "", "1.3.6.1.4.1.99999.0.1",
		"1.3.6.1.4.1.99999.2.1.0", "x", "DEADBEEF00", "1.3.6.1.4.1.99999.2.2.0", "s", "plain text", "1.3.6.1.4.1.99999.2.3.0", "i", "-7")
	cmd.Env = append(os.Environ(), "MIBS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("snmptrap: %v %s", err, out)
	}
	waitFor(t, "the trap", func() bool { return len(trec.all()) == 1 })
	var ev struct {
		Varbinds map[string]json.RawMessage `json:"varbinds"`
	}
	if err := json.Unmarshal([]byte(trec.all()[0].Value.Text()), &ev); err != nil {
		t.Fatal(err)
	}
	want, _ := polled[0].Value.MarshalJSON()
	for oid, w := range map[string]string{"1.3.6.1.4.1.99999.2.1.0": string(want), "1.3.6.1.4.1.99999.2.2.0": `"plain text"`, "1.3.6.1.4.1.99999.2.3.0": "-7"} {
		if got := string(ev.Varbinds[oid]); got != w {
			t.Errorf("trap varbind %s = %s, want %s (as the polled value)", oid, got, w)
		}
	}
	var b []byte
	if err := json.Unmarshal(ev.Varbinds["1.3.6.1.4.1.99999.2.1.0"], &b); err != nil || !bytes.Equal(b, raw) {
		t.Errorf("binary varbind decodes to %x (%v), want %x", b, err, raw)
	}
}
