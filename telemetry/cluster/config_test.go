package cluster

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/internal/confval"
)

func TestConfigDefaultsAndValidation(t *testing.T) {
	cases := []struct {
		name, yaml string
		listen     string
		tls        bool
		want       []string // problems, each a substring of one line
		check      func(t *testing.T, c Config)
	}{
		{name: "off", yaml: "{}", check: func(t *testing.T, c Config) {
			if c.Enabled() {
				t.Error("enabled without etcd")
			}
		}},
		{name: "defaults", yaml: "etcd: [http://127.0.0.1:2379]\nname: edge-1\n", listen: "127.0.0.1:9339", check: func(t *testing.T, c Config) {
			if c.Advertise != "127.0.0.1:9339" || c.Capacity != DefaultCapacity || c.LeaseTTL.Std() != DefaultLeaseTTL ||
				c.Prefix != DefaultPrefix || c.ReplicaInterval.Std() != DefaultReplicaInterval {
				t.Errorf("defaults %+v", c)
			}
		}},
		{name: "set", yaml: "etcd: [http://10.0.0.9:2379]\nname: edge-1\nadvertise: 10.0.0.1:9339\ncapacity: 200\nlease_ttl: 10s\nprefix: /x/\nreplica_interval: 500ms\n",
			listen: "127.0.0.1:9339", check: func(t *testing.T, c Config) {
				if c.Advertise != "10.0.0.1:9339" || c.Capacity != 200 || c.LeaseTTL.Std() != 10*time.Second || c.Prefix != "/x" {
					t.Errorf("config %+v", c)
				}
			}},
		{name: "bad", yaml: "etcd: [127.0.0.1:2379]\nname: a/b\nadvertise: nohost\ncapacity: -1\nlease_ttl: 1500ms\nreplica_interval: 10ms\n",
			want: []string{`etcd[0]: "127.0.0.1:2379": an etcd client URL`, "etcd: a cluster needs telemetry.gnmi_server.listen", `name: "a/b"`,
				"advertise:", "capacity: must not be negative", "lease_ttl: 1.5s: must be whole seconds", "replica_interval: 10ms"}},
		{name: "gnmi server with tls", yaml: "etcd: [http://127.0.0.1:2379]\nname: a\nca_file: " + os.DevNull + "\n", listen: "127.0.0.1:9339", tls: true},
		{name: "a ca_file without tls", yaml: "etcd: [http://127.0.0.1:2379]\nname: a\nca_file: /nonexistent/ca.pem\n", listen: "127.0.0.1:9339",
			want: []string{"ca_file: instances connect over TLS only when telemetry.gnmi_server.tls is set", "ca_file"}},
		{name: "no name", yaml: "etcd: [http://127.0.0.1:2379]\n", listen: "127.0.0.1:9339", want: []string{"name: must name this instance"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := confval.NewDoc([]byte(tc.yaml), "outpost.yaml")
			var c Config
			if !d.Decode(&c) {
				t.Fatal(d.Err())
			}
			c.Validate(d.Checker(), tc.listen, tc.tls)
			c = c.WithDefaults(tc.listen)
			err := d.Err()
			if len(tc.want) == 0 && err != nil {
				t.Fatalf("problems: %v", err)
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("no problem %q in:\n%v", w, err)
				}
			}
			if err != nil && len(strings.Split(err.Error(), "\n")) != len(tc.want) {
				t.Errorf("want %d problems, got:\n%v", len(tc.want), err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}
