package coordinator

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-edge/outpost/configs"
	"github.com/outpost-edge/outpost/devices/mqtttest"
	"github.com/outpost-edge/outpost/internal/etcdtest"
)

var metricRowRE = regexp.MustCompile("^\\| *(`outpost_[^|]*)\\|")

// documentedMetrics returns the metric names of the tables in
// docs/operations.md ("`outpost_calls_total{task,status}`" names
// outpost_calls_total).
func documentedMetrics(t *testing.T) map[string]bool {
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for line := range strings.Lines(string(b)) {
		if m := metricRowRE.FindStringSubmatch(line); m != nil {
			for _, n := range regexp.MustCompile("`(outpost_[a-z0-9_]+)").FindAllStringSubmatch(m[1], -1) {
				names[n[1]] = true
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("only %d metrics found in docs/operations.md", len(names))
	}
	return names
}

// Every metric docs/operations.md lists is registered by a daemon with
// every part on (embedded broker, telemetry with a trap listener, the
// gNMI server and a cluster on a real etcd, the cloud link), and every
// outpost_ metric the daemon exports is documented.
func TestMetricsDocumented(t *testing.T) {
	etcd := etcdtest.Start(t)
	yaml := "data_dir: " + t.TempDir() + `
admin: {listen: "` + mqtttest.FreeAddr(t) + `"}
mqtt: {broker: {listen: "` + mqtttest.FreeAddr(t) + `"}}
cloud: {url: "http://` + mqtttest.FreeAddr(t) + `"}
telemetry:
  snmp: {traps: {listen: "` + mqtttest.FreeAddr(t) + `", communities: [public]}}
  gnmi_server: {listen: "` + mqtttest.FreeAddr(t) + `"}
  cluster: {etcd: ["` + etcd.Endpoint() + `"]}
`
	cfg, err := configs.Parse([]byte(yaml), "metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := startCoordinator(t, cfg)
	docs := documentedMetrics(t)

	// A name is registered when the registry refuses a second collector
	// of that name: this finds vectors that have no series yet, which
	// Gather leaves out.
	for name := range docs {
		probe := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: "probe"}, func() float64 { return 0 })
		if err := c.reg.Register(probe); err == nil {
			c.reg.Unregister(probe)
			t.Errorf("docs/operations.md lists %s, which the daemon does not register", name)
		}
	}
	fams, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if n := f.GetName(); strings.HasPrefix(n, "outpost_") && !docs[n] {
			t.Errorf("the daemon exports %s, which docs/operations.md does not list", n)
		}
	}
}
