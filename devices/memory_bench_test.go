package devices

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// idleClients is how many clients BenchmarkIdleClientMemory connects.
const idleClients = 2000

// BenchmarkIdleClientMemory connects 2,000 raw MQTT 3.1.1 clients (no
// goroutine of their own on the client side, from a process of their own)
// to a bare Mosquitto, then to the embedded broker with the default
// settings, first over plain TCP, then over TLS (-tls), and reports the
// broker's RSS per idle connected client (KB/client), and its RSS after
// every client disconnected and connected again twice (reconnect1,
// reconnect2) against the first connect. Mosquitto is a process of its
// own; the embedded broker runs in the benchmark's process. Run it alone:
//
//	go test -run XXX -bench IdleClientMemory -benchtime 1x ./devices/
//
// scripts/bench.sh runs it with GODEBUG=adaptivestackstart=0, as the
// systemd unit runs the daemon (docs/devices.md).
// OUTPOST_BENCH_WRITES_PENDING=N sets max_client_writes_pending instead of
// the default, to compare.
func BenchmarkIdleClientMemory(b *testing.B) {
	pki := testpki.New(b, b.TempDir(), "bench")
	cert, key := pki.Server(b, "server", net.ParseIP("127.0.0.1"))
	for _, tc := range []struct {
		name   string
		caFile string // TLS clients trusting it; "": plain TCP
	}{{"", ""}, {"-tls", pki.CAFile}} {
		var mosqOpts []mqtttest.Option
		cfg := brokerConfig()
		if tc.caFile != "" {
			mosqOpts = append(mosqOpts, mqtttest.WithConfig("certfile "+cert, "keyfile "+key))
			cfg.TLS = BrokerTLS{Listen: "127.0.0.1:0", CertFile: cert, KeyFile: key, Identity: IdentityCN}
		}
		b.Run("mosquitto"+tc.name, func(b *testing.B) {
			m := mqtttest.NewMosquitto(b, mosqOpts...)
			m.Start()
			pid := m.PID()
			// Every client gone: Mosquitto's open files back near what they
			// were (with TLS it opens a few files of its own once).
			fds := mqtttest.OpenFiles(b, pid) + 16
			for b.Loop() {
				measureIdle(b, m.Addr(), tc.caFile, func() int64 { return mqtttest.RSS(b, strconv.Itoa(pid)) }, func() bool { return mqtttest.OpenFiles(b, pid) <= fds }, nil)
			}
		})
		b.Run("outpost"+tc.name, func(b *testing.B) {
			benchOutpost(b, cfg, tc.caFile)
		})
	}
}

// benchOutpost measures the embedded broker with cfg, on its TLS listener
// with clients trusting caFile when set.
func benchOutpost(b *testing.B, cfg BrokerConfig, caFile string) {
	if v := os.Getenv("OUTPOST_BENCH_WRITES_PENDING"); v != "" {
		cfg.MaxClientWritesPending, _ = strconv.Atoi(v) // to compare sizes
	}
	br := NewBroker(cfg, nil, nil)
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer br.Stop(context.Background())
	addr := br.Addr()
	if caFile != "" {
		addr = br.TLSAddr()
	}
	for b.Loop() {
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		measureIdle(b, addr, caFile, func() int64 { return mqtttest.RSS(b, "self") }, func() bool { return br.server().Info.ClientsConnected.Load() == 0 }, func() {
			var m1 runtime.MemStats // where the memory of the first connect goes
			runtime.ReadMemStats(&m1)
			b.ReportMetric(float64(m1.StackInuse-m0.StackInuse)/idleClients/1024, "stack-KB/client")
			b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/idleClients/1024, "heap-KB/client")
		})
	}
}

// measureIdle has the load generator (a process of its own, so that the
// clients' memory is not counted with an in-process broker's) connect
// idleClients raw clients to addr, over TLS when caFile is set, and reports
// the broker's RSS (rss) per client; then it disconnects and connects them
// again twice and reports the RSS against the first connect. gone reports
// when the broker has let every client go; connected (if not nil) runs
// after the first connect.
func measureIdle(b *testing.B, addr, caFile string, rss func() int64, gone func() bool, connected func()) {
	load := startIdleLoad(b, addr, caFile)
	base := rss()
	load.do(b, "connect")
	first := rss()
	if connected != nil {
		connected()
	}
	b.ReportMetric(float64(first-base)/idleClients/1024, "KB/client")
	for cycle := 1; cycle <= 2; cycle++ {
		load.do(b, "close")
		waitGone(b, gone)
		load.do(b, "connect")
		b.ReportMetric(float64(rss()-base)/float64(first-base), "rss-reconnect"+strconv.Itoa(cycle)+"/first")
	}
	load.do(b, "close")
	waitGone(b, gone)
	b.ReportMetric(float64(base)/(1<<20), "MB-baseline")
	b.ReportMetric(float64(first)/(1<<20), "MB-connected")
}

// idleLoad is a running load generator: this test binary run again with
// OUTPOST_IDLE_LOAD (see TestMain and runIdleLoad).
type idleLoad struct{ *mqtttest.Generator }

func startIdleLoad(b *testing.B, addr, caFile string) *idleLoad {
	return &idleLoad{mqtttest.StartGenerator(b, nil, "OUTPOST_IDLE_LOAD="+addr, "OUTPOST_IDLE_CA="+caFile)}
}

// do sends the generator one command and waits for it to be done.
func (l *idleLoad) do(b *testing.B, command string) {
	if _, err := io.WriteString(l.In, command+"\n"); err != nil {
		b.Fatal(err)
	}
	if !l.Out.Scan() || l.Out.Text() != "ok" {
		b.Fatalf("load generator, %s: %q %v", command, l.Out.Text(), l.Out.Err())
	}
	time.Sleep(time.Second) // settle
}

// runIdleLoad is the load generator's process: each line of in is a
// command, "connect" (idleClients raw MQTT 3.1.1 clients to addr, over TLS
// trusting caFile when set) or "close" (all of them); it answers "ok" on
// out once done. It returns the process's exit code.
func runIdleLoad(addr, caFile string, in io.Reader, out io.Writer) int {
	dial := func() (net.Conn, error) { return net.Dial("tcp", addr) }
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			fmt.Fprintln(out, err)
			return 1
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
		dial = func() (net.Conn, error) { return tls.Dial("tcp", addr, cfg) }
	}
	var conns []net.Conn
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch sc.Text() {
		case "connect":
			for i := range idleClients {
				c, err := connectIdle(dial, "idle-"+strconv.Itoa(i))
				if err != nil {
					fmt.Fprintln(out, err)
					return 1
				}
				conns = append(conns, c)
			}
		case "close":
			for _, c := range conns {
				_ = c.Close()
			}
			conns = nil
		}
		fmt.Fprintln(out, "ok")
	}
	return 0
}

// connectIdle connects one client and waits for its CONNACK.
func connectIdle(dial func() (net.Conn, error), id string) (net.Conn, error) {
	c, err := dial()
	if err != nil {
		return nil, err
	}
	connect := []byte{0x10, byte(10 + 2 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 120, 0, byte(len(id))}
	if _, err := c.Write(append(connect, id...)); err != nil {
		return nil, err
	}
	ack := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := readFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		return nil, fmt.Errorf("connack %x: %v", ack, err)
	}
	return c, nil
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
