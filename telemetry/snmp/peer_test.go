package snmp

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-edge/outpost/internal/snmptest"
)

func need(t testing.TB, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("test peer %s is not installed (scripts/test.sh installs it: apt-get install snmpd snmp snmpsim): %v", bin, err)
	}
	return p
}

// asNobody runs cmd as an unprivileged user when the test runs as root.
func asNobody(args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)...)
	}
	return exec.Command(args[0], args[1:]...)
}

// worldDir makes a temp dir the unprivileged peer can write.
func worldDir(t testing.TB) string {
	// Not t.TempDir: its parent is private to this user.
	d, err := os.MkdirTemp("", "outpost-peer-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(d, 0o777)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// peer is a real SNMP agent process on a loopback port that a test can
// stop and start again on the same port and with the same data.
type peer struct {
	t         testing.TB
	addr      string
	dir       string
	community string // answered once it is up
	args      []string
	cmd       *exec.Cmd
}

func (p *peer) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.args[0], p.args[1:]...)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	waitSNMP(p.t, p.addr, p.community, func() string { b, _ := os.ReadFile(filepath.Join(p.dir, "log")); return string(b) })
}

func (p *peer) stop() {
	if p.cmd != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
}

func (p *peer) restart() {
	p.t.Helper()
	p.stop()
	p.start()
}

// startSnmpd starts net-snmp's snmpd on a random loopback port with a v2c
// community "testcomm" and a v3 authPriv user; it returns "127.0.0.1:port".
func startSnmpd(t testing.TB) string { return snmpdPeer(t).addr }

// snmpdPeer is startSnmpd's agent. Its persistent directory stays across
// restarts, so the agent keeps its engine id and counts its boots.
func snmpdPeer(t testing.TB) *peer {
	t.Helper()
	need(t, "snmpd")
	dir := worldDir(t)
	port := snmptest.FreeUDP(t)
	conf := filepath.Join(dir, "agent.conf") // snmpd.conf in the persistent dir is snmpd's own
	os.WriteFile(conf, []byte(fmt.Sprintf(`agentAddress  udp:127.0.0.1:%d
rocommunity   testcomm 127.0.0.1
createUser    testv3user SHA "authpass123" AES "privpass123"
rouser        testv3user priv
sysName       snmp-peer-1
`, port)), 0o644)
	p := &peer{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, community: "testcomm"}
	p.args = asNobody("env", "MIBS=", "SNMP_PERSISTENT_DIR="+dir, "snmpd", "-f", "-C", "-c", conf, "-I", "-smux", "-Lf", filepath.Join(dir, "log"), "-p", filepath.Join(dir, "pid")).Args
	t.Cleanup(p.stop)
	p.start()
	return p
}

func waitSNMP(t testing.TB, addr, community string, log func() string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	var pn int
	fmt.Sscan(port, &pn)
	g := &gosnmp.GoSNMP{Target: host, Port: uint16(pn), Community: community, Version: gosnmp.Version2c, Timeout: 200 * time.Millisecond, Retries: 0}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	deadline := time.Now().Add(60 * time.Second) // snmpsim indexes every data file before it answers
	for time.Now().Before(deadline) {
		if _, err := g.GetNext([]string{".1.3.6.1"}); err == nil {
			return
		}
	}
	t.Fatalf("snmp peer on %s did not answer: %s", addr, log())
}

// walkCLI runs snmpbulkwalk and parses its numeric output into oid → (type, value).
// Octet strings are printed in hex (-Ox), so they compare byte for byte.
func walkCLI(t testing.TB, args ...string) map[string][2]string {
	t.Helper()
	need(t, "snmpbulkwalk")
	cmd := exec.Command("snmpbulkwalk", append([]string{"-On", "-Oe", "-Ot", "-Ox", "-OU", "-Cr10"}, args...)...)
	cmd.Env = append(os.Environ(), "MIBS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("snmpbulkwalk %v: %v\n%s", args, err, out)
	}
	res := map[string][2]string{}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, ".") {
			if last != "" {
				v := res[last]
				v[1] = strings.TrimSpace(v[1] + " " + strings.TrimSpace(line))
				res[last] = v
			}
			continue
		}
		oid, rest, _ := strings.Cut(line, " = ")
		typ, val, ok := strings.Cut(rest, ": ")
		if !ok {
			typ, val = "", rest
		}
		last = strings.TrimPrefix(oid, ".")
		res[last] = [2]string{typ, strings.TrimSpace(val)}
	}
	return res
}
