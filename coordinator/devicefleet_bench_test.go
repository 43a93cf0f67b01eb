package coordinator

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqttload"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// deviceLoadEnv, when set (a broker's host:port), makes this test binary
// the load generator of BenchmarkDeviceFleet (serveDeviceLoad).
const deviceLoadEnv = "OUTPOST_BENCH_DEVICES"

// fleetSize is how many devices BenchmarkDeviceFleet connects:
// $OUTPOST_BENCH_FLEET, or 5,000.
func fleetSize(tb testing.TB) int {
	if v := os.Getenv("OUTPOST_BENCH_FLEET"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			tb.Fatalf("OUTPOST_BENCH_FLEET=%q: a number of devices", v)
		}
		return n
	}
	return 5000
}

// BenchmarkDeviceFleet connects 5,000 devices at once (raw MQTT 3.1.1
// connections from a load generator in a process of its own,
// mqttload.DeviceFleet), each subscribed to its reply and shadow topics
// and holding a shadow, to
//
//   - outpost: `outpost run` in a process of its own with its shadow
//     service and the echo task routed from devices/+/in to
//     devices/{1}/out (QoS 0); the devices are anonymous loopback clients
//     bound to their own devices/{id}/# and $aws/things/{id}/shadow/# by
//     mqtt.broker.anonymous (registered devices would cost a bcrypt each
//     to create and to log in first: minutes for 5,000);
//   - mosquitto: a bare Mosquitto with mqttload.DeviceEcho doing the same
//     publish and subscribe round trips (an update echoed on
//     .../update/accepted, a message on devices/{id}/out).
//
// It reports the broker process's RSS per idle connected device
// (KB/device), its RSS after every device disconnected and connected
// again, twice, against the first connect, shadow updates accepted per
// second (every device 4 in flight, 10 each), and the round trip of the
// route with every device publishing once a second for 5 s (p50, p99, and
// answers missing). Run it alone:
//
//	go test -run XXX -bench DeviceFleet -benchtime 1x ./coordinator/
//
// The generator and the brokers hold a file per device: scripts/bench.sh
// raises the open files limit (ulimit -n) first.
func BenchmarkDeviceFleet(b *testing.B) {
	n := fleetSize(b)
	b.Run("mosquitto", func(b *testing.B) {
		m := mqtttest.NewMosquitto(b, mqtttest.WithConfig("max_connections -1"))
		m.Start()
		stop, err := mqttload.DeviceEcho(m.URL())
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
		for b.Loop() {
			measureFleet(b, m.Addr(), m.PID(), n)
		}
	})
	b.Run("outpost", func(b *testing.B) {
		// The daemon's own soft memory limit, which follows the live heap
		// (docs/operations.md); a fixed 64 MiB made the collector run
		// without pause once they were connected (measured: 722 shadow
		// updates/s, route p50 4.7 s).
		own := `["devices/{id}/#", "$aws/things/{id}/shadow/#"]`
		d := startDaemon(b, fmt.Sprintf(", anonymous: [{publish: %s, subscribe: %s}]", own, own),
			"tasks: [{name: echo, module: builtin:echo}]\nroutes: [{topic: \"devices/+/in\", task: echo, reply: \"devices/{1}/out\"}]\n")
		for b.Loop() {
			measureFleet(b, d.addr, d.pid, n)
		}
	})
}

