package devices

import (
	"context"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkIdleClientMemory connects 2,000 raw MQTT 3.1.1 clients (no
// goroutine of their own on the client side) to the embedded broker with
// the default limits, and reports the process's RSS per idle connected
// client, and the RSS after every client disconnected and connected again
// twice (reconnect1, reconnect2) against the first connect. Run it alone:
//
//	go test -run XXX -bench IdleClientMemory -benchtime 1x ./devices/
//
// OUTPOST_BENCH_WRITES_PENDING=N sets max_client_writes_pending instead of
// the default, to compare.
func BenchmarkIdleClientMemory(b *testing.B) {
	const clients = 2000
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
		base := rssBytes(b)
		conns := connectRaw(b, br.Addr(), clients)
		first := rssBytes(b)
		b.ReportMetric(float64(first-base)/clients/1024, "KB/client")
		for cycle := 1; cycle <= 2; cycle++ {
			closeAll(conns)
			waitFor0(b, br)
			conns = connectRaw(b, br.Addr(), clients)
			b.ReportMetric(float64(rssBytes(b)-base)/float64(first-base), "rss-reconnect"+strconv.Itoa(cycle)+"/first")
		}
		closeAll(conns)
		waitFor0(b, br)
		b.ReportMetric(float64(base)/(1<<20), "MB-baseline")
		b.ReportMetric(float64(first)/(1<<20), "MB-connected")
	}
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

// waitFor0 waits until the broker has no client connected.
func waitFor0(b *testing.B, br *Broker) {
	deadline := time.Now().Add(60 * time.Second)
	for br.server().Info.ClientsConnected > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d clients still connected", br.server().Info.ClientsConnected)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rssBytes is the process's resident set size.
func rssBytes(b *testing.B) int64 {
	st, err := os.ReadFile("/proc/self/status")
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
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
