package main

// Cloud link end to end: the real outpost daemon and the real
// outpost-cloud server as subprocesses on random loopback ports, a fault
// proxy (in the test) between them, and kill -9 at the moments the
// protocol cares about. Executions are counted by the journal's runs
// (STARTED is synced before every run, so it bounds executions from
// above) and by the server's record of deliveries, attempts and results.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/internal/syncbuf"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

var (
	cloudBinOnce sync.Once
	cloudBin     string
	cloudBinErr  error
)

func buildCloud(t *testing.T) string {
	t.Helper()
	cloudBinOnce.Do(func() {
		cloudBin = filepath.Join(filepath.Dir(binPath), "outpost-cloud")
		out, err := exec.Command("go", "build", "-o", cloudBin, "../outpost-cloud").CombinedOutput()
		if err != nil {
			cloudBinErr = fmt.Errorf("build outpost-cloud: %v\n%s", err, out)
		}
	})
	if cloudBinErr != nil {
		t.Fatal(cloudBinErr)
	}
	return cloudBin
}

// cloudProc is a running outpost-cloud with a fault proxy in front.
type cloudProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string // the server itself (operator API)
	proxy  string // what the daemon dials
	logs   *syncbuf.Buffer
	fault  atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	exited chan struct{}
}

func startCloudProc(t *testing.T) *cloudProc {
	t.Helper()
	return startCloudProcArgs(t, "--data", filepath.Join(t.TempDir(), "cloud"))
}

// startCloudProcArgs starts outpost-cloud serve with args besides the
// listen address, the lease (4s) and the live window (1s).
func startCloudProcArgs(t *testing.T, args ...string) *cloudProc {
	t.Helper()
	bin := buildCloud(t)
	c := &cloudProc{t: t, logs: &syncbuf.Buffer{}, exited: make(chan struct{})}
	c.cmd = exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--lease", "4s", "--live-window", "1s"}, args...)...)
	stdout, _ := c.cmd.StdoutPipe()
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		<-c.exited
		if t.Failed() {
			t.Logf("outpost-cloud logs:\n%s", c.logs.String())
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		t.Fatalf("outpost-cloud did not say where it listens: %q %v\n%s", line, err, c.logs.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	c.url = "http://" + addr
	u, _ := url.Parse(c.url)
	rp := httputil.NewSingleHostReverseProxy(u)
	ps := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := c.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	})}
	ln := listenLoopback(t)
	go func() { _ = ps.Serve(ln) }()
	t.Cleanup(func() { _ = ps.Close() })
	c.proxy = "http://" + ln.Addr().String()
	return c
}

func (c *cloudProc) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		c.fault.Store(nil)
		return
	}
	c.fault.Store(&f)
}

func (c *cloudProc) api(method, path string, body, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, c.url+path, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		c.t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cloudProc) enqueue(cs ...server.Call) {
	c.api("POST", "/api/v1/calls", server.EnqueueRequest{Calls: cs}, nil)
}

func (c *cloudProc) get(id string) server.Call {
	var got server.Call
	c.api("GET", "/api/v1/calls/"+id, nil, &got)
	return got
}

