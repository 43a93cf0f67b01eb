package main

// End-to-end tests: the real outpost binary as a subprocess, real Mosquitto
// clients and broker, random loopback ports.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/syncbuf"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "outpost-e2e-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "outpost")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build outpost: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running outpost process.
type daemon struct {
	t      testing.TB
	bin    string // the outpost binary it runs, and whose CLI cli runs
	cmd    *exec.Cmd
	dir    string
	cfg    string
	addr   string              // admin API (host:port)
	opts   admin.ClientOptions // how to reach it; the token is found as the CLI finds it (--config)
	admin  *admin.Client       // with the token, once started
	mqtt   string              // broker URL devices use
	logs   *syncbuf.Buffer
	exited chan struct{}
	err    error
}

// wasm compiles a test fixture from runtime/testdata with wat2wasm.
func wasm(t *testing.T, name string) string {
	t.Helper()
	return wasmtest.WAT(t, filepath.Join("..", "..", "runtime", "testdata", name+".wat"), "")
}

// startDaemon writes cfg (with {{admin}} and {{broker}} replaced by free
// loopback addresses, and data_dir set) and runs `outpost run` on it until
// skipShort skips a slow end-to-end test (several processes, a browser,
// repeated kills; why says which) under go test -short, which
// ./scripts/test.sh -short runs; the full gate runs it.
func skipShort(t *testing.T, why string) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow (" + why + "): runs without -short")
	}
}

// it reports healthy.
func startDaemon(t testing.TB, cfg string) *daemon {
	t.Helper()
	return startDaemonIn(t, t.TempDir(), cfg)
}

// startDaemonIn is startDaemon with the config and data dir (dir/data,
// which may be filled already) in dir.
func startDaemonIn(t testing.TB, dir, cfg string) *daemon {
	t.Helper()
	d := newDaemon(t, dir, cfg)
	d.start()
	return d
}

// newDaemon writes the config of startDaemonIn and returns the daemon
// without starting it.
func newDaemon(t testing.TB, dir, cfg string) *daemon {
	t.Helper()
	adminAddr, brokerAddr := mqtttest.FreeAddr(t), mqtttest.FreeAddr(t)
	cfg = strings.NewReplacer("{{admin}}", adminAddr, "{{broker}}", brokerAddr).Replace(cfg)
	cfg = "data_dir: " + filepath.Join(dir, "data") + "\n" + cfg
	path := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return &daemon{t: t, bin: binPath, dir: dir, cfg: path, addr: adminAddr, opts: admin.ClientOptions{Addr: adminAddr}, mqtt: "tcp://" + brokerAddr, logs: &syncbuf.Buffer{}, exited: make(chan struct{})}
}

