package main

import (
	"fmt"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/calls"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/syncbuf"
)

// TestMQTTQoS1KillMidBurst with the embedded broker, which dies with the
// daemon: the broker acknowledges a QoS 1 message to the device only once
// its call is journaled (devices.DurablePublish), so every message the
// device saw a PUBACK for is in the journal after the kill -9 and is
// answered (reported) after the restart. The device is mosquitto_pub -d,
// whose debug output says which messages were acknowledged.
func TestMQTTQoS1EmbeddedKillMidBurst(t *testing.T) {
	const n = 400
	d := startDaemon(t, `
node: {id: edge-e}
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out", qos: 1}]
`)
	sub := mqtttest.Sub(t, d.mqtt, "devices/+/out", 0)
	var (
		mu   sync.Mutex
		live = map[string]bool{}
	)
	go func() {
		for l := range sub.Lines() {
			mu.Lock()
			live[strings.TrimPrefix(l, "devices/d1/out ")] = true
			mu.Unlock()
		}
	}()
	seen := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(live)
	}

	u, _ := url.Parse(d.mqtt)
	pub := exec.Command("mosquitto_pub", "-d", "-h", u.Hostname(), "-p", u.Port(), "-V", "mqttv311", "-q", "1", "-t", "devices/d1/in", "-l")
	stdin, err := pub.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var pubOut syncbuf.Buffer
	pub.Stdout, pub.Stderr = &pubOut, &pubOut
	if err := pub.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = pub.Wait(); close(exited) }()
	// Written quickly in the background; the kill lands once a quarter of
	// the burst is acknowledged, with the rest in flight or unsent.
	pubacks := regexp.MustCompile(`received PUBACK \(Mid: (\d+)`)
	var sent atomic.Int64
	go func() {
		for i := range n {
			if _, err := fmt.Fprintf(stdin, "m-%04d\n", i); err != nil {
				return // the connection is gone with the daemon
			}
			sent.Add(1)
			if i%2 == 1 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	waitUntil(t, 20*time.Second, "a quarter of the burst acknowledged", func() bool {
		return len(pubacks.FindAllString(pubOut.String(), -1)) >= n/4
	})
	d.kill9()
	t.Logf("killed the daemon after %d of %d messages were written, %d replies seen", sent.Load(), n, seen())
	_ = stdin.Close()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = pub.Process.Kill()
		<-exited
	}

	// Message i is the i-th PUBLISH of the session: packet id i+1.
	acked := map[string]bool{}
	for _, m := range pubacks.FindAllStringSubmatch(pubOut.String(), -1) {
		mid, _ := strconv.Atoi(m[1])
		acked[fmt.Sprintf("m-%04d", mid-1)] = true
	}

	d.start()
	recs := d.mqttCallsReported(20 * time.Second)
	answered := map[string]int{}
	reruns := 0
	for _, r := range recs {
		if r.Source.Kind != "mqtt" || r.ReplyTo != "devices/d1/out" || r.Effect != calls.Idempotent || r.Result == nil || !r.Result.OK() {
			t.Errorf("journal record %+v", r)
			continue
		}
		answered[string(r.Result.Output)]++
		if r.Attempt > 1 {
			reruns++
		}
	}
	var lost []string
	for m := range acked {
		if answered[m] == 0 {
			lost = append(lost, m)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged messages lost (no answered call in the journal): %v", len(lost), len(acked), lost)
	}
	for m, k := range answered {
		if k > 1 {
			t.Errorf("message %s journaled %d times (one PUBLISH each)", m, k)
		}
	}
	t.Logf("%d written, %d acknowledged, %d journaled, %d replies seen before the kill, %d run again after the restart",
		sent.Load(), len(acked), len(answered), seen(), reruns)
}
