// Package snmptest runs a real SNMP agent for tests: net-snmp's snmpd
// (the Debian snmpd package), unprivileged, on a random loopback UDP port,
// with the community testcomm and sysName snmp-peer-1, as docs/peers.md
// describes it; and reads how many packets it received, so a test counts
// the pollers a device sees.
package snmptest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Community is the read-only community the agent answers.
const Community = "testcomm"

// FreeUDP returns a free loopback UDP port.
func FreeUDP(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// Start starts snmpd and returns its address (host:port); it stops when
// the test ends.
func Start(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("snmpd"); err != nil {
		t.Fatalf("snmpd is not installed (apt-get install snmpd): %v", err)
	}
	dir, err := os.MkdirTemp("", "outpost-snmpd-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // writable by nobody
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	port := FreeUDP(t)
	conf := filepath.Join(dir, "snmpd.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "agentAddress udp:127.0.0.1:%d\nrocommunity %s 127.0.0.1\nsysName snmp-peer-1\n", port, Community), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"env", "MIBS=", "SNMP_PERSISTENT_DIR=" + dir, "snmpd", "-f", "-C", "-c", conf, "-I", "-smux", "-Lf", filepath.Join(dir, "log"), "-p", filepath.Join(dir, "pid")}
	if os.Geteuid() == 0 {
		args = append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// InPackets is the number of SNMP packets the agent at addr received
// (snmpInPkts), this request included.
func InPackets(t testing.TB, addr string) int {
	t.Helper()
	out, err := exec.Command("env", "MIBS=", "snmpget", "-v2c", "-c", Community, "-Oqv", addr, "1.3.6.1.2.1.11.1.0").Output()
	if err != nil {
		t.Fatalf("snmpget snmpInPkts: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("snmpInPkts %q: %v", out, err)
	}
	return n
}
