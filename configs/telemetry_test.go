package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/telemetry/snmp"
)

// The telemetry section decodes strictly, gets its defaults and is validated
// with every problem reported at its key path (Parse is the daemon's loader).
func TestConfigTelemetrySection(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("x\n"), 0o600)
	good := `
tasks:
  - name: alarm
    module: builtin:echo
telemetry:
  store: {retention: 48h, max_size: 256MiB}
  gnmi:
    targets:
      - name: sw1
        address: 10.0.0.1:57400
        tls: {enabled: true, insecure_skip_verify: true}
        username: admin
        password_file: pw
        subscriptions:
          - {name: counters, paths: [/interfaces/interface/state/counters], sample_interval: 10s}
          - {name: oper, stream_mode: on_change, paths: ["/interfaces/interface[name=*]/state/oper-status"]}
          - {name: sys, mode: poll, interval: 1m, paths: [/system]}
  snmp:
    targets:
      - name: sw2
        address: 10.0.0.2
        community: public
        tables:
          - {oid: 1.3.6.1.2.1.2.2.1, name: /interfaces/interface, index_key: name, index_from: 2, columns: [{column: 10, name: in-octets, rate: true}]}
      - name: sw3
        address: 10.0.0.3:161
        version: "3"
        v3: {username: u, auth_protocol: SHA, auth_password_file: pw, priv_protocol: AES, priv_password_file: pw}
        oids: [{oid: 1.3.6.1.2.1.1.3.0, name: /system/uptime}]
    traps: {listen: "127.0.0.1:9162", communities: [public]}
  gnmi_server: {listen: "127.0.0.1:9339"}
  mqtt: [{paths: [/interfaces/...], qos: 1}]
  triggers: [{task: alarm, path: "/interfaces/interface/state/oper-status", condition: "== DOWN"}]
`
	c, err := Parse([]byte(good), filepath.Join(dir, "outpost.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tc := c.Telemetry.WithDefaults()
	if tc.Store.Retention.Std() != 48*time.Hour || tc.Store.FlushInterval.Std() != time.Second {
		t.Errorf("store %+v", tc.Store)
	}
	g := tc.GNMI.Targets[0]
	if g.PasswordFile != filepath.Join(dir, "pw") || g.Subscriptions[0].Mode != "stream" || g.Subscriptions[0].StreamMode != "sample" || g.Subscriptions[2].Interval.Std() != time.Minute {
		t.Errorf("gnmi target %+v", g)
	}
	if s := tc.SNMP.Targets[0]; s.Version != "2c" || s.Timeout.Std() != 2*time.Second || s.MaxRepetitions != 10 || s.PollTimeout != s.Interval {
		t.Errorf("snmp defaults %+v", s)
	}
	if want := snmp.EngineIDFor(c.Node.ID); tc.SNMP.Traps.EngineID != want || len(want) != 26 {
		t.Errorf("trap engine id %q, want %q derived from node.id", tc.SNMP.Traps.EngineID, want)
	}
	if tc.MQTT[0].Topic != "telemetry/{target}{path}" {
		t.Errorf("mqtt %+v", tc.MQTT[0])
	}
	if got := tc.GNMIServerExpiry(); got != 10*time.Minute {
		t.Errorf("gnmi server expiry %s, want the default 10m", got)
	}
	// A target polled hourly stretches the default to three intervals; an
	// explicit expire_after below two intervals is refused.
	hourly := strings.Replace(good, "        community: public\n", "        community: public\n        interval: 1h\n", 1)
	c, err = Parse([]byte(hourly), filepath.Join(dir, "outpost.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Telemetry.WithDefaults().GNMIServerExpiry(); got != 3*time.Hour {
		t.Errorf("expire_after with an hourly poll: %v, want 3h", got)
	}
	short := strings.Replace(hourly, `gnmi_server: {listen: "127.0.0.1:9339"}`, `gnmi_server: {listen: "127.0.0.1:9339", expire_after: 90m}`, 1)
	if _, err := Parse([]byte(short), filepath.Join(dir, "outpost.yaml")); err == nil || !strings.Contains(err.Error(), "telemetry.gnmi_server.expire_after: 1h30m0s: must be 0 (derived) or at least 1s and twice the longest collection interval (1h0m0s)") {
		t.Errorf("expire_after shorter than two intervals: %v", err)
	}

	bad := `
telemetry:
  gnmi:
    targets:
      - name: sw1
        address: nope
        subscriptions: [{mode: sometimes, paths: ["interfaces"]}]
  snmp:
    targets:
      - {name: sw1, address: 10.0.0.2, oids: [{oid: ifInOctets}]}
      - {name: sw3, address: 10.0.0.3, version: "3", community: x, v3: {username: u, auth_protocol: SHA1, auth_password_file: /nonexistent}, oids: [{oid: 1.3.6.1.2.1.1.3.0}]}
    traps: {listen: "127.0.0.1:9162", communities: [public], engine_id: "0x0102"}
  gnmi_server: {listen: "0.0.0.0:9339"}
  triggers: [{task: nothing, path: /x, condition: "about 3"}]
  bogus: 1
`
	_, err = Parse([]byte(bad), filepath.Join(dir, "bad.yaml"))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		"bogus",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("problems lack %q", want)
		}
	}
	bad = strings.Replace(bad, "  bogus: 1\n", "", 1)
	_, err = Parse([]byte(bad), filepath.Join(dir, "bad.yaml"))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	msg = err.Error()
	for _, want := range []string{
		"telemetry.gnmi.targets[0].address: \"nope\" is not host:port",
		"telemetry.gnmi.targets[0].subscriptions[0].mode: \"sometimes\" is not a mode",
		"telemetry.gnmi.targets[0].subscriptions[0].paths[0]: \"interfaces\" must start with /",
		"telemetry.snmp.targets[0].name: duplicate target \"sw1\"",
		"telemetry.snmp.targets[0].community: must not be empty for version 2c",
		"telemetry.snmp.targets[0].oids[0].oid: \"ifInOctets\" is not a numeric OID",
		"telemetry.snmp.targets[1].v3.auth_protocol: \"SHA1\" is not an auth protocol",
		"telemetry.snmp.targets[1].v3.auth_password_file: cannot read /nonexistent",
		"telemetry.gnmi_server.listen: a listener beyond loopback needs tls",
		"telemetry.snmp.traps.engine_id: engine id must be 5 to 32 bytes, is 2",
		"telemetry.triggers[0].task: no task named \"nothing\"",
		"telemetry.triggers[0].condition: \"about 3\" is not a condition",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("problems lack %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, "bad.yaml:") {
		t.Errorf("problems lack file:line: %s", msg)
	}
}

// Several devices behind one address: a target is the address plus its
// community, or its v3 user and context; only the same identity twice on
// one address is refused.
func TestConfigSNMPTargetsShareAnAddress(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("x\n"), 0o600)
	cfg := `
telemetry:
  snmp:
    targets:
      - {name: a, address: 127.0.0.1:26100, community: dev001, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
      - {name: b, address: 127.0.0.1:26100, community: dev002, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
      - {name: c, address: 127.0.0.1:26100, version: "3", v3: {username: u, auth_protocol: SHA, auth_password_file: pw, priv_protocol: AES, priv_password_file: pw, context_name: dev001}, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
      - {name: d, address: 127.0.0.1:26100, version: "3", v3: {username: u, auth_protocol: SHA, auth_password_file: pw, priv_protocol: AES, priv_password_file: pw, context_name: dev002}, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
      - {name: e, address: 127.0.0.1:26100, version: "3", v3: {username: w, auth_protocol: SHA, auth_password_file: pw, priv_protocol: AES, priv_password_file: pw, context_name: dev002}, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
`
	if _, err := Parse([]byte(cfg), filepath.Join(dir, "outpost.yaml")); err != nil {
		t.Fatalf("targets sharing an address with other identities refused: %v", err)
	}
	dup := cfg + `      - {name: f, address: 127.0.0.1:26100, community: dev002, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
      - {name: g, address: 127.0.0.1:26100, version: "3", v3: {username: u, auth_protocol: SHA, auth_password_file: pw, priv_protocol: AES, priv_password_file: pw, context_name: dev001}, oids: [{oid: 1.3.6.1.2.1.1.5.0}]}
`
	_, err := Parse([]byte(dup), filepath.Join(dir, "outpost.yaml"))
	for _, want := range []string{
		`telemetry.snmp.targets[5].address: 127.0.0.1:26100 with community "dev002" is already collected by telemetry.snmp.targets[1]`,
		`telemetry.snmp.targets[6].address: 127.0.0.1:26100 as v3 user "u" in context "dev001" is already collected by telemetry.snmp.targets[2]`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("problems lack %q: %v", want, err)
		}
	}
}
