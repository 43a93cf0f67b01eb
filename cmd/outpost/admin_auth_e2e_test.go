package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/freeport"
	"github.com/outpost-edge/outpost/internal/syncbuf"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// protectedRoutes are a request of every admin route that needs the token.
var protectedRoutes = []struct{ method, path string }{
	{"GET", "/v1/tasks"},
	{"POST", "/v1/tasks/evil"},
	{"GET", "/v1/tasks/echo"},
	{"DELETE", "/v1/tasks/echo"},
	{"POST", "/v1/tasks/echo/rollback"},
	{"POST", "/v1/tasks/echo/call"},
	{"POST", "/v1/tasks/echo/call?async=true"},
	{"GET", "/v1/calls"},
	{"GET", "/v1/calls/x"},
	{"GET", "/v1/telemetry/targets"},
	{"GET", "/v1/telemetry/latest"},
	{"GET", "/v1/telemetry/query"},
	{"GET", "/v1/device-export/mosquitto"}, // the devices' password hashes
	{"GET", "/v1/device-violations"},
}

// curl runs curl with args and returns the HTTP status it got (000 when it
// could not connect) and the body; as is nil or the identity to run as.
func curl(t *testing.T, as *syscall.Credential, stdin []byte, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "-w", "\n%{http_code}", "--max-time", "10"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: as}
	cmd.Stdin = bytes.NewReader(stdin)
	out, _ := cmd.Output()
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	return s[i+1:], s[:max(i, 0)]
}

