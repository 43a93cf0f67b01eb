package coordinator

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/coordinator/remote/server"
	"github.com/outpost-edge/outpost/coordinator/tasks"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// waitRecord polls the journal until the record of id passes ok.
func waitRecord(t *testing.T, c *Coordinator, id string, ok func(*calls.Record) bool) *calls.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		rec, err := c.cloud.journal.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if rec != nil && ok(rec) {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record of %s: %+v", id, rec)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A labelled call is placed by a rule on its labels, and its labels are
// journaled with it: a call that a stop left unfinished is recovered with
// them at the next start and placed by them again. A call without the
// label is placed by the default rule (the labels rule fails to evaluate
// on it and is skipped).
func TestPlacementByCallLabelsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	config := func(rule string) *configs.Config {
		cfg, err := configs.Parse([]byte("data_dir: "+dir+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
scheduler: {drain_timeout: 0s}
tasks:
  - name: echo
    module: builtin:echo
    placement: [`+rule+`]
`), "test.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	labels := map[string]string{"tier": "batch", "gpu": ""}
	// First start: batch calls wait for a native build the task lacks,
	// so the call is running (placed, waiting) when the daemon stops.
	c, stop := runCoordinator(t, quiet, config(`{name: batch-native, when: "call.labels.tier == 'batch' && 'gpu' in call.labels", run: [process], wait: true}`))
	call := calls.New("echo", []byte("x"), calls.Source{Kind: "cloud"})
	call.Effect, call.Labels = calls.Idempotent, labels
	if _, err := c.cloud.ready.Accept([]*calls.Call{call}); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, c, call.ID, func(r *calls.Record) bool { return r.State == calls.Started })
	stop()

	// Second start: batch calls run here by the rule batch.
	c, _ = runCoordinator(t, quiet, config(`{name: batch, when: "call.labels.tier == 'batch'", run: [local]}`))
	rec := waitRecord(t, c, call.ID, func(r *calls.Record) bool { return r.State >= calls.Finished })
	if !maps.Equal(rec.Labels, labels) || rec.Result.Status != calls.StatusOK || rec.Result.Rule != "batch" || rec.Attempt != 2 {
		t.Fatalf("recovered call: labels %v, result %+v, attempt %d; want %v, ok by the rule batch, attempt 2", rec.Labels, rec.Result, rec.Attempt, labels)
	}

	// Through the admin API: with the label by the rule, without it by
	// the default; the list filters by label.
	cfg := c.cfg.Load()
	cl, err := admin.Dial(admin.ClientOptions{Addr: c.AdminAddr(), DaemonTokenFile: cfg.Admin.TokenPath(cfg.DataDir)})
	if err != nil {
		t.Fatal(err)
	}
	ans, err := cl.Call(t.Context(), "echo", []byte("y"), admin.CallOptions{Labels: map[string]string{"tier": "batch"}})
	if err != nil || ans.Rule != "batch" || ans.Env != "local" {
		t.Fatalf("labelled admin call: %+v %v, want local by batch", ans, err)
	}
	ans, err = cl.Call(t.Context(), "echo", []byte("y"), admin.CallOptions{})
	if err != nil || ans.Rule != "default" {
		t.Fatalf("admin call without labels: %+v %v, want the default rule", ans, err)
	}
	id, err := cl.CallAsync(t.Context(), "echo", []byte("z"), admin.CallOptions{Labels: map[string]string{"tier": "batch", "site": "north"}})
	if err != nil {
		t.Fatal(err)
	}
	waitRecord(t, c, id, func(r *calls.Record) bool { return r.State >= calls.Finished && r.Result.Rule == "batch" })
	recs, err := cl.Calls(t.Context(), admin.CallsQuery{Labels: map[string]string{"tier": "batch"}})
	if err != nil || len(recs) != 2 {
		t.Fatalf("calls with tier=batch: %d %v, want 2", len(recs), err)
	}
	recs, err = cl.Calls(t.Context(), admin.CallsQuery{Labels: map[string]string{"tier": "batch", "site": "north"}})
	if err != nil || len(recs) != 1 || recs[0].ID != id {
		t.Fatalf("calls with tier=batch and site=north: %+v %v, want %s", recs, err, id)
	}
	_, err = cl.Call(t.Context(), "echo", nil, admin.CallOptions{Labels: map[string]string{"bad key": "x"}})
	if ce, ok := errors.AsType[*admin.CallError](err); !ok || ce.HTTPStatus != http.StatusBadRequest || ce.Doc.Error.Code != "bad_request" ||
		!strings.Contains(ce.Doc.Error.Message, `labels: key "bad key"`) {
		t.Fatalf("a call with a bad label key: %v, want 400 bad_request naming the key", err)
	}
}

// A route labels its calls: a rule on the label places a device's
// message.
func TestPlacementByRouteLabels(t *testing.T) {
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - name: echo
    module: builtin:echo
    placement: [{name: from-sensors, when: "call.labels.origin == 'sensor'", run: [local]}]
routes:
  - {topic: "sensors/+/in", task: echo, qos: 1, labels: {origin: sensor}}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	ms := c.routes.Load().Match("sensors/s1/in")
	if len(ms) != 1 {
		t.Fatalf("matches %+v", ms)
	}
	call := durableCall(ms[0], "sensors/s1/in", []byte("reading"))
	if _, err := c.cloud.ready.Accept([]*calls.Call{call}); err != nil {
		t.Fatal(err)
	}
	rec := waitRecord(t, c, call.ID, func(r *calls.Record) bool { return r.State >= calls.Finished })
	if rec.Labels["origin"] != "sensor" || rec.Result.Rule != "from-sensors" {
		t.Fatalf("route call: labels %v, result %+v; want origin=sensor, by from-sensors", rec.Labels, rec.Result)
	}
}

// envs.cloud.provision_seconds is the expected time to upload the task's
// module to the control plane: above 0 before the control plane is known
// to hold it, 0 once it ran it. A rule on it sends the first call to the
// cloud by one rule and the next by another.
func TestPlacementByProvisionSeconds(t *testing.T) {
	cfg, err := configs.Parse([]byte(cloudNodeConfig(t, server.Options{Dir: t.TempDir(), RunWorkers: 2})+`
tasks:
  - name: echo
    module: builtin:echo
    placement:
      - {name: cloud-warm, when: "envs.cloud.provision_seconds == 0.0 && envs.local.provision_seconds == 0.0", run: [cloud]}
      - {name: cloud-cold, when: "envs.cloud.provision_seconds > 0.0 && envs.cloud.provision_seconds < 2.0", run: [cloud]}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	deadline := time.Now().Add(20 * time.Second)
	for runs, up := c.cloud.link.CloudRuns(); !up || runs.Workers == 0; runs, up = c.cloud.link.CloudRuns() {
		if time.Now().After(deadline) {
			t.Fatalf("cloud pool %+v, link up %v: never advertised", runs, up)
		}
		time.Sleep(20 * time.Millisecond)
	}
	info, _ := c.engine.Task("echo")
	link := c.cloud.link.Link()
	want := (link.RTT + time.Duration(float64(info.Size)/link.BytesPerSec*float64(time.Second))).Seconds()
	if got := c.envs.input(calls.New("echo", nil, calls.Source{}), mustTask(t, c, "echo")).Envs["cloud"].ProvisionSeconds; got != want {
		t.Fatalf("cold cloud: provision_seconds %v, want %v (one package of %d bytes over %+v)", got, want, info.Size, link)
	}
	for i, rule := range []string{"cloud-cold", "cloud-warm"} {
		r, err := c.Call(context.Background(), calls.New("echo", []byte("x"), calls.Source{Kind: "test"}))
		if err != nil || !r.OK() || r.Env != "cloud" || r.Rule != rule {
			t.Fatalf("call %d: %+v %v, want ok in the cloud by %s", i, r, err, rule)
		}
	}
}

// mustTask is the task name runs as.
func mustTask(t *testing.T, c *Coordinator, name string) tasks.Task {
	t.Helper()
	task, ok := c.envs.task(name)
	if !ok {
		t.Fatalf("no task %s", name)
	}
	return task
}

// envs['peer:NAME'].provision_seconds: above 0 while the peer is not
// known to hold the task's module (nothing sent yet), 0 once it asked for
// the module, got it and ran the call.
func TestPlacementByPeerProvisionSeconds(t *testing.T) {
	mod := wasmtest.WAT(t, "../examples/tasks/wat/echo.wat", "")
	peer := peerNode(t)
	pcfg := peer.cfg.Load()
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - name: echo
    module: `+mod+`
    placement:
      - {name: warm-peer, when: "envs['peer:b'].provision_seconds == 0.0", run: ["peer:b"]}
      - {name: cold-peer, when: "envs['peer:b'].provision_seconds > 0.0", run: ["peer:b"]}
placement:
  peers: {refresh: 200ms, list: [{name: b, url: "http://`+peer.AdminAddr()+`", token_file: `+pcfg.Admin.TokenPath(pcfg.DataDir)+`}]}
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	deadline := time.Now().Add(20 * time.Second)
	for c.envs.peers.pick("peer:b") == nil {
		if time.Now().After(deadline) {
			t.Fatal("peer b never up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, rule := range []string{"cold-peer", "warm-peer", "warm-peer"} {
		r, err := c.Call(context.Background(), calls.New("echo", []byte("hi"), calls.Source{Kind: "test"}))
		if err != nil || !r.OK() || r.Env != "peer:b" || r.Rule != rule {
			t.Fatalf("call %d: %+v %v, want ok on peer:b by %s", i, r, err, rule)
		}
	}
}
