package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/internal/store"
)

// release is a build of an earlier commit of main the upgrade test starts
// from, taken from this repository's own history (a clone of main holds
// it; a shallow clone does not, and the test says so). There is no release
// tag yet; the newest entry moves to each release tag as releases are cut.
type release struct {
	name, commit string
	// versioned: the build has format versions (and internal/buildinfo,
	// which came with them), so it stamps its stores and refuses a newer
	// format; devices: it has the device registry.
	versioned, devices bool
}

var previousReleases = []release{
	// The last commit before format versions: its stores carry no version
	// record, and the current binary stamps them at the first start.
	{name: "before-format-versions", commit: "33bcb371be819ed5e9c57e6f38a0591a907845c8"},
	// The merge of the device registry: the first commit where every store
	// the current binary keeps exists and carries a format version, so the
	// old binary can also be asked to refuse a newer one.
	{name: "previous", commit: "8360c241ec7f31d6c602a0bf92af8724b1fd8bd2", versioned: true, devices: true},
}

// buildRelease builds cmd/outpost as it was at commit (git archive into a
// temporary directory; -trimpath, so that the shared Go build cache serves
// it again; the module cache), stamped with version where the commit has
// internal/buildinfo; a commit missing from the clone fails the test,
// naming the fix.
func buildRelease(t *testing.T, commit, version string) string {
	t.Helper()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("the upgrade test builds outpost at commit %s from this repository's history, but git finds no repository here: %v", commit, err)
	}
	root := strings.TrimSpace(string(top))
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("the upgrade test builds outpost at commit %s, which this clone lacks (shallow? run git fetch --unshallow): %v %s", commit, err, out)
	}
	tree, err := exec.Command("git", "-C", root, "archive", "--format=tar", commit).Output()
	if err != nil {
		t.Fatalf("git archive %s: %v", commit, err)
	}
	src := t.TempDir()
	untar := exec.Command("tar", "-x", "-C", src)
	untar.Stdin = bytes.NewReader(tree)
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v %s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "outpost-"+commit[:12])
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X github.com/outpost-edge/outpost/internal/buildinfo.version="+version, "-o", bin, "./cmd/outpost")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build outpost at %s: %v\n%s", commit, err, out)
	}
	t.Logf("built outpost %s (commit %s) in %s", version, commit[:12], time.Since(start).Round(time.Second))
	return bin
}

// TestUpgradeFromPreviousRelease: a previous release fills a data dir
// (deployed tasks with versions, kv, a registered device, telemetry,
// journaled cloud calls in every state) and is killed with kill -9; the
// current binary started on the same dir and config reads everything
// back: the same task versions (rollback works), kv counts on, the device
// logs in with its secret, the same telemetry points, and every journaled
// call finishes and is reported once (none reported before is reported
// again); stores without a format version are stamped. Then the old binary
// on the upgraded dir: it starts if no format moved (a rollback by
// reinstalling) or refuses; and one with format versions refuses a state
// store of a newer format than its own, naming both versions.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	skipShort(t, "builds previous releases, about 20 s each with a warm build cache, and runs them")
	for _, r := range previousReleases {
		t.Run(r.name, func(t *testing.T) { testUpgrade(t, r) })
	}
}