func (d *daemon) start() {
	t := d.t
	t.Helper()
	d.cmd = exec.Command(d.bin, "run", "--config", d.cfg)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.exited
		if t.Failed() {
			t.Logf("outpost logs:\n%s", d.logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d.admin = d.dial()
		h, err := d.admin.Health(ctx)
		cancel()
		if err == nil && h.Status == "ok" {
			// Dialed again: the token file appears at the first start before
			// the API answers, perhaps after the dial above.
			d.admin = d.dial()
			return
		}
		select {
		case <-d.exited:
			t.Fatalf("outpost exited before it was ready (%v):\n%s", d.err, d.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("outpost not healthy after 20s (%+v, %v):\n%s", h, err, d.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signal sends sig and, for a stopping signal, waits for the exit code.
func (d *daemon) stop(sig syscall.Signal, timeout time.Duration) int {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(timeout):
		d.t.Fatalf("outpost did not exit %s after %v:\n%s", timeout, sig, d.logs.String())
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// dial returns a client of the daemon with the token its config file
// names, as `outpost --config` finds it.
func (d *daemon) dial() *admin.Client {
	d.t.Helper()
	cfg, err := configs.Load(d.cfg)
	if err != nil {
		d.t.Fatal(err)
	}
	o := d.opts
	o.DaemonTokenFile = cfg.Admin.TokenPath(cfg.DataDir)
	c, err := admin.Dial(o)
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

// token is the daemon's admin token.
func (d *daemon) token() string {
	d.t.Helper()
	tok, err := admin.ReadToken(filepath.Join(d.dir, "data", admin.TokenFileName))
	if err != nil {
		d.t.Fatal(err)
	}
	return string(tok)
}

// authorize adds the daemon's token to a request of the admin API.
func (d *daemon) authorize(req *http.Request) {
	d.t.Helper()
	req.Header.Set("Authorization", "Bearer "+d.token())
}

// get GETs path of the admin API with the daemon's token.
func (d *daemon) get(path string) *http.Response {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+path, nil)
	d.authorize(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp
}

func (d *daemon) call(task, input string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := d.admin.Call(ctx, task, []byte(input), admin.CallOptions{})
	return string(out.Output), err
}

func (d *daemon) waitLog(re string, timeout time.Duration) {
	d.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for !rx.MatchString(d.logs.String()) {
		if time.Now().After(deadline) {
			d.t.Fatalf("log never matched %q:\n%s", re, d.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The documented walkthrough: the built-in config (configs/outpost.yaml,
// here on free ports), a device publishing with mosquitto_pub and another
// listening with mosquitto_sub for the echo task's reply.
func TestDeviceMessageThroughEchoTask(t *testing.T) {
	cfg := strings.NewReplacer("127.0.0.1:7700", "{{admin}}", "127.0.0.1:1883", "{{broker}}", "data_dir: ./data\n", "").Replace(string(configs.Default))
	d := startDaemon(t, cfg)
	sub := mqtttest.Sub(t, d.mqtt, "devices/+/out", 2)
	mqtttest.Pub(t, d.mqtt, "devices/d1/in", "hello", 0)
	mqtttest.Pub(t, d.mqtt, "devices/d2/in", `{"x":1}`, 1)
	got := sub.Wait(2, 10*time.Second)
	want := []string{"devices/d1/out hello", `devices/d2/out {"x":1}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("replies %q, want %q", got, want)
	}
	if code := d.stop(syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
}

// The same path with an external Mosquitto broker instead of the embedded one.
func TestExternalBroker(t *testing.T) {
	url := mqtttest.StartMosquitto(t)
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt: {url: "%s"}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out", qos: 1}]
`, url))
	d.mqtt = url
	h, err := d.admin.Health(context.Background())
	if err != nil || h.MQTT.Broker != "external" || !h.MQTT.Connected {
		t.Fatalf("health %+v %v", h, err)
	}
	sub := mqtttest.Sub(t, url, "devices/+/out", 1)
	mqtttest.Pub(t, url, "devices/d7/in", "over mosquitto", 1)
	if got := sub.Wait(1, 10*time.Second); got[0] != "devices/d7/out over mosquitto" {
		t.Errorf("reply %q", got)
	}
}

// With anonymous clients refused, devices log in with their passwords and
// the daemon's own client, in process, still gets their messages.
func TestBrokerUsers(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "sensor-1.pass")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt:
  broker:
    listen: "{{broker}}"
    allow_anonymous: false
    users: [{username: sensor-1, password_file: %s}]
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
`, pw))
	authed := strings.Replace(d.mqtt, "tcp://", "tcp://sensor-1:s3cret@", 1)
	sub := mqtttest.Sub(t, authed, "devices/+/out", 1)
	mqtttest.Pub(t, authed, "devices/sensor-1/in", "logged in", 1)
	if got := sub.Wait(1, 10*time.Second); got[0] != "devices/sensor-1/out logged in" {
		t.Errorf("reply %q", got)
	}
	if err := mqtttest.PubErr(t, d.mqtt, "devices/x/in", "anonymous", 0); err == nil {
		t.Error("anonymous publish accepted with allow_anonymous: false")
	}
	wrong := strings.Replace(d.mqtt, "tcp://", "tcp://sensor-1:guess@", 1)
	if err := mqtttest.PubErr(t, wrong, "devices/x/in", "guess", 0); err == nil {
		t.Error("wrong password accepted")
	}
}

// A runaway task is stopped at its timeout, a memory hog at its limit, and
// the daemon goes on serving other tasks; failures reach MQTT devices as
// error documents.
func TestTaskLimits(t *testing.T) {
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks:
  - {name: echo, module: builtin:echo}
  - {name: loop, module: %s, limits: {timeout: 300ms, concurrency: 2}}
  - {name: grow, module: %s, limits: {memory: 1MiB}}
  - {name: trap, module: %s}
  - {name: small, module: builtin:echo, limits: {max_input: 1KiB}}
routes:
  - {topic: "run/+", task: "loop", reply: "out/{1}"}
`, wasm(t, "loop"), wasm(t, "grow"), wasm(t, "trap")))

	start := time.Now()
	_, err := d.call("loop", "x")
	var ce *admin.CallError
	if !errors.As(err, &ce) || ce.Doc.Error.Code != "timeout" || ce.HTTPStatus != 504 {
		t.Fatalf("loop: want a timeout error, got %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("loop took %v to stop with a 300ms timeout", el)
	}
	if out, err := d.call("echo", "still here"); err != nil || out != "still here" {
		t.Fatalf("echo after a timeout: %q %v", out, err)
	}
	if out, err := d.call("loop", "again"); err == nil {
		t.Fatalf("loop returned %q", out)
	}
	_, err = d.call("grow", "x")
	if !errors.As(err, &ce) || ce.Doc.Error.Code != "memory" || ce.HTTPStatus != 422 {
		t.Fatalf("grow: want a memory error, got %v", err)
	}
	_, err = d.call("trap", "x")
	if !errors.As(err, &ce) || ce.Doc.Error.Code != "trap" {
		t.Fatalf("trap: want a trap error, got %v", err)
	}
	// The kinds of docs/abi.md are the codes the API shows.
	_, err = d.call("small", strings.Repeat("x", 2000))
	if !errors.As(err, &ce) || ce.Doc.Error.Code != "too_large" || ce.HTTPStatus != 413 {
		t.Fatalf("input over max_input: want too_large (413), got %v", err)
	}
	// Every failed call is a warning with its kind (journalctl -p warning).
	d.waitLog(`level=WARN msg="call failed" task=trap call=\S+ source=admin:\S+ kind=trap`, 5*time.Second)
	d.waitLog(`level=WARN msg="call failed" task=grow call=\S+ source=admin:\S+ kind=memory`, 5*time.Second)
	_, err = d.call("nope", "x")
	if !errors.As(err, &ce) || ce.HTTPStatus != 404 || ce.Doc.Error.Code != "unknown_task" {
		t.Fatalf("unknown task: got %v", err)
	}
	if out, err := d.call("echo", "and still"); err != nil || out != "and still" {
		t.Fatalf("echo after failures: %q %v", out, err)
	}

	sub := mqtttest.Sub(t, d.mqtt, "out/#", 1)
	mqtttest.Pub(t, d.mqtt, "run/a", "spin", 0)
	got := sub.Wait(1, 10*time.Second)[0]
	if !strings.HasPrefix(got, `out/a {"error":{"code":"timeout","message":`) || !strings.Contains(got, `"task":"loop"`) {
		t.Errorf("error document on MQTT: %s", got)
	}
	d.waitLog(`level=WARN msg="call failed" task=loop call=\S+ source=mqtt:run/a kind=timeout`, 5*time.Second)
}

// SIGTERM while calls run: running and queued calls finish, new ones are
// refused, and the daemon exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
scheduler: {workers: 2, drain_timeout: 20s}
tasks: [{name: slow, module: %s, limits: {concurrency: 2}}]
`, wasm(t, "sleep")))
	const n = 12 // 30 ms each, two at a time: the drain takes about 180 ms
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := d.call("slow", fmt.Sprint(i))
			if err == nil && out != fmt.Sprint(i) {
				err = fmt.Errorf("call %d answered %q", i, out)
			}
			errs <- err
		}()
	}
	// Wait until the calls are in: some queued, some running.
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := d.admin.Health(context.Background())
		if err == nil && h.Scheduler.Queued+h.Scheduler.Running >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls never queued: %+v %v", h, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if code := d.stop(syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, d.logs.String())
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		if err == nil {
			ok++
		} else if !strings.Contains(err.Error(), "shutting down") && !strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("call failed during drain: %v", err)
		}
	}
	if ok < 4 {
		t.Errorf("only %d calls finished: the in-flight ones were not drained", ok)
	}
	if !strings.Contains(d.logs.String(), "draining calls") || strings.Contains(d.logs.String(), "drain incomplete") {
		t.Errorf("drain not clean:\n%s", d.logs.String())
	}
}

// SIGHUP applies a new valid config without a restart, and a broken one is
// rejected with its problems logged while the old config keeps serving.
func TestReload(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "a/+", task: echo, reply: "a-out/{1}"}]
`)
	old, err := os.ReadFile(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Valid: a new task name and a new route.
	next := strings.Replace(string(old), "routes: [{topic: \"a/+\", task: echo, reply: \"a-out/{1}\"}]",
		"  - {name: echo2, module: builtin:echo}\nroutes: [{topic: \"b/+\", task: echo2, reply: \"b-out/{1}\"}]", 1)
	next = strings.Replace(next, "tasks: [{name: echo, module: builtin:echo}]", "tasks:\n  - {name: echo, module: builtin:echo}", 1)
	if err := os.WriteFile(d.cfg, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	// The operator rotates the admin token in the same reload.
	oldToken := d.token()
	if err := os.WriteFile(filepath.Join(d.dir, "data", admin.TokenFileName), []byte("rotated-by-the-operator\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	// The reload says it started, and what it compiles, before the work.
	d.waitLog(`(?s)msg="reload started".*msg="compiling task modules" tasks=2.*msg="admin credentials reloaded".*msg="task set activated".*msg="config reloaded"`, 10*time.Second)
	req, _ := http.NewRequest(http.MethodGet, "http://"+d.addr+"/v1/tasks", nil)
	req.Header.Set("Authorization", "Bearer "+oldToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the old admin token after the rotation: %v %v", resp, err)
	}
	d.admin = d.dial() // the CLI reads the token file on each run
	if out, err := d.call("echo2", "new"); err != nil || out != "new" {
		t.Fatalf("new task after reload: %q %v", out, err)
	}
	sub := mqtttest.Sub(t, d.mqtt, "b-out/#", 1)
	mqtttest.Pub(t, d.mqtt, "b/x", "routed", 0)
	if got := sub.Wait(1, 10*time.Second); got[0] != "b-out/x routed" {
		t.Errorf("new route: %q", got)
	}

	// Broken: an unknown key and a missing module. Rejected, old config kept.
	bad := next + "bogus: 1\n"
	bad = strings.Replace(bad, "module: builtin:echo}\nroutes", "module: /nope.wasm}\nroutes", 1)
	if err := os.WriteFile(d.cfg, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(`reload rejected.*unknown key \\"bogus\\"`, 10*time.Second)
	d.waitLog(`reload rejected.*nope.wasm`, time.Second)
	if out, err := d.call("echo2", "kept"); err != nil || out != "kept" {
		t.Fatalf("old config not kept after a bad reload: %q %v", out, err)
	}
}

// A second daemon on the same data dir fails at once and says why.
func TestDataDirLocked(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
`)
	cfg := fmt.Sprintf("data_dir: %s\nadmin: {listen: %q}\nmqtt: {broker: {listen: %q}}\n",
		filepath.Join(d.dir, "data"), mqtttest.FreeAddr(t), mqtttest.FreeAddr(t))
	path := filepath.Join(t.TempDir(), "second.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binPath, "run", "--config", path).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second daemon: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "in use by another process") {
		t.Errorf("unclear error:\n%s", out)
	}
}

// `outpost check` lists every problem of a config with its line, and its
// modules' problems with the task name.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`admin:
  listen: nowhere
tasks:
  - name: echo
    module: builtin:echo
    limits:
      timeout: -1s
routes:
  - topic: devices/+/in
    task: missing
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "check", "--config", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		bad + `:2: admin.listen: "nowhere" is not host:port`,
		bad + ":7: tasks[0].limits.timeout: must be positive",
		bad + `:10: routes[0].task: no task named "missing"`,
		"3 problems",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	// A module that is not valid wasm fails check with the task's name.
	junk := filepath.Join(dir, "junk.wasm")
	if err := os.WriteFile(junk, []byte("not wasm"), 0o644); err != nil {
		t.Fatal(err)
	}
	mod := filepath.Join(dir, "mod.yaml")
	if err := os.WriteFile(mod, []byte("tasks: [{name: junk, module: junk.wasm}, {name: ok, module: builtin:echo}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "check", "--config", mod)
	if code != 1 || !strings.Contains(out, `task "junk"`) {
		t.Errorf("bad module: exit %d:\n%s", code, out)
	}

	out, code = runCLI(t, "check")
	if code != 0 || !strings.Contains(out, "ok (1 task, 1 route)") {
		t.Errorf("built-in config: exit %d:\n%s", code, out)
	}

	// A file without tasks and routes keeps the built-in ones; a file with
	// its own replaces them, and check says so.
	logOnly := filepath.Join(dir, "log.yaml")
	if err := os.WriteFile(logOnly, []byte("log: {level: debug}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runCLI(t, "check", "--config", logOnly); code != 0 || !strings.Contains(out, "ok (1 task, 1 route)") || strings.Contains(out, "warning") {
		t.Errorf("file without tasks: exit %d:\n%s", code, out)
	}
	own := filepath.Join(dir, "own.yaml")
	if err := os.WriteFile(own, []byte("log: {level: debug}\ntasks: [{name: mine, module: builtin:echo}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "check", "--config", own)
	if want := own + ":2: warning: tasks: this file's tasks and routes replace the built-in ones, so task echo and route devices/+/in → echo no longer run"; code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "ok (1 task, 0 routes)") {
		t.Errorf("file with its own tasks: exit %d:\n%s\nwant %s", code, out, want)
	}
}

// A deploy manifest is checked by the CLI, with the daemon's strict decoder,
// before anything is uploaded: a typo is reported with its line and key, not
// as a connection error or Go type names after the upload.
func TestManifestCheckedBeforeUpload(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "m.wasm")
	man := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(mod, []byte("\x00asm\x01\x00\x00\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(man, []byte("abi: reactor\nlimits:\n  timout: 5s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "task", "deploy", "x", mod, "--manifest", man, "--admin", mqtttest.FreeAddr(t))
	if want := man + `:3: limits.timout: unknown key "timout"`; code != 1 || !strings.Contains(out, want) || strings.Contains(out, "uploading") {
		t.Errorf("exit %d:\n%s\nwant %s", code, out, want)
	}
}

// The CLI speaks to the daemon: call, tasks, health, and clear usage errors.
func TestCLI(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: echo, module: builtin:echo}]
`)
	addr := strings.TrimPrefix(regexp.MustCompile(`admin=(\S+)`).FindStringSubmatch(d.logs.String())[1], "")
	out, code := runCLI(t, "call", "echo", "--data", `{"x":1}`, "--config", d.cfg)
	if code != 0 || out != "{\"x\":1}\n" {
		t.Errorf("call: exit %d: %q", code, out)
	}
	in := filepath.Join(t.TempDir(), "in.json")
	_ = os.WriteFile(in, []byte("from a file"), 0o644)
	if out, code := runCLI(t, "call", "--config", d.cfg, "--data", "@"+in, "echo"); code != 0 || out != "from a file\n" {
		t.Errorf("call @file: exit %d: %q", code, out)
	}
	if out, code := runCLI(t, "tasks", "--config", d.cfg); code != 0 || !strings.Contains(out, "echo  reactor") {
		t.Errorf("tasks: exit %d:\n%s", code, out)
	}
	// Health needs no token on loopback; a call does, and without one the
	// CLI says how to get it.
	if out, code := runCLI(t, "health", "--admin", addr, "-o", "json"); code != 0 || !strings.Contains(out, `"status": "ok"`) {
		t.Errorf("health: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "call", "echo", "--admin", addr); code != 1 || !strings.Contains(out, "run as the daemon's user") {
		t.Errorf("call without a token: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "call", "nope", "--config", d.cfg); code != 1 || !strings.Contains(out, "unknown_task") {
		t.Errorf("unknown task: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "call", "echo", "--admin", mqtttest.FreeAddr(t)); code != 1 || !strings.Contains(out, "cannot reach the outpost daemon") {
		t.Errorf("no daemon: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "call", "--bogus"); code != 2 || !strings.Contains(out, "unknown flag: --bogus") {
		t.Errorf("bad flag: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "frobnicate"); code != 2 || !strings.Contains(out, `unknown command "frobnicate"`) {
		t.Errorf("bad command: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "telemetry", "targets", "--config", d.cfg); code != 0 || !strings.Contains(out, "telemetry is not enabled") {
		t.Errorf("telemetry targets: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "telemetry", "query", "--config", d.cfg, "--since", "1h"); code != 1 || !strings.Contains(out, "telemetry is not enabled") || !strings.Contains(out, "HTTP 503") {
		t.Errorf("telemetry query while disabled: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "telemetry", "query", "--config", d.cfg, "--since", "soon"); code != 1 || !strings.Contains(out, "since: want a duration") {
		t.Errorf("telemetry query with a bad flag value: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "version"); code != 0 || !strings.HasPrefix(out, "outpost ") {
		t.Errorf("version: exit %d: %q", code, out)
	}
}

func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(binPath, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}
