package gnmiserver

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	gpath "github.com/openconfig/gnmi/path"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	tgnmi "github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/model"
)

const (
	pathOctets0 = "/interfaces/interface[name=eth0]/state/counters/in-octets"
	pathOctets1 = "/interfaces/interface[name=eth1]/state/counters/in-octets"
	pathOper    = "/interfaces/interface[name=eth0]/state/oper-status"
	pathHost    = "/system/state/hostname"
)

// feed changes the counters and the oper-status every 50 ms (the hostname
// never changes) until stop is closed.
func feed(s *Server, stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for i := uint64(1); ; i++ {
		oper := "UP"
		if i%2 == 0 {
			oper = "DOWN"
		}
		ts := time.Now().UnixNano()
		s.Update([]model.Update{
			{Target: "sw1", Path: pathOctets0, Time: ts, Value: model.Uint(1000 + i)},
			{Target: "sw1", Path: pathOctets1, Time: ts, Value: model.Uint(2000 + i)},
			{Target: "sw1", Path: pathOper, Time: ts, Value: model.String(oper)},
			{Target: "sw1", Path: pathHost, Time: ts, Value: model.String("sw1")},
		})
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func elems(p string) *gpb.Path {
	pp, err := model.ParsePath(p)
	if err != nil {
		panic(err)
	}
	return pp.ToGNMI()
}

// counter counts the updates one raw stream receives, per path.
type counter struct {
	mu  sync.Mutex
	n   map[string]int
	err error
}

func (c *counter) get(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[p]
}

// stream subscribes with subs (STREAM mode, prefix target sw1) and counts
// what arrives until ctx ends.
func stream(t *testing.T, ctx context.Context, c gpb.GNMIClient, wg *sync.WaitGroup, subs ...*gpb.Subscription) *counter {
	t.Helper()
	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM, Subscription: subs}}})
	if err != nil {
		t.Fatal(err)
	}
	cnt := &counter{n: map[string]int{}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			r, err := st.Recv()
			if err != nil {
				// The window's end: the client's deadline, or the server's
				// copy of it (sent as grpc-timeout) firing a moment earlier.
				end := status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled
				if ctx.Err() == nil && !end {
					cnt.mu.Lock()
					cnt.err = err
					cnt.mu.Unlock()
				}
				return
			}
			n := r.GetUpdate()
			for _, u := range n.GetUpdate() {
				p := "/" + strings.Join(append(gpath.ToStrings(n.GetPrefix(), false), gpath.ToStrings(u.GetPath(), false)...), "/")
				cnt.mu.Lock()
				cnt.n[p]++
				cnt.mu.Unlock()
			}
		}
	}()
	return cnt
}

// keyed turns a canonical path into the form stream() counts under
// (gnmi's path.ToStrings: keys as separate elements).
func keyed(p string) string {
	return "/" + strings.Join(gpath.ToStrings(elems(p), false), "/")
}