func testUpgrade(t *testing.T, r release) {
	oldVersion := "dev-" + r.commit[:12]
	old := buildRelease(t, r.commit, oldVersion)

	c := startCloudProc(t)
	agent := gnmitest.StartAgent(t)
	spin := spinWasm(t)
	d := newDaemon(t, t.TempDir(), fmt.Sprintf(`
node: {id: edge-1}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: echo, module: builtin:echo}
  - {name: spin, module: %[1]s, limits: {timeout: 30s, concurrency: 1}}
  - {name: spin2, module: %[1]s, limits: {timeout: 30s}}
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
cloud: {url: %[2]q, poll_wait: 500ms, backoff_base: 50ms, backoff_max: 500ms}
telemetry:
  store: {flush_interval: 50ms}
  gnmi_server: {listen: %[3]q}
  gnmi:
    targets:
      - {name: sw1, address: %[4]q, backoff_min: 100ms, backoff_max: 200ms, subscriptions: [{paths: [/interfaces]}]}
`, spin, c.proxy, mqtttest.FreeAddr(t), agent.Addr))
	d.bin = old
	d.start()
	if out, _, code := d.cli("version"); code != 0 || (r.versioned && !strings.HasPrefix(out, "outpost "+oldVersion+"\n")) {
		t.Fatalf("the previous release's version: exit %d %q", code, out)
	}

	// Deployed tasks (svc in two versions, counter with kv), with the old
	// binary's own CLI.
	manifest, err := filepath.Abs(filepath.Join("..", "..", "examples", "tasks", "wat", "counter.manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"svc", exampleWasm(t, "echo")}, {"svc", exampleWasm(t, "upper")}, {"counter", exampleWasm(t, "counter"), "--manifest", manifest}} {
		if _, errOut, code := d.cli(append([]string{"task", "deploy"}, args...)...); code != 0 {
			t.Fatalf("deploy %v with the previous release: %s", args, errOut)
		}
	}
	for i := range 3 {
		if got, err := d.call("counter", "k0"); err != nil || got != strconv.Itoa(i+1) {
			t.Fatalf("counter: %q %v", got, err)
		}
	}
	// A registered device.
	var secret string
	if r.devices {
		out, errOut, code := d.cli("device", "add", "d1", "-o", "json")
		var added admin.AddedDevice
		if code != 0 || json.Unmarshal([]byte(out), &added) != nil || len(added.Secret) < 20 {
			t.Fatalf("device add with the previous release: exit %d %q %s", code, out, errOut)
		}
		secret = added.Secret
	}
	// Telemetry: the points stored up to a moment, as the current CLI
	// reads them from the previous release.
	waitUntil(t, 20*time.Second, "telemetry points stored", func() bool {
		out, _, code := d.cliOf(binPath, "telemetry", "query", "--since", "1h", "-o", "json")
		return code == 0 && strings.Contains(out, "eth1")
	})
	time.Sleep(100 * time.Millisecond)
	since, until := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(300 * time.Millisecond) // past the store's flush interval
	query := []string{"telemetry", "query", "--since", since, "--until", until, "-o", "json"}
	points, errOut, code := d.cliOf(binPath, query...)
	if code != 0 || !strings.Contains(points, "eth0") {
		t.Fatalf("telemetry query of the previous release: exit %d %s %s", code, points, errOut)
	}
	inspect, errOut, code := d.cliOf(binPath, "task", "inspect", "svc", "-o", "json")
	if code != 0 {
		t.Fatalf("task inspect svc: %s", errOut)
	}

	// Journaled cloud calls in every state: reported; finished with the
	// upload refused; started (idempotent and at-most-once); received,
	// queued behind spin's only slot.
	for i := range 3 {
		c.enqueue(server.Call{ID: fmt.Sprintf("rep-%d", i), Node: "edge-1", Task: "echo", Input: []byte("r")})
	}
	for i := range 3 {
		d.waitState(fmt.Sprintf("rep-%d", i), calls.Reported, 20*time.Second)
	}
	var refuse atomic.Bool
	refuse.Store(true)
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if refuse.Load() && (resultPath.MatchString(r.URL.Path) || strings.HasSuffix(r.URL.Path, "results:batch")) {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	for i := range 2 {
		c.enqueue(server.Call{ID: fmt.Sprintf("fin-%d", i), Node: "edge-1", Task: "echo", Input: []byte("f")})
	}
	for i := range 2 {
		d.waitState(fmt.Sprintf("fin-%d", i), calls.Finished, 20*time.Second)
	}
	c.enqueue(
		server.Call{ID: "idem", Node: "edge-1", Task: "spin", Input: []byte("9 idem"), Effect: "idempotent"},
		server.Call{ID: "amo", Node: "edge-1", Task: "spin2", Input: []byte("9 amo"), Effect: "at_most_once"},
		server.Call{ID: "queued", Node: "edge-1", Task: "spin", Input: []byte("1 queued"), Effect: "at_most_once"},
	)
	d.waitState("idem", calls.Started, 10*time.Second)
	d.waitState("amo", calls.Started, 10*time.Second)
	if r := d.waitState("queued", calls.Received, 10*time.Second); r.State != calls.Received {
		t.Fatalf("queued is %s before the kill, want received", r.State)
	}
	before := map[string]calls.State{}
	for _, id := range []string{"rep-0", "rep-1", "rep-2", "fin-0", "fin-1", "idem", "amo", "queued"} {
		before[id] = d.record(id).State
	}
	t.Logf("journal at the kill: %v", before)
	d.kill9()
	if _, err := os.Stat(filepath.Join(d.dir, "data", "blobs", "sha256", "FORMAT")); r.versioned != (err == nil) {
		t.Fatalf("the previous release's blob store: FORMAT file %v (release with format versions: %v)", err, r.versioned)
	}

	// The current binary on the same dir and config.
	var up resultUploads
	up.watch(t, c)
	d.bin = binPath
	d.start()
	for id, want := range map[string]string{"fin-0": "ok f", "fin-1": "ok f", "idem": "ok 9 idem", "queued": "ok 1 queued", "amo": "interrupted "} {
		got := c.waitDone(id, 30*time.Second)
		if s := got.Result.Status + " " + string(got.Result.Output); s != want {
			t.Errorf("%s after the upgrade: %q, want %q", id, s, want)
		}
	}
	for id, runs := range map[string]int{"fin-0": 1, "fin-1": 1, "idem": 2, "queued": 1, "amo": 1} {
		if r := d.waitState(id, calls.Reported, 20*time.Second); r.Runs != runs {
			t.Errorf("%s ran %d times in all, want %d", id, r.Runs, runs)
		}
	}
	time.Sleep(time.Second) // time for a wrong second upload
	for id := range before {
		want := 1
		if strings.HasPrefix(id, "rep-") {
			want = 0
		}
		if got := up.count(id); got != want {
			t.Errorf("%s (%s at the kill) uploaded %d times after the upgrade, want %d", id, before[id], got, want)
		}
	}

	if got, _, code := d.cli("telemetry", "query", "--since", since, "--until", until, "-o", "json"); code != 0 || got != points {
		t.Errorf("telemetry after the upgrade: exit %d\n%s\nbefore:\n%s", code, got, points)
	}
	if got, _, _ := d.cli("task", "inspect", "svc", "-o", "json"); withoutArtifacts(t, got) != withoutArtifacts(t, inspect) {
		t.Errorf("task inspect svc after the upgrade:\n%s\nbefore:\n%s", got, inspect)
	}
	if got, err := d.call("svc", "hello"); err != nil || got != "HELLO" {
		t.Errorf("svc after the upgrade: %q %v", got, err)
	}
	if _, errOut, code := d.cli("task", "rollback", "svc"); code != 0 {
		t.Errorf("rollback after the upgrade: %s", errOut)
	}
	if got, err := d.call("svc", "hello"); err != nil || got != "hello" {
		t.Errorf("svc rolled back: %q %v", got, err)
	}
	if got, err := d.call("counter", "k0"); err != nil || got != "4" {
		t.Errorf("counter after the upgrade: %q %v (its kv should have come back)", got, err)
	}
	if r.devices {
		as := strings.Replace(d.mqtt, "tcp://", "tcp://d1:"+secret+"@", 1)
		sub := mqtttest.Sub(t, as, "devices/d1/out", 1)
		mqtttest.Pub(t, as, "devices/d1/in", "registered", 1)
		if got := sub.Wait(1, 10*time.Second); got[0] != "devices/d1/out registered" {
			t.Errorf("device d1 after the upgrade: %q", got)
		}
		if err := mqtttest.PubErr(t, strings.Replace(d.mqtt, "tcp://", "tcp://d1:wrong@", 1), "devices/d1/in", "x", 1); err == nil {
			t.Error("d1 logged in with a wrong secret after the upgrade")
		}
	}
	blobFormat := filepath.Join(d.dir, "data", "blobs", "sha256", "FORMAT")
	if _, err := os.Stat(blobFormat); err != nil {
		t.Errorf("the blob store has no format version after the upgrade: %v", err)
	}
	migrated := strings.Contains(d.logs.String(), `msg="migrated format"`)
	if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("stop the upgraded daemon: exit %d", code)
	}

	// The previous release on the upgraded dir.
	d.bin = old
	switch {
	case migrated && r.versioned:
		_, errOut, code := runCmd(t, exec.Command(old, "run", "--config", d.cfg))
		if code == 0 || !strings.Contains(errOut, "format newer than this binary understands") {
			t.Fatalf("the previous release on a migrated dir: exit %d\n%s", code, errOut)
		}
	case migrated:
		// A build from before format versions cannot tell a migrated store:
		// rolling back to it needs the backup taken before the upgrade.
	default:
		d.start() // no format moved: reinstalling the old binary rolls back
		if got, err := d.call("counter", "k0"); err != nil || got != "5" {
			t.Errorf("counter on the previous release after a rollback: %q %v", got, err)
		}
		if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
			t.Fatalf("stop the previous release: exit %d", code)
		}
	}
	if !r.versioned {
		return // no format versions: nothing to refuse
	}
	// A state store one format version past this one: the previous release
	// refuses it, naming both versions and its own version.
	db, err := store.Open(filepath.Join(d.dir, "data", "state"), store.Defaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var newer int
	err = db.Badger().Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("format/store"))
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(string(v))
		newer = n + 1
		if err != nil {
			return err
		}
		return txn.Set([]byte("format/store"), []byte(strconv.Itoa(newer)))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCmd(t, exec.Command(old, "run", "--config", d.cfg))
	want := fmt.Sprintf("state store has format version %d, this binary (outpost %s) reads up to version", newer, oldVersion)
	if code == 0 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "run the newer outpost again") {
		t.Errorf("the previous release on a newer state store: exit %d, want %q in\n%s", code, want, errOut)
	}
}

// withoutArtifacts is an inspect document without its artifacts: the
// current daemon lists a task's module as its local artifact, which an
// older one did not (null); everything else must read back the same.
func withoutArtifacts(t *testing.T, inspect string) string {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal([]byte(inspect), &doc); err != nil {
		t.Fatalf("task inspect -o json: %v\n%s", err, inspect)
	}
	delete(doc, "artifacts")
	b, _ := json.Marshal(doc)
	return string(b)
}
