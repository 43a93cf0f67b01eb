package main

// End-to-end tests of the peer environment: two real outpost processes,
// one placing calls on the other.

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// startPeer runs a daemon whose admin API listens on addr, which stays the
// same across its restarts, with extra lines of config.
func startPeer(t *testing.T, addr, extra string) *daemon {
	t.Helper()
	d := newDaemon(t, t.TempDir(), fmt.Sprintf("node: {id: peer-b}\nadmin: {listen: %q}\nmqtt: {broker: {listen: \"{{broker}}\"}}\n%s", addr, extra))
	d.addr, d.opts = addr, admin.ClientOptions{Addr: addr}
	d.start()
	return d
}

// peerCaller runs a daemon with the task spin (testdata/spin.wat) and a
// rule that sends every call to peer b, or runs it locally while b is
// down; a qos 1 route makes idempotent calls of it. b is reached over
// plain HTTP on loopback.
func peerCaller(t *testing.T, b *daemon) *daemon {
	t.Helper()
	return peerCallerOf(t, fmt.Sprintf(`{name: b, url: "http://%s", token_file: %q}`, b.addr, filepath.Join(b.dir, "data", admin.TokenFileName)))
}

// peerCallerOf is peerCaller with peer b's entry in placement.peers.list.
func peerCallerOf(t *testing.T, entry string) *daemon {
	t.Helper()
	a := startDaemon(t, fmt.Sprintf(`
node: {id: edge-a}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: spin, module: %q, limits: {timeout: 30s}}]
routes: [{topic: "jobs/in", task: spin, reply: "jobs/out", qos: 1}]
placement:
  peers:
    refresh: 200ms
    list: [%s]
  rules:
    - name: to-peer
      run: [peer, local]
`, spinWasm(t), entry))
	waitPeerUp(t, a, true)
	return a
}

// waitPeerUp waits until a sees peer b up (or down).
func waitPeerUp(t *testing.T, a *daemon, up bool) {
	t.Helper()
	want := 0.0
	if up {
		want = 1
	}
	waitUntil(t, 20*time.Second, fmt.Sprintf("peer b up=%v", up), func() bool {
		return a.metric(`outpost_placement_peer_up{peer="b"}`) == want
	})
}

// waitPeerRunning waits until b runs a call.
func waitPeerRunning(t *testing.T, b *daemon) {
	t.Helper()
	waitUntil(t, 20*time.Second, "a call running on the peer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := b.admin.PeerStatus(ctx)
		return err == nil && st.Running > 0
	})
}

// A rule sends calls to the peer, which gets the task from the caller
// (content-addressed) on the first call only; the caller records where each
// ran and by which rule. The peer killed with -9 while it runs an
// at-most-once call: the call is reported interrupted, not run again; while
// it is down, calls run locally by the rule's fallback. Restarted, it runs
// calls again; killed while it runs an idempotent call (a qos 1 route's),
// that call runs again locally and answers.
func TestPeerEnvironment(t *testing.T) {
	skipShort(t, "two daemons")
	b := startPeer(t, mqtttest.FreeAddr(t), "")
	a := peerCaller(t, b)

	for i := range 2 {
		m, code := callJSON(t, a, "spin", fmt.Sprintf("0 hello %d", i))
		if code != 0 || m["env"] != "peer:b" || m["rule"] != "to-peer" || m["output"] != base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "0 hello %d", i)) {
			t.Fatalf("call %d: exit %d %v; want the output from peer:b by to-peer", i, code, m)
		}
	}
	if n := strings.Count(a.logs.String(), "task sent to a peer"); n != 1 {
		t.Errorf("the task was sent %d times, want once (the peer keeps it)", n)
	}
	if out, code := runCLI(t, "task", "ls", "--config", b.cfg); code != 0 || !strings.Contains(out, "spin") {
		t.Errorf("the peer's tasks: exit %d\n%s", code, out)
	}
	if got := a.metric(`outpost_placement_calls_total{env="peer:b",rule="to-peer"}`); got != 2 {
		t.Errorf("calls placed on peer:b: %v, want 2", got)
	}

	// At most once: interrupted when the peer dies under it.
	id, code := runCLI(t, "call", "spin", "--async", "--config", a.cfg, "--data", "8 at-most-once")
	id = strings.TrimSpace(id)
	if code != 0 {
		t.Fatalf("call --async: exit %d %s", code, id)
	}
	waitPeerRunning(t, b)
	b.kill9()
	show, code := runCLI(t, "calls", "show", id, "--wait", "--timeout", "20s", "--config", a.cfg)
	if code == 0 || !strings.Contains(show, "interrupted") || !strings.Contains(show, "peer b stopped answering") ||
		!regexp.MustCompile(`(?m)^ran in: +peer:b \(placement rule to-peer\)$`).MatchString(show) {
		t.Errorf("calls show of the interrupted call: exit %d\n%s", code, show)
	}
	waitPeerUp(t, a, false)
	if m, code := callJSON(t, a, "spin", "0 alone"); code != 0 || m["env"] != "local" || m["rule"] != "to-peer" {
		t.Errorf("call with the peer down: exit %d %v; want local by the rule's fallback", code, m)
	}

	// Idempotent: run again elsewhere when the peer dies under it.
	b.start()
	waitPeerUp(t, a, true)
	replies := mqtttest.Sub(t, a.mqtt, "jobs/out", 1)
	mqtttest.Pub(t, a.mqtt, "jobs/in", "8 idempotent", 1)
	waitPeerRunning(t, b)
	b.kill9()
	if got := replies.Wait(1, 30*time.Second); len(got) != 1 || !strings.HasSuffix(got[0], "8 idempotent") {
		t.Fatalf("reply of the idempotent call: %q", got)
	}
	var mq []calls.Record
	for _, r := range a.mqttCallsReported(10 * time.Second) {
		if r.Source.Kind == "mqtt" {
			mq = append(mq, r)
		}
	}
	if len(mq) != 1 || mq[0].Result == nil || mq[0].Result.Status != calls.StatusOK || mq[0].Result.Env != "local" || mq[0].Result.Rule != "to-peer" {
		t.Errorf("journal of the idempotent call: %+v", mq)
	}
	a.waitLog(`peer lost while it ran a call: placing the idempotent call again`, 5*time.Second)
}