// Values change every 50 ms for 5.2 s. SAMPLE at 1 s gets about one update a
// second per path (the initial one, then one per interval), ON_CHANGE gets
// every change, TARGET_DEFINED samples the counters and sends the state on
// change, suppress_redundant keeps an unchanged leaf to its heartbeat. Our
// own gNMI client and gnmi_cli subscribe with SAMPLE at 1 s in the same
// window and see the same rate.
func TestStreamModes(t *testing.T) {
	cli := gnmitest.CLI(t)
	s := start(t, Config{})
	stop := make(chan struct{})
	var feeding sync.WaitGroup
	s.Update([]model.Update{{Target: "sw1", Path: pathHost, Time: time.Now().UnixNano(), Value: model.String("sw1")}})
	feeding.Add(1)
	go feed(s, stop, &feeding)
	time.Sleep(100 * time.Millisecond) // every leaf in the cache

	const window = 5200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	c := dial(t, s.Addr())
	var wg sync.WaitGroup
	counters := &gpb.Subscription{Path: elems("/interfaces/interface[name=*]/state/counters"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(time.Second)}
	sample := stream(t, ctx, c, &wg, counters)
	onChange := stream(t, ctx, c, &wg, &gpb.Subscription{Path: elems("/interfaces"), Mode: gpb.SubscriptionMode_ON_CHANGE})
	targetDef := stream(t, ctx, c, &wg, &gpb.Subscription{Path: elems("/interfaces"), Mode: gpb.SubscriptionMode_TARGET_DEFINED, SampleInterval: uint64(time.Second)})
	suppressHB := stream(t, ctx, c, &wg, &gpb.Subscription{Path: elems("/system"), Mode: gpb.SubscriptionMode_SAMPLE,
		SampleInterval: uint64(time.Second), SuppressRedundant: true, HeartbeatInterval: uint64(2 * time.Second)})
	suppress := stream(t, ctx, c, &wg, &gpb.Subscription{Path: elems("/system"), Mode: gpb.SubscriptionMode_SAMPLE,
		SampleInterval: uint64(time.Second), SuppressRedundant: true})
	plain := stream(t, ctx, c, &wg, &gpb.Subscription{Path: elems("/system"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(time.Second)})

	// Outpost's own gNMI client, prefix without a target (every target).
	own := &counter{n: map[string]int{}}
	client, err := tgnmi.New(tgnmi.Config{Targets: []tgnmi.Target{{Name: "sw1", Address: s.Addr(),
		Timeout: confval.Duration(5 * time.Second), BackoffMin: confval.Duration(time.Second), BackoffMax: confval.Duration(time.Second),
		Subscriptions: []tgnmi.Subscription{{Name: "counters", Mode: "stream", StreamMode: "sample", Encoding: "proto",
			Paths: []string{"/interfaces/interface[name=*]/state/counters"}, SampleInterval: confval.Duration(time.Second)}}}}},
		func(us []model.Update) {
			own.mu.Lock()
			for _, u := range us {
				own.n[u.Path]++
			}
			own.mu.Unlock()
		}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); client.Run(ctx) }()

	// gnmi_cli with the same SAMPLE request as a text proto.
	req := `subscribe: {prefix: {target: "sw1"} mode: STREAM subscription: {path: {elem: {name: "interfaces"} elem: {name: "interface" key: {key: "name" value: "*"}} elem: {name: "state"} elem: {name: "counters"}} mode: SAMPLE sample_interval: 1000000000}}`
	cmd := exec.Command(cli, "-address", s.Addr(), "-insecure", "-client_types", "gnmi", "-proto", req,
		"-streaming_duration", window.String(), "-display_type", "single", "-timeout", "10s")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	<-ctx.Done()
	wg.Wait()
	cliErr := cmd.Wait()
	close(stop)
	feeding.Wait()

	for _, cnt := range []*counter{sample, onChange, targetDef, suppressHB, suppress, plain} {
		if cnt.err != nil {
			t.Fatalf("stream: %v", cnt.err)
		}
	}
	t.Logf("sample %v; on_change %v; target_defined %v; suppress+heartbeat %v; suppress %v; plain %v; outpost client %v",
		sample.n, onChange.n, targetDef.n, suppressHB.n, suppress.n, plain.n, own.n)
	// The values changed about 104 times in the window; a 1 s sample sends
	// the initial value and one per second: 6.
	oneASecond := func(t *testing.T, what string, n int) {
		t.Helper()
		if n < 4 || n > 7 {
			t.Errorf("%s: %d updates in %v, want about 6 (one a second)", what, n, window)
		}
	}
	t.Run("sample", func(t *testing.T) {
		oneASecond(t, "eth0 in-octets", sample.get(keyed(pathOctets0)))
		oneASecond(t, "eth1 in-octets", sample.get(keyed(pathOctets1)))
	})
	t.Run("on_change", func(t *testing.T) {
		if n := onChange.get(keyed(pathOctets0)); n < 50 {
			t.Errorf("in-octets: %d updates, want every change (about 104)", n)
		}
		if n := onChange.get(keyed(pathOper)); n < 50 {
			t.Errorf("oper-status: %d updates, want every change (about 104)", n)
		}
	})
	t.Run("target_defined", func(t *testing.T) {
		oneASecond(t, "in-octets (sampled)", targetDef.get(keyed(pathOctets0)))
		if n := targetDef.get(keyed(pathOper)); n < 50 {
			t.Errorf("oper-status: %d updates, want every change (about 104)", n)
		}
	})
	t.Run("suppress_redundant", func(t *testing.T) {
		oneASecond(t, "unchanged hostname sampled every second", plain.get(keyed(pathHost)))
		if n := suppress.get(keyed(pathHost)); n != 1 {
			t.Errorf("unchanged hostname with suppress_redundant: %d updates, want 1", n)
		}
		// The initial value, then one per 2 s heartbeat: 3.
		if n := suppressHB.get(keyed(pathHost)); n < 2 || n > 4 {
			t.Errorf("unchanged hostname with suppress_redundant and a 2 s heartbeat: %d updates, want about 3", n)
		}
	})
	t.Run("outpost client", func(t *testing.T) {
		oneASecond(t, "eth0 in-octets", own.get(pathOctets0))
		oneASecond(t, "eth1 in-octets", own.get(pathOctets1))
	})
	t.Run("gnmi_cli", func(t *testing.T) {
		o := out.String()
		if cliErr != nil && !strings.Contains(o, "DeadlineExceeded") {
			t.Fatalf("gnmi_cli: %v\n%s", cliErr, o)
		}
		for _, eth := range []string{"eth0", "eth1"} {
			n := 0
			for _, line := range strings.Split(o, "\n") {
				if strings.Contains(line, eth) && strings.Contains(line, "in-octets") {
					n++
				}
			}
			oneASecond(t, fmt.Sprintf("gnmi_cli %s in-octets", eth), n)
		}
		if t.Failed() {
			t.Logf("gnmi_cli output:\n%s", o)
		}
	})
}

// Requests the server cannot serve are refused with InvalidArgument.
func TestStreamRefusesTooShortInterval(t *testing.T) {
	s := start(t, Config{})
	s.Update(sample(time.Now().UnixNano()))
	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_STREAM,
		Subscription: []*gpb.Subscription{{Path: elems("/interfaces"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(time.Millisecond)}}}}})
	if _, err := st.Recv(); err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("1ms sample interval: %v, want InvalidArgument", err)
	}
}