// measureFleet runs the fleet against the broker at addr, process pid.
func measureFleet(b *testing.B, addr string, pid, n int) {
	rss := func() int64 { return mqtttest.RSS(b, strconv.Itoa(pid)) }
	files := mqtttest.OpenFiles(b, pid) + 16
	gone := func() bool { return mqtttest.OpenFiles(b, pid) <= files }
	anon := func() int64 { return mqtttest.RSSAnon(b, strconv.Itoa(pid)) }
	load := startDeviceLoad(b, addr, n)
	base, baseAnon := rss(), anon()
	load.do(b, "connect")
	first, firstAnon := rss(), anon()
	b.ReportMetric(float64(first-base)/float64(n)/1024, "KB/device")
	for cycle := 1; cycle <= 2; cycle++ {
		load.do(b, "close")
		for deadline := time.Now().Add(60 * time.Second); !gone(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("devices still connected 60s after closing")
			}
		}
		load.do(b, "connect")
		b.ReportMetric(float64(rss()-base)/float64(first-base), "rss-reconnect"+strconv.Itoa(cycle)+"/first")
		// The same without the pages of mapped files (the store's logs, to
		// which every connect writes a shadow update per device).
		b.ReportMetric(float64(anon()-baseAnon)/float64(firstAnon-baseAnon), "anon-reconnect"+strconv.Itoa(cycle)+"/first")
	}
	ups := load.do(b, fmt.Sprintf("shadows %d 4", 10*n))
	b.ReportMetric(ups[0], "updates/s")
	lat := load.do(b, "route 5")
	b.ReportMetric(lat[0], "p50-µs")
	b.ReportMetric(lat[1], "p99-µs")
	b.ReportMetric(lat[2], "unanswered")
	b.ReportMetric(float64(base)/(1<<20), "MB-baseline")
	load.do(b, "close")
}

// deviceLoad is a running load generator: this test binary run again with
// deviceLoadEnv (serveDeviceLoad).
type deviceLoad struct{ *mqtttest.Generator }

func startDeviceLoad(b *testing.B, addr string, n int) *deviceLoad {
	return &deviceLoad{mqtttest.StartGenerator(b, []string{"-test.run=^$"}, deviceLoadEnv+"="+addr, "OUTPOST_BENCH_FLEET="+strconv.Itoa(n))}
}

// do sends the generator one command, waits for it to be done and returns
// the figures it answered; it then lets the broker settle a second.
func (l *deviceLoad) do(b *testing.B, command string) []float64 {
	if _, err := io.WriteString(l.In, command+"\n"); err != nil {
		b.Fatal(err)
	}
	if !l.Out.Scan() {
		b.Fatalf("load generator, %s: %v", command, l.Out.Err())
	}
	f := strings.Fields(l.Out.Text())
	if len(f) == 0 || f[0] != "ok" {
		b.Fatalf("load generator, %s: %s", command, l.Out.Text())
	}
	var figures []float64
	for _, s := range f[1:] {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			b.Fatalf("load generator, %s: %s", command, l.Out.Text())
		}
		figures = append(figures, v)
	}
	time.Sleep(time.Second) // settle
	return figures
}

// serveDeviceLoad is the load generator's process: each line of in is a
// command, answered on out by "ok" and its figures, or by an error:
//
//	connect               connect the fleet ($OUTPOST_BENCH_FLEET devices) to addr
//	close                 disconnect it
//	shadows TOTAL WINDOW  shadow updates: "ok UPDATES/S"
//	route SECONDS         route round trips: "ok P50-µs P99-µs UNANSWERED"
func serveDeviceLoad(addr string, in io.Reader, out io.Writer) int {
	n, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_FLEET"))
	if err != nil {
		fmt.Fprintln(out, err)
		return 2
	}
	ctx := context.Background()
	var fleet *mqttload.DeviceFleet
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) int {
			v := 0
			if i < len(f) {
				v, _ = strconv.Atoi(f[i])
			}
			return v
		}
		switch {
		case f[0] == "connect":
			if fleet, err = mqttload.ConnectDevices(ctx, addr, n); err != nil {
				fmt.Fprintln(out, err)
				return 1
			}
			fmt.Fprintln(out, "ok")
		case f[0] == "close" && fleet != nil:
			fleet.Close()
			fleet = nil
			fmt.Fprintln(out, "ok")
		case f[0] == "shadows" && fleet != nil:
			ups, err := fleet.ShadowUpdates(ctx, arg(1), arg(2))
			if err != nil {
				fmt.Fprintln(out, err)
				return 1
			}
			fmt.Fprintln(out, "ok", ups)
		case f[0] == "route" && fleet != nil:
			r, lost, err := fleet.Route(ctx, time.Duration(arg(1))*time.Second)
			if err != nil {
				fmt.Fprintln(out, err)
				return 1
			}
			fmt.Fprintln(out, "ok", r.P50.Microseconds(), r.P99.Microseconds(), lost)
		default:
			fmt.Fprintln(out, "unknown command or no fleet:", sc.Text())
			return 2
		}
	}
	return 0
}