// A suspended call resumes on another node: the example workflow
// (examples/tasks/c/workflow) fans out to 50 squares here and suspends;
// when the last one has finished, a rule on call.resume sends its next
// step (the snapshot's state and the 50 results) to the peer, which runs
// outpost_resume there (and, not journaled there, awaits its second
// step's squares instead of suspending again) and returns the outcome to
// this node's journal: one result, the sum of the squares.
func TestResumeOnPeer(t *testing.T) {
	skipShort(t, "two daemons")
	mod, err := filepath.Abs("../../examples/tasks/build/c-workflow.wasm")
	if err != nil {
		t.Fatal(err)
	}
	b := startPeer(t, mqtttest.FreeAddr(t), "tasks: [{name: square, module: "+mod+"}]\n")
	a := startDaemon(t, fmt.Sprintf(`
node: {id: edge-a}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: workflow, module: %[1]s, permissions: {call: [square]}}
  - {name: square, module: %[1]s}
routes: [{topic: "wf/in", task: workflow, reply: "wf/out", qos: 1}]
placement:
  peers:
    refresh: 200ms
    list: [{name: b, url: "http://%[2]s", token_file: %[3]q}]
  rules:
    - name: resume-on-peer
      when: call.resume
      run: [peer, local]
`, mod, b.addr, filepath.Join(b.dir, "data", admin.TokenFileName)))
	waitPeerUp(t, a, true)
	mqtttest.Pub(t, a.mqtt, "wf/in", "100 0 5", 1)
	var wf calls.Record
	waitUntil(t, 60*time.Second, "the workflow reported", func() bool {
		for _, r := range a.journal() {
			if r.Task == "workflow" && r.State == calls.Reported {
				wf = r
				return true
			}
		}
		return false
	})
	if wf.Result == nil || !wf.Result.OK() || string(wf.Result.Output) != "sum=338350 steps=2" ||
		wf.Result.Env != "peer:b" || wf.Result.Rule != "resume-on-peer" || wf.Runs != 2 {
		t.Fatalf("workflow: %d runs, result %+v; want sum=338350 steps=2 from peer:b by resume-on-peer", wf.Runs, wf.Result)
	}
	deps := 0
	for _, r := range a.journal() {
		if r.Parent == wf.ID {
			deps++
			if r.Result == nil || r.Result.Env != "local" {
				t.Errorf("dependency %s: %+v, want run here", r.ID, r.Result)
			}
		}
	}
	if deps != 50 {
		t.Errorf("%d dependencies journaled here, want the first step's 50", deps)
	}
	if n := b.metric(`outpost_calls_total{status="ok",task="square"}`); n != 50 {
		t.Errorf("the peer ran %v squares, want the second step's 50", n)
	}
}

