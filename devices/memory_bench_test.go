package devices

import (
	"context"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// idleClients is how many clients BenchmarkIdleClientMemory connects.
const idleClients = 2000

// BenchmarkIdleClientMemory connects 2,000 raw MQTT 3.1.1 clients (no
// goroutine of their own on the client side) to a bare Mosquitto, then to
// the embedded broker with the default settings, and reports the broker's
// RSS per idle connected client (KB/client), and its RSS after every
// client disconnected and connected again twice (reconnect1, reconnect2)
// against the first connect. Mosquitto is a process of its own; the
// embedded broker runs in the benchmark's process, whose figures also hold
// the client side of the connections (a net.Conn each). Run it alone:
//
//	go test -run XXX -bench IdleClientMemory -benchtime 1x ./devices/
//
// scripts/bench.sh runs it with GODEBUG=adaptivestackstart=0, as the
// systemd unit runs the daemon (docs/devices.md).
// OUTPOST_BENCH_WRITES_PENDING=N sets max_client_writes_pending instead of
// the default, to compare.
func BenchmarkIdleClientMemory(b *testing.B) {
	b.Run("mosquitto", func(b *testing.B) {
		m := mqtttest.NewMosquitto(b)
		m.Start()
		pid := m.PID()
		fds := fdCount(b, pid)
		for b.Loop() {
			measureIdle(b, m.Addr(), func() int64 { return rssOf(b, strconv.Itoa(pid)) }, func() bool { return fdCount(b, pid) <= fds }, nil)
		}
	})
	b.Run("outpost", func(b *testing.B) {
		cfg := brokerConfig()
		if v := os.Getenv("OUTPOST_BENCH_WRITES_PENDING"); v != "" {
			cfg.MaxClientWritesPending, _ = strconv.Atoi(v) // to compare sizes
		}
		br := NewBroker(cfg, nil, nil)
		if err := br.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer br.Stop(context.Background())
		for b.Loop() {
			runtime.GC()
			var m0 runtime.MemStats
			runtime.ReadMemStats(&m0)
			measureIdle(b, br.Addr(), func() int64 { return rssOf(b, "self") }, func() bool { return atomic.LoadInt64(&br.server().Info.ClientsConnected) == 0 }, func() {
				var m1 runtime.MemStats // where the memory of the first connect goes
				runtime.ReadMemStats(&m1)
				b.ReportMetric(float64(m1.StackInuse-m0.StackInuse)/idleClients/1024, "stack-KB/client")
				b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/idleClients/1024, "heap-KB/client")
			})
		}
	})
}

// measureIdle connects idleClients raw clients to addr and reports the RSS
// (rss) per client, then disconnects and connects them again twice and
// reports the RSS against the first connect; gone reports when the broker
// has let every client go; connected (if not nil) runs after the first
// connect.
func measureIdle(b *testing.B, addr string, rss func() int64, gone func() bool, connected func()) {
	base := rss()
	conns := connectRaw(b, addr, idleClients)
	first := rss()
	if connected != nil {
		connected()
	}
	b.ReportMetric(float64(first-base)/idleClients/1024, "KB/client")
	for cycle := 1; cycle <= 2; cycle++ {
		closeAll(conns)
		waitGone(b, gone)
		conns = connectRaw(b, addr, idleClients)
		b.ReportMetric(float64(rss()-base)/float64(first-base), "rss-reconnect"+strconv.Itoa(cycle)+"/first")
	}
	closeAll(conns)
	waitGone(b, gone)
	b.ReportMetric(float64(base)/(1<<20), "MB-baseline")
	b.ReportMetric(float64(first)/(1<<20), "MB-connected")
}

func connectRaw(b *testing.B, addr string, n int) []net.Conn {
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		id := "idle-" + strconv.Itoa(i)
		connect := []byte{0x10, byte(10 + 2 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 120, 0, byte(len(id))}
		if _, err := c.Write(append(connect, id...)); err != nil {
			b.Fatal(err)
		}
		ack := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := readFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			b.Fatalf("connack %x: %v", ack, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second) // settle
	return conns
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// waitGone waits until gone reports that the broker let every client go.
func waitGone(b *testing.B, gone func() bool) {
	deadline := time.Now().Add(60 * time.Second)
	for !gone() {
		if time.Now().After(deadline) {
			b.Fatal("clients still connected after 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fdCount is the number of open files of process pid.
func fdCount(b *testing.B, pid int) int {
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		b.Fatal(err)
	}
	return len(fds)
}

// rssOf is the resident set size of process pid ("self": this one).
func rssOf(b *testing.B, pid string) int64 {
	st, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/" + pid + "/status")
	return 0
}
