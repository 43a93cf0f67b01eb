package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/etcdtest"
	"github.com/outpost-edge/outpost/internal/gnmitest"
	"github.com/outpost-edge/outpost/internal/snmptest"
	"github.com/outpost-edge/outpost/internal/tcpproxy"
	"github.com/outpost-edge/outpost/internal/testpki"
	"github.com/outpost-edge/outpost/telemetry/cluster"
	"github.com/outpost-edge/outpost/telemetry/gnmiserver"
	"github.com/outpost-edge/outpost/telemetry/model"
	"github.com/outpost-edge/outpost/telemetry/tsdb"
)

func (d *daemon) clusterStatus() cluster.Status {
	d.t.Helper()
	var st cluster.Status
	resp := d.get("/v1/telemetry/cluster")
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		d.t.Fatal(err)
	}
	return st
}

// settledHolders waits until each target is collected by one daemon and
// copied by every other with data, and returns target → holder name.
func settledHolders(t testing.TB, ds map[string]*daemon, targets int, within time.Duration) map[string]string {
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

// startCluster starts a real etcd, four counted fake gNMI devices and one
// outpost process per name; etcdFor may put something between a process
// and etcd; keys, when not nil, gives the other cluster keys (", key:
// value", default a replica_interval of 200ms) and the gNMI server's (the
// same way) from the name and the gNMI server's address; more is the rest
// of the telemetry section (after the gNMI targets).
func startCluster(t *testing.T, ttl time.Duration, names []string, etcdFor func(name, endpoint string) string, keys func(name, gnmi string) (cluster, server string), more ...string) (map[string]*daemon, map[string]*gnmitest.Agent, *etcdtest.Server) {
	t.Helper()
	etcd := etcdtest.Start(t)
	agents := map[string]*gnmitest.Agent{}
	var targets strings.Builder
	for _, n := range []string{"sw1", "sw2", "sw3", "sw4"} {
		agents[n] = gnmitest.StartAgent(t)
		targets.WriteString(targetYAML(n, agents[n].Addr, "100ms", "200ms"))
	}
	ds := map[string]*daemon{}
	for _, name := range names {
		gnmi, extra, server := mqtttest.FreeAddr(t), ", replica_interval: 200ms", ""
		if keys != nil {
			extra, server = keys(name, gnmi)
		}
		ds[name] = startDaemon(t, daemonYAML(name, gnmi, server, fmt.Sprintf("{etcd: [%q], lease_ttl: %s%s}", etcdFor(name, etcd.Endpoint()), ttl, extra), targets.String()+strings.Join(more, "")))
	}
	return ds, agents, etcd
}

// targetYAML is one gNMI target of a daemon's config, a line of the list.
func targetYAML(name, addr, backoffMin, backoffMax string) string {
	return fmt.Sprintf("      - {name: %s, address: %q, backoff_min: %s, backoff_max: %s, subscriptions: [{paths: [/interfaces]}]}\n", name, addr, backoffMin, backoffMax)
}

// daemonYAML is the config of a telemetry daemon: its gNMI server (listen
// and more keys), the cluster section (a flow map; "" for none) and its
// targets (lines from targetYAML).
func daemonYAML(name, gnmiListen, serverKeys, cluster, targets string) string {
	if cluster != "" {
		cluster = "\n  cluster: " + cluster
	}
	return fmt.Sprintf(`
node: {id: %s}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
telemetry:
  store: {flush_interval: 50ms}
  gnmi_server: {listen: %q%s}%s
  gnmi:
    targets:
%s`, name, gnmiListen, serverKeys, cluster, targets)
}

// checkCollectors fails the test if a device saw two collectors at once, or
// none for longer than ttl + 2 s after since.
func checkCollectors(t *testing.T, agents map[string]*gnmitest.Agent, since time.Time, ttl time.Duration) {
	t.Helper()
	for n, a := range agents {
		if o := a.Overlaps(); len(o) > 0 {
			t.Errorf("%s collected by two instances at once: %v", n, o)
		}
		cs := a.Collectors()
		for i := 1; i < len(cs); i++ {
			gap := cs[i][0].Sub(cs[i-1][1])
			if !cs[i-1][1].After(since.Add(-time.Second)) {
				continue // a move while placement settled
			}
			t.Logf("%s: %s without a collector", n, gap)
			if gap > ttl+2*time.Second {
				t.Errorf("%s: no collector for %s (lease TTL %s)", n, gap, ttl)
			}
		}
	}
}

// Three outpost processes, one etcd, four fake gNMI devices: each device is
// collected by exactly one process (counted at the device), a kill -9 of a
// holder moves its devices within the lease TTL plus 2 s, and the new holder
// serves the history the killed one collected.
func TestClusterKillHolder(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	ds, agents, _ := startCluster(t, ttl, []string{"a", "b", "c"}, func(_, e string) string { return e }, nil)
	holders := settledHolders(t, ds, 4, 40*time.Second)
	victim := holders["sw1"]
	for name, d := range ds {
		if name != victim {
			readReplicaWithGnmiCLI(t, d, "sw1")
			break
		}
	}
	time.Sleep(2 * time.Second) // the replicas copy what the victim collected
	killed := time.Now()
	victimDir := ds[victim].dir
	ds[victim].kill9()
	delete(ds, victim)
	after := settledHolders(t, ds, 4, 30*time.Second)
	t.Logf("sw1: %s killed, %s holds it after %s", victim, after["sw1"], time.Since(killed))
	checkCollectors(t, agents, killed, ttl)
	var q struct {
		Series     []storedSeries
		ServedFrom map[string]cluster.TargetState `json:"served_from"`
	}
	resp := ds[after["sw1"]].get("/v1/telemetry/query?target=sw1&path=/...&since=1h&until=" + killed.UTC().Format(time.RFC3339Nano))
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&q); err != nil || len(q.Series) != 4 || len(q.Series[0].Points) < 2 {
		t.Fatalf("history of sw1 at its new holder: %v %+v", err, q)
	}
	if sf := q.ServedFrom["sw1"]; sf.Role != cluster.RoleHolder || sf.Holder != after["sw1"] || len(q.ServedFrom) != 1 {
		t.Errorf("served_from: %+v", q.ServedFrom)
	}
	// What the killed holder stored and the new one lacks: the points
	// collected while their stream to the replicas was in flight.
	lost, stored, oldest := lostPoints(t, filepath.Join(victimDir, "data", "telemetry"), "sw1", q.Series)
	t.Logf("sw1: %d of the %d points the killed holder stored are not at the new holder", lost, stored)
	if lost > 0 && killed.Sub(oldest) > time.Second {
		t.Errorf("sw1: the new holder lacks a point stamped %s before the holder was killed", killed.Sub(oldest))
	}
}

