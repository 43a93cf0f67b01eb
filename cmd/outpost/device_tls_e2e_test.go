package main

import (
	"crypto/x509"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/coordinator/admin"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/testpki"
)

// Devices log in to the daemon's TLS listener with client certificates
// (mosquitto_pub/sub with --cafile, --cert, --key); an expired certificate
// or one of another CA is refused. A SIGHUP with new group rules and a new
// server certificate keeps connected devices connected, takes a removed
// grant away at once, and serves the next handshake with the new
// certificate.
func TestDeviceCertificatesAndReload(t *testing.T) {
	dir := t.TempDir()
	devCA := testpki.New(t, dir, "devices")
	oldCA, newCA := testpki.New(t, dir, "old"), testpki.New(t, dir, "new")
	certFile, keyFile := filepath.Join(dir, "broker.pem"), filepath.Join(dir, "broker-key.pem")
	oldCA.ServerAt(t, "old-server", certFile, keyFile, net.ParseIP("127.0.0.1"))
	tlsAddr := mqtttest.FreeAddr(t)
	cfg := `
admin: {listen: "{{admin}}"}
mqtt:
  broker:
    listen: "{{broker}}"
    tls: {listen: "` + tlsAddr + `", cert_file: broker.pem, key_file: broker-key.pem, client_ca_file: devices-ca.pem}
    groups:
      sensors: [{subscribe: ["fleet/+/cmd"]}]
tasks: [{name: echo, module: builtin:echo}]
routes: [{topic: "devices/+/in", task: echo, reply: "devices/{1}/out"}]
`
	d := startDaemonIn(t, dir, cfg)
	out, code := runCLI(t, "device", "add", "d1", "--group", "sensors", "--config", d.cfg, "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &admin.AddedDevice{}) != nil {
		t.Fatalf("device add d1: exit %d:\n%s", code, out)
	}
	cert, key := devCA.Client(t, "d1")
	expCert, expKey := devCA.Client(t, "d1-expired", func(c *x509.Certificate) { testpki.Expired(c); c.Subject.CommonName = "d1" })
	otherCert, otherKey := testpki.New(t, t.TempDir(), "other").Client(t, "d1")
	asDevice := func(ca, cert, key string) string {
		return "mqtts://" + tlsAddr + "?" + url.Values{"cafile": {ca}, "cert": {cert}, "key": {key}}.Encode()
	}
	d1 := asDevice(oldCA.CAFile, cert, key)

	own := mqtttest.Sub(t, d1, "devices/d1/#", 0)
	fleet := mqtttest.Sub(t, d1, "fleet/+/cmd", 0)
	mqtttest.Pub(t, d1, "devices/d1/in", "over tls", 1)
	if got := own.Wait(2, 10*time.Second); strings.Join(got, "|") != "devices/d1/in over tls|devices/d1/out over tls" {
		t.Fatalf("d1 over TLS got %q", got)
	}
	mqtttest.Pub(t, d.mqtt, "fleet/a/cmd", "before", 0) // anonymous, on loopback
	if got := fleet.Wait(1, 10*time.Second); got[0] != "fleet/a/cmd before" {
		t.Fatalf("d1's group grant: %q", got)
	}
	for name, u := range map[string]string{"expired": asDevice(oldCA.CAFile, expCert, expKey), "unknown CA": asDevice(oldCA.CAFile, otherCert, otherKey)} {
		if err := mqtttest.PubErr(t, u, "devices/d1/in", "refused", 0); err == nil {
			t.Errorf("%s certificate accepted", name)
		}
	}

	newCA.ServerAt(t, "new-server", certFile, keyFile, net.ParseIP("127.0.0.1"))
	running, err := os.ReadFile(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfg, []byte(strings.Replace(string(running), `sensors: [{subscribe: ["fleet/+/cmd"]}]`, `sensors: []`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(`msg="broker reloaded`, 10*time.Second)
	d.waitLog(`msg="config reloaded"`, 10*time.Second)
	if strings.Contains(d.logs.String(), "needs a restart") {
		t.Errorf("a broker reload asked for a restart:\n%s", d.logs.String())
	}
	mqtttest.Pub(t, d.mqtt, "fleet/a/cmd", "after", 0)
	mqtttest.Pub(t, asDevice(newCA.CAFile, cert, key), "devices/d1/in", "new cert", 1)
	if got := own.Wait(2, 10*time.Second); strings.Join(got, "|") != "devices/d1/in new cert|devices/d1/out new cert" {
		t.Fatalf("the device connected before the reload got %q", got)
	}
	if strings.Contains(fleet.Output(), "after") {
		t.Errorf("a grant removed by the reload still delivered:\n%s", fleet.Output())
	}
	if err := mqtttest.PubErr(t, d1, "devices/d1/in", "old server cert", 0); err == nil {
		t.Error("the old server certificate is still served after the reload")
	}
}

// outpost check loads the TLS listener's files and names the one that is
// wrong.
func TestCheckBrokerTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.New(t, dir, "ca")
	cert, key := ca.Server(t, "server", net.ParseIP("127.0.0.1"))
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	exposed := filepath.Join(dir, "exposed-key.pem")
	kb, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exposed, kb, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ cert, key, want string }{
		"certificate not PEM":    {garbage, key, garbage},
		"key readable by others": {cert, exposed, "run `chmod 600 " + exposed + "`"},
		"good":                   {cert, key, "ok ("},
	} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "outpost.yaml")
			yaml := "mqtt: {broker: {tls: {listen: 127.0.0.1:8883, cert_file: " + tc.cert + ", key_file: " + tc.key + "}}}\n"
			if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			out, code := runCLI(t, "check", "--config", file)
			if !strings.Contains(out, tc.want) || (code == 0) != (tc.want == "ok (") {
				t.Fatalf("exit %d, want output with %q:\n%s", code, tc.want, out)
			}
		})
	}
}
