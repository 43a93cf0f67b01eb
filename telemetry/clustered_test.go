package telemetry

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/outpost-edge/outpost/internal/confval"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmi"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/snmp"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

func clusteredConfig(etcd, name string, agents map[string]*gnmitest.Agent, snmpAgent, trapAddr string) Config {
	cfg := Config{
		Triggers:   []TriggerRule{{Task: "on-trap", Target: "traps", Path: "/snmp/traps/..."}},
		GNMIServer: gnmiserver.Config{Listen: "127.0.0.1:0"},
		Store:      tsdb.Config{FlushInterval: confval.Duration(50 * time.Millisecond)},
		Cluster: cluster.Config{Etcd: []string{etcd}, Name: name, LeaseTTL: confval.Duration(2 * time.Second),
			ReplicaInterval: confval.Duration(200 * time.Millisecond)},
	}
	cfg.SNMP.Traps = snmp.Traps{Listen: trapAddr, Communities: []string{"public"}}
	cfg.SNMP.Targets = []snmp.Target{{Name: "sn1", Address: snmpAgent, Community: "testcomm", Interval: confval.Duration(time.Second),
		OIDs: []snmp.OID{{OID: "1.3.6.1.2.1.1.5.0", Name: "/system/name"}}}}
	for _, n := range []string{"sw1", "sw2", "sw3", "sw4"} {
		cfg.GNMI.Targets = append(cfg.GNMI.Targets, gnmi.Target{Name: n, Address: agents[n].Addr,
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
				case ts.Role != cluster.RoleReplica || !ts.Live:
					bad = fmt.Sprintf("%s at %s: %+v", ts.Target, name, ts)
				}
			}
		}
		if bad == "" && len(holder) == 6 { // 4 gNMI, 1 SNMP, traps
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
	agents := map[string]*gnmitest.Agent{}
	for _, n := range []string{"sw1", "sw2", "sw3", "sw4"} {
		agents[n] = gnmitest.StartAgent(t)
	}
	snmpAgent := snmptest.Start(t)
	svcs, trapAddrs, triggered := map[string]*Service{}, map[string]string{}, map[string]*trigRec{}
	for _, name := range []string{"a", "b", "c"} {
		trapAddrs[name], triggered[name] = fmt.Sprintf("127.0.0.1:%d", snmptest.FreeUDP(t)), &trigRec{}
		s := New(clusteredConfig(etcd.Endpoint(), name, agents, snmpAgent, trapAddrs[name]), t.TempDir(), nil, nil, Sinks{Trigger: triggered[name]})
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
		until := settled.Add(3 * time.Second)         // an SNMP poll every second
		time.Sleep(time.Until(until) + 2*time.Second) // past the replica's settle time and interval
		for tg, h := range holder {
			if tg == "traps" {
				continue // no trap yet: see below
			}
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
		for _, tg := range []string{"sw1"} {
			h := holder[tg]
			for name, s := range svcs {
				if name == h {
					continue
				}
				conn, err := grpc.NewClient(s.GNMIAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				var md metadata.MD
				r, err := gpb.NewGNMIClient(conn).Get(context.Background(), &gpb.GetRequest{Prefix: &gpb.Path{Target: tg},
					Path: []*gpb.Path{{Elem: []*gpb.PathElem{{Name: "interfaces"}}}}, Encoding: gpb.Encoding_JSON_IETF}, grpc.Header(&md))
				if from := md.Get(gnmiserver.ServedFromHeader); len(from) != 1 || from[0] != cluster.RoleReplica {
					t.Errorf("get %s at replica %s served from %v", tg, name, from)
				}
				conn.Close()
				var us []model.Update
				for _, n := range r.GetNotification() {
					us = gnmi.Updates(us, tg, n)
				}
				if err != nil || len(us) != 4 {
					t.Errorf("get %s at replica %s: %v %v", tg, name, err, us)
				}
			}
		}
	})
	t.Run("admin answer says replica", func(t *testing.T) {
		for name, s := range svcs {
			var lat struct {
				Points     []map[string]any
				ServedFrom map[string]cluster.TargetState `json:"served_from"`
			}
			want := cluster.RoleReplica
			if name == holder["sw1"] {
				want = cluster.RoleHolder
			}
			if code := getJSON(t, s.Handler(), "/v1/telemetry/latest?target=sw1", &lat); code != 200 || len(lat.Points) != 4 ||
				lat.ServedFrom["sw1"].Role != want || lat.ServedFrom["sw1"].Holder != holder["sw1"] {
				t.Errorf("latest sw1 at %s: %d %+v", name, code, lat)
			}
		}
	})
	t.Run("a trap sent to every instance is recorded and triggers once", func(t *testing.T) {
		// A device sends its traps to every instance: only the holder of
		// the traps target listens.
		for _, addr := range trapAddrs {
			cmd := exec.Command("snmptrap", "-v2c", "-c", "public", addr, "", "1.3.6.1.6.3.1.1.5.4", "1.3.6.1.2.1.2.2.1.1.1", "i", "1")
			cmd.Env = append(os.Environ(), "MIBS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("snmptrap: %v %s", err, out)
			}
		}
		h := holder["traps"]
		deadline := time.Now().Add(15 * time.Second)
		for {
			n := 0
			for _, s := range svcs {
				if res, err := s.Query(context.Background(), QueryRequest{Target: "traps", Path: "/...", Since: settled}); err == nil && len(res) == 1 {
					n += len(res[0].Points)
				}
			}
			if n == len(svcs) { // one event, at the holder and each replica
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d trap events recorded across %d instances, want one each", n, len(svcs))
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second) // a second receiver would have recorded by now
		for name, s := range svcs {
			res, err := s.Query(context.Background(), QueryRequest{Target: "traps", Path: "/...", Since: settled})
			if err != nil || len(res) != 1 || len(res[0].Points) != 1 {
				t.Errorf("trap events at %s: %v %+v", name, err, res)
			}
			triggered[name].mu.Lock()
			calls := len(triggered[name].calls)
			triggered[name].mu.Unlock()
			if want := map[bool]int{true: 1, false: 0}[name == h]; calls != want {
				t.Errorf("%s (holder of traps: %s) ran the trigger %d times, want %d", name, h, calls, want)
			}
		}
	})
	t.Run("snmp device polled by one instance", func(t *testing.T) {
		// snmpd counts the packets it receives (snmpInPkts): one collector
		// polling once a second adds about one a second, two would add two.
		in := func() int { return snmptest.InPackets(t, snmpAgent) }
		before, t0 := in(), time.Now()
		time.Sleep(5 * time.Second)
		polls := float64(in()-before-1) / time.Since(t0).Seconds() // less our own first request
		t.Logf("snmpd received %.2f requests a second", polls)
		if polls > 1.5 {
			t.Errorf("snmpd polled %.2f times a second at a 1s interval: more than one collector", polls)
		}
	})
	t.Run("drained holder hands over without losing a point", func(t *testing.T) {
		tg, h := "sw2", holder["sw2"]
		drained := time.Now()
		if err := svcs[h].Cluster().SetDrained(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		moved := roles(t, svcs, 15*time.Second)
		for moved[tg] == h {
			if time.Since(drained) > 15*time.Second {
				t.Fatalf("%s still held by drained %s", tg, h)
			}
			time.Sleep(50 * time.Millisecond)
			moved = roles(t, svcs, 15*time.Second)
		}
		t.Logf("%s moved from %s to %s in %s", tg, h, moved[tg], time.Since(drained))
		time.Sleep(2 * time.Second) // the new holder collects; every replica follows it
		q := QueryRequest{Target: tg, Path: "/...", Since: settled, Until: time.Now().Add(-time.Second)}
		want, err := svcs[moved[tg]].Query(context.Background(), q)
		if err != nil || len(want) != 4 {
			t.Fatalf("%s at its new holder %s: %v %v", tg, moved[tg], err, want)
		}
		for name, s := range svcs {
			got, err := s.Query(context.Background(), q)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("%s's copy of %s differs from its new holder %s's: %v\n got %v\nwant %v", name, tg, moved[tg], err, got, want)
			}
		}
		// The longest time without a point across the move, as the new
		// holder stored it.
		var gap time.Duration
		for _, se := range want {
			for i := 1; i < len(se.Points); i++ {
				if se.Points[i].Time.After(drained.Add(-time.Second)) {
					gap = max(gap, se.Points[i].Time.Sub(se.Points[i-1].Time))
				}
			}
		}
		t.Logf("%s: at most %s between two points across the move", tg, gap)
		if gap > 2*time.Second {
			t.Errorf("%s: %s without a point across a planned move", tg, gap)
		}
		if err := svcs[h].Cluster().SetDrained(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		holder = roles(t, svcs, 15*time.Second)
	})
	t.Run("holder leaves", func(t *testing.T) {
		tg, h := "sw1", holder["sw1"]
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
		if o := a.Overlaps(); len(o) > 0 {
			t.Errorf("%s collected twice at once: %v", n, o)
		}
	}
}
