package telemetry

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	fake "github.com/openconfig/gnmi/testing/fake/gnmi"
	fpb "github.com/openconfig/gnmi/testing/fake/proto"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

// countedAgent is the openconfig fake gNMI agent behind an interceptor that
// records each Subscribe stream with the client's address: the collectors
// as the target sees them.
type countedAgent struct {
	addr string

	mu      sync.Mutex
	streams map[string][2]time.Time // client address → first stream start, last stream end (zero: open)
	open    map[string]int
}

func startCountedAgent(t *testing.T) *countedAgent {
	t.Helper()
	ca := &countedAgent{streams: map[string][2]time.Time{}, open: map[string]int{}}
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
	for _, r := range notifications(2, 2) {
		r.GetUpdate().Timestamp = 0
		resp = append(resp, r)
	}
	a, err := fake.NewFromServer(srv, &fpb.Config{Target: "dev1", ClientType: fpb.Config_GRPC_GNMI,
		Generator: &fpb.Config_Fixed{Fixed: &fpb.FixedGenerator{Responses: resp}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); srv.Stop() })
	ca.addr = a.Address()
	return ca
}

// overlaps reports collectors (client connections) whose streams
// overlapped in time: two instances collecting the target at once.
func (ca *countedAgent) overlaps() []string {
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

func clusteredConfig(etcd, name string, agents map[string]*countedAgent) Config {
	cfg := Config{
		GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"},
		Store:      tsdb.Config{FlushInterval: confval.Duration(50 * time.Millisecond)},
		Cluster: cluster.Config{Etcd: []string{etcd}, Name: name, LeaseTTL: confval.Duration(2 * time.Second),
			ReplicaInterval: confval.Duration(200 * time.Millisecond)},
	}
	for _, n := range []string{"sw1", "sw2", "sw3", "sw4"} {
		cfg.GNMI.Targets = append(cfg.GNMI.Targets, gnmi.Target{Name: n, Address: agents[n].addr,
			BackoffMin: confval.Duration(100 * time.Millisecond), BackoffMax: confval.Duration(200 * time.Millisecond),
			Subscriptions: []gnmi.Subscription{{Paths: []string{"/interfaces"}}}})
	}
	return cfg
}

// roles waits until every target has one holder and a replica on every
// other running instance with data copied, and returns target → holder.
func roles(t *testing.T, svcs map[string]*Service, within time.Duration) map[string]string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		holder, bad := map[string]string{}, ""
		for name, s := range svcs {
			for _, ts := range s.Cluster().Status().Targets {
				switch {
				case ts.Role == cluster.RoleHolder && holder[ts.Target] != "":
					bad = fmt.Sprintf("%s held by %s and %s", ts.Target, holder[ts.Target], name)
				case ts.Role == cluster.RoleHolder:
					holder[ts.Target] = name
				case ts.Role != cluster.RoleReplica || ts.Points == 0:
					bad = fmt.Sprintf("%s at %s: %+v", ts.Target, name, ts)
				}
			}
		}
		if bad == "" && len(holder) == 4 {
			return holder
		}
		if time.Now().After(deadline) {
			t.Fatalf("roles not settled after %s: %s (holders %v)", within, bad, holder)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClusteredCollectionReplicationAndFailover(t *testing.T) {
	etcd := etcdtest.Start(t)
	agents := map[string]*countedAgent{}
	for _, n := range []string{"sw1", "sw2", "sw3", "sw4"} {
		agents[n] = startCountedAgent(t)
	}
	svcs := map[string]*Service{}
	for _, name := range []string{"a", "b", "c"} {
		s := New(clusteredConfig(etcd.Endpoint(), name, agents), t.TempDir(), nil, nil, Sinks{})
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Stop(context.Background()) })
		svcs[name] = s
	}
	holder := roles(t, svcs, 30*time.Second)
	// Points collected before placement settled (an instance that started
	// first takes every target for a moment) stay where they were
	// collected and with the replicas that copied them in time.
	settled := time.Now()

	t.Run("replica equals holder", func(t *testing.T) {
		until := settled.Add(time.Second)
		time.Sleep(time.Until(until) + 2*time.Second) // past the replica's settle time and interval
		for tg, h := range holder {
			q := QueryRequest{Target: tg, Path: "/...", Since: settled, Until: until}
			want, err := svcs[h].Query(context.Background(), q)
			if err != nil || len(want) == 0 {
				t.Fatalf("holder %s of %s in [%s, %s] at %s: %v %v %+v", h, tg, settled, until, time.Now(), err, want, svcs[h].Status())
			}
			for name, s := range svcs {
				got, err := s.Query(context.Background(), q)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Errorf("%s's replica of %s differs from holder %s: %v\n got %v\nwant %v", name, tg, h, err, got, want)
				}
			}
		}
	})
	t.Run("gnmi get at a replica", func(t *testing.T) {
		for tg, h := range holder {
			for name, s := range svcs {
				if name == h {
					continue
				}
				conn, err := grpc.NewClient(s.GNMIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				r, err := gpb.NewGNMIClient(conn).Get(context.Background(), &gpb.GetRequest{Prefix: &gpb.Path{Target: tg},
					Path: []*gpb.Path{{Elem: []*gpb.PathElem{{Name: "interfaces"}}}}, Encoding: gpb.Encoding_JSON_IETF})
				conn.Close()
				var us []model.Update
				for _, n := range r.GetNotification() {
					us = gnmi.Updates(us, tg, n)
				}
				if err != nil || len(us) != 4 {
					t.Errorf("get %s at replica %s: %v %v", tg, name, err, us)
				}
			}
			break
		}
	})
	t.Run("holder leaves", func(t *testing.T) {
		var tg, h string
		for tg, h = range holder {
			break
		}
		left := time.Now()
		if err := svcs[h].Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		delete(svcs, h)
		newHolder := roles(t, svcs, 15*time.Second)
		t.Logf("%s moved from %s to %s in %s", tg, h, newHolder[tg], time.Since(left))
		// The new holder kept what the old one collected.
		got, err := svcs[newHolder[tg]].Query(context.Background(), QueryRequest{Target: tg, Path: "/...", Since: time.Unix(0, 1), Until: left.Add(-2 * time.Second)})
		if err != nil || len(got) != 4 || len(got[0].Points) == 0 {
			t.Fatalf("history of %s at its new holder: %v %v", tg, err, got)
		}
	})
	for n, a := range agents {
		if o := a.overlaps(); len(o) > 0 {
			t.Errorf("%s collected twice at once: %v", n, o)
		}
	}
}

