package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices/mqttload"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// BenchmarkMQTTFleet is the comparison a user would make: 50 devices on one
// load generator (devices/mqttload), each with 4 messages in flight,
// publishing and waiting for the echo, against
//
//   - outpost: `outpost run` in a process of its own (as a user runs it;
//     $OUTPOST_BIN or built from ./cmd/outpost) with its embedded broker
//     and an echo route (load/+/in to the echo task, replies on
//     load/{1}/out), its defaults otherwise. At QoS 1 the route has qos 1: every message is journaled
//     (group commit, synced) before the broker acknowledges it, and its
//     reply is published from the journal.
//   - mosquitto: a bare Mosquitto with a plain paho echo client doing the
//     same work (mqttload.Echo, in a process of its own: this test binary
//     run again), and at QoS 1 mosquitto-persistent: the same
//     with `persistence true` and persistent sessions.
//
// Each reports messages per second and the round-trip p50 and p99; the
// journaled side also the mean writers per journal group commit (a commit
// that holds writes of several devices is above 1).
func BenchmarkMQTTFleet(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, url string, qos byte, persistent bool) {
		f, err := mqttload.Connect(mqttload.Options{URL: url, QoS: qos, Persistent: persistent})
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Run(ctx, 500); err != nil { // warm up
			b.Fatal(err)
		}
		b.ResetTimer()
		r, err := f.Run(ctx, b.N)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.PerSecond(), "msgs/s")
		b.ReportMetric(float64(r.P50.Microseconds()), "p50-µs")
		b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
	}
	mosquitto := func(qos byte, persistent bool) func(b *testing.B) {
		return func(b *testing.B) {
			var opts []mqtttest.Option
			if persistent {
				opts = append(opts, mqtttest.WithConfig("persistence true", "persistence_location "+b.TempDir()+"/"))
			}
			url := mqtttest.StartMosquitto(b, opts...)
			startEcho(b, url, qos, persistent)
			run(b, url, qos, persistent)
		}
	}
	outpost := func(qos byte) func(b *testing.B) {
		return func(b *testing.B) {
			d := startOutpost(b, qos)
			s0, c0 := d.commits(b)
			run(b, d.url, qos, qos == 1)
			if s1, c1 := d.commits(b); qos == 1 && c1 > c0 {
				b.ReportMetric((s1-s0)/(c1-c0), "writes/commit")
			}
		}
	}
	b.Run("qos0/mosquitto", mosquitto(0, false))
	b.Run("qos0/outpost", outpost(0))
	b.Run("qos1/mosquitto", mosquitto(1, false))
	b.Run("qos1/mosquitto-persistent", mosquitto(1, true))
	b.Run("qos1/outpost", outpost(1))
}

// echoEnv, when set ("URL QOS PERSISTENT"), makes this test binary the
// plain echo service of BenchmarkMQTTFleet instead of running tests.
const echoEnv = "OUTPOST_BENCH_ECHO"

func TestMain(m *testing.M) {
	if spec := os.Getenv(echoEnv); spec != "" {
		os.Exit(serveEcho(spec))
	}
	if addr := os.Getenv(deviceLoadEnv); addr != "" {
		os.Exit(serveDeviceLoad(addr, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// serveEcho runs mqttload.Echo until stdin is closed.
func serveEcho(spec string) int {
	var url string
	var qos byte
	var persistent bool
	if _, err := fmt.Sscan(spec, &url, &qos, &persistent); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", echoEnv, spec, err)
		return 2
	}
	stop, err := mqttload.Echo(url, "load", qos, persistent)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	stop()
	return 0
}

// startEcho runs the plain echo service in a process of its own until the
// benchmark ends.
func startEcho(tb testing.TB, url string, qos byte, persistent bool) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %t", echoEnv, url, qos, persistent))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		tb.Fatalf("echo service: %q %v: %s", line, err, stderr.String())
	}
}

var outpostBin = struct {
	once sync.Once
	path string
	err  error
}{}

// outpostBinary is $OUTPOST_BIN, or ./cmd/outpost built once per process.
func outpostBinary(tb testing.TB) string {
	outpostBin.once.Do(func() {
		if p := os.Getenv("OUTPOST_BIN"); p != "" {
			outpostBin.path = p
			return
		}
		dir, err := os.MkdirTemp("", "outpost-bench-")
		if err != nil {
			outpostBin.err = err
			return
		}
		outpostBin.path = filepath.Join(dir, "outpost")
		if out, err := exec.Command("go", "build", "-o", outpostBin.path, "../cmd/outpost").CombinedOutput(); err != nil {
			outpostBin.err = fmt.Errorf("build outpost: %w: %s", err, out)
		}
	})
	if outpostBin.err != nil {
		tb.Fatal(outpostBin.err)
	}
	return outpostBin.path
}

// daemonProcess is `outpost run` in a process of its own, as a user runs it.
type daemonProcess struct {
	url, addr, metrics string
	pid                int
}

// startOutpost runs the daemon with its defaults, the embedded broker and
// the echo task routed from load/+/in to load/{1}/out at qos, until the
// benchmark ends.
func startOutpost(tb testing.TB, qos byte) daemonProcess {
	return startDaemon(tb, "", fmt.Sprintf(`tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "load/+/in", task: echo, reply: "load/{1}/out", qos: %d}]
`, qos))
}

// startDaemon runs the daemon with broker (more keys of mqtt.broker, in
// flow style: ", key: value") and rest (more top-level keys) until the
// benchmark ends.
func startDaemon(tb testing.TB, broker, rest string) daemonProcess {
	dir := tb.TempDir()
	adminAddr, brokerAddr := mqtttest.FreeAddr(tb), mqtttest.FreeAddr(tb)
	yaml := fmt.Sprintf(`data_dir: %s
admin: {listen: "%s"}
mqtt: {broker: {listen: "%s"%s}}
`, filepath.Join(dir, "data"), adminAddr, brokerAddr, broker) + rest
	cfg := filepath.Join(dir, "outpost.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		tb.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(outpostBinary(tb), "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	cl := admin.NewClient(adminAddr)
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		h, err := cl.Health(ctx)
		cancel()
		if err == nil && h.Status == "ok" {
			break
		}
		select {
		case <-exited:
			tb.Fatalf("outpost exited at start:\n%s", logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("outpost not healthy after 30s (%v):\n%s", err, logs.String())
		}
	}
	return daemonProcess{url: "tcp://" + brokerAddr, addr: brokerAddr, metrics: "http://" + adminAddr + "/metrics", pid: cmd.Process.Pid}
}

// commits reads the sum and count of the journal's group commit sizes
// (outpost_journal_commit_batch_size) from the daemon's /metrics.
func (d daemonProcess) commits(tb testing.TB) (sum, count float64) {
	resp, err := http.Get(d.metrics)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "outpost_journal_commit_batch_size_sum":
			sum = v
		case "outpost_journal_commit_batch_size_count":
			count = v
		}
	}
	return sum, count
}
