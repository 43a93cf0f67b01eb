package coordinator

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// chainRules place the calls a chain makes (source task) by their labels:
// here with tier=batch, else on the cloud, which a node without cloud.url
// never has, so the call is rejected and its caller fails.
const chainRules = `
    placement:
      - {name: child-batch, when: "call.source == 'task' && 'tier' in call.labels && call.labels.tier == 'batch'", run: [local]}
      - {name: child-unlabelled, when: "call.source == 'task'", run: [cloud]}`

// chainNode starts a node with the task chain (runtime/testdata/chain.wat:
// input [n, mode] calls chain [n-1, mode] by call ('s') or call_async
// ('a'), n = 0 answers "leaf"), placed by rules, then placement.
func chainNode(t *testing.T, rules, placement string) *Coordinator {
	t.Helper()
	cfg, err := configs.Parse([]byte("data_dir: "+t.TempDir()+`
admin: {listen: "`+mqtttest.FreeAddr(t)+`"}
mqtt: {broker: {listen: "`+mqtttest.FreeAddr(t)+`"}}
tasks:
  - name: chain
    module: `+wasmtest.WAT(t, "../runtime/testdata/chain.wat", "")+`
    limits: {concurrency: 8, timeout: 20s}
    permissions: {call: [chain]}`+rules+`
`+placement), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return startCoordinator(t, cfg)
}

// chainCall runs chain [1, mode] on c with labels.
func chainCall(t *testing.T, c *Coordinator, mode byte, labels map[string]string) calls.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	call := calls.New("chain", []byte{1, mode}, calls.Source{Kind: "test"})
	call.Labels = labels
	res, err := c.Call(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A call a task makes (call, call_async) carries its caller's labels:
// the rules place it by them, and the journal keeps them with a journaled
// caller's call_async child, which calls ls --label finds beside its
// parent.
func TestChildCallsInheritLabels(t *testing.T) {
	c := chainNode(t, chainRules, "")
	batch := map[string]string{"tier": "batch", "site": "north"}
	for _, mode := range []byte{'s', 'a'} {
		if res := chainCall(t, c, mode, batch); !res.OK() || string(res.Output) != "leaf" {
			t.Errorf("mode %c, labelled: %+v, want leaf from a child placed by child-batch", mode, res)
		}
		if res := chainCall(t, c, mode, nil); res.OK() || !strings.Contains(res.Error, "rejected") {
			t.Errorf("mode %c, without labels: %+v, want the child rejected by child-unlabelled", mode, res)
		}
	}

	parent := calls.New("chain", []byte{1, 'a'}, calls.Source{Kind: "cloud"})
	parent.Effect, parent.Labels = calls.Idempotent, batch
	if _, err := c.cloud.ready.Accept([]*calls.Call{parent}); err != nil {
		t.Fatal(err)
	}
	rec := waitRecord(t, c, parent.ID, func(r *calls.Record) bool { return r.State >= calls.Finished })
	if !rec.Result.OK() || string(rec.Result.Output) != "leaf" {
		t.Fatalf("journaled parent: %+v", rec.Result)
	}
	cfg := c.cfg.Load()
	cl, err := admin.Dial(admin.ClientOptions{Addr: c.AdminAddr(), DaemonTokenFile: cfg.Admin.TokenPath(cfg.DataDir)})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cl.Calls(t.Context(), admin.CallsQuery{Labels: map[string]string{"site": "north"}})
	if err != nil || len(recs) != 2 {
		t.Fatalf("calls ls --label site=north: %d records, %v; want the parent and its child", len(recs), err)
	}
	var child *calls.Record
	for i := range recs {
		if recs[i].Parent == parent.ID {
			child = &recs[i]
		}
	}
	if child == nil || !maps.Equal(child.Labels, batch) || child.Result.Rule != "child-batch" || child.Source.Kind != "task" {
		t.Fatalf("journaled child: %+v, want labels %v, placed by child-batch", child, batch)
	}
}

// A call placed on a peer keeps its labels there: the calls it makes on
// the peer inherit them and the peer's own rules place those by them.
func TestPeerCallKeepsLabels(t *testing.T) {
	peer := chainNode(t, chainRules, "")
	pcfg := peer.cfg.Load()
	c := chainNode(t, `
    placement: [{name: to-peer, when: "call.source != 'task'", run: ["peer:b"]}]`, `
placement:
  peers: {refresh: 200ms, list: [{name: b, url: "http://`+peer.AdminAddr()+`", token_file: `+pcfg.Admin.TokenPath(pcfg.DataDir)+`}]}`)
	deadline := time.Now().Add(20 * time.Second)
	for c.envs.peers.pick("peer:b") == nil {
		if time.Now().After(deadline) {
			t.Fatal("peer b never up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	batched := peer.envs.decisions.WithLabelValues("local", "child-batch")
	for i, mode := range []byte{'a', 's'} {
		res := chainCall(t, c, mode, map[string]string{"tier": "batch"})
		if !res.OK() || string(res.Output) != "leaf" || res.Env != "peer:b" {
			t.Fatalf("mode %c, labelled: %+v, want leaf on peer:b", mode, res)
		}
		if got := testutil.ToFloat64(batched); got != float64(i+1) {
			t.Fatalf("mode %c: the peer placed %v children by child-batch, want %d", mode, got, i+1)
		}
	}
	if res := chainCall(t, c, 'a', nil); res.OK() || res.Env != "peer:b" || !strings.Contains(res.Error, "rejected") {
		t.Fatalf("without labels: %+v, want failed on peer:b, its child rejected there", res)
	}
	// A peer refuses a call with a label no node could have given.
	have, _ := peer.moduleOf("chain")
	_, _, err := peer.PeerCall(t.Context(), admin.PeerCall{ID: "c1", Caller: "a", Task: "chain", Digest: "sha256:" + have,
		Input: []byte{0, 'a'}, Labels: map[string]string{"bad key": "x"}})
	if err == nil || !strings.Contains(err.Error(), `call c1 of a: labels: key "bad key"`) {
		t.Fatalf("a peer call with a bad label: %v, want invalid naming the call and the key", err)
	}
}
