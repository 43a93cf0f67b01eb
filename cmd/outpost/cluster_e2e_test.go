package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/telemetry/cluster"
)

func (d *daemon) clusterStatus() cluster.Status {
	d.t.Helper()
	var st cluster.Status
	resp, err := http.Get("http://" + d.adminAddr() + "/v1/telemetry/cluster")
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		d.t.Fatal(err)
	}
	return st
}

// settledHolders waits until each target is collected by one daemon and
// copied by every other with data, and returns target → holder name.
func settledHolders(t *testing.T, ds map[string]*daemon, targets int, within time.Duration) map[string]string {
	t.Helper()
	var holders map[string]string
	waitUntil(t, within, "holders and replicas settled", func() bool {
		holders = map[string]string{}
		for name, d := range ds {
			for _, ts := range d.clusterStatus().Targets {
				switch {
				case ts.Role == cluster.RoleHolder && holders[ts.Target] == "":
					holders[ts.Target] = name
				case ts.Role != cluster.RoleReplica || ts.Points == 0:
					return false
				}
			}
		}
		return len(holders) == targets
	})
	return holders
}

// Three outpost processes, one etcd, four fake gNMI devices: each device is
// collected by exactly one process (counted at the device), a kill -9 of a
// holder moves its devices within the lease TTL plus 2 s, and the new holder
// serves the history the killed one collected.
func TestClusterKillHolder(t *testing.T) {
	etcd := etcdtest.Start(t)
	agents := map[string]*gnmitest.Agent{}
	var targets strings.Builder
	for _, n := range []string{"sw1", "sw2", "sw3", "sw4"} {
		agents[n] = gnmitest.StartAgent(t)
		fmt.Fprintf(&targets, "      - {name: %s, address: %q, backoff_min: 100ms, backoff_max: 200ms, subscriptions: [{paths: [/interfaces]}]}\n", n, agents[n].Addr)
	}
	const ttl = 2 * time.Second
	ds := map[string]*daemon{}
	for _, name := range []string{"a", "b", "c"} {
		ds[name] = startDaemon(t, fmt.Sprintf(`
node: {id: %s}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
telemetry:
  store: {flush_interval: 50ms}
  gnmi_server: {listen: %q}
  cluster: {etcd: [%q], lease_ttl: %s, replica_interval: 200ms}
  gnmi:
    targets:
%s`, name, mqtttest.FreeAddr(t), etcd.Endpoint(), ttl, targets.String()))
	}
	holders := settledHolders(t, ds, 4, 40*time.Second)
	victim := holders["sw1"]
	time.Sleep(2 * time.Second) // the replicas copy what the victim collected
	killed := time.Now()
	ds[victim].kill9()
	delete(ds, victim)
	after := settledHolders(t, ds, 4, 30*time.Second)
	t.Logf("sw1: %s killed, %s holds it after %s", victim, after["sw1"], time.Since(killed))

	for n, a := range agents {
		if o := a.Overlaps(); len(o) > 0 {
			t.Errorf("%s collected by two instances at once: %v", n, o)
		}
		cs := a.Collectors()
		for i := 1; i < len(cs); i++ {
			gap := cs[i][0].Sub(cs[i-1][1])
			if !cs[i-1][1].After(killed.Add(-time.Second)) {
				continue // a move while placement settled
			}
			t.Logf("%s: %s without a collector after the kill", n, gap)
			if gap > ttl+2*time.Second {
				t.Errorf("%s: no collector for %s after the kill (lease TTL %s)", n, gap, ttl)
			}
		}
	}
	var q struct {
		Series []struct{ Points []json.RawMessage }
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/telemetry/query?target=sw1&path=/...&until=%s&since=1h", ds[after["sw1"]].adminAddr(), killed.Add(-time.Second).UTC().Format(time.RFC3339Nano)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil || len(q.Series) != 4 || len(q.Series[0].Points) < 2 {
		t.Fatalf("history of sw1 at its new holder: %v %+v", err, q)
	}
}
