// Package gnmitest runs the openconfig fake gNMI agent for tests, counting
// the collectors that subscribe to it as the device would see them.
package gnmitest

import (
	"flag"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	fake "github.com/openconfig/gnmi/testing/fake/gnmi"
	fpb "github.com/openconfig/gnmi/testing/fake/proto"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
)

// Agent is the openconfig fake gNMI agent behind an interceptor that
// records each Subscribe stream with the client's address: the collectors
// as the target sees them.
type Agent struct {
	Addr string // host:port

	mu      sync.Mutex
	streams map[string][2]time.Time // client address → first stream start, last stream end (zero: open)
	open    map[string]int
}

// StartAgent starts the agent on a random loopback port, sending two
// interfaces' counters (timestamp 0: stamped on arrival) on each stream;
// it stops when the test ends.
func StartAgent(t testing.TB) *Agent {
	t.Helper()
	// The agent logs every stream end through glog on stderr: keep only
	// fatal ones.
	_ = flag.Set("stderrthreshold", "FATAL")
	ca := &Agent{streams: map[string][2]time.Time{}, open: map[string]int{}}
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		p, _ := peer.FromContext(ss.Context())
		from := p.Addr.String()
		ca.mu.Lock()
		iv := ca.streams[from]
		if iv[0].IsZero() {
			iv[0] = time.Now()
		}
		ca.streams[from] = iv
		ca.open[from]++
		ca.mu.Unlock()
		err := h(srv, ss)
		ca.mu.Lock()
		ca.open[from]--
		iv = ca.streams[from]
		iv[1] = time.Now()
		ca.streams[from] = iv
		ca.mu.Unlock()
		return err
	}))
	// Timestamp 0: the collector stamps each value when it arrives, so every
	// stream brings new points.
	var resp []*gpb.SubscribeResponse
	for i := range 2 {
		no := &gpb.Notification{Prefix: &gpb.Path{Elem: []*gpb.PathElem{{Name: "interfaces"}, {Name: "interface", Key: map[string]string{"name": fmt.Sprintf("eth%d", i)}}}}}
		for j := range 2 {
			no.Update = append(no.Update, &gpb.Update{
				Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "state"}, {Name: "counters"}, {Name: fmt.Sprintf("c%d", j)}}},
				Val:  &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: uint64(i*2 + j)}},
			})
		}
		resp = append(resp, &gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: no}})
	}
	a, err := fake.NewFromServer(srv, &fpb.Config{Target: "dev1", ClientType: fpb.Config_GRPC_GNMI,
		Generator: &fpb.Config_Fixed{Fixed: &fpb.FixedGenerator{Responses: resp}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); srv.Stop() })
	ca.Addr = a.Address()
	return ca
}

// Overlaps reports collectors (client connections) whose streams
// overlapped in time: two instances collecting the target at once.
func (ca *Agent) Overlaps() []string {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	var out []string
	for a, x := range ca.streams {
		for b, y := range ca.streams {
			xEnd, yEnd := x[1], y[1]
			if ca.open[a] > 0 || xEnd.IsZero() {
				xEnd = time.Now()
			}
			if ca.open[b] > 0 || yEnd.IsZero() {
				yEnd = time.Now()
			}
			if a < b && x[0].Before(yEnd) && y[0].Before(xEnd) {
				out = append(out, fmt.Sprintf("%s and %s", a, b))
			}
		}
	}
	return out
}

// Collectors returns each collector's first stream start and last stream
// end (zero while one is open), in start order.
func (ca *Agent) Collectors() [][2]time.Time {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	out := make([][2]time.Time, 0, len(ca.streams))
	for a, iv := range ca.streams {
		if ca.open[a] > 0 {
			iv[1] = time.Time{}
		}
		out = append(out, iv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0].Before(out[j][0]) })
	return out
}
