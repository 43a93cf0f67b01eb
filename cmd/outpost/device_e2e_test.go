package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices"
	"github.com/outpost-edge/outpost/devices/mqtttest"
)

// addDevice registers a device with the CLI (args: its id and flags) and
// returns its secret.
func addDevice(t *testing.T, d *daemon, args ...string) string {
	t.Helper()
	out, code := runCLI(t, append([]string{"device", "add", "--config", d.cfg, "-o", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("device add %v: exit %d:\n%s", args, code, out)
	}
	var a admin.AddedDevice
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &a); err != nil || len(a.Secret) < 20 {
		t.Fatalf("device add %v: %v:\n%s", args, err, out)
	}
	return a.Secret
}

// Devices registered with the CLI log in to the embedded broker with their
// secrets and reach only their own namespace; what d1 forges for d2 is
// never delivered, and d1 reads nothing of d2's. Disabling and removing a
// device lock it out.
func TestDeviceIdentitiesAndRules(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt:
  broker:
    listen: "{{broker}}"
    groups:
      sensors: [{publish: ["telemetry/{id}/#"]}]
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
`)
	s1, s2 := addDevice(t, d, "d1", "--group", "sensors"), addDevice(t, d, "d2")
	if out, code := runCLI(t, "device", "add", "d1", "--config", d.cfg); code != 1 || !strings.Contains(out, "already registered") {
		t.Errorf("second add of d1: exit %d:\n%s", code, out)
	}
	if strings.Contains(d.logs.String(), s1) {
		t.Error("a device secret is in the daemon's log")
	}
	as := func(id, secret string) string {
		return strings.Replace(d.mqtt, "tcp://", "tcp://"+id+":"+secret+"@", 1)
	}

	sub2 := mqtttest.Sub(t, as("d2", s2), "devices/d2/#", 0)
	sub1 := mqtttest.Sub(t, as("d1", s1), "devices/d1/#", 0)
	// d1 subscribing to every device's topics is refused (SUBACK 0x80).
	all := exec.Command("mosquitto_sub", "-h", "127.0.0.1", "-p", d.mqtt[strings.LastIndex(d.mqtt, ":")+1:], "-u", "d1", "-P", s1, "-t", "devices/#", "-C", "1", "-W", "5")
	if out, err := all.CombinedOutput(); !strings.Contains(string(out), "All subscription requests were denied") {
		t.Errorf("d1 subscribing to devices/#: %v: %s", err, out)
	}
	mqtttest.Pub(t, as("d1", s1), "devices/d2/in", "forged", 0)
	mqtttest.Pub(t, as("d1", s1), "devices/d1/in", "mine", 0)
	mqtttest.Pub(t, as("d2", s2), "devices/d2/in", "real", 1)
	// A message and the echo's reply to it may arrive in either order: the
	// broker delivers a QoS 1 message once it is journaled, as the echo
	// runs from the journal.
	if got := sub2.Wait(2, 10*time.Second); strings.Join(slices.Sorted(slices.Values(got)), "|") != "devices/d2/in real|devices/d2/out real" {
		t.Errorf("d2 got %q", got)
	}
	if got := sub1.Wait(2, 10*time.Second); strings.Join(slices.Sorted(slices.Values(got)), "|") != "devices/d1/in mine|devices/d1/out mine" {
		t.Errorf("d1 got %q", got)
	}
	if strings.Contains(sub2.Output(), "forged") || strings.Contains(sub1.Output(), "real") {
		t.Errorf("a message crossed devices:\nd1: %s\nd2: %s", sub1.Output(), sub2.Output())
	}
	// Anonymous clients on loopback still work outside registered namespaces.
	anon := mqtttest.Sub(t, d.mqtt, "devices/+/out", 1)
	mqtttest.Pub(t, d.mqtt, "devices/d2/in", "anonymous forged", 0)
	mqtttest.Pub(t, d.mqtt, "devices/guest/in", "hello", 0)
	if got := anon.Wait(1, 10*time.Second); got[0] != "devices/guest/out hello" {
		t.Errorf("anonymous got %q", got)
	}

	if err := mqtttest.PubErr(t, as("d1", s2), "devices/d1/in", "wrong secret", 1); err == nil {
		t.Error("d1 logged in with d2's secret")
	}
	out, code := runCLI(t, "device", "ls", "--config", d.cfg)
	if code != 0 || !regexp.MustCompile(`(?m)^d1\s+enabled\s+connected\s+sensors\s+\S+\s+127\.0\.0\.1:\d+$`).MatchString(out) || !regexp.MustCompile(`(?m)^d2\s+enabled\s+connected\s+none\s`).MatchString(out) {
		t.Errorf("device ls: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "device", "disable", "d2", "--config", d.cfg); code != 0 || !strings.Contains(out, "d2 disabled") {
		t.Errorf("device disable: exit %d:\n%s", code, out)
	}
	if err := mqtttest.PubErr(t, as("d2", s2), "devices/d2/in", "disabled", 1); err == nil {
		t.Error("a disabled device logged in")
	}
	if out, code := runCLI(t, "device", "enable", "d2", "--config", d.cfg); code != 0 || !strings.Contains(out, "d2 enabled") {
		t.Errorf("device enable: exit %d:\n%s", code, out)
	}
	mqtttest.Pub(t, as("d2", s2), "devices/d2/in", "back", 1)
	if out, code := runCLI(t, "device", "rm", "d2", "--config", d.cfg); code != 0 {
		t.Errorf("device rm: exit %d:\n%s", code, out)
	}
	if err := mqtttest.PubErr(t, as("d2", s2), "devices/d2/in", "removed", 1); err == nil {
		t.Error("a removed device logged in")
	}
	if out, code := runCLI(t, "device", "show", "d2", "--config", d.cfg); code != 1 || !strings.Contains(out, "no such device") {
		t.Errorf("device show of a removed device: exit %d:\n%s", code, out)
	}
	resp := d.get("/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`outpost_devices_acl_denied_total\{device="d1"\} [1-9]`).MatchString(string(body)) {
		t.Errorf("denials of d1 not counted:\n%s", grepLines(string(body), "acl_denied"))
	}
	// Each denial is also in the recent violations, newest first.
	resp = d.get("/v1/device-violations")
	var vs []devices.Violation
	err := json.NewDecoder(resp.Body).Decode(&vs)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range vs {
		seen[v.Device+" "+v.Action+" "+v.Topic+" "+v.Reason] = true
	}
	for _, want := range []string{"d1 subscribe devices/# acl", "d1 publish devices/d2/in acl", " publish devices/d2/in acl"} {
		if !seen[want] {
			t.Errorf("GET /v1/device-violations lacks %q: %+v", want, vs)
		}
	}
	// The registry is in the state store: it survives a restart.
	d.stop(syscall.SIGTERM, 20*time.Second)
	d.start()
	mqtttest.Pub(t, as("d1", s1), "devices/d1/in", "after restart", 1)
}

// export-mosquitto writes files a real Mosquitto enforces: a device logs
// in with its secret and uses its namespace and its group's grants; a
// wrong secret and a disabled device are refused; a device's forgery on
// another's topic is not delivered.
func TestDeviceExportMosquitto(t *testing.T) {
	d := startDaemon(t, `
admin: {listen: "{{admin}}"}
mqtt:
  broker:
    listen: "{{broker}}"
    groups:
      sensors: [{publish: ["telemetry/{id}/#"], subscribe: ["telemetry/#"]}]
`)
	s1, s2, s3 := addDevice(t, d, "d1", "--group", "sensors"), addDevice(t, d, "d2"), addDevice(t, d, "d3")
	if out, code := runCLI(t, "device", "disable", "d3", "--config", d.cfg); code != 0 {
		t.Fatalf("device disable: exit %d:\n%s", code, out)
	}
	if out, code := runCLI(t, "device", "export-mosquitto", "--config", d.cfg, "--acl-file", "acl"); code != 2 || !strings.Contains(out, "give both --password-file FILE and --acl-file FILE") {
		t.Errorf("export without --password-file: exit %d:\n%s", code, out)
	}
	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	out, code := runCLI(t, "device", "export-mosquitto", "--config", d.cfg, "--password-file", pw, "--acl-file", acl)
	if code != 0 || !strings.Contains(out, "wrote 2 devices to "+pw+" and "+acl) || !strings.Contains(out, "left out 1 disabled devices: d3") {
		t.Fatalf("export-mosquitto: exit %d:\n%s", code, out)
	}
	if fi, err := os.Stat(pw); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file: %v %v", fi, err)
	}
	m := mqtttest.NewMosquitto(t, mqtttest.WithConfig("allow_anonymous false", "password_file "+pw, "acl_file "+acl))
	m.Start()
	as := func(id, secret string) string { return "tcp://" + id + ":" + secret + "@" + m.Addr() }
	if err := mqtttest.PubErr(t, as("d1", s2), "devices/d1/in", "x", 0); err == nil {
		t.Error("d1 with d2's secret logged in")
	}
	if err := mqtttest.PubErr(t, as("d3", s3), "devices/d3/in", "x", 0); err == nil {
		t.Error("disabled d3 logged in")
	}
	sub1 := mqtttest.Sub(t, as("d1", s1), "devices/#", 0)
	sub2 := mqtttest.Sub(t, as("d2", s2), "devices/d2/#", 0)
	mqtttest.Pub(t, as("d1", s1), "devices/d2/in", "forged", 1)
	mqtttest.Pub(t, as("d2", s2), "devices/d2/out", "real", 1)
	mqtttest.Pub(t, as("d1", s1), "devices/d1/out", "mine", 1)
	if got := sub2.Wait(1, 10*time.Second); len(got) != 1 || got[0] != "devices/d2/out real" {
		t.Errorf("d2 got %q", got)
	}
	if got := sub1.Wait(1, 10*time.Second); len(got) != 1 || got[0] != "devices/d1/out mine" {
		t.Errorf("d1 got %q", got)
	}
	// The sensors group's grants are d1's, not d2's.
	tele := mqtttest.Sub(t, as("d1", s1), "telemetry/#", 0)
	mqtttest.Pub(t, as("d2", s2), "telemetry/d2/t", "forged", 1)
	mqtttest.Pub(t, as("d1", s1), "telemetry/d1/t", "21", 1)
	if got := tele.Wait(1, 10*time.Second); len(got) != 1 || got[0] != "telemetry/d1/t 21" {
		t.Errorf("d1 got %q on telemetry/#", got)
	}
}