// Without the token, or with a wrong one, every protected route of the real
// daemon is refused (401, a challenge, an error document, counted in
// outpost_admin_auth_failures_total) and nothing is deployed; health and
// metrics stay open on loopback; the CLI finds the token by itself
// (--config, ./data, --data-dir) or takes it from --token-file or
// $OUTPOST_TOKEN.
func TestAdminAPINeedsToken(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: echo, module: builtin:echo}]
`)
	mod, err := os.ReadFile(exampleWasm(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + d.addr
	for _, auth := range []string{"", "Authorization: Bearer " + strings.Repeat("ab", 32)} {
		for _, r := range protectedRoutes {
			args := []string{"-X", r.method, "-D", "-", "--data-binary", "@-", base + r.path}
			if auth != "" {
				args = append(args, "-H", auth)
			}
			code, body := curl(t, nil, mod, args...)
			if code != "401" || !strings.Contains(body, `"code": "unauthorized"`) || !strings.Contains(strings.ToLower(body), "www-authenticate: bearer") {
				t.Errorf("%s %s (%q): %s\n%s", r.method, r.path, auth, code, body)
			}
		}
	}
	if code, _ := curl(t, nil, nil, base+"/v1/health"); code != "200" {
		t.Errorf("health on loopback without a token: %s", code)
	}
	code, metrics := curl(t, nil, nil, base+"/metrics")
	n := len(protectedRoutes)
	if code != "200" || !strings.Contains(metrics, fmt.Sprintf(`outpost_admin_auth_failures_total{reason="missing"} %d`, n)) ||
		!strings.Contains(metrics, fmt.Sprintf(`outpost_admin_auth_failures_total{reason="invalid"} %d`, n)) {
		t.Errorf("metrics %s: no failure counts of %d and %d in\n%s", code, n, n, grepLines(metrics, "auth_failures"))
	}
	tok, err := os.ReadFile(filepath.Join(d.dir, "data", admin.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d.logs.String(), strings.TrimSpace(string(tok))) || !strings.Contains(d.logs.String(), "admin API request refused") {
		t.Errorf("daemon log leaks the token or does not say what it refused:\n%s", d.logs.String())
	}
	st, err := os.Stat(filepath.Join(d.dir, "data", admin.TokenFileName))
	if err != nil || st.Mode().Perm() != 0o600 || len(bytes.TrimSpace(tok)) != 64 {
		t.Fatalf("token file: %v %v, %d bytes", st.Mode(), err, len(tok))
	}

	// With the header, curl deploys (the README's example).
	if code, body := curl(t, nil, mod, "-X", "POST", "--data-binary", "@-", "-H", "Authorization: Bearer "+strings.TrimSpace(string(tok)), base+"/v1/tasks/curled"); code != "200" {
		t.Fatalf("deploy with the token: %s %s", code, body)
	}
	// The CLI finds the token through --config, in ./data of its working
	// directory, and in $OUTPOST_TOKEN.
	if out, code := runCLI(t, "call", "curled", "--data", "via config", "--config", d.cfg); code != 0 || out != "via config\n" {
		t.Errorf("call --config: %d %q", code, out)
	}
	if out, errOut, code := d.cli("task", "ls"); code != 0 || !strings.Contains(out, "curled") {
		t.Errorf("task ls from the daemon's directory: %d %q %s", code, out, errOut)
	}
	cmd := exec.Command(binPath, "tasks", "--admin", d.addr)
	cmd.Env = append(os.Environ(), admin.TokenEnv+"="+strings.TrimSpace(string(tok)))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "curled") {
		t.Errorf("tasks with $%s: %v %s", admin.TokenEnv, err, out)
	}
	if out, code := runCLI(t, "tasks", "--admin", d.addr, "--token-file", filepath.Join(d.dir, "data", admin.TokenFileName)); code != 0 || !strings.Contains(out, "curled") {
		t.Errorf("tasks --token-file: %d %s", code, out)
	}
	if out, code := runCLI(t, "tasks", "--admin", d.addr, "--data-dir", filepath.Join(d.dir, "data")); code != 0 || !strings.Contains(out, "curled") {
		t.Errorf("tasks --data-dir: %d %s", code, out)
	}
	cmd = exec.Command(binPath, "tasks", "--admin", d.addr)
	cmd.Env = append(os.Environ(), admin.TokenEnv+"=wrong")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "refused the token from $"+admin.TokenEnv) {
		t.Errorf("tasks with a wrong $%s: %v %s", admin.TokenEnv, err, out)
	}
	if out, _, _ := d.cli("task", "ls"); strings.Contains(out, "evil") {
		t.Errorf("a refused deploy deployed:\n%s", out)
	}
}

// Another local user (nobody) can reach the loopback API but cannot read
// the token, even with the data dir open to everyone, and so cannot
// deploy or call; health answers it.
func TestAdminAPIOtherLocalUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running as another user (uid 65534) needs root")
	}
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: echo, module: builtin:echo}]
`)
	// Open the way to the data dir and the binary: only the token's own
	// mode keeps it.
	for dir := filepath.Join(d.dir, "data"); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Dir(binPath), 0o755); err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(d.dir, "evil.wasm")
	b, err := os.ReadFile(exampleWasm(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mod, b, 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command(binPath, args...)
		cmd.Dir = d.dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	cat := exec.Command("cat", filepath.Join(d.dir, "data", admin.TokenFileName))
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	if out, err := cat.CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("nobody read the token: %v %s", err, out)
	}
	if out, err := asNobody("health", "--config", d.cfg, "-o", "json"); err != nil || !strings.Contains(out, `"status": "ok"`) {
		t.Errorf("health as nobody: %v %s", err, out)
	}
	for _, args := range [][]string{
		{"task", "deploy", "evil", mod, "--config", d.cfg},
		{"call", "echo", "--data", "x", "--config", d.cfg},
		{"task", "ls", "--admin", d.addr}, // ./data/admin.token of the daemon's directory
	} {
		out, err := asNobody(args...)
		if err == nil || !strings.Contains(out, "permission denied") || !strings.Contains(out, "run as the daemon's user") {
			t.Errorf("%v as nobody: %v\n%s", args, err, out)
		}
	}
	if code, body := curl(t, nobody, b, "-X", "POST", "--data-binary", "@-", "http://"+d.addr+"/v1/tasks/evil"); code != "401" {
		t.Errorf("curl deploy as nobody: %s %s", code, body)
	}
	if _, err := d.admin.Inspect(t.Context(), "evil"); err == nil || !strings.Contains(err.Error(), `no task "evil"`) {
		t.Errorf("evil deployed: %v", err)
	}
}

// netns is a network namespace joined to the host by a veth pair: the host
// side has HostIP, the namespace PeerIP.
type netns struct {
	name, hostIP, peerIP string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a network namespace needs root")
	}
	id := fmt.Sprintf("%d%03d", os.Getpid()%100000, rand.IntN(1000))
	n := &netns{name: "outpost" + id, hostIP: fmt.Sprintf("10.213.%d.1", rand.IntN(250)+1)}
	n.peerIP = strings.TrimSuffix(n.hostIP, ".1") + ".2"
	host, peer := "opa"+id, "opb"+id
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	ip("netns", "add", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() }) // takes the veth pair with it
	ip("link", "add", host, "type", "veth", "peer", "name", peer)
	ip("link", "set", peer, "netns", n.name)
	ip("addr", "add", n.hostIP+"/24", "dev", host)
	ip("link", "set", host, "up")
	ip("netns", "exec", n.name, "ip", "addr", "add", n.peerIP+"/24", "dev", peer)
	ip("netns", "exec", n.name, "ip", "link", "set", peer, "up")
	ip("netns", "exec", n.name, "ip", "link", "set", "lo", "up")
	return n
}

