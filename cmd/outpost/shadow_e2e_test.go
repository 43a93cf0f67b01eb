package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// deviceURL is the broker URL with a device's login.
func deviceURL(d *daemon, id, secret string) string {
	return strings.Replace(d.mqtt, "tcp://", "tcp://"+id+":"+secret+"@", 1)
}

// nextOn reads a subscriber's messages until one arrives on topic, and
// returns its payload decoded; messages on other topics are skipped.
func nextOn(t *testing.T, s *mqtttest.Subscriber, topic string) map[string]any {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-s.Lines():
			if !ok {
				t.Fatalf("mosquitto_sub exited waiting for %s:\n%s", topic, s.Output())
			}
			tp, payload, _ := strings.Cut(l, " ")
			if tp != topic {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(payload), &m); err != nil {
				t.Fatalf("%s: %v: %s", topic, err, payload)
			}
			return m
		case <-deadline:
			t.Fatalf("nothing on %s in 15s:\n%s", topic, s.Output())
		}
	}
}

// jsonAt is the compact JSON of m's value at a dotted path.
func jsonAt(m map[string]any, path string) string {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return "<none>"
		}
		if v, ok = mm[k]; !ok {
			return "<none>"
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func expectFields(t *testing.T, what string, m map[string]any, want map[string]string) {
	t.Helper()
	for path, w := range want {
		if got := jsonAt(m, path); got != w {
			t.Errorf("%s: %s = %s, want %s (all: %v)", what, path, got, w, m)
		}
	}
}

// A device on the AWS IoT shadow topics, the operator on the CLI: the
// sequences of the AWS device shadow documentation (desired set, delta,
// reported, get, version conflict, named shadow, clientToken), another
// device refused, size limits, and a kill -9 right after the acknowledged
// update.
func TestDeviceShadows(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {broker: {listen: "{{broker}}"}}
`)
	s1, s2 := addDevice(t, d, "d1"), addDevice(t, d, "d2")
	d1, d2 := deviceURL(d, "d1", s1), deviceURL(d, "d2", s2)
	sub := mqtttest.Sub(t, d1, "$aws/things/d1/shadow/#", 0)
	cli := func(args ...string) (map[string]any, string, int) {
		out, code := runCLI(t, append(args, "--config", d.cfg)...)
		var m map[string]any
		if i := strings.Index(out, "{"); i >= 0 {
			_ = json.Unmarshal([]byte(out[i:]), &m)
		}
		return m, out, code
	}

	// The operator sets desired: the device hears accepted, delta, documents.
	if _, out, code := cli("device", "shadow", "update", "d1", "--desired", `{"led":"on","cfg":{"interval":30}}`); code != 0 {
		t.Fatalf("shadow update: exit %d:\n%s", code, out)
	}
	expectFields(t, "update/accepted", nextOn(t, sub, "$aws/things/d1/shadow/update/accepted"),
		map[string]string{"state": `{"desired":{"cfg":{"interval":30},"led":"on"}}`, "version": "1"})
	delta := nextOn(t, sub, "$aws/things/d1/shadow/update/delta")
	expectFields(t, "update/delta", delta, map[string]string{"state": `{"cfg":{"interval":30},"led":"on"}`, "version": "1"})
	if ts := jsonAt(delta, "metadata.led.timestamp"); !regexp.MustCompile(`^\d{10}$`).MatchString(ts) {
		t.Errorf("delta metadata timestamp %s", ts)
	}
	expectFields(t, "update/documents", nextOn(t, sub, "$aws/things/d1/shadow/update/documents"),
		map[string]string{"previous": "<none>", "current.version": "1", "current.state.desired.led": `"on"`})

	// The device reports, at QoS 1, with a clientToken.
	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/update", `{"state":{"reported":{"led":"on","cfg":{"interval":10}}},"clientToken":"dev-1"}`, 1)
	expectFields(t, "reported accepted", nextOn(t, sub, "$aws/things/d1/shadow/update/accepted"),
		map[string]string{"clientToken": `"dev-1"`, "version": "2", "state.reported.cfg.interval": "10"})
	expectFields(t, "documents 2", nextOn(t, sub, "$aws/things/d1/shadow/update/documents"),
		map[string]string{"previous.version": "1", "current.version": "2", "clientToken": `"dev-1"`})

	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/get", `{"clientToken":"g"}`, 0)
	expectFields(t, "get/accepted", nextOn(t, sub, "$aws/things/d1/shadow/get/accepted"),
		map[string]string{"state.delta": `{"cfg":{"interval":30}}`, "version": "2", "clientToken": `"g"`, "state.reported.led": `"on"`})

	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/update", `{"state":{"desired":{"led":"off"}},"version":1,"clientToken":"old"}`, 1)
	expectFields(t, "version conflict", nextOn(t, sub, "$aws/things/d1/shadow/update/rejected"),
		map[string]string{"code": "409", "message": `"Version conflict"`, "clientToken": `"old"`})
	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/update", `{"state":{"desired":{"blob":"`+strings.Repeat("x", 9000)+`"}}}`, 1)
	expectFields(t, "too large", nextOn(t, sub, "$aws/things/d1/shadow/update/rejected"), map[string]string{"code": "413"})
	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/update", `{"state":{"wanted":{}}}`, 0)
	expectFields(t, "bad node", nextOn(t, sub, "$aws/things/d1/shadow/update/rejected"),
		map[string]string{"code": "400", "message": `"State contains an invalid node: 'wanted'"`})

	// A named shadow lives beside the classic one.
	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/name/config/update", `{"state":{"reported":{"fw":"1.2"}}}`, 1)
	expectFields(t, "named accepted", nextOn(t, sub, "$aws/things/d1/shadow/name/config/update/accepted"), map[string]string{"version": "1"})
	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/name/other/get", ``, 0)
	expectFields(t, "named 404", nextOn(t, sub, "$aws/things/d1/shadow/name/other/get/rejected"),
		map[string]string{"code": "404", "message": `"No shadow exists with name: 'd1~other'"`})

	// d2 can neither change nor read d1's shadow.
	if err := mqtttest.PubErr(t, d2, "$aws/things/d1/shadow/update", `{"state":{"desired":{"led":"forged"}}}`, 1); err == nil {
		t.Error("d2's QoS 1 publish on d1's shadow was acknowledged")
	}
	mqtttest.Pub(t, d2, "$aws/things/d1/shadow/update", `{"state":{"desired":{"led":"forged"}}}`, 0)
	if out, err := runMosquittoSub(d, "d2", s2, "$aws/things/d1/shadow/#"); !strings.Contains(out, "All subscription requests were denied") {
		t.Errorf("d2 subscribing to d1's shadow: %v: %s", err, out)
	}

	show, out, code := cli("device", "shadow", "show", "d1")
	if code != 0 {
		t.Fatalf("shadow show: exit %d:\n%s", code, out)
	}
	expectFields(t, "show", show, map[string]string{"version": "2", "state.desired.led": `"on"`, "state.delta": `{"cfg":{"interval":30}}`})
	if _, out, code := cli("device", "shadow", "ls", "d1"); code != 0 || !regexp.MustCompile(`(?m)^\(classic\)\s+2\s`).MatchString(out) || !regexp.MustCompile(`(?m)^config\s+1\s`).MatchString(out) {
		t.Errorf("shadow ls: exit %d:\n%s", code, out)
	}
	if _, out, code := cli("device", "shadow", "update", "d1", "--desired", `{"led":"off"}`, "--version", "1"); code != 1 || !strings.Contains(out, "Version conflict") {
		t.Errorf("CLI update at an old version: exit %d:\n%s", code, out)
	}
	if _, out, code := cli("device", "shadow", "show", "d2"); code != 1 || !strings.Contains(out, "No shadow exists with name: 'd2'") {
		t.Errorf("show of a missing shadow: exit %d:\n%s", code, out)
	}

	resp := d.get("/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`outpost_devices_shadow_requests_total{op="update",result="409"} 2`, `outpost_devices_shadow_requests_total{op="get",result="accepted"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "shadow"))
		}
	}

	// Acknowledged means on disk: kill -9 right after the PUBACK.
	mqtttest.Pub(t, d1, "$aws/things/d1/shadow/update", `{"state":{"reported":{"cfg":{"interval":30}}}}`, 1)
	d.stop(syscall.SIGKILL, 10*time.Second)
	d.start()
	show, out, _ = cli("device", "shadow", "show", "d1")
	expectFields(t, "after kill -9", show, map[string]string{"version": "3", "state.reported.cfg.interval": "30", "state.delta": "<none>"})
	if t.Failed() {
		t.Logf("show:\n%s", out)
	}

	if _, out, code := cli("device", "shadow", "rm", "d1", "--name", "config"); code != 0 {
		t.Errorf("shadow rm: exit %d:\n%s", code, out)
	}
	if _, out, code := cli("device", "shadow", "ls", "d1"); code != 0 || strings.Contains(out, "config") {
		t.Errorf("shadow ls after rm: exit %d:\n%s", code, out)
	}
}