func (c *cloudProc) waitDone(id string, timeout time.Duration) server.Call {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := c.get(id)
		if got.Final() {
			return got
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("call %s not final after %v: %+v", id, timeout, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// journal reads a call's record from the daemon's admin API.
func (d *daemon) record(id string) *calls.Record {
	d.t.Helper()
	resp := d.get("/v1/calls/" + id)
	defer resp.Body.Close()
	if resp.StatusCode == 404 {
		return nil
	}
	var r calls.Record
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		d.t.Fatal(err)
	}
	return &r
}

func (d *daemon) waitState(id string, want calls.State, timeout time.Duration) *calls.Record {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if r := d.record(id); r != nil && r.State >= want {
			return r
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("call %s never reached %s: %+v\n%s", id, want, d.record(id), d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill9 kills the daemon with SIGKILL and waits for it to be gone.
func (d *daemon) kill9() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// cloudDaemon runs the daemon against c; extra lines of config (top-level
// sections the base config does not have) are appended.
func cloudDaemon(t *testing.T, c *cloudProc, extra ...string) *daemon {
	t.Helper()
	return cloudDaemonAt(t, c.proxy, extra...)
}

// cloudDaemonAt is cloudDaemon against the control plane at url.
func cloudDaemonAt(t *testing.T, url string, extra ...string) *daemon {
	t.Helper()
	return startDaemon(t, fmt.Sprintf(`
node: {id: edge-1}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: echo, module: builtin:echo}
  - {name: spin, module: %s, limits: {timeout: 30s}}
cloud:
  url: %q
  poll_wait: 500ms
  backoff_base: 50ms
  backoff_max: 500ms
`, spinWasm(t), url)+strings.Join(extra, "\n"))
}

func spinWasm(t *testing.T) string {
	t.Helper()
	return wasmtest.WAT(t, "testdata/spin.wat", "")
}

func TestCloudCallsEndToEnd(t *testing.T) {
	c := startCloudProc(t)
	d := cloudDaemon(t, c)
	// The CLI: enqueue --wait prints the output.
	in := filepath.Join(t.TempDir(), "in.json")
	_ = os.WriteFile(in, []byte(`{"hello":"edge"}`), 0o644)
	out, err := exec.Command(buildCloud(t), "enqueue", "--server", c.url, "--node", "edge-1", "--task", "echo", "--data", "@"+in, "--wait", "--id", "e2e-1").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != `{"hello":"edge"}` {
		t.Fatalf("enqueue --wait: %v %q", err, out)
	}
	if r := d.waitState("e2e-1", calls.Reported, 5*time.Second); r.Runs != 1 {
		t.Fatalf("journal %+v", r)
	}
	// outpost calls ls / show.
	out, err = exec.Command(binPath, "calls", "ls", "--config", d.cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "e2e-1") || !strings.Contains(string(out), "reported") {
		t.Fatalf("calls ls: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		want bool // e2e-1 listed
	}{
		{[]string{"--task", "echo", "--source", "cloud", "--state", "reported"}, true},
		{[]string{"--source", "mqtt"}, false},
		{[]string{"--task", "other"}, false},
	} {
		out, err := exec.Command(binPath, append([]string{"calls", "ls", "--config", d.cfg}, tc.args...)...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "e2e-1") != tc.want {
			t.Errorf("calls ls %v: %v, want e2e-1 listed %v:\n%s", tc.args, err, tc.want, out)
		}
	}
	out, err = exec.Command(binPath, "calls", "show", "e2e-1", "--config", d.cfg, "-o", "json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"state": "reported"`) {
		t.Fatalf("calls show: %v\n%s", err, out)
	}
	if out, err := exec.Command(binPath, "calls", "show", "nope", "--config", d.cfg).CombinedOutput(); err == nil || !strings.Contains(string(out), "no call nope") {
		t.Fatalf("calls show of an unknown id: %v %s", err, out)
	}
	// batch: a re-run only runs what is missing.
	items := filepath.Join(t.TempDir(), "items.jsonl")
	_ = os.WriteFile(items, []byte("{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":2}\n"), 0o644)
	out, err = exec.Command(buildCloud(t), "batch", "--server", c.url, "--node", "edge-1", "--task", "echo", items).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "3 items: 3 enqueued") || !strings.Contains(string(out), "all 3 items have a result: 3 ok") {
		t.Fatalf("batch: %v\n%s", err, out)
	}
	out, err = exec.Command(buildCloud(t), "batch", "--server", c.url, "--node", "edge-1", "--task", "echo", items).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "0 enqueued, 3 already done") {
		t.Fatalf("batch re-run: %v\n%s", err, out)
	}
	if code := d.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// kill -9 between STARTED and FINISHED: the idempotent call runs again
// (attempt 2), the at-most-once call is reported interrupted and never
// runs twice.
func TestCloudKillWhileRunning(t *testing.T) {
	c := startCloudProc(t)
	d := cloudDaemon(t, c)
	c.enqueue(
		// 4.5 s each: on a loaded host the second call's start can be seen
		// seconds after the first's, and the kill must find both running.
		server.Call{ID: "idem", Node: "edge-1", Task: "spin", Input: []byte("9 idem"), Effect: "idempotent"},
		server.Call{ID: "amo", Node: "edge-1", Task: "spin", Input: []byte("9 amo"), Effect: "at_most_once"},
	)
	d.waitState("idem", calls.Started, 10*time.Second)
	d.waitState("amo", calls.Started, 10*time.Second)
	// The admin API shows STARTED as it is written; an at-most-once call
	// runs once it is synced. A kill before that sync finds it not run yet
	// (it runs after the restart, once): give the sync time, well within
	// the 4.5 s the calls spin.
	time.Sleep(time.Second)
	d.kill9()
	d.start()
	idem := c.waitDone("idem", 20*time.Second)
	amo := c.waitDone("amo", 20*time.Second)
	if idem.Result.Status != "ok" || string(idem.Result.Output) != "9 idem" {
		t.Errorf("idempotent call: %+v", idem.Result)
	}
	if amo.Result.Status != "interrupted" {
		t.Errorf("at-most-once call: %+v", amo.Result)
	}
	ri, ra := d.waitState("idem", calls.Reported, 5*time.Second), d.waitState("amo", calls.Reported, 5*time.Second)
	if ri.Runs != 2 || ri.Attempt != 2 {
		t.Errorf("idempotent: runs %d attempt %d, want 2 and 2 (interrupted once)", ri.Runs, ri.Attempt)
	}
	if ra.Runs != 1 {
		t.Errorf("at-most-once ran %d times", ra.Runs)
	}
}

// kill -9 after FINISHED, before the upload (uploads refused), and during
// the upload (the request held open): the stored result is sent after the
// restart; the call ran once; the server keeps one result.
func TestCloudKillAroundUpload(t *testing.T) {
	for _, mode := range []string{"before upload", "during upload"} {
		t.Run(mode, func(t *testing.T) {
			c := startCloudProc(t)
			var uploads atomic.Int32
			c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/poll") {
					return false
				}
				uploads.Add(1)
				if mode == "before upload" {
					w.WriteHeader(http.StatusServiceUnavailable)
				} else {
					<-r.Context().Done() // held until the daemon dies
				}
				return true
			})
			d := cloudDaemon(t, c)
			c.enqueue(server.Call{ID: "up", Node: "edge-1", Task: "echo", Input: []byte("result"), Effect: "at_most_once"})
			d.waitState("up", calls.Finished, 10*time.Second)
			deadline := time.Now().Add(5 * time.Second)
			for uploads.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			d.kill9()
			c.setFault(nil)
			d.start()
			got := c.waitDone("up", 15*time.Second)
			if got.Result.Status != "ok" || string(got.Result.Output) != "result" || got.Conflicts != 0 {
				t.Errorf("server record %+v", got)
			}
			if r := d.waitState("up", calls.Reported, 10*time.Second); r.Runs != 1 {
				t.Errorf("ran %d times", r.Runs)
			}
		})
	}
}

// kill -9 before the RECEIVED write: the poll response carrying the call
// is held by the proxy when the daemon dies, so the call was never
// journaled or acknowledged; the server redelivers it to the restarted
// daemon, which runs it once.
func TestCloudKillBeforeReceived(t *testing.T) {
	c := startCloudProc(t)
	var held atomic.Int32
	c.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/poll") || held.Load() > 0 {
			return false
		}
		// Forward to the server (it leases the call), then keep the answer.
		rec := &discardWriter{h: http.Header{}}
		u, _ := url.Parse(c.url)
		httputil.NewSingleHostReverseProxy(u).ServeHTTP(rec, r)
		if rec.code == 200 {
			held.Add(1)
			<-r.Context().Done()
			return true
		}
		w.WriteHeader(rec.code)
		return true
	})
	d := cloudDaemon(t, c)
	c.enqueue(server.Call{ID: "norecv", Node: "edge-1", Task: "echo", Input: []byte("x"), Effect: "at_most_once"})
	deadline := time.Now().Add(10 * time.Second)
	for held.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no poll response held")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := d.record("norecv"); r != nil {
		t.Fatalf("journaled although the response never arrived: %+v", r)
	}
	d.kill9()
	c.setFault(nil)
	d.start()
	got := c.waitDone("norecv", 15*time.Second)
	if got.Result.Status != "ok" || got.Deliveries != 2 {
		t.Errorf("server record %+v (want ok after 2 deliveries)", got)
	}
	if r := d.waitState("norecv", calls.Reported, 5*time.Second); r.Runs != 1 {
		t.Errorf("ran %d times", r.Runs)
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) {
	if d.code == 0 {
		d.code = 200
	}
	return len(b), nil
}
func (d *discardWriter) WriteHeader(code int) { d.code = code }

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