// exec runs name with args inside the namespace.
func (n *netns) exec(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// Beyond loopback: plain HTTP is refused by check and at start; with TLS
// the API serves, and from another address (a network namespace) health
// needs the token too, and the CLI deploys over HTTPS with it.
func TestAdminAPIBeyondLoopback(t *testing.T) {
	n := newNetns(t)
	port := strconv.Itoa(freeport.Port(t, n.hostIP))
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.yaml")
	listen := net.JoinHostPort(n.hostIP, port)
	if err := os.WriteFile(plain, []byte(fmt.Sprintf("data_dir: %s\nadmin: {listen: %q}\nmqtt: {broker: {listen: %q}}\n", filepath.Join(dir, "data"), listen, mqtttest.FreeAddr(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("admin.listen: %q is beyond loopback: the admin API listens there only with tls", listen)
	if out, code := runCLI(t, "check", "--config", plain); code != 1 || !strings.Contains(out, want) {
		t.Errorf("check of a plain listener beyond loopback: exit %d\n%s", code, out)
	}
	run := exec.Command(binPath, "run", "--config", plain)
	out, err := run.CombinedOutput() // exits at once
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("run with a plain listener beyond loopback: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Error("the refused daemon made its data dir")
	}

	ca := testpki.New(t, dir, "admin")
	cert, key := ca.Server(t, "admin", net.ParseIP(n.hostIP))
	cfg := filepath.Join(dir, "tls.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("data_dir: %s\nadmin: {listen: %q, tls: {cert_file: %s, key_file: %s}}\nmqtt: {broker: {listen: %q}}\ntasks: [{name: echo, module: builtin:echo}]\n",
		filepath.Join(dir, "data"), listen, cert, key, mqtttest.FreeAddr(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "check", "--config", cfg); code != 0 {
		t.Fatalf("check with tls: exit %d\n%s", code, out)
	}
	d := &daemon{t: t, bin: binPath, dir: dir, cfg: cfg, addr: listen, opts: admin.ClientOptions{Addr: "https://" + listen, CAFile: ca.CAFile}, logs: &syncbuf.Buffer{}}
	d.start()
	tokFile := filepath.Join(dir, "data", admin.TokenFileName)
	tok, err := admin.ReadToken(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + listen
	inNS := func(args ...string) (string, string) {
		t.Helper()
		cmd := n.exec("curl", append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code} %{remote_ip}", "--max-time", "10", "--cacert", ca.CAFile}, args...)...)
		out, _ := cmd.Output()
		f := strings.Fields(string(out))
		if len(f) < 2 {
			return string(out), ""
		}
		return f[0], f[1]
	}
	if code, peer := inNS(url + "/v1/health"); code != "401" || peer != n.hostIP {
		t.Errorf("health from %s without a token: %s (to %s)", n.peerIP, code, peer)
	}
	if code, _ := inNS(url+"/metrics", "-H", "Authorization: Bearer "+string(tok)); code != "200" {
		t.Errorf("metrics from %s with the token: %s", n.peerIP, code)
	}
	if code, _ := inNS(url+"/v1/tasks", "-H", "Authorization: Bearer nope"); code != "401" {
		t.Errorf("tasks from %s with a wrong token: %s", n.peerIP, code)
	}
	if code, _ := inNS("http://" + listen + "/v1/health"); code != "400" {
		t.Errorf("plain http to the tls listener: %s", code) // Go answers a plain request on a TLS port with 400
	}
	// The CLI in the namespace, over HTTPS with the token.
	mod := exampleWasm(t, "echo")
	cli := n.exec(binPath, "task", "deploy", "remote", mod, "--admin", url, "--ca-file", ca.CAFile, "--token-file", tokFile)
	if out, err := cli.CombinedOutput(); err != nil {
		t.Fatalf("deploy from %s: %v\n%s", n.peerIP, err, out)
	}
	call := n.exec(binPath, "call", "remote", "--data", "over tls", "--admin", url, "--ca-file", ca.CAFile)
	call.Env = append(os.Environ(), admin.TokenEnv+"="+string(tok))
	if out, err := call.CombinedOutput(); err != nil || string(out) != "over tls\n" {
		t.Fatalf("call from %s: %v %q", n.peerIP, err, out)
	}
	noTok := n.exec(binPath, "call", "remote", "--admin", url, "--ca-file", ca.CAFile)
	if out, err := noTok.CombinedOutput(); err == nil || !strings.Contains(string(out), "unauthorized") {
		t.Errorf("call from %s without a token: %v %s", n.peerIP, err, out)
	}
	if code := d.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
