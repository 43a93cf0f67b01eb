package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/wasmtest"
)

// publishTask is the config of the publish fixture (cmd/outpost/testdata/publish.wat).
func publishTask(t *testing.T) string {
	mod := wasmtest.WAT(t, filepath.Join("testdata", "publish.wat"), "")
	return `tasks:
  - name: pub
    module: ` + mod + `
    limits: {max_input: 4MiB, memory: 8MiB}
    permissions: {publish: ["out/#"]}
`
}

// publish runs the fixture with n payload bytes and returns
// outpost.publish's code and held message.
func (d *daemon) publish(n int) (int32, string) {
	d.t.Helper()
	out, err := d.call("pub", strings.Repeat("p", n))
	if err != nil || len(out) < 4 {
		d.t.Fatalf("pub call: %q %v", out, err)
	}
	return int32(binary.LittleEndian.Uint32([]byte(out))), out[4:]
}

// connectedFor fails unless the daemon reports its MQTT client connected
// at every health check during d.
func (d *daemon) connectedFor(dur time.Duration) {
	d.t.Helper()
	for end := time.Now().Add(dur); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		h, err := d.admin.Health(context.Background())
		if err != nil || !h.MQTT.Connected {
			d.t.Fatalf("health %+v %v: the daemon lost MQTT", h, err)
		}
	}
}

// A task publishing more than the embedded broker's max_message_size gets
// too_large and nothing is sent: the daemon stays on MQTT, and messages
// up to the limit still go out. Before, publish returned 0, the broker
// dropped the daemon's client and the message was resent on every
// reconnect.
func TestPublishOverBrokerLimitEmbedded(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}", max_message_size: 64KiB}}
`+publishTask(t))
	sub := mqtttest.Sub(t, d.mqtt, "out/#", 1)
	for _, n := range []int{64 << 10, 300 << 10, 1 << 20, 3 << 20} {
		code, held := d.publish(n)
		if code != -4 || !strings.Contains(held, "65536") {
			t.Fatalf("publish of %d bytes = %d %q, want -4 (too_large) naming the limit", n, code, held)
		}
	}
	d.connectedFor(time.Second)
	// The largest payload that fits: 64 KiB less the header (2+7 topic, 2 id, 4 fixed).
	if code, held := d.publish(64<<10 - 15); code != 0 {
		t.Fatalf("publish at the limit = %d %q", code, held)
	}
	if got := sub.Wait(1, 10*time.Second); len(got[0]) != len("out/big ")+64<<10-15 {
		t.Fatalf("received %d bytes", len(got[0]))
	}
}

// With an external Mosquitto, mqtt.max_message_size holds the daemon to
// the broker's limit: over it, too_large and nothing sent.
func TestPublishOverBrokerLimitMosquitto(t *testing.T) {
	url := mqtttest.StartMosquitto(t, mqtttest.WithConfig("message_size_limit 20000"))
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt: {url: "%s", max_message_size: 20000}
`, url)+publishTask(t))
	d.mqtt = url
	sub := mqtttest.Sub(t, url, "out/#", 1)
	if code, held := d.publish(30000); code != -4 || !strings.Contains(held, "20000") {
		t.Fatalf("publish over the limit = %d %q", code, held)
	}
	if code, held := d.publish(10000); code != 0 {
		t.Fatalf("publish under the limit = %d %q", code, held)
	}
	if got := sub.Wait(1, 10*time.Second); len(got[0]) != len("out/big ")+10000 {
		t.Fatalf("received %d bytes", len(got[0]))
	}
	d.connectedFor(500 * time.Millisecond)
}

// An external broker whose limit is below the daemon's setting closes the
// connection on an oversized packet (Mosquitto's max_packet_size). The
// message is sent again at most once after a reconnect, then dropped:
// the daemon gets back on MQTT for good, and says what it dropped.
func TestPublishRefusedByBrokerNotResentForever(t *testing.T) {
	url := mqtttest.StartMosquitto(t, mqtttest.WithConfig("max_packet_size 20000"))
	d := startDaemon(t, fmt.Sprintf(`
admin: {listen: "{{admin}}"}
mqtt: {url: "%s", max_message_size: 1MiB, max_reconnect_interval: 1s}
`, url)+publishTask(t))
	d.mqtt = url
	d.publish(30000) // not acknowledged: the broker closes the connection
	d.waitLog(`mqtt publish dropped.*topic=out/big payload_bytes=30000`, 20*time.Second)
	waitUntil(t, 10*time.Second, "reconnected", func() bool {
		h, err := d.admin.Health(context.Background())
		return err == nil && h.MQTT.Connected
	})
	d.connectedFor(3 * time.Second)
	if got := d.metric("outpost_mqtt_publish_abandoned_total"); got != 1 {
		t.Errorf("outpost_mqtt_publish_abandoned_total = %v, want 1", got)
	}
	sub := mqtttest.Sub(t, url, "out/#", 1)
	if code, held := d.publish(100); code != 0 {
		t.Fatalf("publish after the drop = %d %q", code, held)
	}
	sub.Wait(1, 10*time.Second)
}

// A route's reply that does not fit the broker's limit (here the output
// echoed to a long reply topic) is not sent, and cannot cut the daemon
// off: the device gets an error document with code too_large instead.
func TestReplyOverBrokerLimit(t *testing.T) {
	long := strings.Repeat("r", 200)
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}", max_message_size: 1KiB}}
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "in/+", task: echo, reply: "out/{1}/`+long+`", qos: 1}]
`)
	sub := mqtttest.Sub(t, d.mqtt, "out/#", 2)
	mqtttest.Pub(t, d.mqtt, "in/a", strings.Repeat("x", 900), 1)
	mqtttest.Pub(t, d.mqtt, "in/b", "small", 1)
	got := sub.Wait(2, 10*time.Second)
	slices.Sort(got) // out/a before out/b, whichever call finished first
	if want := `out/a/` + long + ` {"error":{"code":"too_large","message":"the output of 900 bytes does not fit the broker's message size limit of 1024 bytes"}`; !strings.HasPrefix(got[0], want) {
		t.Errorf("reply to the large message %q, want it to start with %q", got[0], want)
	}
	if got[1] != "out/b/"+long+" small" {
		t.Errorf("reply to the small message %q", got[1])
	}
	d.connectedFor(500 * time.Millisecond)
}
