package devices

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/testpki"
)

// TestIdleClientStacks holds an idle client of the embedded broker to what
// the server's design costs (docs/devices.md, "Limits per client, and
// memory"): one goroutine, parked on a one-byte read on a stack of its own
// that never grew (2 KiB; over TLS the record layer's frames take it to 4
// KiB), after a connect that ran the access hook and, on the TLS listener,
// the handshake; and a heap bounded per client. A goroutine more per
// client, a reader parked deeper or a per-client buffer fails it. It runs
// in this test binary started again with GODEBUG=adaptivestackstart=0, as
// the daemon runs: new goroutines start with 2 KiB of stack, not the
// average of the last collection.
func TestIdleClientStacks(t *testing.T) {
	const setting = "adaptivestackstart=0"
	if godebug := os.Getenv("GODEBUG"); !strings.Contains(godebug, setting) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientStacks$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "GODEBUG="+strings.TrimPrefix(godebug+","+setting, ","))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("TestIdleClientStacks with GODEBUG=%s: %v\n%s", setting, err, out)
		}
		for line := range strings.Lines(string(out)) {
			if strings.Contains(line, "per idle client") {
				t.Log(strings.TrimSpace(line))
			}
		}
		return
	}
	const n = 100
	slack := 1.0
	if raceEnabled {
		slack = 2 // the race detector's larger stack guard and its shadow of the heap
	}
	pki := testpki.New(t, t.TempDir(), "stacks")
	cert, key := pki.Server(t, "server", net.ParseIP("127.0.0.1"))
	cfg := brokerConfig()
	cfg.TLS = BrokerTLS{Listen: "127.0.0.1:0", CertFile: cert, KeyFile: key, Identity: IdentityCN}
	b := NewBroker(cfg, nil, nil) // no log: a line for every client
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop(context.Background()) })
	pem, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	tcfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	for _, tc := range []struct {
		name     string
		dial     func() (net.Conn, error)
		maxStack float64 // KiB per client
		maxHeap  float64 // KiB per client, the clients' side (in this process) included
	}{
		{"tcp", func() (net.Conn, error) { return net.Dial("tcp", b.Addr()) }, 2.5, 3},
		{"tls", func() (net.Conn, error) { return tls.Dial("tcp", b.TLSAddr(), tcfg) }, 4.5, 24},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					_ = c.Close()
				}
			}()
			connect := func(id string) {
				c, err := connectIdle(tc.dial, id)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			connect("warm-" + tc.name) // the listener's and the server's first allocations
			before := settledMemStats()
			g0 := runtime.NumGoroutine()
			for i := range n {
				connect(tc.name + "-" + strconv.Itoa(i))
			}
			after := settledMemStats()
			goroutines := float64(runtime.NumGoroutine()-g0) / n
			stack := float64(after.StackInuse-before.StackInuse) / n / 1024
			heap := (float64(after.HeapInuse) - float64(before.HeapInuse)) / n / 1024
			t.Logf("%s, per idle client: %.2f goroutines, %.2f KiB of stack, %.2f KiB of heap", tc.name, goroutines, stack, heap)
			if goroutines > 1 {
				t.Errorf("%.2f goroutines per idle client, want 1 (parked on its read; no writer while nothing is written)", goroutines)
			}
			if stack > tc.maxStack*slack {
				t.Errorf("%.2f KiB of stack per idle client, want at most %g", stack, tc.maxStack*slack)
			}
			if heap > tc.maxHeap*slack {
				t.Errorf("%.2f KiB of heap per idle client, want at most %g", heap, tc.maxHeap*slack)
			}
		})
	}
}

// settledMemStats returns the memory statistics once the clients just
// connected have parked their goroutines and the garbage is collected.
func settledMemStats() runtime.MemStats {
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// A wave of connections and disconnections (sweepAfter of them) is swept
// once it is over: one collection that gives the memory back; fewer are
// not.
func TestBrokerSweepsAfterAWave(t *testing.T) {
	b := startBroker(t, brokerConfig(), nil)
	dial := func() (net.Conn, error) { return net.Dial("tcp", b.Addr()) }
	wave := func(n int) {
		conns := make([]net.Conn, 0, n)
		for i := range n {
			c, err := connectIdle(dial, "w"+strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			_ = c.Close()
		}
		waitFor(t, "every client gone", 30*time.Second, func() bool { return b.server().Info.ClientsConnected.Load() == 0 })
	}
	wave(sweepAfter/2 - 1) // a connection and a disconnection each
	time.Sleep(3 * sweepQuiet)
	if n := b.sweep.runs.Load(); n != 0 {
		t.Fatalf("%d sweeps after %d connections and disconnections, want none", n, sweepAfter-2)
	}
	wave(1)
	waitFor(t, "the sweep", 10*time.Second, func() bool { return b.sweep.runs.Load() == 1 })
	time.Sleep(3 * sweepQuiet)
	if n := b.sweep.runs.Load(); n != 1 {
		t.Fatalf("%d sweeps, want 1", n)
	}
}
