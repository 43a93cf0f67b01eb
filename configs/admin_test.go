package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The admin API listens beyond loopback only with TLS; secret files that
// group or others can read are refused, each with its key, mode and fix.
func TestAdminConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	write("op.token", 0o600)
	write("open.token", 0o644)
	write("cert.pem", 0o644)
	write("key.pem", 0o600)
	write("open-key.pem", 0o640)
	write("mqtt.pw", 0o604)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("data/admin.token", 0o644)
	cfgFile := filepath.Join(dir, "outpost.yaml")
	load := func(yaml string) error {
		if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(cfgFile)
		return err
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string // "" for none
	}{
		{"loopback plain", "admin: {listen: 127.0.0.1:7700}\n", nil},
		{"localhost plain", "admin: {listen: localhost:7700}\n", nil},
		{"all interfaces plain", "admin: {listen: 0.0.0.0:7700}\n", []string{`outpost.yaml:1: admin.listen: "0.0.0.0:7700" is beyond loopback: the admin API listens there only with tls`}},
		{"empty host plain", "admin: {listen: \":7700\"}\n", []string{`admin.listen: ":7700" is beyond loopback`}},
		{"ip plain", "admin: {listen: \"[2001:db8::1]:7700\"}\n", []string{`admin.listen: "[2001:db8::1]:7700" is beyond loopback`}},
		{"beyond loopback with tls", "admin: {listen: 0.0.0.0:7700, token_file: op.token, tls: {cert_file: cert.pem, key_file: key.pem}}\n", nil},
		{"key alone", "admin: {tls: {key_file: key.pem}}\n", []string{"admin.tls: cert_file and key_file go together"}},
		{"client ca without cert", "admin: {tls: {client_ca_file: cert.pem}}\n", []string{"admin.tls.client_ca_file: needs cert_file and key_file"}},
		{"exposed secrets", "admin: {token_file: open.token, tls: {cert_file: cert.pem, key_file: open-key.pem}}\nmqtt: {url: \"tcp://127.0.0.1:1\", username: u, password_file: mqtt.pw}\ncloud: {url: \"https://c.example\", token_file: open.token, tls: {cert_file: cert.pem, key_file: open-key.pem}}\n", []string{
			"admin.token_file: secret file " + dir + "/open.token is readable by group or others (mode 0644): run `chmod 600 " + dir + "/open.token`",
			"admin.tls.key_file: secret file " + dir + "/open-key.pem is readable by group or others (mode 0640)",
			"mqtt.password_file: secret file " + dir + "/mqtt.pw is readable by group or others (mode 0604)",
			"cloud.token_file: secret file " + dir + "/open.token is readable by group or others (mode 0644)",
			"cloud.tls.key_file: secret file " + dir + "/open-key.pem is readable by group or others (mode 0640)",
		}},
		{"exposed data dir token", "data_dir: " + filepath.Join(dir, "data") + "\n", []string{"data_dir: secret file " + dir + "/data/admin.token is readable by group or others (mode 0644)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := load(tc.yaml)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
		})
	}
	c, err := Parse([]byte("admin: {token_file: /etc/outpost/admin.token}\n"), "")
	if err == nil || c != nil {
		t.Fatalf("a missing operator token file accepted: %v", err)
	}
	if got := Defaults().Admin.TokenPath("/var/lib/outpost"); got != "/var/lib/outpost/admin.token" {
		t.Errorf("default token path %s", got)
	}
}