// storedSeries is a series of an admin query's answer, without values.
type storedSeries struct {
	Path   string
	Points []struct{ Time time.Time }
}

// lostPoints opens the telemetry store in dir (of a killed daemon) and
// counts the points of target it has (stored) and of those the ones not
// in have (lost), with the oldest of them.
func lostPoints(t *testing.T, dir, target string, have []storedSeries) (lost, stored int, oldest time.Time) {
	t.Helper()
	db, err := tsdb.Open(tsdb.Options{Dir: dir, Cfg: tsdb.Config{}.WithDefaults(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ss, err := db.Query(context.Background(), tsdb.Query{Target: target, Path: model.MustPattern("/...")})
	if err != nil || len(ss) == 0 {
		t.Fatalf("the killed holder's store: %v %v", err, ss)
	}
	seen := map[string]bool{}
	for _, se := range have {
		for _, p := range se.Points {
			seen[se.Path+" "+strconv.FormatInt(p.Time.UnixNano(), 10)] = true
		}
	}
	for _, se := range ss {
		stored += len(se.Points)
		for _, p := range se.Points {
			if !seen[se.Path+" "+strconv.FormatInt(p.Time.UnixNano(), 10)] {
				lost++
				if oldest.IsZero() || p.Time.Before(oldest) {
					oldest = p.Time
				}
			}
		}
	}
	return lost, stored, oldest
}

// An instance cut off from etcd (its connection to etcd goes through a proxy
// the test closes) stops collecting before its lease can expire; another
// takes its devices; no device sees two collectors at once.
func TestClusterHolderCutOffFromEtcd(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	proxies := map[string]*tcpproxy.Proxy{}
	ds, agents, _ := startCluster(t, ttl, []string{"a", "b", "c"}, func(name, e string) string {
		proxies[name] = tcpproxy.Start(t, func() string { return strings.TrimPrefix(e, "http://") })
		return "http://" + proxies[name].Addr
	}, nil)
	holders := settledHolders(t, ds, 4, 40*time.Second)
	victim := holders["sw1"]
	cut := time.Now()
	proxies[victim].Cut()
	waitUntil(t, 10*time.Second, "the cut-off holder stops collecting", func() bool {
		for _, ts := range ds[victim].clusterStatus().Targets {
			if ts.Role == cluster.RoleHolder {
				return false
			}
		}
		return true
	})
	t.Logf("%s stopped collecting %s after the cut", victim, time.Since(cut))
	if d := time.Since(cut); d > ttl {
		t.Errorf("%s still collected %s after it was cut off (lease TTL %s)", victim, d, ttl)
	}
	others := map[string]*daemon{}
	for n, d := range ds {
		if n != victim {
			others[n] = d
		}
	}
	after := settledHolders(t, others, 4, 30*time.Second)
	t.Logf("sw1: %s cut off, %s holds it after %s", victim, after["sw1"], time.Since(cut))
	checkCollectors(t, agents, cut, ttl)
}

// `outpost cluster drain` moves a daemon's devices to the other one;
// `undrain` takes its share back; `status` shows both.
func TestClusterDrainCLI(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	ds, agents, _ := startCluster(t, ttl, []string{"a", "b"}, func(_, e string) string { return e }, nil)
	settledHolders(t, ds, 4, 40*time.Second)
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binPath, append(args, "--config", ds["a"].cfg)...).CombinedOutput()
		if err != nil {
			t.Fatalf("outpost %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	drained := time.Now()
	if out := cli("cluster", "drain"); !strings.Contains(out, "drained: true") {
		t.Fatalf("drain answered:\n%s", out)
	}
	holds := func(name string, n int) func() bool {
		return func() bool {
			held := 0
			for _, ts := range ds[name].clusterStatus().Targets {
				if ts.Role == cluster.RoleHolder {
					held++
				}
			}
			return held == n
		}
	}
	waitUntil(t, 20*time.Second, "b holds every device", holds("b", 4))
	waitUntil(t, 20*time.Second, "a holds none", holds("a", 0))
	// A planned move loses no point: a (drained) and b keep the same
	// history of every device across it.
	time.Sleep(time.Second)
	window := "&since=" + drained.Add(-5*time.Second).UTC().Format(time.RFC3339Nano) + "&until=" + time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	for _, tg := range []string{"sw1", "sw2", "sw3", "sw4"} {
		var got [2]struct{ Series []storedSeries }
		for i, name := range []string{"a", "b"} {
			resp := ds[name].get("/v1/telemetry/query?target=" + tg + "&path=/..." + window)
			err := json.NewDecoder(resp.Body).Decode(&got[i])
			resp.Body.Close()
			if err != nil || len(got[i].Series) != 4 {
				t.Fatalf("%s at %s: %v %+v", tg, name, err, got[i])
			}
		}
		if !reflect.DeepEqual(got[0], got[1]) {
			t.Errorf("%s: a and b differ across the drain:\n a %+v\n b %+v", tg, got[0], got[1])
		}
	}
	// The drain is kept in etcd: a restarted a comes back drained.
	ds["a"].stop(syscall.SIGTERM, 30*time.Second)
	ds["a"].start()
	waitUntil(t, 20*time.Second, "a is a member again", func() bool { return ds["a"].clusterStatus().Member })
	time.Sleep(time.Second) // it would have taken its share by now
	waitUntil(t, 20*time.Second, "b still holds every device", holds("b", 4))
	out := cli("cluster", "status")
	for _, want := range []string{"instance a (member: true, drained: true)", "sw1", "replica"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	cli("cluster", "undrain")
	settledHolders(t, ds, 4, 20*time.Second)
	waitUntil(t, 20*time.Second, "a holds a share again", func() bool { return !holds("a", 0)() })
	checkCollectors(t, agents, drained, ttl)
}

// An instance that leaves (SIGTERM) hands its devices to the others, and
// only those move; when it joins again it takes back the devices placed on
// it, and only those; no device is ever collected by two at once.
func TestClusterLeaveAndJoin(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	ds, agents, _ := startCluster(t, ttl, []string{"a", "b", "c"}, func(_, e string) string { return e }, nil)
	before := settledHolders(t, ds, 4, 40*time.Second)
	var moving []string
	for tg, h := range before {
		if h == "c" {
			moving = append(moving, tg)
		}
	}
	if len(moving) == 0 {
		t.Fatalf("c holds no device, nothing would move: %v", before)
	}
	c := ds["c"]
	left := time.Now()
	c.stop(syscall.SIGTERM, 30*time.Second)
	delete(ds, "c")
	during := settledHolders(t, ds, 4, 30*time.Second)
	t.Logf("c left: its %v moved in %s: %v", moving, time.Since(left), during)
	for tg, h := range before {
		if h != "c" && during[tg] != h {
			t.Errorf("%s moved from %s to %s when c left", tg, h, during[tg])
		}
	}
	joined := time.Now()
	c.start()
	ds["c"] = c
	after := settledHolders(t, ds, 4, 30*time.Second)
	t.Logf("c joined: settled in %s: %v", time.Since(joined), after)
	if !reflect.DeepEqual(after, before) {
		t.Errorf("holders after c joined again %v, before it left %v", after, before)
	}
	checkCollectors(t, agents, left, ttl)
}

// An SNMP device (snmpd) among the gNMI ones is polled by one process, as
// snmpd counts the requests it receives, before and after a kill -9 of
// that process; every process keeps a copy of what it answered.
func TestClusterSNMPDevicePolledOnce(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	agent := snmptest.Start(t)
	ds, _, _ := startCluster(t, ttl, []string{"a", "b", "c"}, func(_, e string) string { return e }, nil, fmt.Sprintf(`  snmp:
    targets:
      - {name: r1, address: %q, community: testcomm, interval: 1s, oids: [{oid: 1.3.6.1.2.1.1.5.0, name: /system/name}]}
`, agent))
	polls := func() float64 { // requests a second snmpd receives, less ours
		before, t0 := snmptest.InPackets(t, agent), time.Now()
		time.Sleep(5 * time.Second)
		p := float64(snmptest.InPackets(t, agent)-before-1) / time.Since(t0).Seconds()
		t.Logf("snmpd received %.2f requests a second", p)
		return p
	}
	holders := settledHolders(t, ds, 5, 40*time.Second)
	if p := polls(); p > 1.5 || p < 0.5 {
		t.Errorf("snmpd polled %.2f times a second at a 1 s interval, want one poller", p)
	}
	for name, d := range ds {
		var q struct{ Series []storedSeries }
		resp := d.get("/v1/telemetry/query?target=r1&path=/system/name&since=1m")
		err := json.NewDecoder(resp.Body).Decode(&q)
		resp.Body.Close()
		if err != nil || len(q.Series) != 1 || len(q.Series[0].Points) == 0 {
			t.Errorf("r1 at %s (holder %s): %v %+v", name, holders["r1"], err, q)
		}
	}
	victim := holders["r1"]
	ds[victim].kill9()
	delete(ds, victim)
	after := settledHolders(t, ds, 5, 30*time.Second)
	t.Logf("r1: %s killed, %s polls it", victim, after["r1"])
	if p := polls(); p > 1.5 || p < 0.5 {
		t.Errorf("snmpd polled %.2f times a second after the failover, want one poller", p)
	}
}

// readReplicaWithGnmiCLI reads target from d's gNMI server, which only
// replicates it, with the openconfig gnmi_cli (ONCE).
func readReplicaWithGnmiCLI(t *testing.T, d *daemon, target string) {
	t.Helper()
	cli := gnmitest.CLI(t)
	st := d.clusterStatus()
	var addr string
	for _, m := range st.Members {
		if m.Name == st.Name {
			addr = m.GNMI
		}
	}
	out, err := exec.Command(cli, "-address", addr, "-insecure", "-client_types", "gnmi", "-target", target, "-query", "/interfaces",
		"-query_type", "once", "-display_type", "single", "-timeout", "10s").CombinedOutput()
	if err != nil {
		t.Fatalf("gnmi_cli: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "counters") || !strings.Contains(string(out), "eth1") {
		t.Errorf("gnmi_cli read no counters of %s from replica %s:\n%s", target, st.Name, out)
	}
	t.Logf("gnmi_cli at replica %s:\n%s", st.Name, out)
}

// While etcd is down no renewal is confirmed: every daemon stops collecting
// before its lease could expire. After etcd restarts every device is
// collected again, never by two daemons at once.
func TestClusterEtcdRestart(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	ds, agents, etcd := startCluster(t, ttl, []string{"a", "b", "c"}, func(_, e string) string { return e }, nil)
	settledHolders(t, ds, 4, 40*time.Second)
	down := time.Now()
	etcd.Kill()
	waitUntil(t, 10*time.Second, "every daemon stops collecting", func() bool {
		for _, d := range ds {
			for _, ts := range d.clusterStatus().Targets {
				if ts.Role == cluster.RoleHolder {
					return false
				}
			}
		}
		return true
	})
	if d := time.Since(down); d > ttl {
		t.Errorf("still collecting %s after etcd went down (lease TTL %s)", d, ttl)
	}
	etcd.Restart()
	restarted := time.Now()
	settledHolders(t, ds, 4, 40*time.Second)
	t.Logf("every device collected again %s after etcd restarted", time.Since(restarted))
	for n, a := range agents {
		if o := a.Overlaps(); len(o) > 0 {
			t.Errorf("%s collected by two instances at once: %v", n, o)
		}
	}
}

// A replica whose stream from the holder broke (its holder's advertised
// address goes through a proxy that drops its connections; the replica
// waits replica_interval before it opens a new stream) passes an admin
// query and a gNMI Subscribe for the target to the holder, and says so;
// a query over a glob is answered from the replica.
func TestClusterStaleReplicaProxies(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	proxies := map[string]*tcpproxy.Proxy{}
	listen := map[string]string{}
	ds, _, _ := startCluster(t, ttl, []string{"a", "b"}, func(_, e string) string { return e }, func(name, gnmi string) (string, string) {
		proxies[name], listen[name] = tcpproxy.Start(t, func() string { return gnmi }), gnmi
		return fmt.Sprintf(", replica_interval: 1m, advertise: %q", proxies[name].Addr), ""
	})
	holders := settledHolders(t, ds, 4, 40*time.Second)
	holder, replica := holders["sw1"], "a"
	if holder == "a" {
		replica = "b"
	}
	dropped := time.Now()
	proxies[holder].Drop()
	waitUntil(t, 20*time.Second, "the replica of sw1 is stale", func() bool {
		for _, ts := range ds[replica].clusterStatus().Targets {
			if ts.Target == "sw1" {
				return ts.Role == cluster.RoleReplica && !ts.Live
			}
		}
		return false
	})
	time.Sleep(time.Second) // the holder collects more than the replica has
	var q struct {
		Series     []storedSeries
		ServedFrom map[string]cluster.TargetState `json:"served_from"`
	}
	resp := ds[replica].get("/v1/telemetry/query?target=sw1&path=/...&since=1m")
	err := json.NewDecoder(resp.Body).Decode(&q)
	resp.Body.Close()
	if err != nil || len(q.Series) != 4 {
		t.Fatalf("query at the stale replica: %v %+v", err, q)
	}
	if sf := q.ServedFrom["sw1"]; sf.Role != cluster.RoleProxy || sf.Holder != holder {
		t.Errorf("served_from at the stale replica: %+v", sf)
	}
	if last := q.Series[0].Points[len(q.Series[0].Points)-1].Time; !last.After(dropped) {
		t.Errorf("the proxied answer ends at %s, before the replica went stale (%s): not the holder's", last, dropped)
	}
	resp = ds[replica].get("/v1/telemetry/query?target=sw*&path=/...&since=1m")
	err = json.NewDecoder(resp.Body).Decode(&q)
	resp.Body.Close()
	if sf := q.ServedFrom["sw1"]; err != nil || sf.Role != cluster.RoleReplica {
		t.Errorf("a glob query at the replica: %v %+v", err, sf)
	}

	conn, err := grpc.NewClient(listen[replica], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := gpb.NewGNMIClient(conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Prefix: &gpb.Path{Target: "sw1"}, Mode: gpb.SubscriptionList_ONCE, Subscription: []*gpb.Subscription{{Path: &gpb.Path{}}}}}}); err != nil {
		t.Fatal(err)
	}
	md, err := st.Header()
	if got := md.Get(gnmiserver.ServedFromHeader); err != nil || len(got) != 1 || got[0] != "proxy "+holder {
		t.Errorf("subscribe at the stale replica: %s %v %v", gnmiserver.ServedFromHeader, got, err)
	}
	newer := 0
	for {
		r, err := st.Recv()
		if err != nil || r.GetSyncResponse() {
			break
		}
		if time.Unix(0, r.GetUpdate().GetTimestamp()).After(dropped) {
			newer++
		}
	}
	if newer == 0 {
		t.Errorf("the subscription at the stale replica got no value collected after it went stale")
	}
}

// Instances whose gNMI servers use TLS and a password replicate over TLS,
// checking each other's certificates against cluster.ca_file, with the
// password the cluster shares; a replica then serves what it copied.
func TestClusterOverTLS(t *testing.T) {
	skipShort(t, "three daemons and etcd")
	const ttl = 2 * time.Second
	dir := t.TempDir()
	ca := testpki.New(t, dir, "cluster")
	pass := filepath.Join(dir, "gnmi.pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ds, _, _ := startCluster(t, ttl, []string{"a", "b", "c"}, func(_, e string) string { return e }, func(name, _ string) (string, string) {
		cert, key := ca.Server(t, name, net.IPv4(127, 0, 0, 1))
		return fmt.Sprintf(", replica_interval: 200ms, ca_file: %q", ca.CAFile),
			fmt.Sprintf(", tls: {cert_file: %q, key_file: %q}, username: peer, password_file: %q", cert, key, pass)
	})
	holders := settledHolders(t, ds, 4, 40*time.Second)
	for name, d := range ds {
		st := d.clusterStatus()
		for _, m := range st.Members {
			if m.Name != name {
				continue
			}
			// The servers take TLS only: the replicas read them over TLS.
			conn, err := grpc.NewClient(m.GNMI, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := gpb.NewGNMIClient(conn).Capabilities(ctx, &gpb.CapabilityRequest{}); err == nil {
				t.Errorf("%s's gNMI server answered in plaintext", name)
			}
			cancel()
			conn.Close()
		}
		for _, ts := range st.Targets {
			if ts.Role == cluster.RoleReplica && (!ts.Live || ts.Points == 0 || ts.Error != "") {
				t.Errorf("%s's replica of %s (holder %s): %+v", name, ts.Target, holders[ts.Target], ts)
			}
		}
	}
}
