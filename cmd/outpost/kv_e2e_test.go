package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The WAT counter example on a QoS 1 route, fed 3,000 distinct keys in one
// burst by mosquitto_pub -l: every call succeeds. Concurrent kv_put calls
// used to fail with badger's "Transaction Conflict. Please retry" (a few
// in thousands) because each read and wrote one per-task size key. The
// journaled intake spaces the calls out, so this run seldom hit the
// conflict even then; coordinator's TestKVConcurrentPutsDistinctKeys
// reproduces it every time.
func TestKVCounterBurstOnQoS1Route(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
scheduler: {workers: 8}
tasks:
  - name: counter
    module: `+exampleWasm(t, "counter")+`
    limits: {concurrency: 8}
    permissions: {publish: ["counter/#"], kv_quota: 1MiB}
routes: [{topic: "dev/+/in", task: counter, qos: 1}]
`)
	const n = 3000
	var keys strings.Builder
	for i := range n {
		fmt.Fprintf(&keys, "k1-%05d\n", i)
	}
	pub := exec.Command("mosquitto_pub", "-L", "mqtt://"+strings.TrimPrefix(d.mqtt, "tcp://")+"/dev/x/in", "-q", "1", "-l")
	pub.Stdin = strings.NewReader(keys.String())
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	waitUntil(t, 60*time.Second, "all calls ran", func() bool {
		return d.metric(`outpost_runtime_calls_total{task="counter"}`) >= n
	})
	if f := d.metric(`outpost_runtime_call_errors_total{kind="failed",task="counter"}`); f != 0 {
		t.Errorf("%v of %d calls failed", f, n)
	}
	if f := d.metric(`outpost_runtime_host_calls_total{code="failed",function="kv_put"}`); f != 0 {
		t.Errorf("kv_put returned failed %v times", f)
	}
}