// runMosquittoSub subscribes once as a device and returns what
// mosquitto_sub printed (a refusal ends it at once).
func runMosquittoSub(d *daemon, id, secret, filter string) (string, error) {
	port := d.mqtt[strings.LastIndex(d.mqtt, ":")+1:]
	out, err := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-u", id, "-P", secret, "-t", filter, "-C", "1", "-W", "5").CombinedOutput()
	return string(out), err
}

// With an external Mosquitto the daemon subscribes to the shadow request
// topics and answers through its own client: a device on Mosquitto gets
// the same replies, and the operator's update reaches it as a delta.
func TestDeviceShadowsExternalBroker(t *testing.T) {
	url := mqtttest.StartMosquitto(t)
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt: {url: "`+url+`"}
`)
	sub := mqtttest.Sub(t, url, "$aws/things/lamp/shadow/#", 0)
	mqtttest.Pub(t, url, "$aws/things/lamp/shadow/update", `{"state":{"reported":{"on":false}},"clientToken":"ext"}`, 1)
	expectFields(t, "accepted", nextOn(t, sub, "$aws/things/lamp/shadow/update/accepted"),
		map[string]string{"version": "1", "clientToken": `"ext"`, "state": `{"reported":{"on":false}}`})
	if out, code := runCLI(t, "device", "shadow", "update", "lamp", "--desired", `{"on":true}`, "--config", d.cfg); code != 0 {
		t.Fatalf("shadow update: exit %d:\n%s", code, out)
	}
	expectFields(t, "delta", nextOn(t, sub, "$aws/things/lamp/shadow/update/delta"), map[string]string{"version": "2", "state": `{"on":true}`})
}