// The telemetry cluster's members that advertise their admin URL are
// peers of each other, reached with the admin token they share: a member
// places a call on the other it found in etcd; once that one is killed,
// its calls run locally, and it leaves the peers when its lease expires.
func TestPeersFromCluster(t *testing.T) {
	skipShort(t, "two daemons")
	etcd := etcdtest.Start(t)
	token := filepath.Join(t.TempDir(), "cluster.token")
	if err := os.WriteFile(token, []byte("shared-cluster-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	member := func(name, extra string) *daemon {
		return startDaemon(t, fmt.Sprintf(`
node: {id: %s}
admin: {listen: "{{admin}}", token_file: %q}
mqtt: {broker: {listen: "{{broker}}"}}
telemetry:
  gnmi_server: {listen: %q}
  cluster: {etcd: [%q], lease_ttl: 2s, advertise_admin: "http://{{admin}}"}
placement:
  peers: {refresh: 200ms, cluster: {token_file: %q}}
%s`, name, token, mqtttest.FreeAddr(t), etcd.Endpoint(), token, extra))
	}
	b := member("b", "")
	a := member("a", fmt.Sprintf(`  rules: [{name: to-peer, run: [peer, local]}]
tasks: [{name: spin, module: %q}]
`, spinWasm(t)))
	waitPeerUp(t, a, true)
	a.waitLog(`msg="peer found in the cluster" peer=b url=http://`+regexp.QuoteMeta(b.addr), 5*time.Second)
	if m, code := callJSON(t, a, "spin", "0 clustered"); code != 0 || m["env"] != "peer:b" || m["rule"] != "to-peer" {
		t.Fatalf("call: exit %d %v; want it run on peer:b by to-peer", code, m)
	}
	b.kill9()
	if m, code := callJSON(t, a, "spin", "0 alone"); code != 0 || m["env"] != "local" {
		t.Errorf("call with b killed: exit %d %v; want it run locally", code, m)
	}
	a.waitLog(`msg="peer left the cluster" peer=b`, 20*time.Second)
}

// The caller killed with -9 while its call runs on the peer: the peer's
// run is canceled with the connection (it does not run on), and after the
// restart the caller's journal reports the at-most-once call once,
// interrupted, without sending it again.
func TestPeerCallerKilled(t *testing.T) {
	skipShort(t, "two daemons")
	b := startPeer(t, mqtttest.FreeAddr(t), "")
	a := peerCaller(t, b)
	id, code := runCLI(t, "call", "spin", "--async", "--config", a.cfg, "--data", "9 caller-killed")
	id = strings.TrimSpace(id)
	if code != 0 {
		t.Fatalf("call --async: exit %d %s", code, id)
	}
	waitPeerRunning(t, b)
	a.kill9()
	waitUntil(t, 20*time.Second, "the peer's run canceled", func() bool {
		return b.metric(`outpost_calls_total{status="canceled",task="spin"}`) == 1
	})
	a.start()
	show, code := runCLI(t, "calls", "show", id, "--wait", "--timeout", "20s", "--config", a.cfg)
	if code == 0 || !strings.Contains(show, "interrupted") {
		t.Errorf("calls show after the restart: exit %d\n%s", code, show)
	}
	if ok := b.metric(`outpost_calls_total{status="ok",task="spin"}`); ok != 0 {
		t.Errorf("the peer ran the call to its end %v times, want 0", ok)
	}
}

// A peer whose admin API asks for client certificates signed by the
// cluster's CA: the caller gives its certificate with the peer's token
// (both checks apply) and checks the peer's against the CA.
func TestPeerOverMutualTLS(t *testing.T) {
	skipShort(t, "two daemons")
	dir := t.TempDir()
	ca := testpki.New(t, dir, "cluster")
	srvCert, srvKey := ca.Server(t, "b", net.ParseIP("127.0.0.1"))
	cliCert, cliKey := ca.Client(t, "a")
	addr := mqtttest.FreeAddr(t)
	b := newDaemon(t, t.TempDir(), fmt.Sprintf("node: {id: peer-b}\nadmin: {listen: %q, tls: {cert_file: %s, key_file: %s, client_ca_file: %s}}\nmqtt: {broker: {listen: \"{{broker}}\"}}\n",
		addr, srvCert, srvKey, ca.CAFile))
	b.addr, b.opts = addr, admin.ClientOptions{Addr: "https://" + addr, CAFile: ca.CAFile, CertFile: cliCert, KeyFile: cliKey}
	b.start()
	a := peerCallerOf(t, fmt.Sprintf(`{name: b, url: "https://%s", token_file: %q, ca_file: %q, cert_file: %q, key_file: %q}`,
		addr, filepath.Join(b.dir, "data", admin.TokenFileName), ca.CAFile, cliCert, cliKey))
	if m, code := callJSON(t, a, "spin", "0 over mtls"); code != 0 || m["env"] != "peer:b" || m["rule"] != "to-peer" {
		t.Fatalf("call: exit %d %v; want it run on peer:b by to-peer", code, m)
	}
}
