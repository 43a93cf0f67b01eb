package main

import (
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// connectRaw logs in as a device over a raw MQTT 3.1.1 connection with a
// keepalive of one second, and then says nothing: the broker must time it
// out.
func connectRaw(t *testing.T, addr, id, secret string) net.Conn {
	t.Helper()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 4, 0xC2, 0, 1) // level 4; username, password, clean session; keepalive 1s
	body = append(body, str(id+"-raw")...)
	body = append(body, str(id)...)
	body = append(body, str(secret)...)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x, %v", ack, err)
	}
	return conn
}

// Presence events on the documented topics in the AWS lifecycle format,
// with each reason: clean (DISCONNECT), will (connection lost), timeout
// (keepalive) and kicked (disabled); in `device ls` and show, in the
// metrics, and as a route source (a task runs when a device goes away).
func TestDevicePresence(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt:
  broker:
    listen: "{{broker}}"
    groups:
      monitors: [{subscribe: ["$aws/events/presence/#"]}]
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "$aws/events/presence/disconnected/+", task: echo, reply: "devices/mon/gone/{1}"}]
`)
	out, code := runCLI(t, "device", "add", "mon", "--group", "monitors", "--config", d.cfg)
	if code != 0 {
		t.Fatalf("device add mon: %s", out)
	}
	mon := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	s1 := addDevice(t, d, "d1")
	events := mqtttest.Sub(t, deviceURL(d, "mon", mon), "$aws/events/presence/+/d1", 0)
	gone := mqtttest.Sub(t, deviceURL(d, "mon", mon), "devices/mon/gone/+", 0)

	expect := func(event, reason string) map[string]any {
		t.Helper()
		ev := nextOn(t, events, "$aws/events/presence/"+event+"/d1")
		want := map[string]string{"eventType": `"` + event + `"`, "principalIdentifier": `"d1"`, "ipAddress": `"127.0.0.1"`}
		if reason != "" {
			want["reason"] = `"` + reason + `"`
		}
		expectFields(t, event+" "+reason, ev, want)
		for _, k := range []string{"clientId", "timestamp", "sessionIdentifier", "versionNumber"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("%s event has no %s: %v", event, k, ev)
			}
		}
		return ev
	}

	// clean: mosquitto_pub connects, publishes, sends DISCONNECT.
	mqtttest.Pub(t, deviceURL(d, "d1", s1), "devices/d1/x", "hi", 1)
	on := expect("connected", "")
	off := expect("disconnected", "clean")
	expectFields(t, "clean", off, map[string]string{"clientInitiatedDisconnect": "true", "disconnectReason": `"CLIENT_INITIATED_DISCONNECT"`,
		"sessionIdentifier": jsonAt(on, "sessionIdentifier")})
	if got := nextOn(t, gone, "devices/mon/gone/d1"); jsonAt(got, "reason") != `"clean"` {
		t.Errorf("the route's task got %v", got)
	}

	// will: the device's process dies (the broker publishes its will).
	port := d.mqtt[strings.LastIndex(d.mqtt, ":")+1:]
	dev := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-u", "d1", "-P", s1, "-t", "devices/d1/in", "--will-topic", "devices/d1/will", "--will-payload", "bye")
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	expect("connected", "")
	_ = dev.Process.Kill()
	_ = dev.Wait()
	expectFields(t, "will", expect("disconnected", "will"), map[string]string{"clientInitiatedDisconnect": "false", "disconnectReason": `"CONNECTION_LOST"`})
	// timeout: a connection that goes silent past 1.5 keepalives.
	addr := d.mqtt[len("tcp://"):]
	connectRaw(t, addr, "d1", s1)
	expect("connected", "")
	expectFields(t, "timeout", expect("disconnected", "timeout"), map[string]string{"disconnectReason": `"MQTT_KEEP_ALIVE_TIMEOUT"`})

	// kicked: the operator disables a connected device.
	connectRaw(t, addr, "d1", s1)
	expect("connected", "")
	out, code = runCLI(t, "device", "ls", "--config", d.cfg)
	if code != 0 || !regexp.MustCompile(`(?m)^d1\s+enabled\s+connected\s`).MatchString(out) || !regexp.MustCompile(`(?m)^mon\s+enabled\s+connected\s`).MatchString(out) {
		t.Errorf("device ls while connected: exit %d:\n%s", code, out)
	}
	resp := d.get("/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"outpost_devices_connected 2", `outpost_devices_disconnects_total{reason="clean"} 1`,
		`outpost_devices_disconnects_total{reason="will"} 1`, `outpost_devices_disconnects_total{reason="timeout"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "outpost_devices_"))
		}
	}
	if _, code := runCLI(t, "device", "disable", "d1", "--config", d.cfg); code != 0 {
		t.Fatal("device disable")
	}
	expectFields(t, "kicked", expect("disconnected", "kicked"), map[string]string{"disconnectReason": `"SERVER_INITIATED_DISCONNECT"`})
	out, code = runCLI(t, "device", "show", "d1", "--config", d.cfg, "-o", "json")
	var shown map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &shown) != nil {
		t.Fatalf("device show: exit %d:\n%s", code, out)
	}
	expectFields(t, "show", shown, map[string]string{"connected": "false", "disconnect_reason": `"kicked"`})
	out, _ = runCLI(t, "device", "ls", "--config", d.cfg)
	if !regexp.MustCompile(`(?m)^d1\s+disabled\s+disconnected \(kicked\)\s`).MatchString(out) {
		t.Errorf("device ls after the kick:\n%s", out)
	}
}
