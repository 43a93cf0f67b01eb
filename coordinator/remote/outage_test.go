package remote_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/coordinator/remote"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
)

// What a tcpFront does with a new connection.
const (
	frontForward   int32 = iota // pipe it to the target
	frontBlackhole              // accept it and never read or write
	frontReset                  // close it at once with a reset (a server that is down)
)

// tcpFront is a TCP listener on a loopback port standing for the control
// plane's address: it forwards to the test cloud, blackholes or resets
// connections, as its mode says when a connection arrives.
type tcpFront struct {
	ln         net.Listener
	target     string
	mode       atomic.Int32
	blackholed atomic.Int32 // connections taken and never answered
	mu         sync.Mutex
	conns      map[net.Conn]struct{}
	wg         sync.WaitGroup
}

func startTCPFront(t testing.TB, target string, mode int32) *tcpFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &tcpFront{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.mode.Store(mode)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *tcpFront) url() string { return "http://" + f.ln.Addr().String() }

func (f *tcpFront) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *tcpFront) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		switch f.mode.Load() {
		case frontReset:
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		case frontBlackhole:
			if f.track(c) {
				f.blackholed.Add(1)
			}
		default:
			if !f.track(c) {
				continue
			}
			d, err := net.Dial("tcp", f.target)
			if err != nil || !f.track(d) {
				_ = c.Close()
				continue
			}
			f.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer f.wg.Done()
				_, _ = io.Copy(dst, src)
				_ = dst.Close()
				_ = src.Close()
			}
			go pipe(d, c)
			go pipe(c, d)
		}
	}
}

func (f *tcpFront) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}

// histogram reads the sample count, sum and the cumulative count at or
// under le of a histogram without labels.
func histogram(t *testing.T, reg *prometheus.Registry, name string, le float64) (count uint64, sum float64, under uint64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == le {
				under = b.GetCumulativeCount()
			}
		}
		return h.GetSampleCount(), h.GetSampleSum(), under
	}
	return 0, 0, 0
}

// retryDraws returns the retry_in of each log line containing msg, in order.
func retryDraws(t *testing.T, logs, msg string) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		_, v, ok := strings.Cut(line, "retry_in=")
		if !ok {
			t.Fatalf("no retry_in in %q", line)
		}
		v, _, _ = strings.Cut(v, " ")
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("retry_in in %q: %v", line, err)
		}
		out = append(out, d)
	}
	return out
}

// checkFullJitter checks backoff draws in order from the first failure:
// the n-th lies in [0, min(max, base·2^n)], and they grow past the first
// ceiling (with six or more draws, all under base has odds under 1/30000).
func checkFullJitter(t *testing.T, draws []time.Duration, base, ceil time.Duration) {
	t.Helper()
	grew := false
	for i, d := range draws {
		lim := ceil
		if i < 30 {
			lim = min(ceil, base<<i)
		}
		if d < 0 || d > lim {
			t.Errorf("backoff draw %d is %v, outside [0, %v]", i, d, lim)
		}
		grew = grew || d > base
	}
	if !grew {
		t.Errorf("backoff draws %v never passed the base %v: not growing", draws, base)
	}
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// The control plane's address accepts TCP connections and never answers:
// each poll ends at the read timeout, the link backs off with full jitter
// and growing ceilings and shows backoff; when the real server answers
// again the queued calls run once.
func TestLinkBlackhole(t *testing.T) {
	const (
		base    = 25 * time.Millisecond
		ceil    = time.Second
		timeout = 250 * time.Millisecond
		fails   = 6
	)
	cl := startCloud(t, server.Options{})
	front := startTCPFront(t, cl.proxy.Listener.Addr().String(), frontBlackhole)
	list := ids("hole", 3)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	var logs logBuf
	e := startEdgeLog(t, cl, t.TempDir(), func(c *remote.Config) {
		c.URL = front.url()
		c.PollWait = 100 * time.Millisecond
		c.ReadTimeout = timeout
		c.BackoffBase, c.BackoffMax = base, ceil
	}, logs.logger())
	if !waitFor(8*time.Second, func() bool { return sample(t, e.reg, "outpost_cloud_polls_total", "result", "error") >= fails }) {
		t.Fatalf("%v failed polls into the blackhole", sample(t, e.reg, "outpost_cloud_polls_total", "result", "error"))
	}
	if s := e.c.State(); s != remote.StateBackoff {
		t.Errorf("state %q in the blackhole, want %q", s, remote.StateBackoff)
	}
	if v := sample(t, e.reg, "outpost_cloud_link_state", "state", remote.StateBackoff); v != 1 {
		t.Errorf("outpost_cloud_link_state{state=backoff} = %v", v)
	}
	// Every poll so far ended at the read timeout, none before.
	n, sum, fast := histogram(t, e.reg, "outpost_cloud_poll_seconds", 0.1)
	if n < fails || fast != 0 || sum/float64(n) < timeout.Seconds()*0.9 || sum/float64(n) > 4*timeout.Seconds() {
		t.Errorf("%d polls, %d under 100ms, mean %.3fs: want each to end at the %v read timeout", n, fast, sum/float64(n), timeout)
	}
	if h := front.blackholed.Load(); h < fails {
		t.Errorf("%d blackholed connections for %d polls: a timed-out connection was reused", h, fails)
	}
	if got := cl.count("poll"); got != 0 {
		t.Errorf("%d polls reached the server through the blackhole", got)
	}
	out := logs.String()
	draws := retryDraws(t, out, "cloud poll failed")
	if len(draws) < fails {
		t.Fatalf("%d poll failures logged, want %d:\n%s", len(draws), fails, out)
	}
	checkFullJitter(t, draws, base, ceil)
	if !strings.Contains(strings.ToLower(out), "timeout") {
		t.Errorf("the failures do not say they timed out:\n%s", out)
	}

	// The real server takes the address over.
	front.mode.Store(frontForward)
	cl.waitFinal(list, 5*time.Second)
	if !waitFor(2*time.Second, func() bool { return e.c.State() == remote.StateUp }) {
		t.Errorf("state %q after the server came back", e.c.State())
	}
	e.checkOnce(cl, list)
	for _, id := range list {
		if c, _ := cl.srv.Get(id); c.Deliveries != 1 {
			t.Errorf("%s delivered %d times, want 1", id, c.Deliveries)
		}
	}
}

// The control plane's host name does not resolve (a *net.DNSError from the
// Config.DialContext seam; no real DNS query is made): the link logs that
// it cannot resolve the host, by name, shows backoff and backs off with
// full jitter; once the name resolves the link comes up and calls run once.
func TestLinkDNSFailure(t *testing.T) {
	const (
		host = "cloud.outpost.test" // reserved (RFC 6761); never sent to a resolver
		base = 20 * time.Millisecond
		ceil = 400 * time.Millisecond
	)
	cl := startCloud(t, server.Options{})
	target := cl.proxy.Listener.Addr().String()
	var resolves atomic.Bool
	var lookups atomic.Int32
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		h, _, err := net.SplitHostPort(addr)
		if err != nil || h != host {
			return nil, fmt.Errorf("test dialer: unexpected address %q", addr)
		}
		lookups.Add(1)
		if !resolves.Load() {
			// What net.Dialer returns for a name with no record.
			return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}
	var logs logBuf
	e := startEdgeLog(t, cl, t.TempDir(), func(c *remote.Config) {
		_, port, _ := net.SplitHostPort(target)
		c.URL = "http://" + net.JoinHostPort(host, port)
		c.DialContext = dial
		c.BackoffBase, c.BackoffMax = base, ceil
	}, logs.logger())
	const fails = 6
	if !waitFor(5*time.Second, func() bool { return sample(t, e.reg, "outpost_cloud_polls_total", "result", "dns_error") >= fails }) {
		t.Fatalf("%v dns_error polls", sample(t, e.reg, "outpost_cloud_polls_total", "result", "dns_error"))
	}
	if s := e.c.State(); s != remote.StateBackoff {
		t.Errorf("state %q while the name does not resolve, want %q", s, remote.StateBackoff)
	}
	if v := sample(t, e.reg, "outpost_cloud_polls_total", "result", "error"); v != 0 {
		t.Errorf("%v resolution failures counted as plain errors", v)
	}
	out := logs.String()
	msg := "cannot resolve the control plane's host name " + host
	draws := retryDraws(t, out, msg)
	if len(draws) < fails {
		t.Fatalf("%d %q lines, want one per failed poll:\n%s", len(draws), msg, out)
	}
	if !strings.Contains(out, "host="+host) {
		t.Errorf("the log does not carry the host as a field:\n%s", out)
	}
	checkFullJitter(t, draws, base, ceil)
	if got := cl.count("poll"); got != 0 {
		t.Errorf("%d polls reached the server without a resolved name", got)
	}

	// Resolution works again.
	resolves.Store(true)
	list := ids("dns", 3)
	cl.enqueue(echoCalls("edge-1", list, "at_most_once")...)
	cl.waitFinal(list, 5*time.Second)
	if !waitFor(2*time.Second, func() bool { return e.c.State() == remote.StateUp }) {
		t.Errorf("state %q after the name resolved", e.c.State())
	}
	e.checkOnce(cl, list)
	if n := lookups.Load(); n < fails+1 {
		t.Errorf("%d dials, want the failed ones and one that worked", n)
	}
}
